//! [`ApiJson`]: a JSON request body whose errors name the field at fault, such as
//! `limits.per_day: invalid value: integer -1, expected u32`. A body over the limit gets 413,
//! and a body that is not JSON gets 415.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest JSON request body, in bytes. Uploads of contacts use their own endpoint.
pub const JSON_LIMIT_BYTES: usize = 1 << 20;

/// Maximum characters of a rejected value quoted back in an error message.
const QUOTED_VALUE_CHARS: usize = 400;

/// A request body deserialized from JSON.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for ApiJson<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type = request
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let mut payload = payload.take();
        Box::pin(async move {
            let media_type = content_type.split(';').next().unwrap_or_default().trim();
            if media_type != "application/json" && !media_type.ends_with("+json") {
                let received = if media_type.is_empty() { "none" } else { media_type };
                return Err(ApiError::UnsupportedMediaType(format!(
                    "content type {}: send the body as JSON with Content-Type: application/json",
                    shorten(received)
                ))
                .into());
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|error| {
                    ApiError::BadRequest(format!("reading the request body failed: {error}"))
                })?;
                if body.len() + chunk.len() > JSON_LIMIT_BYTES {
                    return Err(ApiError::PayloadTooLarge(format!(
                        "JSON body over {JSON_LIMIT_BYTES} bytes"
                    ))
                    .into());
                }
                body.extend_from_slice(&chunk);
            }
            let mut deserializer = serde_json::Deserializer::from_slice(&body);
            let value = serde_path_to_error::deserialize(&mut deserializer)
                .map_err(|error| ApiError::BadRequest(describe(&error)))?;
            Ok(ApiJson(value))
        })
    }
}

/// Describes a deserialization error with the path of the field at fault.
fn describe(error: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = error.path().to_string();
    let inner = error.inner();
    let reason = shorten(&without_rejected_value(&inner.to_string()));
    if path.is_empty() || path == "." {
        format!("invalid JSON body: {reason}")
    } else {
        format!("{path}: {reason}")
    }
}

/// Replaces the value serde quotes in an "invalid type" or "invalid value" message by its kind
/// (`invalid type: string "ya29…", expected u64` becomes `invalid type: a string, expected
/// u64`), because a value sent in the wrong field may be a token.
pub(crate) fn without_rejected_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        let Some(rest) = message.strip_prefix(prefix) else { continue };
        let Some(expected_at) = rest.find(", expected ") else { continue };
        let (unexpected, tail) = rest.split_at(expected_at);
        let kind = match unexpected.split([' ', '"', '`']).next().unwrap_or_default() {
            "string" => "a string",
            "integer" => "an integer",
            "floating" => "a floating-point number",
            "boolean" => "a boolean",
            "character" => "a character",
            _ => return message.to_owned(),
        };
        return format!("{prefix}{kind}{tail}");
    }
    message.to_owned()
}

/// Cuts a message part to `QUOTED_VALUE_CHARS` characters, so that a huge rejected value is not
/// sent back whole.
pub fn shorten(text: &str) -> String {
    if text.chars().count() <= QUOTED_VALUE_CHARS {
        return text.to_owned();
    }
    let head: String = text.chars().take(QUOTED_VALUE_CHARS).collect();
    format!("{head}… ({} characters)", text.chars().count())
}

#[cfg(test)]
mod tests {
    use super::without_rejected_value;

    #[test]
    fn rejected_values_are_not_echoed() {
        let cases = [
            (
                "invalid type: string \"ya29.secret\", expected u64 at line 1 column 30",
                "invalid type: a string, expected u64 at line 1 column 30",
            ),
            (
                "invalid type: integer `4242`, expected a string at line 1 column 9",
                "invalid type: an integer, expected a string at line 1 column 9",
            ),
            (
                "invalid value: string \"x\", expected a positive number",
                "invalid value: a string, expected a positive number",
            ),
            ("invalid type: null, expected a string", "invalid type: null, expected a string"),
            ("unknown field `tokn`, expected `token`", "unknown field `tokn`, expected `token`"),
        ];
        for (message, expected) in cases {
            assert_eq!(without_rejected_value(message), expected, "{message}");
        }
    }
}
