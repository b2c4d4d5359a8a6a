// Azure Monitor workbook over the app's Application Insights: throughput, latency, outcomes by reason and
// queue depths. The layout lives in workbook.json (edit it in the portal, then paste the gallery template
// JSON back there); the component id placeholder is filled in here.
param location string
param tags object = {}
param applicationInsightsId string
param displayName string

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, applicationInsightsId, 'va-join-links-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: applicationInsightsId
    version: 'Notebook/1.0'
    serializedData: replace(loadTextContent('./workbook.json'), '__APPLICATION_INSIGHTS_ID__', applicationInsightsId)
  }
}

output id string = workbook.id
