// The Markr function app: Linux Flex Consumption, Python 3.11, user-assigned managed identity.
// Every setting in local.settings.template.json is either set here or allow-listed (with the reason)
// in tests/infra/test_bicep.py; connections are identity-based, so there are no secrets to store.
param location string
param tags object
param name string
param planName string
param identityResourceId string
param identityClientId string
param identityName string
param storageAccountName string
param blobEndpoint string
param tableEndpoint string
param deploymentContainerName string
param vaultTableName string
@description('Versionless URL of the Key Vault key that wraps vault data keys.')
param vaultKeyUrl string
param serviceBusFullyQualifiedNamespace string
param postgresHost string
param databaseName string
param appInsightsConnectionString string
@minValue(1)
@maxValue(1000)
@description('Flex Consumption cap on on-demand instances, applied to each function group separately.')
param maximumInstanceCount int
@minValue(1)
@description('Size of the PostgreSQL connection pool in each worker process (MARKR_DB_POOL_MAX).')
param dbPoolMax int
@allowed([512, 2048, 4096])
param instanceMemoryMB int
@description('NCRONTAB schedule of the dead-letter sweeper (timer trigger).')
param deadLetterSweepSchedule string = '0 */5 * * * *'
@description('Entra ID tenant whose access tokens the API accepts.')
param authTenantId string
@description('Accepted token audiences (comma-separated): the API app registration\'s App ID URI and/or client id.')
param apiAudience string

// Entra ID v2.0 tokens of the tenant (the API's app registration asks for v2 tokens: docs/deploy.md).
var loginEndpoint = environment().authentication.loginEndpoint

@description('Browser origins allowed to call the API (the analysts\' dashboard on Static Web Apps).')
param corsAllowedOrigins array = []

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  //checkov:skip=CKV_AZURE_225:Flex Consumption zone redundancy exists only in some regions; the region is a deploy-time choice (see docs/deploy.md)
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

var appSettings = {
  // Functions host storage (leases, timer locks) over the identity: no AzureWebJobsStorage connection string.
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  // The worker hands the host's trace context to OpenTelemetry (shared/telemetry.py); pairs with
  // "telemetryMode": "OpenTelemetry" in host.json so logs are not exported twice.
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
  // DefaultAzureCredential (Bus, vault and database adapters) picks the user-assigned identity by this id.
  AZURE_CLIENT_ID: identityClientId
  // The identity's name is its PostgreSQL role; the password is an Entra token fetched per connection.
  MARKR_DATABASE_URL: 'postgresql://${identityName}@${postgresHost}:5432/${databaseName}?sslmode=require'
  MARKR_DATABASE_ENTRA_AUTH: 'true'
  MARKR_MIGRATE_ON_START: 'true' // the app identity applies (and so owns) the schema
  // Connections per process; sized per profile against the server's max_connections (main.bicep sizing).
  MARKR_DB_POOL_MAX: string(dbPoolMax)
  MARKR_BUS: 'azure'
  // Service Bus triggers (connection "ServiceBusConnection") and the Bus adapter, identity-based.
  ServiceBusConnection__fullyQualifiedNamespace: serviceBusFullyQualifiedNamespace
  ServiceBusConnection__credential: 'managedidentity'
  ServiceBusConnection__clientId: identityClientId
  // The vault (Table Storage), identity-based.
  VaultStorage__tableServiceUri: tableEndpoint
  VaultStorage__credential: 'managedidentity'
  VaultStorage__clientId: identityClientId
  MARKR_VAULT_TABLE: vaultTableName
  // Vault entries are sealed under data keys wrapped by this Key Vault key (RSA-OAEP-256, app identity).
  MARKR_VAULT_KEY_URL: vaultKeyUrl
  MARKR_MAX_BODY_BYTES: '104857600'
  MARKR_IMPORT_WAIT_SECONDS: '30'
  // A waiting import is validated in the receiver (a scheduled message is its safety net).
  MARKR_VALIDATE_IN_RECEIVER: 'true'
  MARKR_RETRY_BACKOFF_MAX_SECONDS: '30'
  MARKR_DEAD_LETTER_SWEEP_SCHEDULE: deadLetterSweepSchedule
  // Who may call (shared/auth): Entra ID access tokens of this tenant, checked by the app itself.
  MARKR_AUTH_TENANT_ID: authTenantId
  MARKR_AUTH_ISSUER: '${loginEndpoint}${authTenantId}/v2.0'
  MARKR_AUTH_JWKS_URL: '${loginEndpoint}${authTenantId}/discovery/v2.0/keys'
  MARKR_AUTH_AUDIENCE: apiAudience
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  //checkov:skip=CKV_AZURE_222:Markr is a public HTTP API (POST /api/import from scanners); it must be reachable
  //checkov:skip=CKV_AZURE_17:Callers are not issued client certificates; the API contract is plain HTTPS
  //checkov:skip=CKV_AZURE_212:Flex Consumption manages instances and scales from zero; there is no fixed instance count to set
  //checkov:skip=CKV_AZURE_213:/api/health checks shared dependencies (DB, bus, vault); as a platform health check it would evict every instance during a dependency outage, so it is probed externally
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'markr' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityResourceId}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertMode: 'Optional'
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      cors: { allowedOrigins: corsAllowedOrigins, supportCredentials: false }
      appSettings: [for setting in items(appSettings): { name: setting.key, value: setting.value }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityResourceId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: { name: 'python', version: '3.11' }
    }
  }
}

// Publishing credentials (basic auth) off: deployments go through Entra ID (azd / az).
resource ftp 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: { allow: false }
}

resource scm 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: { allow: false }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
