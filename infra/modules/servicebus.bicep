// Service Bus (Standard) with the pipeline queues, created from schemas/queues.json (passed in as queueSpec).
// Local (SAS) auth is disabled: senders and the triggers authenticate with Entra ID.
param location string
param tags object
param name string
@description('The parsed schemas/queues.json: { defaults: {...}, queues: [{ name, ...overrides }] }.')
param queueSpec object
param logAnalyticsWorkspaceId string

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: name
  location: location
  tags: tags
  sku: { name: 'Standard', tier: 'Standard' }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

// Every setting comes from queues.json: a queue's own entry overrides the shared defaults.
resource queues 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = [for queue in queueSpec.queues: {
  parent: namespace
  name: queue.name
  properties: {
    lockDuration: union(queueSpec.defaults, queue).lockDuration
    defaultMessageTimeToLive: union(queueSpec.defaults, queue).defaultMessageTimeToLive
    requiresDuplicateDetection: union(queueSpec.defaults, queue).requiresDuplicateDetection
    duplicateDetectionHistoryTimeWindow: union(queueSpec.defaults, queue).duplicateDetectionHistoryTimeWindow
    deadLetteringOnMessageExpiration: union(queueSpec.defaults, queue).deadLetteringOnMessageExpiration
    maxDeliveryCount: union(queueSpec.defaults, queue).maxDeliveryCount
    requiresSession: union(queueSpec.defaults, queue).requiresSession
    enablePartitioning: union(queueSpec.defaults, queue).enablePartitioning
  }
}]

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: namespace
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [{ categoryGroup: 'allLogs', enabled: true }]
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

output name string = namespace.name
output fullyQualifiedNamespace string = '${namespace.name}.servicebus.windows.net'
output queueNames array = [for (queue, i) in queueSpec.queues: queues[i].name]
