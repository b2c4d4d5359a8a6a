// Flex Consumption plan and the Python function app, with every app setting in ONE object (appSettings), and the
// app credential's own setting in credentialSettings. tests/infra/test_infra.py checks both against
// shared/settings.py (SETTINGS): add a setting to the registry and here together. Flex Consumption keeps runtime, scale and deployment in functionAppConfig, so
// FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION / WEBSITE_RUN_FROM_PACKAGE must NOT be app settings.
param name string
param planName string
param location string
param tags object = {}

@description('azd service name (azure.yaml) the deployment targets through the azd-service-name tag.')
param serviceName string = 'api'

@description('Resource id of the user-assigned identity used for storage, Key Vault references and telemetry.')
param identityId string
param identityClientId string

param storageAccountName string
param deploymentContainerName string
param applicationInsightsName string

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

param pythonVersion string = '3.13'

@description('Zone-redundant Flex Consumption plan; only in regions that support it for Flex Consumption.')
param zoneRedundant bool = false

param entraTenantId string
param entraClientId string
@allowed([
  'single'
  'multi'
])
param entraTenancy string = 'single'
param entraAllowedTenants string = ''
@allowed([
  'federated'
  'certificate'
  'client_secret'
])
param entraAppCredential string = 'federated'
@description('Versionless Key Vault secret URI of the Entra client secret (entraAppCredential=client_secret).')
param entraClientSecretUri string
@description('Versionless Key Vault secret URI of the Entra certificate credential (entraAppCredential=certificate).')
param entraCertificateSecretUri string
param webhookUrl string
@description('Versionless Key Vault secret URI of the webhook signing secret.')
param webhookSecretUri string
param webhookAllowedHosts string = ''
@description('Whether organizers also consent to OnlineMeetings.Read, needed only for events that carry a joinWebUrl.')
param joinWebUrlLookups bool = true
param tokenVaultContainerName string
param idempotencyTableName string
@description('Versionless Key Vault secret URIs of the intakes\' secrets (an intake whose secret does not exist stays off).')
param calcomWebhookSecretUri string
param calendlyWebhookSigningKeyUri string
param intakeWebhookSecretUri string
@description('INTAKE_ORGANIZER_MAP: JSON object, scheduler host (e-mail, event type or *) to Teams organizer.')
param intakeOrganizerMap string = ''
@description('INTAKE_ORGANIZER_DOMAINS: e-mail domains whose hosts are their own UPN.')
param intakeOrganizerDomains string = ''
param appointmentsTableName string
@description('Whether the app creates, updates and deletes the Teams meeting of each appointment (organizers then also consent to OnlineMeetings.ReadWrite).')
param meetingManagement bool = false
@description('Whether clients get Teams Premium SMS (organizers then also consent to VirtualAppointmentNotification.Send).')
param clientSms bool = false
@allowed([
  'none'
  'mins15'
])
param clientSmsReminder string = 'none'
@description('Whether the app reads each appointment\'s attendance reports after it ends (organizers then also consent to OnlineMeetingArtifact.Read.All).')
param attendanceReports bool = false
@description('ATTENDANCE_GRACE_MINUTES: how long after an appointment\'s end its attendance is first read.')
param attendanceGraceMinutes int = 15
@description('MEETING_KIND: standalone (createOrGet) or calendar (an event on the organizer\'s calendar, its Outlook changes followed).')
param meetingKind string = 'standalone'
@description('GRAPH_NOTIFICATION_BASE_URL: where Graph posts change notifications. Empty: the app derives it from WEBSITE_HOSTNAME.')
param graphNotificationBaseUrl string = ''

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

var appSettings = {
  // --- Platform: identity-based AzureWebJobsStorage connection (no account keys). The app's own queues,
  // token-vault container and idempotency table use the same connection.
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  // --- Platform: Application Insights with Entra authentication (local auth is disabled on the component).
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // --- App settings read by shared/settings.py (SETTINGS). Settings whose default suits Azure are omitted.
  APP_ENVIRONMENT: 'production'
  ENTRA_TENANT_ID: entraTenantId
  ENTRA_CLIENT_ID: entraClientId
  ENTRA_TENANCY: entraTenancy
  ENTRA_ALLOWED_TENANTS: entraAllowedTenants
  // How the app proves itself to Entra; the one setting that credential needs comes from credentialSettings.
  ENTRA_APP_CREDENTIAL: entraAppCredential
  // Organizer refresh tokens come from the token vault (delegated only: app-only modes are refused).
  CREDENTIAL_MODE: 'vault'
  TOKEN_VAULT_CONTAINER: tokenVaultContainerName
  // Must match the delegated permissions on the app registration (docs/deploy.md, step 1).
  AUTH_CONNECT_LOOKUP_SCOPE: joinWebUrlLookups ? 'true' : 'false'
  WEBHOOK_URL: webhookUrl
  WEBHOOK_SECRET: '@Microsoft.KeyVault(SecretUri=${webhookSecretUri})'
  WEBHOOK_ALLOWED_HOSTS: webhookAllowedHosts
  IDEMPOTENCY_TABLE: idempotencyTableName
  // Webhook intakes (Cal.com, Calendly, Standard Webhooks): each is on once its secret exists in Key Vault.
  CALCOM_WEBHOOK_SECRET: '@Microsoft.KeyVault(SecretUri=${calcomWebhookSecretUri})'
  CALENDLY_WEBHOOK_SIGNING_KEY: '@Microsoft.KeyVault(SecretUri=${calendlyWebhookSigningKeyUri})'
  INTAKE_WEBHOOK_SECRET: '@Microsoft.KeyVault(SecretUri=${intakeWebhookSecretUri})'
  INTAKE_ORGANIZER_MAP: intakeOrganizerMap
  INTAKE_ORGANIZER_DOMAINS: intakeOrganizerDomains
  APPOINTMENTS_TABLE: appointmentsTableName
  // Must match the delegated permissions on the app registration too (docs/deploy.md, step 1).
  MEETING_MANAGEMENT: meetingManagement ? 'true' : 'false'
  CLIENT_SMS: clientSms ? 'true' : 'false'
  CLIENT_SMS_REMINDER: clientSmsReminder
  ATTENDANCE_REPORTS: attendanceReports ? 'true' : 'false'
  ATTENDANCE_GRACE_MINUTES: string(attendanceGraceMinutes)
  MEETING_KIND: meetingKind
  // --- Settings planned by open issues go last, listed in tests/infra/test_infra.py (PLANNED_SETTINGS).
}

// Set only when given: unset, the app derives https://<WEBSITE_HOSTNAME>/api (the site's own host name).
var notificationSettings = empty(graphNotificationBaseUrl) ? {} : {
  GRAPH_NOTIFICATION_BASE_URL: graphNotificationBaseUrl
}

// The setting each kind of app credential needs, and only that one: the default federated credential names the
// managed identity whose token the app registration's federated identity credential trusts (no secret anywhere).
var credentialSettings = {
  federated: {
    ENTRA_MANAGED_IDENTITY_CLIENT_ID: identityClientId
  }
  certificate: {
    ENTRA_CLIENT_CERTIFICATE: '@Microsoft.KeyVault(SecretUri=${entraCertificateSecretUri})'
  }
  client_secret: {
    ENTRA_CLIENT_SECRET: '@Microsoft.KeyVault(SecretUri=${entraClientSecretUri})'
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  // checkov:skip=CKV_AZURE_225:Zone redundancy for Flex Consumption exists only in some regions, so it is a parameter (zoneRedundant) that defaults to off to keep every Flex region deployable.
  properties: {
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  // checkov:skip=CKV_AZURE_17:Client certificates are not part of the design: the scheduler calls with a function key or an Entra token, and organizers open the connect page in a browser.
  // checkov:skip=CKV_AZURE_222:The HTTP twin, the connect/callback pages and the scheduler reach the app over the internet; there is no VNet or private endpoint in this template.
  // checkov:skip=CKV_AZURE_212:numberOfWorkers does not apply to Flex Consumption, which adds instances per demand (maximumInstanceCount); always-ready instances would end scale-to-zero and are left to the operator.
  // checkov:skip=CKV_AZURE_213:No health-check path: the work is queue-driven, there is no health endpoint in scope, and Flex Consumption replaces instances itself rather than rotating a fixed pool.
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      // The settings object and the chosen credential's setting, as the name/value list App Service expects.
      appSettings: [for setting in items(union(appSettings, credentialSettings[entraAppCredential], notificationSettings)): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// Basic (user name + password) publishing credentials off for FTP and the SCM site: azd deploys with
// Entra tokens.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = functionApp.name
output id string = functionApp.id
output uri string = 'https://${functionApp.properties.defaultHostName}'
