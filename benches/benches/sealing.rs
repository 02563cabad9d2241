//! Benchmarks of encryption at rest: sealing and opening one field under a tenant's data key,
//! a whole contact's fields, and deriving a contact id with the tenant's keyed HMAC.
//!
//! Run with `cargo bench -p followup-benches --bench sealing`; record figures in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use followup_core::crypto::{DataKey, Keyring, MasterKey, generate_master_key};
use followup_core::ids::TenantId;

fn data_key(tenant: TenantId) -> DataKey {
    let master = generate_master_key().expect("random key");
    let master = MasterKey::from_base64(master.expose(), "bench").expect("valid key");
    let keyring = Keyring::new(vec![master]).expect("one key");
    keyring.create_data_key(tenant, 1).expect("data key").0
}

/// The six personal fields of a typical uploaded contact.
const CONTACT: [(&str, &str); 6] = [
    ("contact.external_id", "C000123"),
    ("contact.first_name", "Ada"),
    ("contact.last_name", "Lovelace"),
    ("contact.full_name", "Ada Lovelace"),
    ("contact.email", "ada.lovelace@example.com"),
    ("contact.phone", "+12025550123"),
];

fn sealing(c: &mut Criterion) {
    let tenant = TenantId::generate();
    let key = data_key(tenant);
    let email = "ada.lovelace@example.com";
    let sealed_email = key.seal(tenant, "contact.email", email).expect("seal");
    let body = "x".repeat(1024);
    let sealed_body = key.seal(tenant, "step.body", &body).expect("seal");

    let mut group = c.benchmark_group("sealing");
    group.bench_function("seal_email", |b| {
        b.iter(|| key.seal(tenant, "contact.email", black_box(email)).expect("seal"))
    });
    group.bench_function("open_email", |b| {
        b.iter(|| key.open(tenant, "contact.email", black_box(&sealed_email)).expect("open"))
    });
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("seal_1kib_body", |b| {
        b.iter(|| key.seal(tenant, "step.body", black_box(&body)).expect("seal"))
    });
    group.bench_function("open_1kib_body", |b| {
        b.iter(|| key.open(tenant, "step.body", black_box(&sealed_body)).expect("open"))
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("seal_contact_six_fields", |b| {
        b.iter(|| {
            CONTACT
                .iter()
                .map(|(field, value)| key.seal(tenant, field, black_box(value)).expect("seal"))
                .map(|sealed| sealed.len())
                .sum::<usize>()
        })
    });
    group.bench_function("derive_contact_id", |b| {
        b.iter(|| key.record_ids().contact(black_box(email)))
    });
    group.finish();
}

criterion_group!(benches, sealing);
criterion_main!(benches);
