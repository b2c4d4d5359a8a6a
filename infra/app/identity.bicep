// User-assigned managed identity of the function app. It is the only principal that gets data-plane access
// (storage, Key Vault secrets, App Insights ingestion); see rbac.bicep and keyvault.bicep.
param name string
param location string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
