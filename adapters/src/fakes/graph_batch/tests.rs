use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use followup_core::limits::SendLimits;
use serde_json::{Value, json};

use crate::fakes::FakeProviders;
use crate::mime::build_message;
use crate::testing::{email, http, start_fakes, start_instant, virtual_clock};

const TOKEN: &str = "eyJ0eXAiOiJKV1Qi.batch-test-token";
const MAILBOX: &str = "owner@contoso.example";

async fn started(per_minute: u32) -> FakeProviders {
    let fakes = start_fakes(&virtual_clock(), |config| config).await;
    fakes.register_outlook(TOKEN, MAILBOX, SendLimits { per_minute, per_day: 10_000 });
    fakes
}

/// Builds the inner `sendMail` request `id` to `to` in the JSON form.
fn send_mail(id: &str, to: &str) -> Value {
    json!({
        "id": id,
        "method": "POST",
        "url": "/me/sendMail",
        "headers": {"Content-Type": "application/json"},
        "body": {
            "message": {
                "subject": "s",
                "body": {"contentType": "Text", "content": "b"},
                "toRecipients": [{"emailAddress": {"address": to}}],
            },
            "saveToSentItems": false,
        },
    })
}

/// Posts `body` to the fake's `$batch` and returns the status and the JSON body.
async fn post_batch(fakes: &FakeProviders, body: &Value) -> (u16, Value) {
    let url = format!("{}v1.0/$batch", fakes.graph_url());
    let response =
        http().post(url).bearer_auth(TOKEN).json(body).send().await.expect("fake responds");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// Returns the inner responses of a batch by id.
fn by_id(body: &Value) -> HashMap<String, Value> {
    let responses = body["responses"].as_array().expect("responses array");
    responses.iter().map(|r| (r["id"].as_str().expect("id").to_owned(), r.clone())).collect()
}

#[tokio::test]
async fn malformed_batches_fail_whole() {
    let fakes = started(30).await;
    let many: Vec<Value> = (0..21).map(|i| send_mail(&i.to_string(), "a@example.org")).collect();
    let mut headerless = send_mail("1", "a@example.org");
    headerless.as_object_mut().expect("object").remove("headers");
    let mut cycle_a = send_mail("a", "a@example.org");
    cycle_a["dependsOn"] = json!(["b"]);
    let mut cycle_b = send_mail("b", "b@example.org");
    cycle_b["dependsOn"] = json!(["a"]);
    let mut unknown = send_mail("1", "a@example.org");
    unknown["dependsOn"] = json!(["7"]);

    let cases = [
        (json!({"requests": many}), "more than the maximum of 20"),
        (
            json!({"requests": [send_mail("x", "a@example.org"), send_mail("X", "b@example.org")]}),
            "appears more than once",
        ),
        (json!({"requests": [headerless]}), "no Content-Type header"),
        (json!({"requests": [cycle_a, cycle_b]}), "form a cycle"),
        (json!({"requests": [unknown]}), "unknown request '7'"),
        (json!({"requests": []}), "empty"),
        (json!({"batch": []}), "requests array is missing"),
    ];
    for (body, expected) in &cases {
        let (status, response) = post_batch(&fakes, body).await;
        assert_eq!(status, 400, "{expected}: {response}");
        assert_eq!(response["error"]["code"], "BadRequest", "{expected}");
        let message = response["error"]["message"].as_str().expect("message");
        assert!(message.contains(expected), "expected {expected:?} in {message:?}");
    }

    let stats = fakes.stats();
    assert_eq!(stats.batch_requests, cases.len() as u64);
    assert_eq!(stats.rejected_requests, cases.len() as u64);
    let stats_url = format!("{}_fake/stats", fakes.graph_url());
    let served: Value =
        http().get(stats_url).send().await.expect("fake responds").json().await.expect("JSON");
    assert_eq!(served["batch_requests"], cases.len(), "served by /_fake/stats");
    assert!(fakes.received().is_empty(), "a rejected batch runs nothing");
    fakes.shutdown().await;
}

#[tokio::test]
async fn failed_dependency_gives_424() {
    let fakes = started(30).await;
    let mut second = send_mail("2", "b@example.org");
    second["dependsOn"] = json!(["1"]);
    let mut third = send_mail("3", "c@example.org");
    third["dependsOn"] = json!(["2"]);
    let mut fifth = send_mail("5", "e@example.org");
    fifth["dependsOn"] = json!(["4"]);
    let requests =
        [send_mail("1", "not-an-address"), second, third, send_mail("4", "d@example.org"), fifth];

    let (status, body) = post_batch(&fakes, &json!({"requests": requests})).await;

    assert_eq!(status, 200, "{body}");
    let responses = by_id(&body);
    let statuses: Vec<(&str, &Value)> =
        ["1", "2", "3", "4", "5"].iter().map(|id| (*id, &responses[*id]["status"])).collect();
    let expected = [
        ("1", &json!(400)),
        ("2", &json!(424)),
        ("3", &json!(424)),
        ("4", &json!(202)),
        ("5", &json!(202)),
    ];
    assert_eq!(statuses, expected);
    assert_eq!(responses["1"]["body"]["error"]["code"], "ErrorInvalidRecipients");
    assert_eq!(responses["2"]["body"]["error"]["code"], "FailedDependency");
    assert!(responses["4"].get("body").is_none(), "202 has no body");
    let recipients: Vec<String> = fakes.received().into_iter().map(|m| m.to).collect();
    assert_eq!(recipients, ["d@example.org", "e@example.org"], "4 runs before 5");
    fakes.shutdown().await;
}

#[tokio::test]
async fn inner_429_has_own_retry_after() {
    let fakes = started(1).await;
    let requests = [send_mail("1", "a@example.org"), send_mail("2", "b@example.org")];

    let (status, body) = post_batch(&fakes, &json!({"requests": requests})).await;

    assert_eq!(status, 200, "{body}");
    let responses: Vec<Value> = by_id(&body).into_values().collect();
    let accepted = responses.iter().filter(|r| r["status"] == 202).count();
    let throttled: Vec<&Value> = responses.iter().filter(|r| r["status"] == 429).collect();
    assert_eq!(accepted, 1, "{body}");
    assert_eq!(throttled.len(), 1, "{body}");
    assert_eq!(throttled[0]["headers"]["Retry-After"], "60");
    assert_eq!(throttled[0]["body"]["error"]["code"], "TooManyRequests");
    assert_eq!(fakes.stats().rate_limit_violations, 1);
    fakes.shutdown().await;
}

#[tokio::test]
async fn responses_come_shuffled() {
    let fakes = started(100).await;
    let ids: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    let requests: Vec<Value> =
        ids.iter().map(|id| send_mail(id, &format!("c{id}@example.org"))).collect();

    let (status, body) = post_batch(&fakes, &json!({"requests": requests})).await;

    assert_eq!(status, 200, "{body}");
    let order: Vec<&str> = body["responses"]
        .as_array()
        .expect("responses")
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(order.len(), 20);
    // Twenty responses keep the request order after a shuffle once in 20! runs.
    assert_ne!(order, ids, "responses in request order");
    assert_eq!(fakes.received().len(), 20);
    fakes.shutdown().await;
}

#[tokio::test]
async fn mime_item_records_list_unsubscribe() {
    let fakes = started(30).await;
    let mut msg = email(MAILBOX, "ann@example.org", "s", "b");
    msg.unsubscribe_url = Some("https://app.example/u/1".to_owned());
    let message = build_message(&msg, start_instant()).expect("message builds");
    let with_header =
        [b"List-Unsubscribe: <https://app.example/u/1>\r\n".as_slice(), &message].concat();
    let mime = json!({
        "id": "m",
        "method": "POST",
        "url": "/users/OWNER@contoso.example/sendMail",
        "headers": {"content-type": "text/plain"},
        "body": STANDARD.encode(with_header),
    });
    let mut bad = mime.clone();
    bad["id"] = json!("bad");
    bad["body"] = json!("%%% not base64");

    let (status, body) = post_batch(&fakes, &json!({"requests": [mime, bad]})).await;

    assert_eq!(status, 200, "{body}");
    let responses = by_id(&body);
    assert_eq!(responses["m"]["status"], 202, "{body}");
    assert_eq!(responses["bad"]["status"], 400, "{body}");
    let code = &responses["bad"]["body"]["error"]["code"];
    assert_eq!(code, "ErrorMimeContentInvalidBase64String");
    let received = fakes.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].list_unsubscribe.as_deref(), Some("<https://app.example/u/1>"));
    fakes.shutdown().await;
}

#[tokio::test]
async fn single_send_checks_forms() {
    let fakes = started(30).await;
    let url = format!("{}v1.0/me/sendMail", fakes.graph_url());
    let client = http();
    let post = |content_type: &str, body: String| {
        client
            .post(&url)
            .bearer_auth(TOKEN)
            .header("content-type", content_type.to_owned())
            .body(body)
            .send()
    };

    let response = post("text/plain", "%%% not base64".to_owned()).await.expect("fake responds");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "ErrorMimeContentInvalidBase64String");
    assert_eq!(body["error"]["message"], "Invalid base64 string for MIME content.");

    let listed = json!({
        "message": {
            "subject": "s",
            "body": {"contentType": "Text", "content": "b"},
            "toRecipients": [{"emailAddress": {"address": "ann@example.org"}}],
            "internetMessageHeaders": [
                {"name": "List-Unsubscribe", "value": "<https://u.example/1>"},
            ],
        },
    });
    let response = post("application/json", listed.to_string()).await.expect("fake responds");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "InvalidInternetMessageHeader");

    let response = post("application/xml", "<message/>".to_owned()).await.expect("fake responds");
    assert_eq!(response.status().as_u16(), 415);

    assert_eq!(fakes.stats().rejected_requests, 3);
    assert!(fakes.received().is_empty());
    fakes.shutdown().await;
}
