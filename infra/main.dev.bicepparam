// Dev: `az deployment sub create -l <region> -f infra/main.bicep -p infra/main.dev.bicepparam`
// (azd uses main.parameters.json, driven by azd env values, instead).
using 'main.bicep'

param environmentName = 'markr-dev'
param location = 'westeurope'
param profile = 'dev'
param actionGroupId = ''
param operatorPrincipalId = ''
param operatorPrincipalName = ''
