// Role assignments for the app's user-assigned identity (no keys or connection strings anywhere).
param principalId string
param storageAccountName string
param serviceBusNamespaceName string

var roleIds = {
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  serviceBusDataOwner: '090c5cfd-751d-490a-894a-3ce6f1109419'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' existing = {
  name: serviceBusNamespaceName
}

// Vault reads/writes (TableVault via DefaultAzureCredential).
resource tableData 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roleIds.storageTableDataContributor)
  scope: storage
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageTableDataContributor)
  }
}

// Flex Consumption pulls the app package from the deployment container, and the host keeps its
// leases/keys (AzureWebJobsStorage, timer trigger singleton locks) in blobs.
resource blobData 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roleIds.storageBlobDataOwner)
  scope: storage
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataOwner)
  }
}

// The Bus adapter sends between pipeline stages.
resource busSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(namespace.id, principalId, roleIds.serviceBusDataSender)
  scope: namespace
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.serviceBusDataSender)
  }
}

// The Service Bus triggers receive (Microsoft's Functions Service Bus binding docs list Data Receiver
// or Data Owner for triggers).
resource busReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(namespace.id, principalId, roleIds.serviceBusDataReceiver)
  scope: namespace
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.serviceBusDataReceiver)
  }
}

// Scaling: on Flex Consumption the scale controller uses the app's identity-based connection, and the
// Service Bus extension's scaler reads each queue's runtime properties (active message count), which
// needs the Manage claim; without it the extension logs "does not have 'Manage Claim' ... Unable to
// determine active message count" and cannot scale on queue length. Data Owner is the built-in role
// with Manage (Functions docs: "Trigger: Azure Service Bus Data Receiver, Azure Service Bus Data Owner").
// Scoped to this namespace only.
resource busOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(namespace.id, principalId, roleIds.serviceBusDataOwner)
  scope: namespace
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.serviceBusDataOwner)
  }
}
