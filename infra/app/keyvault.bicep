// Key Vault for the app's two secrets. RBAC authorization only (no access policies), soft delete and purge
// protection on. The function app reads the secrets through Key Vault references resolved with its
// user-assigned identity (keyVaultReferenceIdentity), which holds Key Vault Secrets User on this vault.
@minLength(3)
@maxLength(24)
param name string
param location string
param tags object = {}

@secure()
param entraClientSecret string

@secure()
param webhookSecret string

@secure()
@description('Cal.com webhook secret; empty: the Cal.com intake stays off (no Key Vault entry).')
param calcomWebhookSecret string = ''

@secure()
@description('Calendly webhook signing key; empty: the Calendly intake stays off.')
param calendlyWebhookSigningKey string = ''

@secure()
@description('Standard Webhooks intake secret (whsec_...); empty: that intake stays off.')
param intakeWebhookSecret string = ''

@description('Principal id of the identity that resolves the Key Vault references (the app identity).')
param readerPrincipalId string

@description('Workspace that receives the vault audit log.')
param logAnalyticsWorkspaceId string

// Key Vault Secrets User: read secret values, nothing else.
var keyVaultSecretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  // checkov:skip=CKV_AZURE_109:Flex Consumption without VNet integration resolves Key Vault references over the public endpoint (App Service is not a trusted service for references); access is RBAC-only and limited to the app identity.
  // checkov:skip=CKV_AZURE_189:Same reason as CKV_AZURE_109: no private endpoint in this template, so public network access stays enabled.
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource entraClientSecretEntry 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'entra-client-secret'
  // checkov:skip=CKV_AZURE_41:The value is an Entra client secret whose expiry is set (and rotated) on the app registration; a second expiry here would only break the Key Vault reference early.
  properties: {
    value: entraClientSecret
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}

resource webhookSecretEntry 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'webhook-secret'
  // checkov:skip=CKV_AZURE_41:The webhook signing secret is shared with the receiver and rotated by the operator together with it (Standard Webhooks allows two secrets during rotation); an expiry would stop webhook delivery.
  properties: {
    value: webhookSecret
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}

// The intakes' secrets exist only for the intakes turned on. The app settings always reference them: App
// Service leaves a reference it cannot resolve as its literal text, which the app treats as unset (shared/settings.py).
var intakeSecrets = [
  {
    name: 'calcom-webhook-secret'
    value: calcomWebhookSecret
  }
  {
    name: 'calendly-webhook-signing-key'
    value: calendlyWebhookSigningKey
  }
  {
    name: 'intake-webhook-secret'
    value: intakeWebhookSecret
  }
]

resource intakeSecretEntries 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for secret in intakeSecrets: if (!empty(secret.value)) {
  parent: vault
  name: secret.name
  // checkov:skip=CKV_AZURE_41:A scheduler's webhook secret is set on the scheduler's side and rotated with it by the operator; an expiry here would silently switch the intake off.
  properties: {
    value: secret.value
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}]

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, readerPrincipalId, keyVaultSecretsUserRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUserRoleId)
    principalId: readerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource vaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'vault-audit'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
// Versionless URIs: App Service picks up a rotated secret without a redeployment.
output entraClientSecretUri string = entraClientSecretEntry.properties.secretUri
output webhookSecretUri string = webhookSecretEntry.properties.secretUri
output calcomWebhookSecretUri string = '${vault.properties.vaultUri}secrets/calcom-webhook-secret'
output calendlyWebhookSigningKeyUri string = '${vault.properties.vaultUri}secrets/calendly-webhook-signing-key'
output intakeWebhookSecretUri string = '${vault.properties.vaultUri}secrets/intake-webhook-secret'

