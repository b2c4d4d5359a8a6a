// Entry point for `azd provision` / `azd up`: one resource group holding the Flex Consumption function app,
// its storage account (queues, blob containers, table), a user-assigned identity, Key Vault, monitoring,
// alerts and a workbook. Modules are plain Bicep (no registry modules) so that checkov and the offline
// tests in tests/infra can read every resource.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; it seeds a short unique token used in every resource name.')
param environmentName string

@minLength(1)
@description('Region for every resource. Pick one where the Flex Consumption plan is available.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@minLength(36)
@maxLength(36)
@description('Directory (tenant) id of the Entra app registration the function app signs in with. With the federated credential, the tenant of this subscription (its managed identity is the credential).')
param entraTenantId string

@minLength(36)
@maxLength(36)
@description('Application (client) id of the Entra app registration (delegated permission VirtualAppointment.Read).')
param entraClientId string

@allowed([
  'single'
  'multi'
])
@description('single: organizers of entraTenantId only. multi: organizers of every tenant on entraAllowedTenants, signed in through the organizations authority (the app registration must be multi-tenant).')
param entraTenancy string = 'single'

@description('multi only: comma-separated tenant ids whose organizers may connect and whose bearer tokens the HTTP twin accepts. Required with multi (an empty list stops the app at start-up; it never means every tenant).')
param entraAllowedTenants string = ''

@allowed([
  'federated'
  'certificate'
  'client_secret'
])
@description('How the app proves itself to Entra. federated (default): a federated identity credential on the app registration trusts the app\'s user-assigned managed identity, so the deployment holds no secret. certificate: the Key Vault certificate entraCertificateName. client_secret: entraClientSecret, stored in Key Vault.')
param entraAppCredential string = 'federated'

@secure()
@description('client_secret only: the app registration\'s client secret, stored in Key Vault as entra-client-secret; never in app settings. Leave empty otherwise.')
param entraClientSecret string = ''

@description('certificate only: name of the certificate (with its private key) imported into the deployment\'s Key Vault; the app reads its secret through a Key Vault reference.')
param entraCertificateName string = 'entra-app-credential'

@minLength(1)
@description('HTTPS endpoint of the scheduling system that receives appointment.joinurl.ready / .failed webhooks.')
param webhookUrl string

@secure()
@minLength(24)
@description('Standard Webhooks signing secret (for example whsec_<base64>). Stored in Key Vault as webhook-secret.')
param webhookSecret string

@description('Comma-separated host names that a per-event callbackUrl may point to (the allow-list the app enforces).')
param webhookAllowedHosts string = ''

@description('Events may carry a joinWebUrl instead of an onlineMeetingId: organizers then also consent to OnlineMeetings.Read (add it to the app registration). false: VirtualAppointment.Read only.')
param joinWebUrlLookups bool = true
@description('The app creates, reschedules and deletes the Teams meeting of each appointment (needs delegated OnlineMeetings.ReadWrite).')
param meetingManagement bool = false
@description('Teams Premium SMS to clients (needs delegated VirtualAppointmentNotification.Send).')
param clientSms bool = false
@allowed([
  'none'
  'mins15'
])
param clientSmsReminder string = 'none'
@description('Attendance after each appointment (needs delegated OnlineMeetingArtifact.Read.All).')
param attendanceReports bool = false
@description('Minutes after an appointment\'s end before its attendance is read.')
param attendanceGraceMinutes int = 15
@description('With meetingManagement: `calendar` puts each appointment on the organizer\'s calendar with a Teams meeting and follows their changes in Outlook (needs delegated Calendars.ReadWrite and OnlineMeetings.Read); `standalone`: createOrGet.')
@allowed([
  'standalone'
  'calendar'
])
param meetingKind string = 'standalone'
@description('meetingKind calendar: the app\'s public base URL Graph posts change notifications to (https://<host>/api). Empty: the app\'s own host name.')
param graphNotificationBaseUrl string = ''

@minLength(3)
@description('E-mail address that receives alert notifications.')
param alertEmail string

@description('Optional object id of a person or group that operates the app (replay command, device-code connect). Gets queue access and write access to the token vault container only. Leave empty for none.')
param operatorPrincipalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
@description('Principal type of operatorPrincipalId.')
param operatorPrincipalType string = 'User'

@secure()
@description('Cal.com webhook secret (Key Vault calcom-webhook-secret). Empty: the Cal.com intake stays off.')
param calcomWebhookSecret string = ''

@secure()
@description('Calendly webhook signing key (Key Vault calendly-webhook-signing-key). Empty: the Calendly intake stays off.')
param calendlyWebhookSigningKey string = ''

@secure()
@description('Standard Webhooks secret (whsec_...) of a scheduler posting contract-v1 events. Empty: that intake stays off.')
param intakeWebhookSecret string = ''

@description('INTAKE_ORGANIZER_MAP: JSON object mapping scheduler hosts (e-mail, event type, or *) to Teams organizers.')
param intakeOrganizerMap string = ''

@description('INTAKE_ORGANIZER_DOMAINS: comma-separated e-mail domains whose scheduler hosts are their own UPN.')
param intakeOrganizerDomains string = ''

@description('Optional object id of the scheduling system\'s principal: Storage Queue Data Message Sender on appointments and Storage Queue Data Message Processor on join-urls (and EventGrid Data Sender on the topic when it is on). Empty: none.')
param schedulerPrincipalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
@description('Principal type of schedulerPrincipalId.')
param schedulerPrincipalType string = 'ServicePrincipal'

@description('Create an Event Grid topic (CloudEvents 1.0 input, Entra-only) that delivers into the appointments queue.')
param eventGridTopic bool = false

@allowed([
  512
  2048
  4096
])
@description('Memory per Flex Consumption instance, in MB.')
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
@description('Upper bound on Flex Consumption instances. It also bounds the load put on Microsoft Graph.')
param maximumInstanceCount int = 40

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
@description('Storage replication. Geo-redundant by default; use Standard_ZRS or Standard_LRS in a region without a paired region.')
param storageSkuName string = 'Standard_GRS'

@description('Zone-redundant Flex Consumption plan (only in regions that support it).')
param zoneRedundant bool = false

@description('Optional: resource group name (default rg-<environmentName>).')
param resourceGroupName string = ''

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}'

// Every queue, container and table the app uses lives in ONE storage account, reached through the
// AzureWebJobsStorage connection. Names must match the code (queue names: 3-63 lowercase chars and hyphens).
var queueNames = [
  'appointments'
  'appointments-poison'
  'appointments-rejected'
  'join-urls'
  'webhook-outbox'
  'webhook-outbox-poison'
  'webhook-dead-letter'
  'sms-outbox'
  'sms-outbox-poison'
  'sms-failed'
  'attendance-checks'
  'attendance-checks-poison'
  'attendance'
  'calendar-notifications'
  'calendar-notifications-poison'
]
var tokenVaultContainerName = 'token-vault'
// Original messages too big to copy into their rejection or dead-letter record (MESSAGE_OVERFLOW_CONTAINER).
var messageOverflowContainerName = 'message-overflow'
// Parked messages archived before their queue lifetime ends (PARKED_ARCHIVE_CONTAINER; docs/reliability.md).
var parkedArchiveContainerName = 'parked-archive'
var idempotencyTableName = 'idempotency'
var appointmentsTableName = 'appointments'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity './app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring './app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module storage './app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    skuName: storageSkuName
    queueNames: queueNames
    containerNames: [
      deploymentContainerName
      tokenVaultContainerName
      messageOverflowContainerName
      parkedArchiveContainerName
    ]
    tableNames: [
      idempotencyTableName
      appointmentsTableName
    ]
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module keyVault './app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    entraClientSecret: entraAppCredential == 'client_secret' ? entraClientSecret : ''
    entraCertificateName: entraCertificateName
    webhookSecret: webhookSecret
    calcomWebhookSecret: calcomWebhookSecret
    calendlyWebhookSigningKey: calendlyWebhookSigningKey
    intakeWebhookSecret: intakeWebhookSecret
    readerPrincipalId: identity.outputs.principalId
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module rbac './app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    managedIdentityPrincipalId: identity.outputs.principalId
    tokenVaultContainerName: tokenVaultContainerName
    messageOverflowContainerName: messageOverflowContainerName
    parkedArchiveContainerName: parkedArchiveContainerName
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalType: operatorPrincipalType
  }
}

module functionApp './app/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    zoneRedundant: zoneRedundant
    entraTenantId: entraTenantId
    entraClientId: entraClientId
    entraTenancy: entraTenancy
    entraAllowedTenants: entraAllowedTenants
    entraAppCredential: entraAppCredential
    entraClientSecretUri: keyVault.outputs.entraClientSecretUri
    entraCertificateSecretUri: keyVault.outputs.entraCertificateSecretUri
    webhookUrl: webhookUrl
    webhookSecretUri: keyVault.outputs.webhookSecretUri
    webhookAllowedHosts: webhookAllowedHosts
    joinWebUrlLookups: joinWebUrlLookups
    tokenVaultContainerName: tokenVaultContainerName
    idempotencyTableName: idempotencyTableName
    calcomWebhookSecretUri: keyVault.outputs.calcomWebhookSecretUri
    calendlyWebhookSigningKeyUri: keyVault.outputs.calendlyWebhookSigningKeyUri
    intakeWebhookSecretUri: keyVault.outputs.intakeWebhookSecretUri
    intakeOrganizerMap: intakeOrganizerMap
    intakeOrganizerDomains: intakeOrganizerDomains
    appointmentsTableName: appointmentsTableName
    meetingManagement: meetingManagement
    clientSms: clientSms
    clientSmsReminder: clientSmsReminder
    attendanceReports: attendanceReports
    attendanceGraceMinutes: attendanceGraceMinutes
    meetingKind: meetingKind
    graphNotificationBaseUrl: graphNotificationBaseUrl
  }
  // The host must be able to reach storage, App Insights and the Key Vault references on first start.
  dependsOn: [
    rbac
  ]
}

module alerts './app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: '${abbrs.insightsScheduledQueryRules}${resourceToken}'
    actionGroupName: '${abbrs.insightsActionGroups}${resourceToken}'
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    alertEmail: alertEmail
  }
}

module schedulerAccess './app/scheduler-access.bicep' = if (!empty(schedulerPrincipalId)) {
  name: 'scheduler-access'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    schedulerPrincipalId: schedulerPrincipalId
    schedulerPrincipalType: schedulerPrincipalType
  }
}

module eventGrid './app/eventgrid.bicep' = if (eventGridTopic) {
  name: 'eventgrid'
  scope: rg
  params: {
    name: '${abbrs.eventGridDomainsTopics}${resourceToken}'
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    actionGroupId: alerts.outputs.actionGroupId
    schedulerPrincipalId: schedulerPrincipalId
    schedulerPrincipalType: schedulerPrincipalType
  }
}

module workbook './app/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    displayName: 'Virtual appointment join links (${environmentName})'
  }
}

// Outputs become azd environment values (.azure/<env>/.env).
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output SERVICE_API_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_NAME string = functionApp.outputs.name
output SERVICE_API_URI string = functionApp.outputs.uri
output ENTRA_REDIRECT_URI string = '${functionApp.outputs.uri}/api/auth/callback'
// The federated identity credential the app registration needs for entraAppCredential=federated (docs/deploy.md):
// issuer, subject (the managed identity's principal id) and audience; infra/graph/app-registration.bicep takes them.
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output ENTRA_FEDERATED_CREDENTIAL_ISSUER string = '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
output ENTRA_FEDERATED_CREDENTIAL_AUDIENCE string = 'api://AzureADTokenExchange'
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output EVENT_GRID_TOPIC_ENDPOINT string = eventGridTopic ? eventGrid.outputs.endpoint : ''
output SERVICE_API_INTAKE_URLS string = '${functionApp.outputs.uri}/api/intake/{calcom|calendly|standard-webhooks}?code=<function key>'
