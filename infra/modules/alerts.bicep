// Metric alerts per queue. Service Bus publishes no "age of oldest message" metric in Azure Monitor,
// so the backlog alert uses ActiveMessages over a threshold instead (sustained over the window).
param tags object
param serviceBusNamespaceName string
param queueNames array
@description('Action group resource id; empty = the rules fire without notifying anyone.')
param actionGroupId string
param activeMessagesThreshold int

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' existing = {
  name: serviceBusNamespaceName
}

var actions = empty(actionGroupId) ? [] : [{ actionGroupId: actionGroupId }]

resource deadLettered 'Microsoft.Insights/metricAlerts@2018-03-01' = [for queue in queueNames: {
  name: 'alert-${queue}-deadlettered'
  location: 'global'
  tags: tags
  properties: {
    description: 'Messages were dead-lettered on ${queue}: inspect and replay them (docs/deploy.md).'
    severity: 2
    enabled: true
    scopes: [namespace.id]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'DeadletteredMessages'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          dimensions: [{ name: 'EntityName', operator: 'Include', values: [queue] }]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Maximum'
        }
      ]
    }
    actions: actions
  }
}]

resource backlog 'Microsoft.Insights/metricAlerts@2018-03-01' = [for queue in queueNames: {
  name: 'alert-${queue}-backlog'
  location: 'global'
  tags: tags
  properties: {
    description: 'More than ${activeMessagesThreshold} active messages on ${queue} for 15 minutes: consumers are not keeping up.'
    severity: 3
    enabled: true
    scopes: [namespace.id]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'ActiveMessages'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'ActiveMessages'
          dimensions: [{ name: 'EntityName', operator: 'Include', values: [queue] }]
          operator: 'GreaterThan'
          threshold: activeMessagesThreshold
          timeAggregation: 'Minimum'
        }
      ]
    }
    actions: actions
  }
}]
