"""Names of the queues, and of the storage connection, that the functions bind to."""

# The connection setting prefix the host and the app share: a connection string locally,
# identity-based `AzureWebJobsStorage__*` settings in Azure.
STORAGE_CONNECTION = "AzureWebJobsStorage"

APPOINTMENTS = "appointments"
APPOINTMENTS_POISON = "appointments-poison"
APPOINTMENTS_REJECTED = "appointments-rejected"
JOIN_URLS = "join-urls"

WEBHOOK_OUTBOX = "webhook-outbox"
WEBHOOK_OUTBOX_POISON = "webhook-outbox-poison"
WEBHOOK_DEAD_LETTER = "webhook-dead-letter"

# Client SMS (Teams Premium) apart from the join link: a job per SMS, and a record per SMS that failed.
SMS_OUTBOX = "sms-outbox"
SMS_OUTBOX_POISON = "sms-outbox-poison"
SMS_FAILED = "sms-failed"

# Attendance (ATTENDANCE_REPORTS): one check per appointment after its end, and its result record.
ATTENDANCE_CHECKS = "attendance-checks"
ATTENDANCE_CHECKS_POISON = "attendance-checks-poison"
ATTENDANCE = "attendance"

# Calendar sync (MEETING_KIND=calendar): Graph's change and lifecycle notifications, one per message.
CALENDAR_NOTIFICATIONS = "calendar-notifications"
CALENDAR_NOTIFICATIONS_POISON = "calendar-notifications-poison"

ALL_QUEUES = (APPOINTMENTS, APPOINTMENTS_POISON, APPOINTMENTS_REJECTED, JOIN_URLS,
              WEBHOOK_OUTBOX, WEBHOOK_OUTBOX_POISON, WEBHOOK_DEAD_LETTER, SMS_OUTBOX, SMS_OUTBOX_POISON, SMS_FAILED,
              ATTENDANCE_CHECKS, ATTENDANCE_CHECKS_POISON, ATTENDANCE, CALENDAR_NOTIFICATIONS,
              CALENDAR_NOTIFICATIONS_POISON)

# Where a message waits for a person: each is alerted on (infra/app/alerts.bicep), has a runbook entry
# (docs/runbooks.md), goes back with `python -m shared.replay`, and is archived before it could expire.
PARKED_QUEUES = (APPOINTMENTS_REJECTED, APPOINTMENTS_POISON, WEBHOOK_DEAD_LETTER, WEBHOOK_OUTBOX_POISON,
                 SMS_FAILED, SMS_OUTBOX_POISON, ATTENDANCE_CHECKS_POISON, CALENDAR_NOTIFICATIONS_POISON)
