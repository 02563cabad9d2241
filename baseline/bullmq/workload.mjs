// Synthetic contacts and the follow-ups they become, shaped like followup-loadtest's: the same
// counts, the same share of invalid rows spread evenly, addresses only at example.com and on
// the fictional NANP numbers 555-0100 to 555-0199. Rows are not byte-identical to the Rust
// generator's; what the comparison needs is the same number of sends per mailbox and number.

const FIRST_NAMES = ['Ada', 'Grace', 'Alan', 'Zoë', 'Łukasz', 'Chidi', 'Mei', 'José'];
const LAST_NAMES = ['Lovelace', 'Hopper', "O'Brien", 'Nowak', 'Okafor'];
const COMPANIES = ['Example Co', 'Widgets, Inc.', 'Ünïcode GmbH', ''];
const AREA_CODES = [202, 212, 305, 312, 415, 512, 617, 206];

/** Whether row `index` is one of the rows broken on purpose, spread evenly over the rows. */
export function isInvalidRow(index, invalidPerMillion) {
  const before = Math.floor((index * invalidPerMillion) / 1_000_000);
  const through = Math.floor(((index + 1) * invalidPerMillion) / 1_000_000);
  return through > before;
}

/** Row `index` of tenant `tenant`: a function of its arguments alone. */
export function contactRow(tenant, index, invalidPerMillion) {
  const pick = (list, salt) => list[(index * 7 + tenant * 13 + salt) % list.length];
  const row = {
    externalId: `t${tenant}-c${index}`,
    email: `t${tenant}-c${index}@example.com`,
    phone: `+1${pick(AREA_CODES, 3)}55501${String(index % 100).padStart(2, '0')}`,
    first_name: pick(FIRST_NAMES, 0),
    last_name: pick(LAST_NAMES, 1),
    company: pick(COMPANIES, 2),
  };
  if (isInvalidRow(index, invalidPerMillion)) {
    row.email = `t${tenant}-c${index}.example.com`;
    row.invalid = true;
  }
  return row;
}

const EMAIL = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;
const E164 = /^\+[1-9]\d{7,14}$/;

/** The check a team's upload handler would make; a row failing it is rejected whole. */
export function rowIsValid(row) {
  return EMAIL.test(row.email) && E164.test(row.phone);
}

/** Replaces `{{field}}` and `{{field|fallback}}` with the row's value or the fallback. */
export function render(template, row) {
  return template.replace(/\{\{\s*([a-z_]+)\s*(?:\|([^}]*))?\}\}/g, (_, field, fallback) => {
    const value = row[field];
    return value ? String(value) : (fallback ?? '').trim();
  });
}
