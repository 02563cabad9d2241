// Prints two load-test reports side by side with followup's figure over BullMQ's, from the
// JSON objects `followup-loadtest --json` and `bullmq/run.mjs --json` print.

import { readFileSync } from 'node:fs';

const [followupFile, bullmqFile] = process.argv.slice(2);
if (!followupFile || !bullmqFile) {
  process.stderr.write('usage: node ratios.mjs FOLLOWUP.json BULLMQ.json\n');
  process.exit(2);
}
const followup = JSON.parse(readFileSync(followupFile, 'utf8'));
const bullmq = JSON.parse(readFileSync(bullmqFile, 'utf8'));

const rows = [
  ['ingest rows/s', (r) => r.ingest_rows_per_s, 'higher'],
  ['sends/s', (r) => r.sends_per_s, 'higher'],
  ['lateness p50 ms', (r) => r.lateness_ms?.p50, 'lower'],
  ['lateness p99 ms', (r) => r.lateness_ms?.p99, 'lower'],
  ['lateness max ms', (r) => r.lateness_ms?.max, 'lower'],
  ['CPU s per 10,000 sends', (r) => r.cpu_seconds_per_10k_sends, 'lower'],
  ['peak RSS MiB', (r) => (r.peak_rss_bytes == null ? null : r.peak_rss_bytes / 1_048_576), 'lower'],
  ['lost', (r) => r.lost, 'lower'],
  ['duplicates', (r) => r.duplicates, 'lower'],
  ['rate-limit violations', (r) => r.rate_limit_violations, 'lower'],
];

const show = (value) => (value == null ? 'n/a' : Number.isInteger(value) ? String(value) : value.toFixed(1));
const pad = (text, width) => String(text).padStart(width);
process.stdout.write(`${'figure'.padEnd(24)}${pad('followup', 12)}${pad('BullMQ', 12)}${pad('ratio', 10)}  better\n`);
for (const [name, read, better] of rows) {
  const ours = read(followup);
  const theirs = read(bullmq);
  const ratio = ours != null && theirs ? `${(ours / theirs).toFixed(2)}x` : 'n/a';
  process.stdout.write(`${name.padEnd(24)}${pad(show(ours), 12)}${pad(show(theirs), 12)}${pad(ratio, 10)}  ${better}\n`);
}
