// The one storage account behind the AzureWebJobsStorage connection: Functions host state, the Flex
// Consumption deployment package container, the app's queues, the token-vault container and the
// idempotency table. Shared keys are disabled: in Azure every client authenticates with Entra ID (the app's
// managed identity); only the local stack (Azurite) uses a connection string.
@minLength(3)
@maxLength(24)
param name string
param location string
param tags object = {}
param queueNames array
param containerNames array
param tableNames array

@description('Workspace that receives the storage resource logs (read, write, delete) of blobs, queues and tables.')
param logAnalyticsWorkspaceId string

@description('Replication. Geo-redundant by default (the token vault holds refresh tokens that cannot be recreated without the organizer); pick Standard_ZRS or Standard_LRS in a region without a paired region.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param skuName string = 'Standard_GRS'

@minValue(1)
@maxValue(365)
@description('Days a deleted blob or container (token vault included) can be restored.')
param softDeleteRetentionDays int = 7

@description('Also log queue and table reads. Off by default: the Functions host polls its trigger queues every few seconds, so read logs cost far more than they tell. Blob reads (token vault access) are always logged.')
param logQueueAndTableReads bool = false

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  // checkov:skip=CKV_AZURE_35:Flex Consumption without VNet integration reaches storage over its public endpoint; access is Entra-only (allowSharedKeyAccess false) and RBAC-scoped to the app identity.
  // checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35: this template has no VNet/private endpoints, so the public endpoint stays enabled; no keys or SAS can be used against it.
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    isLocalUserEnabled: false
    isSftpEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }

  resource blobService 'blobServices' = {
    name: 'default'
    properties: {
      deleteRetentionPolicy: {
        enabled: true
        days: softDeleteRetentionDays
      }
      containerDeleteRetentionPolicy: {
        enabled: true
        days: softDeleteRetentionDays
      }
    }
  }

  resource queueService 'queueServices' = {
    name: 'default'
  }

  resource tableService 'tableServices' = {
    name: 'default'
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for containerName in containerNames: {
  parent: storage::blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}]

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: storage::queueService
  name: queueName
}]

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for tableName in tableNames: {
  parent: storage::tableService
  name: tableName
}]

var writeDeleteLogs = [
  {
    category: 'StorageWrite'
    enabled: true
  }
  {
    category: 'StorageDelete'
    enabled: true
  }
]
var readLogs = [
  {
    category: 'StorageRead'
    enabled: true
  }
]

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'storage-logs'
  scope: storage::blobService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: concat(readLogs, writeDeleteLogs)
  }
}

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'storage-logs'
  scope: storage::queueService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: logQueueAndTableReads ? concat(readLogs, writeDeleteLogs) : writeDeleteLogs
  }
}

resource tableDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'storage-logs'
  scope: storage::tableService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: logQueueAndTableReads ? concat(readLogs, writeDeleteLogs) : writeDeleteLogs
  }
}

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
