//! Checks a request against a Google API discovery document: the HTTP method, the path, the
//! content type the method accepts and the JSON body against the request schema.
//!
//! Everything it checks comes from the document, so a change of the API's description shows
//! up as a failing check instead of a silently outdated list.

use base64::Engine as _;
use base64::alphabet::{STANDARD, URL_SAFE};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

/// Decodes either padding form, because the discovery format `byte` does not fix one.
const PADDING_INDIFFERENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const BASE64URL: GeneralPurpose = GeneralPurpose::new(&URL_SAFE, PADDING_INDIFFERENT);
const BASE64: GeneralPurpose = GeneralPurpose::new(&STANDARD, PADDING_INDIFFERENT);

/// A request as it goes on the wire: a request of its own or one call of a batch.
#[derive(Debug, Clone)]
pub(super) struct WireRequest {
    pub(super) method: String,
    /// Path from the server's root, with any query.
    pub(super) path: String,
    pub(super) content_type: Option<String>,
    pub(super) body: Vec<u8>,
}

/// A discovery document.
#[derive(Debug)]
pub(super) struct Discovery {
    document: Value,
}

/// The form of body a path of a method takes.
#[derive(Debug, PartialEq)]
enum BodyForm {
    /// The JSON form of the method's request schema.
    Json,
    /// Media of one of the `mediaUpload.accept` types, on an upload path.
    Media(Vec<String>),
}

impl Discovery {
    pub(super) fn new(document: Value) -> Self {
        Self { document }
    }

    /// Returns the path of the API's batch endpoint: `/<batchPath>/<name>/<version>`, the
    /// per-API form that Google's batch guide gives.
    pub(super) fn batch_path(&self) -> String {
        let field = |name: &str| self.document[name].as_str().unwrap_or_default().to_owned();
        let batch = field("batchPath");
        format!("/{}/{}/{}", batch.trim_matches('/'), field("name"), field("version"))
    }

    /// Checks `request` against the method `dotted_name` (such as `users.messages.send`) and
    /// returns every violation found, empty when the request conforms.
    pub(super) fn check(&self, dotted_name: &str, request: &WireRequest) -> Vec<String> {
        let Some(method) = self.method(dotted_name) else {
            return vec![format!("method {dotted_name} is not in the discovery document")];
        };
        let mut violations = Vec::new();

        let http_method = method["httpMethod"].as_str().unwrap_or_default();
        if request.method != http_method {
            violations.push(format!("HTTP method {} is not {http_method}", request.method));
        }

        let path = request.path.split_once('?').map_or(request.path.as_str(), |(path, _)| path);
        let Some(form) = self.body_form(method, path) else {
            violations.push(format!("path {path} matches no path of {dotted_name}"));
            return violations;
        };

        let media_type = request
            .content_type
            .as_deref()
            .and_then(|value| value.split(';').next())
            .map(|value| value.trim().to_ascii_lowercase())
            .unwrap_or_default();
        match &form {
            BodyForm::Json => {
                if self.document["protocol"] != "rest" {
                    violations.push("only the rest protocol is understood".to_owned());
                } else if media_type != "application/json" {
                    violations.push(format!(
                        "content type {media_type:?} is not application/json, the body form of \
                         a rest method"
                    ));
                }
                let method_id = method["id"].as_str().unwrap_or_default();
                let schema = method["request"]["$ref"].as_str().unwrap_or_default();
                self.check_json_body(method_id, schema, &request.body, &mut violations);
            }
            BodyForm::Media(accept) => {
                if !accept.iter().any(|pattern| media_type_matches(pattern, &media_type)) {
                    violations
                        .push(format!("content type {media_type:?} is not one of {accept:?}"));
                }
            }
        }
        violations
    }

    /// Finds a method by its dotted name below `resources`.
    fn method(&self, dotted_name: &str) -> Option<&Value> {
        let mut names: Vec<&str> = dotted_name.split('.').collect();
        let method_name = names.pop()?;
        let mut node = &self.document;
        for resource in names {
            node = node.get("resources")?.get(resource)?;
        }
        node.get("methods")?.get(method_name)
    }

    /// Returns the body form of `path`: JSON on the method's own path, media on its upload
    /// paths, `None` on any other path.
    fn body_form(&self, method: &Value, path: &str) -> Option<BodyForm> {
        let service_path = self.document["servicePath"].as_str().unwrap_or_default();
        let own_path = format!("/{service_path}{}", method["path"].as_str().unwrap_or_default());
        if path_matches(&own_path, path) {
            return Some(BodyForm::Json);
        }

        let upload = &method["mediaUpload"];
        let protocols = upload["protocols"].as_object()?;
        let on_upload_path = protocols
            .values()
            .filter_map(|protocol| protocol["path"].as_str())
            .any(|template| path_matches(template, path));
        let accept = upload["accept"].as_array()?;
        let accept = accept.iter().filter_map(Value::as_str).map(str::to_owned).collect();
        on_upload_path.then_some(BodyForm::Media(accept))
    }

    /// Checks that `body` is a JSON object of the schema `schema_name`, with every property
    /// that the schema marks required for `method_id`.
    fn check_json_body(
        &self,
        method_id: &str,
        schema_name: &str,
        body: &[u8],
        violations: &mut Vec<String>,
    ) {
        let value: Value = match serde_json::from_slice(body) {
            Ok(value) => value,
            Err(err) => {
                violations.push(format!("body is not JSON: {err}"));
                return;
            }
        };
        self.check_value(schema_name, &json_ref(schema_name), &value, violations);

        let Some(object) = value.as_object() else { return };
        let properties = self.properties(schema_name);
        for (name, property) in properties.into_iter().flatten() {
            let required = property["annotations"]["required"]
                .as_array()
                .is_some_and(|methods| methods.iter().any(|id| id == method_id));
            if required && !object.contains_key(name) {
                violations.push(format!("missing field `{name}`, required for {method_id}"));
            }
        }
    }

    /// Checks `value` at `at` against the property or schema description `schema`.
    fn check_value(&self, at: &str, schema: &Value, value: &Value, violations: &mut Vec<String>) {
        if let Some(name) = schema["$ref"].as_str() {
            let Some(object) = value.as_object() else {
                violations.push(format!("{at} is not an object of schema {name}"));
                return;
            };
            self.check_object(at, name, object, violations);
            return;
        }

        let expected = schema["type"].as_str().unwrap_or_default();
        let fits = match expected {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            "any" => true,
            other => {
                violations
                    .push(format!("{at} has type {other:?}, which the checker does not know"));
                return;
            }
        };
        if !fits {
            violations.push(format!("{at} is {value}, not of type {expected}"));
            return;
        }

        if let (Some(items), Some(elements)) = (schema.get("items"), value.as_array()) {
            for (index, element) in elements.iter().enumerate() {
                self.check_value(&format!("{at}[{index}]"), items, element, violations);
            }
        }
        if let Some(text) = value.as_str() {
            check_format(at, schema, text, violations);
        }
    }

    /// Checks each member of `object` against the properties of the schema `name`.
    fn check_object(
        &self,
        at: &str,
        name: &str,
        object: &Map<String, Value>,
        violations: &mut Vec<String>,
    ) {
        let Some(properties) = self.properties(name) else {
            violations.push(format!("schema {name} is not in the discovery document"));
            return;
        };
        for (field, value) in object {
            match properties.get(field) {
                Some(property) => {
                    self.check_value(&format!("{at}.{field}"), property, value, violations);
                }
                None => violations.push(format!("unknown field `{field}` in {name}")),
            }
        }
    }

    fn properties(&self, schema_name: &str) -> Option<&Map<String, Value>> {
        self.document["schemas"][schema_name]["properties"].as_object()
    }
}

/// Returns a schema description that refers to the schema `name`.
fn json_ref(name: &str) -> Value {
    serde_json::json!({ "$ref": name })
}

/// Checks the string formats of discovery documents that a body can get wrong.
fn check_format(at: &str, schema: &Value, text: &str, violations: &mut Vec<String>) {
    match schema["format"].as_str() {
        // Format `byte` is base64. A description that names base64url narrows it to the
        // URL-safe alphabet, as `Message.raw`'s does.
        Some("byte") => {
            let description = schema["description"].as_str().unwrap_or_default();
            if description.contains("base64url") {
                if BASE64URL.decode(text).is_err() {
                    violations.push(format!("{at} is not base64url"));
                }
            } else if BASE64.decode(text).is_err() && BASE64URL.decode(text).is_err() {
                violations.push(format!("{at} is not base64"));
            }
        }
        Some("int64") if text.parse::<i64>().is_err() => {
            violations.push(format!("{at} is not an int64 in a string"));
        }
        Some("uint64") if text.parse::<u64>().is_err() => {
            violations.push(format!("{at} is not a uint64 in a string"));
        }
        _ => {}
    }
}

/// Returns whether `path` fits `template`, where each `{name}` stands for one non-empty
/// segment.
fn path_matches(template: &str, path: &str) -> bool {
    let template: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    let path: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    template.len() == path.len()
        && template.iter().zip(&path).all(|(expected, actual)| {
            let is_variable = expected.starts_with('{') && expected.ends_with('}');
            if is_variable { !actual.is_empty() } else { expected == actual }
        })
}

/// Returns whether `media_type` fits `pattern`, such as `message/*`.
fn media_type_matches(pattern: &str, media_type: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(kind) => media_type.split_once('/').is_some_and(|(actual, _)| actual == kind),
        None => pattern.eq_ignore_ascii_case(media_type),
    }
}
