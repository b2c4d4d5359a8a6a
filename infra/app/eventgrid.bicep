// Event Grid as a managed front door for schedulers that publish CloudEvents: a topic (CloudEvents 1.0 input
// schema, Entra-only: local auth off) whose storage-queue subscription delivers into `appointments` with the
// topic's own identity, retries, and dead-letters what it cannot deliver to a blob container; both alerted on.
// The scheduler's principal gets EventGrid Data Sender on the topic only.
param name string
param location string
param tags object = {}
param storageAccountName string
param appointmentsQueueName string = 'appointments'
param deadLetterContainerName string = 'eventgrid-dead-letter'
param actionGroupId string
@description('Scheduler principal allowed to publish; empty: none yet.')
param schedulerPrincipalId string = ''
param schedulerPrincipalType string = 'ServicePrincipal'
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

// EventGrid Data Sender: publish events to the topic, nothing else.
var eventGridDataSenderRoleId = 'd5a91429-5739-47e2-a06b-3470a27159e7'
// Storage Queue Data Message Sender: the topic's identity adds messages to `appointments` only.
var queueMessageSenderRoleId = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
// Storage Blob Data Contributor: the topic's identity writes dead-lettered events to its container only.
var blobDataContributorRoleId = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

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

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storageAccount
  name: 'default'
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource topic 'Microsoft.EventGrid/topics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  // checkov:skip=CKV_AZURE_106:Schedulers publish from outside Azure over the public endpoint; local (key and SAS) auth is off, so only Entra principals holding EventGrid Data Sender can publish.
  // checkov:skip=CKV_AZURE_193:Same reason as CKV_AZURE_106: no private endpoint in this template, so public network access stays enabled for Entra-authenticated publishers.
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

resource topicQueueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appointmentsQueue.id, topic.id, queueMessageSenderRoleId)
  scope: appointmentsQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueMessageSenderRoleId)
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource topicDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, topic.id, blobDataContributorRoleId)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobDataContributorRoleId)
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource schedulerSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(schedulerPrincipalId)) {
  name: guid(topic.id, schedulerPrincipalId, eventGridDataSenderRoleId)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventGridDataSenderRoleId)
    principalId: schedulerPrincipalId
    principalType: schedulerPrincipalType
  }
}

resource subscription 'Microsoft.EventGrid/topics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'appointments-queue'
  properties: {
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    filter: {
      includedEventTypes: [
        'appointment.created'
        'appointment.rescheduled'
        'appointment.cancelled'
      ]
    }
    // Event Grid writes each event as one base64 message, the encoding the queue trigger expects.
    deliveryWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      destination: {
        endpointType: 'StorageQueue'
        properties: {
          resourceId: storageAccount.id
          queueName: appointmentsQueueName
          queueMessageTimeToLiveInSeconds: -1
        }
      }
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storageAccount.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
  dependsOn: [
    topicQueueSender
    topicDeadLetterWriter
  ]
}

// Alerted on: events Event Grid dead-lettered, and delivery attempts into the queue that failed.
var topicAlerts = [
  {
    key: 'dead-lettered'
    metric: 'DeadLetteredCount'
    description: 'Event Grid dead-lettered appointment events: read them in the ${deadLetterContainerName} container, fix the cause (roles, queue), and publish them again.'
  }
  {
    key: 'delivery-failures'
    metric: 'DeliveryAttemptFailCount'
    description: 'Event Grid failed to deliver appointment events into the appointments queue; it retries, then dead-letters.'
  }
]

resource alerts 'Microsoft.Insights/metricAlerts@2018-03-01' = [for alert in topicAlerts: {
  name: '${name}-${alert.key}'
  location: 'global'
  tags: tags
  properties: {
    description: alert.description
    severity: 2
    enabled: true
    scopes: [
      topic.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: alert.metric
          criterionType: 'StaticThresholdCriterion'
          metricName: alert.metric
          metricNamespace: 'Microsoft.EventGrid/topics'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Total'
        }
      ]
    }
    actions: [
      {
        actionGroupId: actionGroupId
      }
    ]
  }
}]

output endpoint string = topic.properties.endpoint
output name string = topic.name
