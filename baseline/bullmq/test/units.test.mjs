import { test } from 'node:test';
import assert from 'node:assert/strict';
import { delayMillis, scenarioFromDocument } from '../scenario.mjs';
import { contactRow, isInvalidRow, render, rowIsValid } from '../workload.mjs';
import { parseInfo, percentile } from '../measure.mjs';

test('delays read as the engine reads them', () => {
  assert.equal(delayMillis('0s', 'x'), 0);
  assert.equal(delayMillis('15m', 'x'), 900_000);
  assert.equal(delayMillis('2d', 'x'), 172_800_000);
  assert.equal(delayMillis(30, 'x'), 30_000);
  assert.throws(() => delayMillis('soon', 'steps[0]'), /steps\[0\]: delay "soon"/);
});

test('a scenario takes defaults and rejects what the baseline cannot run', () => {
  const scenario = scenarioFromDocument({ tenants: 3, connections: { gmail: { per_minute: 100 } } }, 'f.yaml');
  assert.equal(scenario.tenants, 3);
  assert.equal(scenario.contactsPerTenant, 500);
  assert.deepEqual(scenario.limits.gmail, { per_minute: 100, per_day: 2000 });
  assert.deepEqual(scenario.limits.twilio, { per_minute: 6000, per_day: 1_000_000 });
  assert.deepEqual(scenario.steps.map((step) => step.channel), ['email', 'sms']);
  const call = { sequence: { steps: [{ channel: 'call', body: 'hi' }] } };
  assert.throws(() => scenarioFromDocument(call, 'f.yaml'), /f.yaml: sequence.steps\[0\]: the baseline sends email and SMS only/);
  const windowed = { sequence: { window: { start: '09:00', end: '17:00' } } };
  assert.throws(() => scenarioFromDocument(windowed, 'f.yaml'), /sequence.window/);
});

test('invalid rows are exactly floor(rows x fraction), spread evenly, and fail validation', () => {
  const perMillion = 50_000;
  const rows = Array.from({ length: 1000 }, (_, index) => contactRow(0, index, perMillion));
  assert.equal(rows.filter((row) => !rowIsValid(row)).length, 50);
  assert.equal(rows.slice(0, 500).filter((row) => row.invalid).length, 25);
  assert.equal(isInvalidRow(19, perMillion), true);
  assert.equal(isInvalidRow(18, perMillion), false);
  for (const row of rows.filter((candidate) => !candidate.invalid)) {
    assert.match(row.email, /@example\.com$/);
    assert.match(row.phone, /^\+1\d{3}55501\d{2}$/);
  }
});

test('templates fill fields and fall back when a field is empty', () => {
  const row = { first_name: 'Mei', company: '' };
  assert.equal(render('Hi {{first_name|there}} from {{ company | us }}', row), 'Hi Mei from us');
  assert.equal(render('Hi {{last_name}}!', row), 'Hi !');
});

test('nearest-rank percentiles and Redis INFO parsing', () => {
  const sorted = Array.from({ length: 100 }, (_, index) => index + 1);
  assert.equal(percentile(sorted, 0.5), 50);
  assert.equal(percentile(sorted, 0.99), 99);
  assert.equal(percentile([], 0.99), 0);
  const info = parseInfo('# CPU\r\nused_cpu_sys:1.50\r\nused_cpu_user:2.25\r\nrole:master\r\n');
  assert.deepEqual(info, { used_cpu_sys: 1.5, used_cpu_user: 2.25 });
});
