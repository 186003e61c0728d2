// Markr on Azure: one resource group holding the Flex Consumption function app and everything it uses.
// `azd up` deploys this with main.parameters.json; main.<env>.bicepparam serve `az deployment sub create`.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('azd environment name; names and tags every resource.')
param environmentName string

@description('Azure region for every resource.')
param location string

@allowed(['dev', 'prod'])
@description('Sizing profile (instance caps, PostgreSQL SKU, alert thresholds).')
param profile string = 'dev'

@description('Resource id of an existing action group notified by the alert rules; empty = alerts fire without notifying.')
param actionGroupId string = ''

@description('Object id of a person or group to make an extra Entra admin of PostgreSQL (azd passes the signed-in user); empty = none.')
param operatorPrincipalId string = ''

@description('Display name (UPN or group name) of operatorPrincipalId.')
param operatorPrincipalName string = ''

@allowed(['User', 'Group', 'ServicePrincipal'])
param operatorPrincipalType string = 'User'

@description('Entra ID tenant whose access tokens the API accepts; default: the tenant deployed into.')
param authTenantId string = tenant().tenantId

@description('Audiences the API accepts, comma-separated: its App ID URI and/or application (client) id (docs/deploy.md, "Who may call"); empty = api://markr-<environmentName>.')
param apiAudience string = ''
// Static Web Apps is offered in a few regions only (westeurope, westus2, centralus, eastus2, eastasia).
@description('Region of the analysts\' dashboard (Azure Static Web Apps).')
param dashboardLocation string = 'westeurope'

// The one queue definition, shared with the local queue engine (shared/bus/queues.py).
var queueSpec = loadJsonContent('../schemas/queues.json')

var sizing = {
  dev: {
    // maximumInstanceCount caps EACH Flex Consumption function group (HTTP functions = one group, every
    // other function its own group), not the app. With MARKR_DB_POOL_MAX connections per process plus
    // one LISTEN connection, the worst case is groups x maximumInstanceCount x (dbPoolMax + 1); it must
    // stay under the server's max_connections. tests/infra/test_connection_budget.py checks it and
    // docs/deploy.md ("PostgreSQL connections") shows the arithmetic: change both together.
    maximumInstanceCount: 3
    dbPoolMax: 10
    instanceMemoryMB: 2048
    postgresSku: { name: 'Standard_B2s', tier: 'Burstable' }
    postgresStorageGB: 32
    postgresHighAvailability: 'Disabled'
    backupRetentionDays: 7
    activeMessagesThreshold: 1000
  }
  prod: {
    maximumInstanceCount: 8
    dbPoolMax: 10
    instanceMemoryMB: 2048
    postgresSku: { name: 'Standard_D2ds_v5', tier: 'GeneralPurpose' }
    postgresStorageGB: 128
    postgresHighAvailability: 'ZoneRedundant'
    backupRetentionDays: 35
    activeMessagesThreshold: 5000
  }
}[profile]

var tags = { 'azd-env-name': environmentName, app: 'markr' }
var token = toLower(uniqueString(subscription().id, environmentName, location))

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-markr-${environmentName}'
  location: location
  tags: tags
}

module identity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.0' = {
  scope: rg
  name: 'identity'
  params: {
    name: 'id-markr-${token}'
    location: location
    tags: tags
    enableTelemetry: false
  }
}

module monitoring 'modules/monitoring.bicep' = {
  scope: rg
  name: 'monitoring'
  params: {
    location: location
    tags: tags
    token: token
  }
}

module storage 'modules/storage.bicep' = {
  scope: rg
  name: 'storage'
  params: {
    location: location
    tags: tags
    name: 'stmarkr${token}'
    vaultTableName: 'vault'
    deploymentContainerName: 'app-package'
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  scope: rg
  name: 'servicebus'
  params: {
    location: location
    tags: tags
    name: 'sb-markr-${token}'
    queueSpec: queueSpec
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
  }
}

module postgres 'modules/postgres.bicep' = {
  scope: rg
  name: 'postgres'
  params: {
    location: location
    tags: tags
    name: 'psql-markr-${token}'
    databaseName: 'markr'
    sku: sizing.postgresSku
    storageSizeGB: sizing.postgresStorageGB
    highAvailability: sizing.postgresHighAvailability
    backupRetentionDays: sizing.backupRetentionDays
    appPrincipalId: identity.outputs.principalId
    appPrincipalName: identity.outputs.name
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalName: operatorPrincipalName
    operatorPrincipalType: operatorPrincipalType
  }
}

module roles 'modules/roles.bicep' = {
  scope: rg
  name: 'roles'
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    serviceBusNamespaceName: serviceBus.outputs.name
  }
}

module keyVault 'modules/keyvault.bicep' = {
  scope: rg
  name: 'keyvault'
  params: {
    location: location
    tags: tags
    name: 'kv-markr-${take(token, 12)}'
    principalId: identity.outputs.principalId
  }
}

module dashboard 'modules/dashboard.bicep' = {
  scope: rg
  name: 'dashboard'
  params: {
    location: dashboardLocation
    tags: tags
    name: 'stapp-markr-${token}'
  }
}

module functionApp 'modules/functionapp.bicep' = {
  scope: rg
  name: 'functionapp'
  // The app's triggers and adapters fail at start-up without their roles: grant them first.
  dependsOn: [roles, postgres, keyVault]
  params: {
    location: location
    tags: tags
    name: 'func-markr-${token}'
    planName: 'plan-markr-${token}'
    identityResourceId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    identityName: identity.outputs.name
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: storage.outputs.deploymentContainerName
    vaultTableName: storage.outputs.vaultTableName
    vaultKeyUrl: keyVault.outputs.keyUrl
    serviceBusFullyQualifiedNamespace: serviceBus.outputs.fullyQualifiedNamespace
    postgresHost: postgres.outputs.fqdn
    databaseName: postgres.outputs.databaseName
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    maximumInstanceCount: sizing.maximumInstanceCount
    instanceMemoryMB: sizing.instanceMemoryMB
    dbPoolMax: sizing.dbPoolMax
    authTenantId: authTenantId
    apiAudience: empty(apiAudience) ? 'api://markr-${environmentName}' : apiAudience
    corsAllowedOrigins: ['https://${dashboard.outputs.defaultHostName}']
  }
}

module alerts 'modules/alerts.bicep' = {
  scope: rg
  name: 'alerts'
  params: {
    tags: tags
    serviceBusNamespaceName: serviceBus.outputs.name
    queueNames: [for q in queueSpec.queues: q.name]
    actionGroupId: actionGroupId
    activeMessagesThreshold: sizing.activeMessagesThreshold
  }
}

output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output MARKR_API_BASE_URL string = 'https://${functionApp.outputs.defaultHostName}/api'
output SERVICE_BUS_NAMESPACE string = serviceBus.outputs.fullyQualifiedNamespace
output POSTGRES_HOST string = postgres.outputs.fqdn
output AZURE_CLIENT_ID string = identity.outputs.clientId
output MARKR_DASHBOARD_NAME string = dashboard.outputs.name
output MARKR_DASHBOARD_URL string = 'https://${dashboard.outputs.defaultHostName}/'
