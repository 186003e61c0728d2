// The vault's key-encryption key: an RSA key in Key Vault that wraps each vault entry's data key
// (shared/vault/kek.py, RSA-OAEP-256). RBAC only; purge protection so a deleted key (and with it every
// vault entry) can be recovered; the key rotates yearly by policy and `markr-ops vault rewrap` moves
// existing entries to the new version (docs/operations.md, "Key rotation").
param location string
param tags object
param name string
param principalId string
param keyName string = 'vault-kek'

var cryptoUserRoleId = '12338af0-0e69-4776-bea7-57ae8d297424' // Key Vault Crypto User

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  //checkov:skip=CKV_AZURE_189:The Flex Consumption app reaches Key Vault over its public endpoint (no VNet integration in this deployment); access is Entra RBAC only
  //checkov:skip=CKV_AZURE_109:Flex Consumption has no fixed outbound addresses to allow in a firewall; a Deny default would lock the app out (RBAC guards every call)
  //checkov:skip=CKV2_AZURE_32:No private endpoint: the app has no VNet (see CKV_AZURE_189); every data-plane call needs the app identity's role
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'premium' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
  }
}

resource key 'Microsoft.KeyVault/vaults/keys@2023-07-01' = {
  parent: vault
  name: keyName
  properties: {
    kty: 'RSA-HSM'
    keySize: 3072
    keyOps: ['wrapKey', 'unwrapKey']
    attributes: {
      enabled: true
      // A fixed expiry would stop new uploads on that day; the rotation policy below renews it instead.
      exportable: false
    }
    rotationPolicy: {
      attributes: { expiryTime: 'P2Y' }
      lifetimeActions: [
        { trigger: { timeAfterCreate: 'P1Y' }, action: { type: 'rotate' } }
        { trigger: { timeBeforeExpiry: 'P30D' }, action: { type: 'notify' } }
      ]
    }
  }
}

// Wrap and unwrap with this key only (Key Vault Crypto User, scoped to the key).
resource cryptoUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(key.id, principalId, cryptoUserRoleId)
  scope: key
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cryptoUserRoleId)
  }
}

output name string = vault.name
// Versionless: wrapping uses the current version; each entry records the version it was wrapped with.
output keyUrl string = key.properties.keyUri
