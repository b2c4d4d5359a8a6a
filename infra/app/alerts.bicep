// Alerts on the app's telemetry, e-mailed through one action group. All rules are log-search alerts scoped
// to the Application Insights component, so the queries use its tables (requests, traces, customMetrics; the
// app writes no customEvents). The app logs the custom dimensions event_id, appointment_id, organizer_hash,
// outcome, reason, graph_status, duration_ms and dequeue_count, and its queue_metrics timer emits the
// custom metric queue_depth with the dimension queue. docs/deploy.md explains what to do for each alert.
param namePrefix string
param actionGroupName string
param location string
param tags object = {}
param applicationInsightsId string
param alertEmail string

@description('Alert when more than this percentage of one function\'s invocations fail in the window.')
param failureRatePercent int = 5

@description('Minimum invocations of a function in the window before its failure rate is judged.')
param failureRateMinimumCount int = 10

@description('Alert when Graph throttling (429) shows up more than this many times in the window.')
param throttledThreshold int = 10

@description('Where a message waits for a person (shared/queues.py PARKED_QUEUES): one alert each, with its runbook entry in docs/runbooks.md.')
param parkedQueues array = [
  {
    queue: 'appointments-rejected'
    severity: 2
    meaning: 'Appointment events were rejected for good (reason in each record: organizer not connected, meeting not found, invalid event...). The scheduler got a .failed webhook.'
  }
  {
    queue: 'appointments-poison'
    severity: 1
    meaning: 'Appointment events failed five times with transient errors (Graph, Entra or storage down) and were given up on.'
  }
  {
    queue: 'webhook-dead-letter'
    severity: 1
    meaning: 'Webhooks the scheduler refused (4xx, redirect, no destination): the scheduler does not know of these results.'
  }
  {
    queue: 'webhook-outbox-poison'
    severity: 1
    meaning: 'Webhooks whose delivery kept failing (receiver down or slow) after every retry.'
  }
  {
    queue: 'sms-failed'
    severity: 3
    meaning: 'Client SMS (Teams Premium) that Graph refused; the join links are unaffected.'
  }
  {
    queue: 'sms-outbox-poison'
    severity: 2
    meaning: 'Client SMS jobs that kept failing with transient errors after every retry.'
  }
  {
    queue: 'attendance-checks-poison'
    severity: 2
    meaning: 'Attendance checks that kept failing with transient errors (storage or Graph down) after every retry: the scheduler has not been told who attended.'
  }
  {
    queue: 'calendar-notifications-poison'
    severity: 2
    meaning: 'Graph change notifications of organizers\' calendars that kept failing (storage or Graph down) after every retry: a change made in Outlook may not have reached the scheduler (the next resync repairs it; replay sooner).'
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'va-joinurl'
    enabled: true
    emailReceivers: [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var failureRateQuery = format('requests | summarize total = count(), failed = countif(success == false) by operation_Name | where total >= {0} | extend failurePercent = 100.0 * failed / total | project operation_Name, failurePercent', failureRateMinimumCount)

// The latest sample of one queue's depth. queue_metrics sends each reading once (a depth that could not be
// read sends nothing, so stale values never repeat): the newest sample in the window is the truth.
var parkedRules = [for parked in parkedQueues: {
  key: 'parked-${parked.queue}'
  displayName: 'Messages waiting in ${parked.queue}'
  description: '${parked.meaning} Runbook: docs/runbooks.md, section ${parked.queue} (what it means, the command that shows the messages, the command that replays them).'
  severity: parked.severity
  evaluationFrequency: 'PT5M'
  windowSize: 'PT15M'
  query: format('customMetrics | where name == \'queue_depth\' | extend queue = tostring(customDimensions.queue) | where queue == \'{0}\' | summarize arg_max(timestamp, valueMax) by queue | project queue, depth = valueMax', parked.queue)
  timeAggregation: 'Maximum'
  metricMeasureColumn: 'depth'
  dimension: 'queue'
  operator: 'GreaterThan'
  threshold: 0
}]

var queueMetricsMissingQuery = 'customMetrics | where name == \'queue_depth\' | summarize samples = count()'

var organizerQuery = 'traces | where tostring(customDimensions.stage) == \'appointment\' and tostring(customDimensions.reason) == \'organizer_not_connected\' | extend organizer_hash = tostring(customDimensions.organizer_hash) | summarize failures = count() by organizer_hash'

// One line per Graph answer (stage graph): each 429 counted once, and never a webhook receiver's or Entra's.
var throttledQuery = 'traces | where tostring(customDimensions.stage) == \'graph\' and tostring(customDimensions.graph_status) == \'429\' | summarize throttled = count()'

var baseRules = [
  {
    key: 'function-failures'
    displayName: 'Function failure rate above ${failureRatePercent}%'
    description: 'More than ${failureRatePercent}% of the invocations of one function failed in 15 minutes (at least ${failureRateMinimumCount} invocations). Transient Graph or storage errors are retried by the host; persistent ones end in appointments-poison.'
    severity: 2
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    query: failureRateQuery
    timeAggregation: 'Maximum'
    metricMeasureColumn: 'failurePercent'
    dimension: 'operation_Name'
    operator: 'GreaterThan'
    threshold: failureRatePercent
  }
  {
    key: 'queue-metrics-missing'
    displayName: 'Queue depth metrics stopped arriving'
    description: 'The queue_metrics timer sent no queue_depth sample for 30 minutes, so the dead-letter alert is blind. The app may be stopped, failing to start, or unable to reach storage or Application Insights.'
    severity: 3
    evaluationFrequency: 'PT15M'
    windowSize: 'PT30M'
    query: queueMetricsMissingQuery
    timeAggregation: 'Total'
    metricMeasureColumn: 'samples'
    dimension: ''
    operator: 'LessThan'
    threshold: 1
  }
  {
    key: 'organizer-not-connected'
    displayName: 'Organizer not connected'
    description: 'Events were rejected with reason organizer_not_connected: the stored refresh token of an organizer is missing, expired, revoked or blocked by Conditional Access. The organizer must connect again.'
    severity: 2
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    query: organizerQuery
    timeAggregation: 'Total'
    metricMeasureColumn: 'failures'
    dimension: 'organizer_hash'
    operator: 'GreaterThan'
    threshold: 0
  }
  {
    key: 'graph-throttling'
    displayName: 'Microsoft Graph throttling'
    description: 'Graph answered 429 more than ${throttledThreshold} times in 15 minutes. The app obeys Retry-After and re-enqueues events, so results are delayed; sustained throttling means the load is too high for the tenant or app.'
    severity: 3
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    query: throttledQuery
    timeAggregation: 'Total'
    metricMeasureColumn: 'throttled'
    dimension: ''
    operator: 'GreaterThan'
    threshold: throttledThreshold
  }
]

var rules = concat(baseRules, parkedRules)

resource logAlerts 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in rules: {
  name: '${namePrefix}-${rule.key}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: true
    evaluationFrequency: rule.evaluationFrequency
    windowSize: rule.windowSize
    scopes: [
      applicationInsightsId
    ]
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: rule.timeAggregation
          metricMeasureColumn: rule.metricMeasureColumn
          dimensions: empty(rule.dimension) ? [] : [
            {
              name: rule.dimension
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: rule.operator
          threshold: rule.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

output actionGroupId string = actionGroup.id
