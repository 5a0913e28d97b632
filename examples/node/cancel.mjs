// Publish one batch-cancel command with kafkajs and wait for its final event.
//
//   BROKER=127.0.0.1:9092 PROVIDER=openai BATCH_ID=batch_abc123 node cancel.mjs
//
// Environment: BROKER, PROVIDER, BATCH_ID (required); ACCOUNT (default "default"), REASON,
// COMMANDS_TOPIC / EVENTS_TOPIC (default batch-cancel.commands / batch-cancel.events), TIMEOUT_S (600).
// Exit codes match `batch-cancel publish --wait`: 0 stopped or accepted, 1 Kafka error, 2 bad input,
// 3 rejected, 4 gave_up, 5 invalid, 6 timeout.
//
// Why the order below: the events topic's end offsets are recorded BEFORE the command is sent and the
// consumer seeks to them, so a fast final event can never slip past a consumer that joined too late.
import { randomBytes, randomUUID } from "node:crypto";
import { Kafka, Partitioners, logLevel } from "kafkajs";

const env = (name, fallback) => process.env[name] ?? fallback;
const broker = env("BROKER", "127.0.0.1:9092");
const provider = env("PROVIDER");
const account = env("ACCOUNT", "default");
const batchId = env("BATCH_ID");
const commandsTopic = env("COMMANDS_TOPIC", "batch-cancel.commands");
const eventsTopic = env("EVENTS_TOPIC", "batch-cancel.events");
const timeoutMs = Number(env("TIMEOUT_S", "600")) * 1000;
const FAILURES = { rejected: 3, gave_up: 4, invalid: 5 };

if (!provider || !batchId) {
  console.error("set PROVIDER and BATCH_ID");
  process.exit(2);
}

const kafka = new Kafka({ clientId: "batch-cancel-node", brokers: broker.split(","), logLevel: logLevel.ERROR });
const admin = kafka.admin();
const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, idempotent: true });
const groupId = `batch-cancel-wait-${randomUUID()}`; // kafkajs needs a group; it is private and deleted at the end
const consumer = kafka.consumer({ groupId });

const commandId = randomUUID();
const command = {
  command_id: commandId,
  provider,
  account,
  batch_id: batchId,
  requested_by: "examples/node",
  requested_at: new Date().toISOString(),
  ...(process.env.REASON ? { reason: process.env.REASON } : {}),
};
// W3C trace context: the worker's spans join this trace (use your tracer's context if you have one).
const traceparent = `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`;

async function main() {
  await admin.connect();
  const ends = await admin.fetchTopicOffsets(eventsTopic); // positions fixed before sending
  await Promise.all([producer.connect(), consumer.connect()]);
  await consumer.subscribe({ topic: eventsTopic });

  let finish;
  const final = new Promise((resolve) => (finish = resolve));
  const seen = new Set();
  await consumer.run({
    eachMessage: async ({ message }) => {
      const header = message.headers?.ce_commandid?.toString();
      if (header !== undefined && header !== commandId) return;
      const event = JSON.parse(message.value.toString());
      if (event.command_id !== commandId || seen.has(event.event_id)) return;
      seen.add(event.event_id);
      console.log(`${event.observed_at} ${event.final ? `FINAL ${event.outcome}` : event.status}`);
      if (event.final) finish(event);
    },
  });
  for (const { partition, offset } of ends) consumer.seek({ topic: eventsTopic, partition, offset });

  await producer.send({
    topic: commandsTopic,
    acks: -1,
    messages: [
      {
        key: `${provider}/${account}/${batchId}`,
        value: JSON.stringify(command),
        headers: { traceparent, "content-type": "application/json" },
      },
    ],
  });
  console.log(`published ${commandId} traceparent=${traceparent}`);

  let timer;
  const timeout = new Promise((resolve) => (timer = setTimeout(() => resolve(null), timeoutMs)));
  const event = await Promise.race([final, timeout]);
  clearTimeout(timer);
  if (event === null) {
    console.error(`timeout: no final event for ${commandId}`);
    return 6;
  }
  const code = FAILURES[event.outcome] ?? 0;
  if (code) console.error(`${event.outcome}: ${JSON.stringify(event.detail)}`);
  return code;
}

let code = 1;
try {
  code = await main();
} catch (err) {
  console.error(`Kafka error: ${err.message}`);
} finally {
  await Promise.allSettled([consumer.disconnect(), producer.disconnect()]);
  await admin.deleteGroups([groupId]).catch(() => {});
  await admin.disconnect();
}
process.exit(code);
