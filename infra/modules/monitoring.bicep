// Log Analytics + workspace-based Application Insights (Azure Verified Modules, pinned).
param location string
param tags object
param token string

module workspace 'br/public:avm/res/operational-insights/workspace:0.11.2' = {
  name: 'log-analytics'
  params: {
    name: 'log-markr-${token}'
    location: location
    tags: tags
    skuName: 'PerGB2018'
    dataRetention: 30
    enableTelemetry: false
  }
}

module appInsights 'br/public:avm/res/insights/component:0.6.0' = {
  name: 'app-insights'
  params: {
    name: 'appi-markr-${token}'
    location: location
    tags: tags
    workspaceResourceId: workspace.outputs.resourceId
    applicationType: 'web'
    kind: 'web'
    retentionInDays: 90
    enableTelemetry: false
  }
}

output workspaceId string = workspace.outputs.resourceId
output appInsightsName string = appInsights.outputs.name
// Not a secret: it only allows sending telemetry (ingestion), never reading it.
output appInsightsConnectionString string = appInsights.outputs.connectionString
