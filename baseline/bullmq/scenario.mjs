// Reads the load-test scenario files of loadtest/scenarios, so that the baseline runs the very
// workload followup-loadtest runs. Only the fields the baseline acts on are read; the others
// (ingest tuning of the engine, polling) have no counterpart here and are ignored on purpose.

import { readFileSync } from 'node:fs';
import { parse } from 'yaml';

const DEFAULT_STEPS = [
  { channel: 'email', delay: '0s', subject: 'Hello {{first_name|there}}', body: 'Hi {{first_name|there}}.' },
  { channel: 'sms', delay: '0s', body: 'Hi {{first_name|there}}.' },
];

/** Published limits the engine applies to a connection whose scenario names no limit. */
const PUBLISHED = { gmail: { per_minute: 60, per_day: 2000 }, twilio: { per_minute: 60, per_day: 2000 } };

/** What followup-loadtest gives a connection kind the scenario leaves out entirely. */
const UNNAMED = { per_minute: 6000, per_day: 1_000_000 };

/** Parses a delay such as `0s`, `15m`, `2d` or a number of seconds into milliseconds. */
export function delayMillis(value, where) {
  if (value === undefined || value === null) return 0;
  if (typeof value === 'number' && Number.isFinite(value) && value >= 0) return value * 1000;
  const match = /^(\d+)\s*(s|m|h|d)$/.exec(String(value).trim());
  if (!match) throw new Error(`${where}: delay ${JSON.stringify(value)} is not seconds or a number with s, m, h or d`);
  const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2]];
  return Number(match[1]) * unit;
}

/** Turns a parsed scenario document into the settings the baseline uses, with defaults. */
export function scenarioFromDocument(document, source) {
  const doc = document ?? {};
  const steps = (doc.sequence?.steps ?? DEFAULT_STEPS).map((step, index) => {
    const where = `${source}: sequence.steps[${index}]`;
    if (!['email', 'sms', 'call'].includes(step.channel)) {
      throw new Error(`${where}: channel ${JSON.stringify(step.channel)} is not email, sms or call`);
    }
    if (step.channel === 'call') {
      throw new Error(`${where}: the baseline sends email and SMS only; call steps have no counterpart`);
    }
    if (step.channel === 'email' && !step.subject) throw new Error(`${where}: an email step needs a subject`);
    return {
      index,
      channel: step.channel,
      delayMs: delayMillis(step.delay, where),
      subject: step.subject ?? '',
      body: step.body ?? '',
    };
  });
  if (doc.sequence?.window) {
    throw new Error(`${source}: sequence.window has no counterpart in the baseline; drop it for a comparison run`);
  }
  const limits = (provider) => {
    const named = doc.connections?.[provider];
    if (!named) return { ...UNNAMED };
    return {
      per_minute: named.per_minute ?? PUBLISHED[provider].per_minute,
      per_day: named.per_day ?? PUBLISHED[provider].per_day,
    };
  };
  return {
    name: doc.name ?? 'default',
    tenants: doc.tenants ?? 2,
    contactsPerTenant: doc.contacts_per_tenant ?? 500,
    rowsPerUpload: doc.rows_per_upload ?? 250,
    timeoutSeconds: doc.timeout_seconds ?? 300,
    seed: doc.seed ?? 1,
    invalidFraction: doc.invalid_fraction ?? 0.05,
    steps,
    limits: { gmail: limits('gmail'), twilio: limits('twilio') },
    fakes: { latencyMs: doc.fakes?.latency_ms ?? 0, faults: doc.fakes?.faults ?? 'none' },
  };
}

/** Reads and checks a scenario file. */
export function readScenario(path) {
  let document;
  try {
    document = parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new Error(`${path}: ${error.message}`);
  }
  return scenarioFromDocument(document, path);
}
