// The analysts' dashboard (dashboard/): static files on Azure Static Web Apps. It calls the function
// app's /api directly (CORS on the function app, see functionapp.bicep), not through a linked backend:
// Static Web Apps replaces the Authorization header on requests it proxies to a linked backend, and the
// API authorises analysts by their bearer token (docs/deploy.md, "The dashboard").
param location string
param tags object
param name string

@allowed(['Free', 'Standard'])
param sku string = 'Free'

resource dashboard 'Microsoft.Web/staticSites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'dashboard' })
  sku: { name: sku, tier: sku }
  properties: {
    // Content is uploaded by the deployment (SWA CLI with the site's deployment token), not built
    // from a repository by Static Web Apps.
    allowConfigFileUpdates: true
    stagingEnvironmentPolicy: 'Disabled'
  }
}

output name string = dashboard.name
output defaultHostName string = dashboard.properties.defaultHostname
