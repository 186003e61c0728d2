// Azure Database for PostgreSQL Flexible Server, Entra ID authentication only (no passwords).
// The app's managed identity is an Entra admin, so it can run the migrations (DDL) at start-up.
param location string
param tags object
param name string
param databaseName string
param sku object
param storageSizeGB int
@allowed(['Disabled', 'ZoneRedundant', 'SameZone'])
param highAvailability string
param backupRetentionDays int
param appPrincipalId string
param appPrincipalName string
param operatorPrincipalId string
param operatorPrincipalName string
param operatorPrincipalType string

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: name
  location: location
  tags: tags
  sku: sku
  properties: {
    version: '16'
    createMode: 'Default'
    storage: { storageSizeGB: storageSizeGB, autoGrow: 'Enabled' }
    backup: {
      backupRetentionDays: backupRetentionDays
      geoRedundantBackup: 'Enabled'
    }
    highAvailability: { mode: highAvailability }
    authConfig: {
      activeDirectoryAuth: 'Enabled'
      passwordAuth: 'Disabled'
      tenantId: tenant().tenantId
    }
    network: { publicNetworkAccess: 'Enabled' }
  }
}

// Flex Consumption apps without VNet integration connect from Azure's shared outbound addresses.
// 0.0.0.0 is Azure's "allow connections from Azure services" rule; Entra auth still applies.
resource allowAzure 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = {
  parent: server
  name: 'AllowAllAzureServicesAndResourcesWithinAzureIps'
  properties: { startIpAddress: '0.0.0.0', endIpAddress: '0.0.0.0' }
}

resource appAdmin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = {
  parent: server
  name: appPrincipalId
  dependsOn: [allowAzure]
  properties: {
    principalType: 'ServicePrincipal'
    principalName: appPrincipalName
    tenantId: tenant().tenantId
  }
}

resource operatorAdmin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = if (!empty(operatorPrincipalId)) {
  parent: server
  name: empty(operatorPrincipalId) ? 'none' : operatorPrincipalId
  dependsOn: [appAdmin] // the server accepts one administrator change at a time
  properties: {
    principalType: operatorPrincipalType
    principalName: operatorPrincipalName
    tenantId: tenant().tenantId
  }
}

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = {
  parent: server
  name: databaseName
  properties: { charset: 'UTF8', collation: 'en_US.utf8' }
}

// Azure reserves 15 connections; this makes the limit visible next to the pool arithmetic in docs/deploy.md.
resource logConnections 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = {
  parent: server
  name: 'log_connections'
  dependsOn: [database]
  properties: { value: 'on', source: 'user-override' }
}

output fqdn string = server.properties.fullyQualifiedDomainName
output databaseName string = database.name
