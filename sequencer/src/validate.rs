//! Values PostgreSQL would refuse, refused first with a 400 that names the field: NUL characters in
//! text (a `text` or `jsonb` value cannot hold U+0000) and timestamps outside PostgreSQL's range
//! (4713 BC to 294276 AD). Applied to every request's path parameters, query and JSON body before any
//! handler sees them, so no route can forget it. Invalid UTF-8 never gets this far: the JSON, query
//! and path extractors refuse it with a 400.

use chrono::{DateTime, Datelike, Utc};
use serde_json::Value;

use crate::error::{Error, Result};

/// Earliest and latest years PostgreSQL's `timestamptz` holds (year 0 is 1 BC in chrono's counting).
const MIN_YEAR: i32 = -4712;
const MAX_YEAR: i32 = 294_275;

fn nul(field: &str) -> Error {
    Error::BadRequest(format!("{field} contains a NUL character (U+0000), which cannot be stored"))
}

/// A text value: no NUL, and when it reads as a timestamp, one PostgreSQL can store.
pub fn check_text(field: &str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(nul(field));
    }
    if value.starts_with(['-', '+']) {
        check_timestamp_text(field, value)?;
    }
    Ok(())
}

fn check_timestamp_text(field: &str, value: &str) -> Result<()> {
    if let Ok(t) = value.parse::<DateTime<Utc>>() {
        check_timestamp(field, t)?;
    }
    Ok(())
}

/// A timestamp PostgreSQL can store.
pub fn check_timestamp(field: &str, t: DateTime<Utc>) -> Result<()> {
    if !(MIN_YEAR..=MAX_YEAR).contains(&t.year()) {
        return Err(Error::BadRequest(format!("{field} is outside the storable range (4713 BC to 294276 AD)")));
    }
    Ok(())
}

/// Every string (and object key) of a JSON value, with its path in the message.
pub fn check_json(path: &mut String, value: &Value) -> Result<()> {
    match value {
        Value::String(s) => check_text(if path.is_empty() { "body" } else { path }, s),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                check_json(path, item)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(map) => {
            for (key, item) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key.replace('\0', "\\u0000"));
                if key.contains('\0') {
                    return Err(nul(&format!("the key of {path}")));
                }
                check_json(path, item)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A request body. The common case (no escaped or raw NUL, no string that could be a signed-year
/// timestamp) costs one scan of the bytes; only a suspicious body is parsed to name the field.
pub fn check_body(bytes: &[u8]) -> Result<()> {
    let suspicious = memchr::memchr(0, bytes).is_some()
        || memchr::memmem::find_iter(bytes, b"\\u").any(|i| bytes.get(i + 2..i + 6).is_some_and(|h| h == b"0000"))
        || memchr::memmem::find(bytes, b"\"-").is_some()
        || memchr::memmem::find(bytes, b"\"+").is_some();
    if !suspicious {
        return Ok(());
    }
    if memchr::memchr(0, bytes).is_some() && serde_json::from_slice::<Value>(bytes).is_err() {
        return Err(nul("the body"));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => check_json(&mut String::new(), &value),
        // Not JSON: the handler's extractor answers with its own 400.
        Err(_) => Ok(()),
    }
}

/// The query string's parameters.
pub fn check_query(query: &str) -> Result<()> {
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name.contains('\0') {
            return Err(nul("a query parameter name"));
        }
        check_text(&name, &value)?;
    }
    Ok(())
}

/// The path's parameters, named from the matched route template (`/x/{name}`).
pub fn check_path(template: Option<&str>, path: &str) -> Result<()> {
    let names: Vec<&str> = template.map(|t| t.split('/').collect()).unwrap_or_default();
    for (i, segment) in path.split('/').enumerate() {
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        let name = names.get(i).map(|n| n.trim_start_matches('{').trim_end_matches('}')).unwrap_or("path");
        check_text(name, &decoded)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(r: Result<()>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn a_nul_anywhere_in_a_body_is_refused_naming_the_field() {
        let body = br#"{"events":[{"payload":{"note":"a\u0000b"}}]}"#;
        assert!(message(check_body(body)).starts_with("events[0].payload.note contains a NUL"));
        assert!(message(check_body(br#"{"k\u0000":1}"#)).contains("the key of"));
        assert!(check_body(br#"{"note":"a\\u0000b"}"#).is_ok(), "an escaped backslash is not a NUL");
        assert!(check_body(br#"{"events":[{"payload":{"n":-1,"s":"x"}}]}"#).is_ok());
        assert!(check_body(b"{\"a\":\"\x00\"}").is_err(), "a raw NUL byte");
    }

    #[test]
    fn timestamps_outside_postgres_range_are_refused_and_ordinary_ones_pass() {
        assert!(message(check_body(br#"{"created_at":"-5000-01-01T00:00:00Z"}"#)).starts_with("created_at is outside"));
        assert!(check_body(br#"{"created_at":"2025-06-01T12:00:00Z"}"#).is_ok());
        assert!(check_body(br#"{"created_at":"-4000-01-01T00:00:00Z"}"#).is_ok());
        assert!(check_query("since=-9999-01-01T00:00:00Z&limit=5").is_err());
        assert!(check_query("since=2025-01-01T00:00:00Z&reason=a").is_ok());
        assert!(message(check_query("reason=a%00b")).starts_with("reason contains a NUL"));
    }

    #[test]
    fn path_parameters_are_named_from_the_route_template() {
        let template = "/api/v1/ves/entities/{entity_type}/{entity_id}";
        let err = message(check_path(Some(template), "/api/v1/ves/entities/Item/a%00b"));
        assert!(err.starts_with("entity_id contains a NUL"), "{err}");
        assert!(check_path(Some(template), "/api/v1/ves/entities/Item/W-1").is_ok());
    }

    #[test]
    fn nested_json_values_are_walked() {
        let v = json!({"a": [{"b": "ok"}, {"c": "x\u{0}"}]});
        assert!(message(check_json(&mut String::new(), &v)).starts_with("a[1].c contains"));
    }
}
