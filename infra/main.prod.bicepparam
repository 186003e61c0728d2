// Prod: `az deployment sub create -l <region> -f infra/main.bicep -p infra/main.prod.bicepparam`
// Set actionGroupId to the on-call action group before deploying (alerts notify nobody otherwise).
using 'main.bicep'

param environmentName = 'markr-prod'
param location = 'westeurope'
param profile = 'prod'
param actionGroupId = readEnvironmentVariable('MARKR_ACTION_GROUP_ID', '')
param operatorPrincipalId = readEnvironmentVariable('MARKR_OPERATOR_OBJECT_ID', '')
param operatorPrincipalName = readEnvironmentVariable('MARKR_OPERATOR_NAME', '')
param operatorPrincipalType = 'Group'
