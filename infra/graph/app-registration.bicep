// The Entra app registration, declared through the Microsoft Graph Bicep extension: redirect URI, delegated Graph
// scopes, sign-in audience, and the federated identity credential that makes the function app's managed identity
// the app's credential (no secret). For operators allowed to create applications (Application Developer, or
// Application.ReadWrite.OwnedBy / .All; granting admin consent also needs DelegatedPermissionGrant.ReadWrite.All).
// The manual steps in docs/deploy.md do the same in the portal.
//
// Its own template, apart from infra/main.bicep: the offline checks of infra/ (pycep-parser in tests/infra, and
// checkov, which parses Bicep with pycep) cannot read the `extension` keyword (nor the lambdas below), and a
// deployment identity that may create resources should not need to create applications too.
//
//   az deployment group create -g <resource group> -f infra/graph/app-registration.bicep \
//     -p tenancy=multi redirectUri=$(azd env get-value ENTRA_REDIRECT_URI) \
//        managedIdentityPrincipalId=$(azd env get-value AZURE_MANAGED_IDENTITY_PRINCIPAL_ID)
//
// Deploy it once before `azd up` (no redirect URI or identity yet: it outputs the client id for ENTRA_CLIENT_ID),
// and again after, with both; the unique name makes a redeployment update the same registration.
extension microsoftGraphV1

@description('Unique name of the registration: redeploying with the same name updates it.')
param appUniqueName string = 'va-join-links'

@description('Display name organizers and administrators see on the sign-in and consent pages.')
param displayName string = 'Virtual appointment join links'

@allowed([
  'single'
  'multi'
])
@description('single: accounts of this tenant only (AzureADMyOrg). multi: any work or school tenant (AzureADMultipleOrgs); the app still serves only ENTRA_ALLOWED_TENANTS.')
param tenancy string = 'single'

@description('The connect page\'s redirect URI, https://<function app>/api/auth/callback (azd env get-value ENTRA_REDIRECT_URI). Admin consent comes back there too. Empty before the first deployment.')
param redirectUri string = ''

@description('Principal (object) id of the function app\'s user-assigned managed identity (azd env get-value AZURE_MANAGED_IDENTITY_PRINCIPAL_ID). Empty: no federated credential yet.')
param managedIdentityPrincipalId string = ''

@description('Events may carry a joinWebUrl: organizers then also consent to OnlineMeetings.Read (matches joinWebUrlLookups in main.bicep).')
param joinWebUrlLookups bool = true

@description('Grant admin consent in this tenant now (an oauth2PermissionGrant for all users). Other tenants\' administrators use the app\'s admin-consent link.')
param grantAdminConsent bool = false

var graphAppId = '00000003-0000-0000-c000-000000000000'
// Delegated only: getVirtualAppointmentJoinWebUrl supports no application permission.
var delegatedScopes = concat([
  'VirtualAppointment.Read'
  'offline_access'
  'openid'
  'profile'
], joinWebUrlLookups ? [
  'OnlineMeetings.Read'
] : [])

resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

resource app 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: appUniqueName
  displayName: displayName
  signInAudience: tenancy == 'multi' ? 'AzureADMultipleOrgs' : 'AzureADMyOrg'
  // Public client flows on: device-code connections (python -m shared.organizers connect-device).
  isFallbackPublicClient: true
  web: {
    redirectUris: empty(redirectUri) ? [] : [
      redirectUri
    ]
  }
  requiredResourceAccess: [
    {
      resourceAppId: graphAppId
      // Permission ids looked up by name on Graph's own service principal.
      resourceAccess: map(filter(graph.oauth2PermissionScopes, scope => contains(delegatedScopes, scope.value)), scope => {
        id: scope.id
        type: 'Scope'
      })
    }
  ]

  // The function app's managed identity is the app's credential: its token for api://AzureADTokenExchange is
  // the client assertion (ENTRA_APP_CREDENTIAL=federated). No secret to store, rotate or leak.
  resource managedIdentityCredential 'federatedIdentityCredentials@v1.0' = if (!empty(managedIdentityPrincipalId)) {
    name: '${app.uniqueName}/function-app-managed-identity'
    description: 'The function app\'s user-assigned managed identity (secretless app credential)'
    audiences: [
      'api://AzureADTokenExchange'
    ]
    issuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
    subject: managedIdentityPrincipalId
  }
}

resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: app.appId
}

resource adminConsent 'Microsoft.Graph/oauth2PermissionGrants@v1.0' = if (grantAdminConsent) {
  clientId: servicePrincipal.id
  consentType: 'AllPrincipals'
  resourceId: graph.id
  scope: join(delegatedScopes, ' ')
}

output clientId string = app.appId
output tenantId string = tenant().tenantId
output signInAudience string = app.signInAudience
