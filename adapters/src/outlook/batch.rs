//! JSON batching of `sendMail`: the `$batch` body, the split of a long list into batches, and
//! the pairing of the inner responses, which come back in any order, with the messages.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::Value;

use super::response::classify;
use super::{BATCH_SEND_MAIL_URL, MAX_BATCH_REQUESTS};
use crate::http::RawResponse;
use crate::outbound::SendOutcome;

/// The body of `POST /$batch`.
#[derive(Debug, Serialize)]
pub struct BatchRequest<'a> {
    pub requests: &'a [BatchItem],
}

/// One inner request of a `$batch`.
#[derive(Clone, Debug, Serialize)]
pub struct BatchItem {
    /// Unique in the batch. The client uses the message's position in the caller's list.
    pub id: String,
    pub method: &'static str,
    /// Relative to the API version, as Graph requires.
    pub url: &'static str,
    /// Graph requires `headers` with a `Content-Type` whenever `body` is present.
    pub headers: BTreeMap<&'static str, &'static str>,
    /// The JSON `sendMail` object, or the base64 text of the MIME form.
    pub body: Value,
}

impl BatchItem {
    /// Builds the inner `sendMail` request `id` with `body` sent as `content_type`.
    pub fn send_mail(id: String, content_type: &'static str, body: Value) -> Self {
        let headers = BTreeMap::from([("Content-Type", content_type)]);
        Self { id, method: "POST", url: BATCH_SEND_MAIL_URL, headers, body }
    }
}

/// Splits `count` requests into the fewest batches of at most [`MAX_BATCH_REQUESTS`] and
/// returns their sizes, as even as possible so that no batch is left with a lone request:
/// 25 becomes 13 and 12, not 20 and 5.
pub fn batch_sizes(count: usize) -> Vec<usize> {
    let batches = count.div_ceil(MAX_BATCH_REQUESTS);
    if batches == 0 {
        return Vec::new();
    }
    let (base, larger) = (count / batches, count % batches);
    (0..batches).map(|index| if index < larger { base + 1 } else { base }).collect()
}

/// Classifies the inner responses of a `200` `$batch` response, one outcome per item of
/// `items` in the same order. An item whose id is missing from the response is in doubt,
/// because Graph may have run it.
pub(crate) fn pair_responses(
    items: &[BatchItem],
    body: &[u8],
    now: DateTime<Utc>,
) -> Vec<SendOutcome> {
    let responses = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut root)) => match root.remove("responses") {
            Some(Value::Array(responses)) => responses,
            _ => return vec![unreadable_batch("has no responses array"); items.len()],
        },
        _ => return vec![unreadable_batch("is not a JSON object"); items.len()],
    };

    // Ids are compared without regard to case, as Graph compares them; the first wins.
    let mut by_id: HashMap<String, SendOutcome> = HashMap::new();
    for response in &responses {
        if let Some((id, outcome)) = classify_inner(response, now) {
            by_id.entry(id.to_lowercase()).or_insert(outcome);
        }
    }

    let missing = items.iter().filter(|item| !by_id.contains_key(&item.id.to_lowercase())).count();
    if missing > 0 {
        tracing::warn!(missing, items = items.len(), "outlook $batch response lacks request ids");
    }
    items
        .iter()
        .map(|item| by_id.remove(&item.id.to_lowercase()).unwrap_or_else(missing_from_response))
        .collect()
}

/// Classifies one inner response with the classifier of single sends, or returns `None` when
/// it has no id to pair it by. An inner response without a valid status is in doubt.
fn classify_inner(response: &Value, now: DateTime<Utc>) -> Option<(String, SendOutcome)> {
    let id = response.get("id")?.as_str()?.to_owned();
    let status = response
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|status| u16::try_from(status).ok())
        .and_then(|status| reqwest::StatusCode::from_u16(status).ok());
    let Some(status) = status else {
        let reason = "outlook $batch: an inner response has no valid status; the message may \
                      have been sent"
            .to_owned();
        return Some((id, SendOutcome::InDoubt { reason }));
    };

    let raw = RawResponse {
        status,
        headers: inner_headers(response.get("headers")),
        body: inner_body(response.get("body")),
    };
    Some((id, classify(&raw, now)))
}

/// Reads the `headers` object of an inner response, skipping names and values that are not
/// valid HTTP.
fn inner_headers(headers: Option<&Value>) -> HeaderMap {
    let mut map = HeaderMap::new();
    let Some(Value::Object(headers)) = headers else {
        return map;
    };
    for (name, value) in headers {
        let Some(value) = value.as_str() else { continue };
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value))
        {
            map.append(name, value);
        }
    }
    map
}

/// Returns the bytes the inner `body` stands for: a JSON value as its JSON text, a string as
/// its text.
fn inner_body(body: Option<&Value>) -> bytes::Bytes {
    match body {
        None | Some(Value::Null) => bytes::Bytes::new(),
        Some(Value::String(text)) => bytes::Bytes::from(text.clone()),
        Some(value) => bytes::Bytes::from(value.to_string()),
    }
}

fn unreadable_batch(problem: &str) -> SendOutcome {
    let reason = format!(
        "outlook $batch: the response {problem}, so the outcome of each message is unknown; \
         the messages may have been sent"
    );
    SendOutcome::InDoubt { reason }
}

fn missing_from_response() -> SendOutcome {
    let reason = "outlook $batch: the response has no entry for this message; it may have been \
                  sent"
        .to_owned();
    SendOutcome::InDoubt { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_balanced_and_bounded() {
        let cases: [(usize, &[usize]); 7] = [
            (0, &[]),
            (1, &[1]),
            (20, &[20]),
            (21, &[11, 10]),
            (25, &[13, 12]),
            (40, &[20, 20]),
            (41, &[14, 14, 13]),
        ];
        for (count, expected) in cases {
            assert_eq!(batch_sizes(count), expected, "count {count}");
        }
    }
}
