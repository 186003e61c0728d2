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

// Deployment order matters on an Entra-only server (each step dependsOn the one before):
//   server -> firewall rule -> app admin -> database -> server settings -> operator admin.
// A database created before any Entra administrator exists is owned by `azuresu`, and the app
// identity then cannot create its schemas (`CREATE SCHEMA bus` fails at the first migration). With
// the app identity already an admin, the database is created with the privileges the migrations need.
// The server also accepts one administrator change at a time, so the two admins never run in parallel.
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

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = {
  parent: server
  name: databaseName
  dependsOn: [appAdmin]
  properties: { charset: 'UTF8', collation: 'en_US.utf8' }
}

// Azure reserves 15 connections; this makes the limit visible next to the pool arithmetic in docs/deploy.md.
resource logConnections 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = {
  parent: server
  name: 'log_connections'
  dependsOn: [database]
  properties: { value: 'on', source: 'user-override' }
}

// Optional second admin for a person or group. azd always fills operatorPrincipalId (the signed-in
// user), so the id alone is no signal: an admin needs a display name too, and without one ARM would
// create an administrator with an empty name. Created only when both are given.
var createOperatorAdmin = !(empty(operatorPrincipalId) || empty(operatorPrincipalName))

resource operatorAdmin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = if (createOperatorAdmin) {
  parent: server
  name: createOperatorAdmin ? operatorPrincipalId : 'none'
  dependsOn: [logConnections] // last: after the database exists and every other server change is done
  properties: {
    principalType: operatorPrincipalType
    principalName: operatorPrincipalName
    tenantId: tenant().tenantId
  }
}

output fqdn string = server.properties.fullyQualifiedDomainName
output databaseName string = database.name
