use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};

use super::shape::{batch_problems, send_mail_problems};
use super::{MAILBOX, TOKEN, UNSUBSCRIBE, with_unsubscribe};
use crate::mime::build_message;
use crate::outlook::GraphClient;
use crate::testing::{email, http, start_instant, virtual_clock};

/// A request the client built, as it would go on the wire.
struct Wire {
    request: reqwest::Request,
    content_type: String,
    body: Vec<u8>,
}

fn wire(builder: reqwest::RequestBuilder) -> Wire {
    let request = builder.build().expect("request builds");
    let content_type = request.headers()[CONTENT_TYPE].to_str().expect("ascii").to_owned();
    let body = request.body().and_then(reqwest::Body::as_bytes).expect("buffered body").to_vec();
    Wire { request, content_type, body }
}

fn client() -> GraphClient {
    let base = reqwest::Url::parse("https://graph.microsoft.com").expect("url");
    GraphClient::new(http(), base).with_clock(virtual_clock())
}

fn assert_post_with_token(request: &reqwest::Request, path: &str) {
    assert_eq!(request.method(), reqwest::Method::POST);
    assert_eq!(request.url().path(), path);
    let authorization = request.headers()[AUTHORIZATION].to_str().expect("ascii");
    assert_eq!(authorization, format!("Bearer {TOKEN}"));
}

#[test]
fn json_send_conforms() {
    let client = client();
    let plain = email(MAILBOX, "ann@example.org", "Checking in", "Any news?");
    let mut html = plain.clone();
    html.html_body = Some("<p>Any news?</p>".to_owned());

    for (msg, content_type, content) in
        [(plain, "Text", "Any news?"), (html, "HTML", "<p>Any news?</p>")]
    {
        let sent = wire(client.send_request(TOKEN, &msg).expect("sendable"));
        assert_post_with_token(&sent.request, "/v1.0/me/sendMail");
        assert_eq!(sent.content_type, "application/json");
        let problems = send_mail_problems(&sent.content_type, &sent.body);
        assert!(problems.is_empty(), "{problems:?}");

        let body: Value = serde_json::from_slice(&sent.body).expect("JSON");
        assert_eq!(body["message"]["body"]["contentType"], content_type);
        assert_eq!(body["message"]["body"]["content"], content);
    }
}

#[test]
fn mime_send_conforms() {
    let client = client();
    let msg = with_unsubscribe(email(MAILBOX, "ann@example.org", "Checking in", "Any news?"));

    let sent = wire(client.send_request(TOKEN, &msg).expect("sendable"));
    assert_post_with_token(&sent.request, "/v1.0/me/sendMail");
    assert_eq!(sent.content_type, "text/plain");
    let problems = send_mail_problems(&sent.content_type, &sent.body);
    assert!(problems.is_empty(), "{problems:?}");

    let message = STANDARD.decode(&sent.body).expect("base64");
    let text = String::from_utf8(message).expect("ASCII message");
    assert!(text.contains(&format!("List-Unsubscribe: <{UNSUBSCRIBE}>\r\n")), "{text}");
    assert!(text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"), "{text}");
    assert!(text.contains("Any news?"), "{text}");
}

#[test]
fn batch_conforms() {
    let client = client();
    let messages = [
        email(MAILBOX, "ann@example.org", "s", "b"),
        with_unsubscribe(email(MAILBOX, "bob@example.org", "s", "b")),
        email(MAILBOX, "cy@example.org", "s", "b"),
    ];
    let items: Vec<_> = messages
        .iter()
        .enumerate()
        .map(|(index, msg)| client.batch_item(index, msg).expect("sendable"))
        .collect();

    let sent = wire(client.batch_request(TOKEN, &items));
    assert_post_with_token(&sent.request, "/v1.0/$batch");
    let problems = batch_problems(&sent.content_type, &sent.body);
    assert!(problems.is_empty(), "{problems:?}");

    let body: Value = serde_json::from_slice(&sent.body).expect("JSON");
    let content_types: Vec<&Value> =
        (0..3).map(|index| &body["requests"][index]["headers"]["Content-Type"]).collect();
    assert_eq!(
        content_types,
        [&json!("application/json"), &json!("text/plain"), &json!("application/json")]
    );
    assert_eq!(body["requests"][1]["url"], "/me/sendMail");
}

/// A valid JSON `sendMail` body, for the checks that must fail once it is spoiled.
fn valid_json() -> Value {
    json!({
        "message": {
            "subject": "s",
            "body": {"contentType": "Text", "content": "b"},
            "toRecipients": [{"emailAddress": {"address": "ann@example.org"}}],
        },
        "saveToSentItems": false,
    })
}

fn valid_mime() -> String {
    let msg = with_unsubscribe(email(MAILBOX, "ann@example.org", "s", "b"));
    let sent = wire(client().send_request(TOKEN, &msg).expect("sendable"));
    String::from_utf8(sent.body).expect("base64 text")
}

fn has_problem(problems: &[String], expected: &str) -> bool {
    problems.iter().any(|problem| problem.contains(expected))
}

#[test]
fn shape_check_rejects_send_mistakes() {
    let json_body = |value: &Value| serde_json::to_vec(value).expect("JSON");
    assert!(send_mail_problems("application/json", &json_body(&valid_json())).is_empty());
    assert!(send_mail_problems("text/plain", valid_mime().as_bytes()).is_empty());

    let mut misnamed = valid_json();
    let recipients = misnamed["message"]
        .as_object_mut()
        .expect("object")
        .remove("toRecipients")
        .expect("member");
    misnamed["message"]["toRecipient"] = recipients;
    let problems = send_mail_problems("application/json", &json_body(&misnamed));
    assert!(has_problem(&problems, "unknown member toRecipient"), "{problems:?}");
    assert!(has_problem(&problems, "required member toRecipients is missing"), "{problems:?}");

    let mut lowercase = valid_json();
    lowercase["message"]["body"]["contentType"] = json!("text");
    let problems = send_mail_problems("application/json", &json_body(&lowercase));
    assert!(has_problem(&problems, "is not Text or HTML"), "{problems:?}");

    let mut listed = valid_json();
    listed["message"]["internetMessageHeaders"] =
        json!([{"name": "List-Unsubscribe", "value": "<https://u.example/1>"}]);
    let problems = send_mail_problems("application/json", &json_body(&listed));
    assert!(has_problem(&problems, "does not start x-"), "{problems:?}");

    let problems = send_mail_problems("text/plain", &json_body(&valid_json()));
    assert!(has_problem(&problems, "not standard base64"), "JSON as MIME: {problems:?}");
    let problems = send_mail_problems("application/json", valid_mime().as_bytes());
    assert!(has_problem(&problems, "not JSON"), "MIME as JSON: {problems:?}");
    let problems = send_mail_problems("application/xml", &json_body(&valid_json()));
    assert!(has_problem(&problems, "is neither form"), "{problems:?}");

    let problems = send_mail_problems("text/plain", b"RnJvbTo*not base64!");
    assert!(has_problem(&problems, "not standard base64"), "{problems:?}");

    let urlsafe = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(STANDARD.decode(valid_mime()).expect("base64"));
    let problems = send_mail_problems("text/plain", urlsafe.as_bytes());
    assert!(!problems.is_empty(), "unpadded base64url is not the standard alphabet");

    let plain = build_message(&email(MAILBOX, "ann@example.org", "s", "b"), start_instant())
        .expect("message builds");
    let problems = send_mail_problems("text/plain", STANDARD.encode(plain).as_bytes());
    assert!(has_problem(&problems, "List-Unsubscribe None"), "{problems:?}");
}

#[test]
fn shape_check_rejects_batch_mistakes() {
    let item = |id: &str| {
        json!({
            "id": id,
            "method": "POST",
            "url": "/me/sendMail",
            "headers": {"Content-Type": "application/json"},
            "body": valid_json(),
        })
    };
    let batch =
        |requests: Vec<Value>| serde_json::to_vec(&json!({"requests": requests})).expect("JSON");
    assert!(batch_problems("application/json", &batch(vec![item("1"), item("2")])).is_empty());

    let problems = batch_problems("application/json", &batch(vec![item("a"), item("A")]));
    assert!(has_problem(&problems, "is not unique"), "{problems:?}");

    let problems =
        batch_problems("application/json", &batch((0..21).map(|i| item(&i.to_string())).collect()));
    assert!(has_problem(&problems, "21 requests"), "{problems:?}");

    let mut headerless = item("1");
    headerless.as_object_mut().expect("object").remove("headers");
    let problems = batch_problems("application/json", &batch(vec![headerless]));
    assert!(has_problem(&problems, "without a Content-Type"), "{problems:?}");

    let mut versioned = item("1");
    versioned["url"] = json!("/v1.0/me/sendMail");
    let problems = batch_problems("application/json", &batch(vec![versioned]));
    assert!(has_problem(&problems, "relative to the version"), "{problems:?}");

    let mut mime_as_json = item("1");
    mime_as_json["body"] = json!(valid_mime());
    let problems = batch_problems("application/json", &batch(vec![mime_as_json]));
    assert!(has_problem(&problems, "does not fit a body of a string"), "{problems:?}");

    let mut not_base64 = item("1");
    not_base64["headers"]["Content-Type"] = json!("text/plain");
    not_base64["body"] = json!("not base64!");
    let problems = batch_problems("application/json", &batch(vec![not_base64]));
    assert!(has_problem(&problems, "not standard base64"), "{problems:?}");

    let mut misnamed = item("1");
    misnamed["body"]["message"]["toRecipient"] = json!([]);
    let problems = batch_problems("application/json", &batch(vec![misnamed]));
    assert!(has_problem(&problems, "unknown member toRecipient"), "{problems:?}");

    let problems = batch_problems("text/plain", &batch(vec![item("1")]));
    assert!(has_problem(&problems, "is not application/json"), "{problems:?}");
}
