// A scheduling system's side, in Node.js: send an appointment event, read its result, verify a webhook.
//
//   node examples/node/scheduler.mjs --organizer scheduler@contoso.com --join-web-url 'https://teams.microsoft.com/l/meetup-join/...'
//
// In Azure, set STORAGE_QUEUE_URL=https://<account>.queue.core.windows.net (DefaultAzureCredential signs in; the
// scheduler's principal holds Storage Queue Data Message Sender on appointments and Message Processor on
// join-urls). Locally, set STORAGE_CONNECTION_STRING to Azurite's. WEBHOOK_SECRET is the app's whsec_ secret.
import { createServer } from "node:http";
import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";
import { QueueClient } from "@azure/storage-queue";
import { Webhook } from "standardwebhooks";

function queue(name) {
  if (process.env.STORAGE_CONNECTION_STRING) {
    return new QueueClient(process.env.STORAGE_CONNECTION_STRING, name);
  }
  return import("@azure/identity").then(
    ({ DefaultAzureCredential }) => new QueueClient(`${process.env.STORAGE_QUEUE_URL}/${name}`, new DefaultAzureCredential()),
  );
}

// Step 1: the event on `appointments`, base64-encoded as the Functions host expects.
async function sendEvent(event) {
  const appointments = await queue("appointments");
  await appointments.sendMessage(Buffer.from(JSON.stringify(event)).toString("base64"));
}

// Step 2: this appointment's result from `join-urls` (received, then deleted once handled).
async function readResult(appointmentId, timeoutMs) {
  const results = await queue("join-urls");
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const { receivedMessageItems } = await results.receiveMessages({ numberOfMessages: 32, visibilityTimeout: 30 });
    for (const message of receivedMessageItems) {
      const result = JSON.parse(Buffer.from(message.messageText, "base64").toString("utf8"));
      if (result.appointmentId === appointmentId) {
        await results.deleteMessage(message.messageId, message.popReceipt);
        return result;
      }
      // Someone else's result: a real scheduler handles every one; here it goes back for its owner.
      await results.updateMessage(message.messageId, message.popReceipt, undefined, 0);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  throw new Error(`no result for ${appointmentId} within ${timeoutMs} ms`);
}

// --8<-- [start:verify]
// Step 3: a webhook endpoint that verifies the Standard Webhooks signature before trusting the body.
function webhookEndpoint(secret, onWebhook) {
  const verifier = new Webhook(secret);
  return createServer((request, response) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => {
      try {
        const payload = verifier.verify(Buffer.concat(chunks).toString("utf8"), request.headers);
        onWebhook({ id: request.headers["webhook-id"], payload });
        response.writeHead(204).end();
      } catch {
        response.writeHead(401).end();
      }
    });
  });
}
// --8<-- [end:verify]

const { values: args } = parseArgs({
  options: {
    "appointment-id": { type: "string", default: `apt-${randomUUID().slice(0, 8)}` },
    organizer: { type: "string" },
    "online-meeting-id": { type: "string" },
    "join-web-url": { type: "string" },
    timeout: { type: "string", default: "60" },
  },
});
if (!args.organizer || !(args["online-meeting-id"] || args["join-web-url"])) {
  console.error("usage: scheduler.mjs --organizer <upn|id> (--online-meeting-id <id> | --join-web-url <url>)");
  process.exit(2);
}
const timeoutMs = Number(args.timeout) * 1000;
const received = [];
const server = webhookEndpoint(process.env.WEBHOOK_SECRET.split(",")[0], (hook) => received.push(hook));
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const event = {
  id: `evt-${randomUUID()}`,
  type: "appointment.created",
  appointmentId: args["appointment-id"],
  organizer: args.organizer,
  // The app posts this event's webhook here (the host must be on WEBHOOK_ALLOWED_HOSTS).
  callbackUrl: `http://127.0.0.1:${server.address().port}/hooks`,
  ...(args["online-meeting-id"] ? { onlineMeetingId: args["online-meeting-id"] } : { joinWebUrl: args["join-web-url"] }),
};
await sendEvent(event);
console.log(`sent ${event.id} for ${event.appointmentId}`);
const result = await readResult(event.appointmentId, timeoutMs);
console.log(`result: ${result.joinUrl}`);
const deadline = Date.now() + timeoutMs;
while (!received.length && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 200));
}
server.close();
if (!received.length) {
  console.error("no webhook arrived");
  process.exit(1);
}
console.log(`webhook ${received[0].id} ${received[0].payload.type} signature valid`);
