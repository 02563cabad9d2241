#!/usr/bin/env node
// The load-test workload done the way many teams build follow-ups: every follow-up a delayed
// BullMQ job on Redis, one queue per mailbox or number so that BullMQ's per-queue limiter holds
// that sender's per-minute limit, one worker per queue sending over HTTP to the same
// wire-level fakes followup-loadtest uses. Prints the figures followup-loadtest prints.
//
//   node run.mjs --scenario FILE --followup PATH/TO/followup [--json]
//
// starts a Redis (redis-server from PATH, on a free loopback port, no persistence) and
// `followup fakes` with the scenario's limits, latency and faults, and stops both at the end.
// `--redis URL` and `--fakes FAKES.json` (the line `followup fakes` prints) use running ones
// instead; that Redis must be empty, since the run refuses to mix its jobs with others.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';
import { readScenario } from './scenario.mjs';
import { contactRow, render, rowIsValid } from './workload.mjs';
import { percentile, redisCpuSeconds, startMemorySampler } from './measure.mjs';

const WORKER_CONCURRENCY = 8;
const ATTEMPTS = 5;
const PROGRESS_PERIOD_MS = 2000;

function requireLoopback(url, what) {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  if (!(host === 'localhost' || host === '::1' || /^127\./.test(host))) {
    throw new Error(`${what} ${url}: only loopback addresses are allowed`);
  }
}

function options() {
  const { values } = parseArgs({
    options: {
      scenario: { type: 'string' },
      redis: { type: 'string' },
      fakes: { type: 'string' },
      followup: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  if (!values.scenario) throw new Error('--scenario is required');
  if (!values.fakes && !values.followup) throw new Error('pass --followup PATH (or --fakes FILE)');
  if (values.redis) requireLoopback(values.redis, '--redis');
  return { ...values, scenario: readScenario(values.scenario) };
}

/** Checks the URLs `followup fakes` printed: each must be loopback. */
function checkFakeUrls(fakes, source) {
  for (const name of ['gmail', 'twilio']) {
    if (!fakes[name]) throw new Error(`${source}: no "${name}" URL`);
    requireLoopback(fakes[name], `${source}: ${name}`);
  }
  return fakes;
}

/** Returns a TCP port on 127.0.0.1 that was free a moment ago. */
async function freePort() {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

/** Starts a process whose end the run waits for at exit; its output goes to stderr. */
function startChild(command, args) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  child.on('error', (error) => process.stderr.write(`${command}: ${error.message}\n`));
  return child;
}

/** Starts a Redis without persistence on a free loopback port and waits until it replies to PING. */
async function startRedis() {
  const port = await freePort();
  const child = startChild('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
  child.stdout.resume();
  const url = `redis://127.0.0.1:${port}`;
  const probe = new IORedis(url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
  // Refused connections while Redis starts are expected; the loop below retries them.
  probe.on('error', () => {});
  for (let attempt = 0; attempt < 100; attempt += 1) {
    try {
      await probe.connect();
      await probe.ping();
      await probe.quit();
      return { child, url };
    } catch {
      probe.disconnect();
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  child.kill();
  throw new Error('redis-server did not respond to PING within 10 s; is redis-server on PATH?');
}

/** Starts `followup fakes` with the scenario's limits, latency and faults; reads its URLs. */
async function startFakes(followup, scenario) {
  const perMinute = Math.max(scenario.limits.gmail.per_minute, scenario.limits.twilio.per_minute);
  const perDay = Math.max(scenario.limits.gmail.per_day, scenario.limits.twilio.per_day);
  const child = startChild(followup, [
    'fakes',
    '--per-minute', String(perMinute),
    '--per-day', String(perDay),
    '--latency-ms', String(scenario.fakes.latencyMs),
    '--faults', scenario.fakes.faults,
  ]);
  const lines = createInterface({ input: child.stdout });
  const [line] = await once(lines, 'line');
  lines.close();
  child.stdout.resume();
  return { child, urls: checkFakeUrls(JSON.parse(line), `${followup} fakes`) };
}

/** RFC 2047 form of a header value, so that names such as Zoë survive any mail parser. */
function encodedWord(text) {
  return /^[\x20-\x7e]*$/.test(text) ? text : `=?UTF-8?B?${Buffer.from(text).toString('base64')}?=`;
}

function gmailRaw(from, to, subject, body) {
  const message = [
    `From: ${from}`,
    `To: ${to}`,
    `Subject: ${encodedWord(subject)}`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: base64',
    '',
    Buffer.from(body).toString('base64'),
  ].join('\r\n');
  return Buffer.from(message).toString('base64url');
}

/** Returns the sender of tenant `tenant`: a Gmail mailbox and a Twilio account and number. */
function senderOf(tenant) {
  const hex = tenant.toString(16).padStart(32, '0');
  const areaCode = [202, 212, 305, 312, 415, 512, 617, 206][Math.floor(tenant / 100) % 8];
  return {
    gmailToken: `baseline-mailbox-${tenant}`,
    accountSid: `AC${hex}`,
    authToken: `baseline-auth-${tenant}`,
    from: `+1${areaCode}55501${String(tenant % 100).padStart(2, '0')}`,
  };
}

/** Hands one follow-up to its provider; throws on anything but success so BullMQ retries. */
async function send(fakes, job) {
  const { channel, tenant, to, subject, body } = job.data;
  const sender = senderOf(tenant);
  let response;
  if (channel === 'email') {
    response = await fetch(`${fakes.gmail.replace(/\/$/, '')}/gmail/v1/users/me/messages/send`, {
      method: 'POST',
      headers: { authorization: `Bearer ${sender.gmailToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ raw: gmailRaw('me', to, subject, body) }),
    });
  } else {
    const form = new URLSearchParams({ To: to, From: sender.from, Body: body });
    const credentials = Buffer.from(`${sender.accountSid}:${sender.authToken}`).toString('base64');
    const url = `${fakes.twilio.replace(/\/$/, '')}/2010-04-01/Accounts/${sender.accountSid}/Messages.json`;
    response = await fetch(url, {
      method: 'POST',
      headers: { authorization: `Basic ${credentials}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: form,
    });
  }
  await response.arrayBuffer();
  if (!response.ok) throw new Error(`${channel} send failed with status ${response.status}`);
}

/**
 * Queues the follow-ups of every tenant in uploads of `rowsPerUpload` rows, and records in
 * `expected` each job's due instant: when its upload was acknowledged, plus the step's delay,
 * which is how followup-loadtest dates the engine's follow-ups.
 */
async function enqueue(scenario, queueOf, progress, expected) {
  const invalidPerMillion = Math.round(scenario.invalidFraction * 1_000_000);
  for (let tenant = 0; tenant < scenario.tenants; tenant += 1) {
    for (let start = 0; start < scenario.contactsPerTenant; start += scenario.rowsPerUpload) {
      const end = Math.min(scenario.contactsPerTenant, start + scenario.rowsPerUpload);
      const byQueue = new Map();
      const batch = [];
      for (let index = start; index < end; index += 1) {
        const row = contactRow(tenant, index, invalidPerMillion);
        progress.rows += 1;
        if (!rowIsValid(row)) continue;
        for (const step of scenario.steps) {
          const queue = queueOf(tenant, step.channel);
          const jobId = `${row.externalId}-s${step.index}`;
          const data = {
            channel: step.channel,
            tenant,
            to: step.channel === 'email' ? row.email : row.phone,
            subject: render(step.subject, row),
            // The reference lets the check find each follow-up among the fakes' receipts.
            body: `${render(step.body, row)}\nref ${jobId}`,
          };
          const opts = {
            jobId,
            delay: step.delayMs,
            attempts: ATTEMPTS,
            backoff: { type: 'exponential', delay: 1000 },
            removeOnComplete: true,
            removeOnFail: false,
          };
          if (!byQueue.has(queue)) byQueue.set(queue, []);
          byQueue.get(queue).push({ name: step.channel, data, opts });
          batch.push([jobId, step.delayMs]);
        }
      }
      await Promise.all([...byQueue].map(([queue, list]) => queue.addBulk(list)));
      const acknowledged = Date.now();
      for (const [jobId, delayMs] of batch) expected.set(jobId, acknowledged + delayMs);
    }
  }
}

/**
 * Finds each expected follow-up among the fakes' receipts: how many never arrived, how many
 * arrived more than once, and how late each first arrival was against its due instant.
 */
async function checkReceipts(fakes, expected) {
  const base = new URL(fakes.gmail).origin;
  const received = await (await fetch(`${base}/_fake/received`)).json();
  const stats = await (await fetch(`${base}/_fake/stats`)).json();
  const seen = new Map();
  const lateness = [];
  let firstReceipt = Infinity;
  let lastReceipt = 0;
  for (const message of received) {
    const ref = /\nref (\S+)\s*$/.exec(message.body ?? '')?.[1];
    if (!ref || !expected.has(ref)) continue;
    const count = (seen.get(ref) ?? 0) + 1;
    seen.set(ref, count);
    const at = Date.parse(message.received_at);
    firstReceipt = Math.min(firstReceipt, at);
    lastReceipt = Math.max(lastReceipt, at);
    if (count === 1) lateness.push(Math.max(0, at - expected.get(ref)));
  }
  let lost = 0;
  let duplicates = 0;
  for (const ref of expected.keys()) {
    const count = seen.get(ref) ?? 0;
    if (count === 0) lost += 1;
    if (count > 1) duplicates += count - 1;
  }
  lateness.sort((a, b) => a - b);
  return {
    lost,
    duplicates,
    lateness,
    receiptSeconds: Math.max((lastReceipt - firstReceipt) / 1000, 0.001),
    rateLimitViolations: stats.rate_limit_violations ?? 0,
  };
}

async function main() {
  const settings = options();
  const { scenario, json } = settings;
  const children = [];
  try {
    let fakes;
    if (settings.fakes) {
      fakes = checkFakeUrls(JSON.parse(readFileSync(settings.fakes, 'utf8')), settings.fakes);
    } else {
      const started = await startFakes(settings.followup, scenario);
      children.push(started.child);
      fakes = started.urls;
    }
    let redisUrl = settings.redis;
    if (!redisUrl) {
      const started = await startRedis();
      children.push(started.child);
      redisUrl = started.url;
    }
    await runScenario(scenario, fakes, redisUrl, json);
  } finally {
    for (const child of children) child.kill();
  }
}

async function runScenario(scenario, fakes, redisUrl, json) {
  const connections = [];
  const connection = () => {
    const client = new IORedis(redisUrl, { maxRetriesPerRequest: null });
    connections.push(client);
    return client;
  };
  const redis = connection();
  if ((await redis.dbsize()) > 0) throw new Error(`${redisUrl} is not empty; start a fresh Redis for the run`);

  const sampler = startMemorySampler(redis);
  const redisCpuBefore = await redisCpuSeconds(redis);
  const nodeCpuBefore = process.cpuUsage();

  const queues = new Map();
  const workers = [];
  const expected = new Map();
  const done = { sent: 0, failed: 0 };
  const sharedConnection = connection();
  const queueOf = (tenant, channel) => {
    const provider = channel === 'email' ? 'gmail' : 'twilio';
    const name = `t${tenant}-${provider}-${channel}`;
    if (!queues.has(name)) {
      const queue = new Queue(name, { connection: sharedConnection });
      const limit = scenario.limits[provider];
      const worker = new Worker(
        name,
        (job) => send(fakes, job),
        {
          connection: connection(),
          concurrency: WORKER_CONCURRENCY,
          limiter: { max: limit.per_minute, duration: 60_000 },
        },
      );
      worker.on('completed', () => {
        done.sent += 1;
      });
      worker.on('failed', (job) => {
        if (job && job.attemptsMade >= ATTEMPTS) done.failed += 1;
      });
      worker.on('error', (error) => process.stderr.write(`worker ${name}: ${error.message}\n`));
      queues.set(name, queue);
      workers.push(worker);
    }
    return queues.get(name);
  };

  const progress = { rows: 0 };
  const totalRows = scenario.tenants * scenario.contactsPerTenant;
  const started = Date.now();
  const ticker = setInterval(() => {
    const seconds = (Date.now() - started) / 1000;
    const settled = done.sent + done.failed;
    const rate = settled / Math.max(seconds, 0.001);
    const remaining = expected.size - settled;
    const eta = rate > 0 && progress.rows === totalRows ? `${Math.ceil(remaining / rate)} s` : '?';
    process.stderr.write(
      `baseline: ${progress.rows}/${totalRows} rows queued, ${done.sent} sent, ${done.failed} failed, ` +
        `${rate.toFixed(0)} settled/s, eta ${eta}\n`,
    );
  }, PROGRESS_PERIOD_MS);

  await enqueue(scenario, queueOf, progress, expected);
  const jobs = expected.size;
  const ingestSeconds = (Date.now() - started) / 1000;

  const deadline = started + scenario.timeoutSeconds * 1000;
  while (done.sent + done.failed < jobs && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const timedOut = done.sent + done.failed < jobs;
  clearInterval(ticker);

  const nodeCpu = process.cpuUsage(nodeCpuBefore);
  const redisCpu = (await redisCpuSeconds(redis)) - redisCpuBefore;
  await Promise.all(workers.map((worker) => worker.close()));
  await Promise.all([...queues.values()].map((queue) => queue.close()));
  const peaks = await sampler.stop();
  const receipts = await checkReceipts(fakes, expected);
  await Promise.all(connections.map((client) => client.quit()));

  const { lateness } = receipts;
  const cpuSeconds = (nodeCpu.user + nodeCpu.system) / 1e6 + redisCpu;
  const report = {
    system: 'bullmq',
    scenario: scenario.name,
    rows: totalRows,
    follow_ups: jobs,
    sent: done.sent,
    failed: done.failed,
    timed_out: timedOut,
    ingest_rows_per_s: totalRows / Math.max(ingestSeconds, 0.001),
    sends_per_s: done.sent / receipts.receiptSeconds,
    lateness_ms: {
      p50: percentile(lateness, 0.5),
      p99: percentile(lateness, 0.99),
      max: lateness.length ? lateness[lateness.length - 1] : 0,
    },
    peak_rss_bytes: peaks.nodeRssBytes + peaks.redisRssBytes,
    peak_rss_bytes_by_process: { node: peaks.nodeRssBytes, redis: peaks.redisRssBytes },
    cpu_seconds_per_10k_sends: done.sent > 0 ? (cpuSeconds * 10_000) / done.sent : null,
    lost: receipts.lost,
    duplicates: receipts.duplicates,
    rate_limit_violations: receipts.rateLimitViolations,
  };
  if (json) {
    process.stdout.write(`${JSON.stringify(report)}\n`);
  } else {
    for (const [key, value] of Object.entries(report)) {
      process.stdout.write(`${key}: ${typeof value === 'object' ? JSON.stringify(value) : value}\n`);
    }
  }
  const passed = !timedOut && receipts.lost === 0 && receipts.duplicates === 0 && receipts.rateLimitViolations === 0;
  process.exitCode = passed ? 0 : 1;
}

main().catch((error) => {
  process.stderr.write(`error: ${error.message}\n`);
  process.exitCode = 2;
});
