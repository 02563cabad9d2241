//! A checker of the requests the Graph client builds against the documented shapes of
//! `sendMail` (JSON and MIME forms) and of JSON batching.
//!
//! Graph publishes no small machine-readable description of these, so the shapes are written
//! out here from its documentation. The `sendMail` page gives the body members and content
//! types, and the message resource page the `x-` rule on custom headers. The JSON batching
//! page gives `$batch`, and RFC 8058 the one-click headers.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mail_parser::MessageParser;
use serde_json::Value;

/// Members of the `sendMail` JSON body.
const ROOT_MEMBERS: [&str; 2] = ["message", "saveToSentItems"];

/// Members of `message` that a `sendMail` request may set.
const MESSAGE_MEMBERS: [&str; 8] = [
    "subject",
    "body",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "internetMessageHeaders",
    "attachments",
];

/// Members of one inner request of a `$batch`.
const BATCH_ITEM_MEMBERS: [&str; 6] = ["id", "method", "url", "headers", "body", "dependsOn"];

/// Maximum of requests in one `$batch`.
const MAX_BATCH: usize = 20;

/// Returns every way a `sendMail` request with `content_type` and `body` departs from the
/// documented shapes; empty when it conforms.
pub(super) fn send_mail_problems(content_type: &str, body: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    match essence(content_type) {
        "application/json" => match serde_json::from_slice::<Value>(body) {
            Ok(value) => check_json(&value, "sendMail", &mut problems),
            Err(err) => problems.push(format!("sendMail: the JSON form is not JSON: {err}")),
        },
        "text/plain" => match std::str::from_utf8(body) {
            Ok(text) => check_mime(text, "sendMail", &mut problems),
            Err(_) => problems.push("sendMail: the MIME form is not ASCII base64".to_owned()),
        },
        other => problems.push(format!("sendMail: content type {other:?} is neither form")),
    }
    problems
}

/// Returns every way a `$batch` request with `content_type` and `body` departs from the
/// documented shape, the `sendMail` bodies inside included; empty when it conforms.
pub(super) fn batch_problems(content_type: &str, body: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    if essence(content_type) != "application/json" {
        problems.push(format!("$batch: content type {content_type:?} is not application/json"));
    }
    let root: Value = match serde_json::from_slice(body) {
        Ok(root) => root,
        Err(err) => {
            problems.push(format!("$batch: the body is not JSON: {err}"));
            return problems;
        }
    };
    check_members(&root, &["requests"], &["requests"], "$batch", &mut problems);
    let Some(requests) = root["requests"].as_array() else {
        problems.push("$batch: requests is not an array".to_owned());
        return problems;
    };
    if requests.is_empty() || requests.len() > MAX_BATCH {
        problems.push(format!("$batch: {} requests, expected 1 to {MAX_BATCH}", requests.len()));
    }

    let mut ids = HashSet::new();
    for (index, request) in requests.iter().enumerate() {
        let at = format!("$batch requests[{index}]");
        check_batch_item(request, &at, &mut problems);
        if let Some(id) = request["id"].as_str()
            && !ids.insert(id.to_lowercase())
        {
            problems.push(format!("{at}: id {id:?} is not unique"));
        }
    }
    problems
}

fn check_batch_item(request: &Value, at: &str, problems: &mut Vec<String>) {
    check_members(request, &BATCH_ITEM_MEMBERS, &["id", "method", "url"], at, problems);
    if request["id"].as_str().is_none_or(str::is_empty) {
        problems.push(format!("{at}: id is not a non-empty string"));
    }
    if request["method"] != "POST" {
        problems.push(format!("{at}: method {} is not POST", request["method"]));
    }
    let url = request["url"].as_str().unwrap_or_default();
    let relative = url.starts_with('/') && !url.starts_with("/v1.0/") && !url.contains("://");
    if !relative || !url.ends_with("/sendMail") {
        problems.push(format!("{at}: url {url:?} is not sendMail relative to the version"));
    }

    // Graph requires headers with a Content-Type whenever a body is present.
    let content_type = request["headers"].as_object().and_then(|headers| {
        headers.iter().find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    });
    let Some((_, content_type)) = content_type else {
        problems.push(format!("{at}: a body without a Content-Type header"));
        return;
    };
    let content_type = content_type.as_str().unwrap_or_default();
    match (essence(content_type), &request["body"]) {
        ("application/json", body @ Value::Object(_)) => check_json(body, at, problems),
        ("text/plain", Value::String(base64)) => check_mime(base64, at, problems),
        (other, body) => problems.push(format!(
            "{at}: content type {other:?} does not fit a body of {}",
            json_kind(body)
        )),
    }
}

/// Checks the JSON form of `sendMail`.
fn check_json(root: &Value, at: &str, problems: &mut Vec<String>) {
    check_members(root, &ROOT_MEMBERS, &["message"], at, problems);
    match &root["saveToSentItems"] {
        Value::Null | Value::Bool(_) => {}
        Value::String(flag) if flag == "true" || flag == "false" => {}
        other => problems.push(format!("{at}: saveToSentItems {other} is not a boolean")),
    }

    let message = &root["message"];
    let at = format!("{at} message");
    check_members(message, &MESSAGE_MEMBERS, &["subject", "body", "toRecipients"], &at, problems);
    if !message["subject"].is_string() {
        problems.push(format!("{at}: subject is not a string"));
    }

    let body = &message["body"];
    check_members(body, &["contentType", "content"], &["contentType", "content"], &at, problems);
    if !matches!(body["contentType"].as_str(), Some("Text" | "HTML")) {
        problems
            .push(format!("{at}: body.contentType {} is not Text or HTML", body["contentType"]));
    }
    if !body["content"].is_string() {
        problems.push(format!("{at}: body.content is not a string"));
    }

    for list in ["toRecipients", "ccRecipients", "bccRecipients", "replyTo"] {
        if let Some(recipients) = message.get(list) {
            check_recipients(recipients, &format!("{at} {list}"), problems);
        }
    }
    if message["toRecipients"].as_array().is_some_and(Vec::is_empty) {
        problems.push(format!("{at}: toRecipients is empty"));
    }
    if let Some(headers) = message.get("internetMessageHeaders") {
        check_custom_headers(headers, &at, problems);
    }
}

fn check_recipients(recipients: &Value, at: &str, problems: &mut Vec<String>) {
    let Some(recipients) = recipients.as_array() else {
        problems.push(format!("{at}: not an array"));
        return;
    };
    for recipient in recipients {
        check_members(recipient, &["emailAddress"], &["emailAddress"], at, problems);
        let address = &recipient["emailAddress"];
        check_members(address, &["address", "name"], &["address"], at, problems);
        if !address["address"].as_str().is_some_and(|a| a.contains('@')) {
            problems
                .push(format!("{at}: emailAddress.address {} is no address", address["address"]));
        }
        if !matches!(address["name"], Value::Null | Value::String(_)) {
            problems.push(format!("{at}: emailAddress.name is not a string"));
        }
    }
}

/// Custom headers of the JSON form must be named `x-…`.
fn check_custom_headers(headers: &Value, at: &str, problems: &mut Vec<String>) {
    for header in headers.as_array().into_iter().flatten() {
        check_members(header, &["name", "value"], &["name", "value"], at, problems);
        let name = header["name"].as_str().unwrap_or_default();
        if !name.to_ascii_lowercase().starts_with("x-") {
            problems.push(format!("{at}: internet message header {name:?} does not start x-"));
        }
    }
}

/// Checks the MIME form: standard base64, with padding and no line breaks, of an RFC 5322
/// message with CRLF line ends, From, To, Date and Message-ID, and the RFC 8058 one-click
/// headers.
fn check_mime(base64: &str, at: &str, problems: &mut Vec<String>) {
    let bytes = match STANDARD.decode(base64) {
        Ok(bytes) => bytes,
        Err(err) => {
            problems.push(format!("{at}: the MIME body is not standard base64: {err}"));
            return;
        }
    };
    let bare_lf = bytes.windows(2).any(|pair| pair[1] == b'\n' && pair[0] != b'\r')
        || bytes.first() == Some(&b'\n');
    if bare_lf {
        problems.push(format!("{at}: the MIME message has a line end that is not CRLF"));
    }
    let Some(message) = MessageParser::default().parse(&bytes) else {
        problems.push(format!("{at}: the MIME body is not an RFC 5322 message"));
        return;
    };

    for header in ["From", "To", "Date", "Message-ID"] {
        if message.header_raw(header).is_none() {
            problems.push(format!("{at}: the MIME message has no {header} header"));
        }
    }
    let unsubscribe = message.header_raw("List-Unsubscribe").map(str::trim);
    if !unsubscribe.is_some_and(|value| value.starts_with("<https://") && value.ends_with('>')) {
        problems.push(format!("{at}: List-Unsubscribe {unsubscribe:?} is not <https://…>"));
    }
    let post = message.header_raw("List-Unsubscribe-Post").map(str::trim);
    if post != Some("List-Unsubscribe=One-Click") {
        problems.push(format!("{at}: List-Unsubscribe-Post {post:?} is not the one-click value"));
    }
}

/// Checks that `value` is an object whose members are all in `allowed` and include every one
/// of `required`.
fn check_members(
    value: &Value,
    allowed: &[&str],
    required: &[&str],
    at: &str,
    problems: &mut Vec<String>,
) {
    let Some(object) = value.as_object() else {
        problems.push(format!("{at}: {} is not an object", json_kind(value)));
        return;
    };
    for name in object.keys().filter(|name| !allowed.contains(&name.as_str())) {
        problems.push(format!("{at}: unknown member {name}"));
    }
    for name in required.iter().filter(|name| !object.contains_key(**name)) {
        problems.push(format!("{at}: required member {name} is missing"));
    }
}

fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
