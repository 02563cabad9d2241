//! Encryption at rest, end to end. Tenants upload contacts, connect Gmail, Outlook and Twilio,
//! and their follow-ups go out. Afterwards the bytes of the store's files contain no email
//! address, phone number, name, token or message text, although the API and the fakes show
//! that every one of them was stored and used.

use std::path::Path;

use followup_core::domain::Provider;
use followup_tests::{TestEngine, shared_data_dir};
use serde_json::{Value, json};

const GMAIL_ACCESS: &str = "ya29.sealed-gmail-access-token";
const GMAIL_REFRESH: &str = "1//sealed-gmail-refresh-token";
const OUTLOOK_ACCESS: &str = "EwB4A8l6sealed-outlook-access-token";
const TWILIO_AUTH: &str = "sealedtwilioauthtoken0123456789ab";
/// Text of the message templates, which are sealed like the contacts.
const TEMPLATE_MARKER: &str = "Marmalade-Quarterly-Offer";
const GENERATED: usize = 40;

struct Person {
    email: String,
    phone: String,
    first_name: String,
    last_name: String,
    external_id: String,
    company: String,
}

/// Rows whose values are long and unusual, so that finding one in the file by chance (in
/// random ciphertext or ids) is practically impossible.
fn people() -> Vec<Person> {
    (0..GENERATED)
        .map(|n| Person {
            email: format!("zq{n:03}.sealtest@example.net"),
            phone: format!("+1415555{:04}", 100 + n),
            first_name: format!("Thaddeusz{n:03}"),
            last_name: format!("Wojciechowsky{n:03}"),
            external_id: format!("cust-sealed-{n:05}"),
            company: format!("Quillfeather{n:03} Holdings"),
        })
        .collect()
}

fn csv_of(people: &[Person]) -> String {
    let mut csv = "external_id,email,phone,first_name,last_name,company\n".to_owned();
    for p in people {
        csv.push_str(&format!(
            "{},{},{},{},{},{}\n",
            p.external_id, p.email, p.phone, p.first_name, p.last_name, p.company
        ));
    }
    csv
}

/// Returns the customer id (the contact's key) and the email address, lowercased as ingest
/// normalises it, of each row of a sample contact file. The id is the second column, before
/// any quoted field, and the address is the one field with an `@`, so a naive split serves.
fn sample_contacts(file: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(file).expect("read the sample file");
    let mut lines = text.lines();
    let header = lines.next().expect("header");
    assert!(header.starts_with("Index,Customer Id,"), "unexpected header {header}");
    lines
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let email = fields.iter().find(|field| field.contains('@'))?;
            Some((fields[1].to_owned(), email.to_ascii_lowercase()))
        })
        .collect()
}

/// Returns each needle found anywhere in the bytes of the files under `dir`.
fn found_in_files<'a>(dir: &Path, needles: &'a [String]) -> (usize, Vec<&'a String>) {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list the data directory") {
        let path = entry.expect("directory entry").path();
        if path.is_file() {
            bytes.extend(std::fs::read(&path).expect("read a store file"));
        }
    }
    let found = needles
        .iter()
        .filter(|needle| bytes.windows(needle.len()).any(|window| window == needle.as_bytes()))
        .collect();
    (bytes.len(), found)
}

async fn status_of(engine: &TestEngine, key: &str, path: &str) -> anyhow::Result<u16> {
    let response = engine.http.get(engine.url(path)).bearer_auth(key).send().await?;
    Ok(response.status().as_u16())
}

#[actix_rt::test]
async fn store_files_contain_no_plaintext() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let limits = json!({"per_minute": 6000, "per_day": 1000000});

    // Tenant one: Gmail and Twilio, generated contacts, email and SMS steps.
    let first = engine.create_tenant("sealed one", "pro").await?;
    let gmail = json!({"sender": "sales@example.com", "access_token": GMAIL_ACCESS,
                       "refresh_token": GMAIL_REFRESH, "limits": limits});
    engine.connect(&first, "gmail", &gmail).await?;
    let twilio = json!({"sender": "+15005550006", "account_sid": "AC00000000000000000000000000000001",
                        "auth_token": TWILIO_AUTH, "limits": limits});
    engine.connect(&first, "twilio", &twilio).await?;
    let body =
        format!("Hello {{{{first_name}}}} {{{{last_name}}}} of {{{{company}}}}: {TEMPLATE_MARKER}");
    let sequence = json!({"name": "sealed", "steps": [
        {"channel": "email", "delay": 0, "subject": format!("{TEMPLATE_MARKER} for {{{{first_name}}}}"),
         "body": body},
        {"channel": "sms", "delay": "1h", "body": format!("Hi {{{{first_name}}}}, {TEMPLATE_MARKER}")}]});
    let first_sequence = engine.create_sequence(&first, &sequence).await?;
    let people = people();
    let (status, report) =
        engine.upload(&first, &first_sequence, "text/csv", csv_of(&people)).await?;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accepted"], GENERATED, "{report}");

    // Tenant two: Outlook, a public sample file, email only.
    let second = engine.create_tenant("sealed two", "pro").await?;
    let outlook = json!({"sender": "team@example.org", "access_token": OUTLOOK_ACCESS,
                         "limits": limits});
    engine.connect(&second, "outlook", &outlook).await?;
    let email_only = json!({"name": "sample", "steps": [{"channel": "email", "delay": 0,
        "subject": "Note", "body": format!("Dear {{{{first_name|customer}}}}, {TEMPLATE_MARKER}")}]});
    let second_sequence = engine.create_sequence(&second, &email_only).await?;
    let sample = shared_data_dir().join("customers-100.csv");
    let csv = std::fs::read(&sample)?;
    let (status, report) = engine.upload(&second, &second_sequence, "text/csv", csv).await?;
    assert_eq!(status, 200, "{report}");
    let sample_accepted = report["accepted"].as_u64().unwrap_or_default();
    assert!(sample_accepted >= 25, "{report}");

    engine.settle(5).await?;

    // The plaintexts were stored and used: the fakes accepted the tokens and received every
    // address, name and template text, and the API finds each sample contact by address.
    let fakes = engine.running.fakes()?;
    let received = fakes.received();
    for person in &people {
        let email = received.iter().find(|m| m.to == person.email);
        let email = email.unwrap_or_else(|| panic!("no email to {}", person.email));
        assert!(email.body.contains(&person.last_name), "rendered body: {}", email.body);
        assert!(email.body.contains(&person.company), "rendered body: {}", email.body);
        assert!(received.iter().any(|m| m.to == person.phone), "no SMS to {}", person.phone);
    }
    assert!(fakes.stats().received(Provider::Outlook) >= sample_accepted, "Outlook sends");
    assert!(received.iter().all(|m| m.body.contains(TEMPLATE_MARKER)), "template text sent");
    let mut sample_found = Vec::new();
    for (customer_id, email) in sample_contacts(&sample) {
        let path = format!("/v1/schedules?sequence={second_sequence}&contact={customer_id}");
        if status_of(&engine, &second, &path).await? == 200 {
            assert!(received.iter().any(|m| m.to == email), "no email to {email}");
            sample_found.extend([customer_id, email]);
        }
    }
    assert_eq!(sample_found.len() as u64, 2 * sample_accepted, "sample contacts found by id");
    let listed: Value = engine.get_json(&first, "/v1/connections").await?;
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");

    // Stop the engine, then read every byte it left.
    let TestEngine { running, data_dir, .. } = engine;
    running.stop().await;
    let mut needles: Vec<String> =
        [GMAIL_ACCESS, GMAIL_REFRESH, OUTLOOK_ACCESS, TWILIO_AUTH, TEMPLATE_MARKER]
            .map(str::to_owned)
            .into();
    for person in &people {
        needles.extend([
            person.email.clone(),
            person.phone.clone(),
            person.first_name.clone(),
            person.last_name.clone(),
            person.external_id.clone(),
            person.company.clone(),
        ]);
    }
    needles.extend(sample_found);
    let (size, found) = found_in_files(data_dir.path(), &needles);
    assert!(size > 100_000, "the store holds {size} bytes");
    assert!(
        found.is_empty(),
        "{} of {} plaintexts in the store files: {found:?}",
        found.len(),
        needles.len()
    );
    Ok(())
}

#[actix_rt::test]
async fn destroyed_tenant_key_fails_reads() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let doomed = engine.create_tenant("doomed", "pro").await?;
    let kept = engine.create_tenant("kept", "pro").await?;
    for key in [&doomed, &kept] {
        let sequence = engine.create_sequence(key, &followup_tests::email_now_sequence()).await?;
        let (status, _) =
            engine.upload(key, &sequence, "text/csv", "email\na@example.com\n").await?;
        assert_eq!(status, 200);
    }
    let tenants = engine.running.engine.store().tenants().await?;
    let doomed_id = tenants.iter().find(|t| t.name == "doomed").expect("doomed tenant").id;

    assert!(engine.running.engine.destroy_tenant_key(doomed_id).await?, "a key existed");
    let response = engine.http.get(engine.url("/v1/sequences")).bearer_auth(&doomed).send().await?;
    assert_eq!(response.status(), 500);
    let body = response.text().await?;
    assert!(body.contains("it was destroyed"), "{body}");
    assert!(!body.contains("Hi {{first_name"), "no template text after destruction: {body}");
    assert_eq!(status_of(&engine, &kept, "/v1/sequences").await?, 200, "other tenant unaffected");
    Ok(())
}

#[actix_rt::test]
async fn rotation_needs_a_key_file() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let response = engine
        .http
        .post(engine.url("/admin/v1/keys/rotate"))
        .bearer_auth(followup_tests::OPERATOR_TOKEN)
        .send()
        .await?;
    assert_eq!(response.status(), 422);
    let body = response.text().await?;
    assert!(body.contains("--master-key-file"), "{body}");
    Ok(())
}

#[actix_rt::test]
async fn destroyed_tenant_gets_no_actor_at_start() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let doomed = engine.create_tenant("doomed", "pro").await?;
    engine.connect_fakes(&doomed).await?;
    engine.create_tenant("kept", "pro").await?;
    let tenants = engine.running.engine.store().tenants().await?;
    let doomed_id = tenants.iter().find(|t| t.name == "doomed").expect("doomed tenant").id;
    engine.running.engine.destroy_tenant_key(doomed_id).await?;

    // Start-up starts actors and registers connections for these tenants only, so a store
    // with a destroyed tenant still starts.
    let live = engine.running.engine.live_tenants().await?;
    assert_eq!(live.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), vec!["kept"]);
    let error = engine.running.engine.store().connections(doomed_id).await;
    assert!(error.is_err(), "the destroyed tenant's connections do not open");
    Ok(())
}
