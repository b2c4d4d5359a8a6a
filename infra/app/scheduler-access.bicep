// Least privilege for the scheduling system's principal: it may add messages to `appointments` (Storage Queue
// Data Message Sender) and read and delete messages on `join-urls` (Storage Queue Data Message Processor),
// each scoped to that one queue, and nothing else in the account.
param storageAccountName string
param schedulerPrincipalId string
param schedulerPrincipalType string = 'ServicePrincipal'
param appointmentsQueueName string = 'appointments'
param resultsQueueName string = 'join-urls'

// Storage Queue Data Message Sender: add messages only.
var queueMessageSenderRoleId = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
// Storage Queue Data Message Processor: peek, receive and delete messages only.
var queueMessageProcessorRoleId = '8a0f0c08-91a1-4084-bc3d-661d67233fed'

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storageAccount
  name: 'default'
}

resource appointmentsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: appointmentsQueueName
}

resource resultsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: resultsQueueName
}

resource schedulerSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appointmentsQueue.id, schedulerPrincipalId, queueMessageSenderRoleId)
  scope: appointmentsQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueMessageSenderRoleId)
    principalId: schedulerPrincipalId
    principalType: schedulerPrincipalType
  }
}

resource schedulerProcessor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resultsQueue.id, schedulerPrincipalId, queueMessageProcessorRoleId)
  scope: resultsQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueMessageProcessorRoleId)
    principalId: schedulerPrincipalId
    principalType: schedulerPrincipalType
  }
}
