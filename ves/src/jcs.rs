//! RFC 8785 JSON Canonicalization (JCS) of a `serde_json::Value`, written straight to its output.
//!
//! NB: written here, not taken from `serde_json_canonicalizer` (the crate upstream uses, and the
//! reference this module is tested against byte for byte): that crate buffers every object member
//! and parses every key back into a `Value` to sort it, which made the payload hash about 3 µs of
//! each event's ingest CPU (`loadgen --calibrate`, a 200-byte payload). Here an object whose keys are
//! already in UTF-16 order (serde_json's sorted maps are, unless a key holds a character at or above
//! U+E000) is written as it is iterated, without allocating.
//!
//! The output is the crate's:
//! - every number is the IEEE 754 double it denotes, printed as ECMAScript's `Number.prototype.toString`
//!   (`ryu_js`, the crate's own formatter), so `1.0` is `1` and `2^53 + 1` is `9007199254740992`;
//! - strings are escaped as serde_json escapes them (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other
//!   control characters as `\u00xx`), which is what JCS requires;
//! - object members are sorted by their keys' UTF-16 code units.

use std::io::{self, Write};

use serde_json::{Map, Value};

/// Writes the canonical form of `value` to `out`.
pub fn write<W: Write + ?Sized>(value: &Value, out: &mut W) -> io::Result<()> {
    write_inner(value, out, &mut true)
}

/// The canonical bytes of `value`.
pub fn to_vec(value: &Value) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    write(value, &mut out)?;
    Ok(out)
}

/// The canonical bytes of `value`, and whether they are also its compact serde_json form
/// (`serde_json::to_vec`) byte for byte, so that a caller who needs both encodes it once.
///
/// They are when every object's keys iterate in UTF-16 order already (serde_json's sorted maps do,
/// unless a key holds a character at or above U+E000) and every number prints alike: an integer
/// within ±2^53 (exact as a double, so ECMAScript prints its digits as `itoa` does), a float whose
/// shortest form is the same in both (`12.5`, not `100.0` against `100` or `1e21` against `1e+21`).
/// Strings are written by serde_json in both forms.
pub fn to_vec_and_compact(value: &Value) -> io::Result<(Vec<u8>, bool)> {
    let mut out = Vec::with_capacity(256);
    let mut compact = true;
    write_inner(value, &mut out, &mut compact)?;
    Ok((out, compact))
}

/// [`write`], clearing `compact` where the output departs from serde_json's compact form.
fn write_inner<W: Write + ?Sized>(value: &Value, out: &mut W, compact: &mut bool) -> io::Result<()> {
    match value {
        Value::Null => out.write_all(b"null"),
        Value::Bool(true) => out.write_all(b"true"),
        Value::Bool(false) => out.write_all(b"false"),
        Value::Number(n) => {
            // NB: `as_f64` is `u as f64` / `i as f64` / the float itself, as the crate converts them.
            let f = n
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "JCS numbers are finite doubles"))?;
            let mut buffer = ryu_js::Buffer::new();
            let canonical = buffer.format_finite(f);
            if *compact {
                const EXACT: u64 = 1 << 53;
                *compact = match (n.as_u64(), n.as_i64()) {
                    (Some(u), _) => u <= EXACT,
                    (None, Some(i)) => i.unsigned_abs() <= EXACT,
                    // NB: serde_json writes a float with `ryu`'s shortest form.
                    _ => ryu::Buffer::new().format_finite(f) == canonical,
                };
            }
            out.write_all(canonical.as_bytes())
        }
        Value::String(s) => serde_json::to_writer(out, s).map_err(io::Error::from),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_inner(item, out, compact)?;
            }
            out.write_all(b"]")
        }
        Value::Object(map) => {
            out.write_all(b"{")?;
            if in_utf16_order(map) {
                write_members(map.iter(), out, compact)?;
            } else {
                *compact = false;
                let mut members: Vec<(&String, &Value)> = map.iter().collect();
                members.sort_unstable_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
                write_members(members.into_iter(), out, compact)?;
            }
            out.write_all(b"}")
        }
    }
}

fn write_members<'a, W: Write + ?Sized>(
    members: impl Iterator<Item = (&'a String, &'a Value)>,
    out: &mut W,
    compact: &mut bool,
) -> io::Result<()> {
    for (i, (key, value)) in members.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, key).map_err(io::Error::from)?;
        out.write_all(b":")?;
        write_inner(value, out, compact)?;
    }
    Ok(())
}

/// Whether the map iterates in the keys' UTF-16 order already.
fn in_utf16_order(map: &Map<String, Value>) -> bool {
    let mut keys = map.keys();
    let Some(mut previous) = keys.next() else { return true };
    for key in keys {
        if previous.encode_utf16().cmp(key.encode_utf16()) != std::cmp::Ordering::Less {
            return false;
        }
        previous = key;
    }
    true
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn key() -> impl Strategy<Value = String> {
        // ASCII, escapes, the BMP above and below the surrogate range, and the supplementary planes:
        // the characters whose UTF-8 and UTF-16 orders differ.
        prop::collection::vec(
            prop_oneof![
                4 => prop::char::range('a', 'e'),
                1 => Just('"'), 1 => Just('\\'), 1 => Just('/'), 1 => Just('\u{1}'), 1 => Just('\u{1f}'),
                1 => Just('\u{7f}'), 1 => Just('é'), 1 => Just('\u{d7ff}'), 1 => Just('\u{e000}'),
                1 => Just('\u{ffff}'), 1 => Just('\u{10000}'), 1 => Just('😀'),
            ],
            0..5,
        )
        .prop_map(|c| c.into_iter().collect())
    }

    fn number() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-(1i64 << 54)..(1i64 << 54)).prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            (-1e6f64..1e6, -30i32..30).prop_map(|(m, e)| Value::from(m * 10f64.powi(e))),
            Just(json!(-0.0)),
            Just(json!(1.0)),
            Just(json!(1e21)),
            Just(json!(1e-7)),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf =
            prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::from), number(), key().prop_map(Value::from)];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::vec((key(), inner), 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn the_canonical_form_is_the_reference_crates_byte_for_byte(v in value()) {
            let ours = super::to_vec(&v).unwrap();
            let reference = serde_json_canonicalizer::to_vec(&v).unwrap();
            prop_assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(reference).unwrap());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn what_is_called_compact_is_serde_jsons_compact_form_byte_for_byte(v in value()) {
            let (canonical, compact) = super::to_vec_and_compact(&v).unwrap();
            prop_assert_eq!(&canonical, &super::to_vec(&v).unwrap());
            if compact {
                prop_assert_eq!(String::from_utf8(canonical).unwrap(), serde_json::to_string(&v).unwrap());
            }
        }
    }

    #[test]
    fn a_payload_of_strings_integers_and_short_floats_is_compact_and_others_are_not() {
        let compact = |v: Value| super::to_vec_and_compact(&v).unwrap().1;
        assert!(compact(
            json!({"sku": "W-1", "delta": -5, "cost": 12.5, "at": {"bin": "A\"7", "n": 9007199254740992u64}, "ok": true, "note": null, "tags": ["a", 0.001]})
        ));
        for v in [
            json!(100.0),
            json!(1e21),
            json!(1e-7),
            json!(-0.0),
            json!(9007199254740993u64),
            json!(-9007199254740993i64),
            json!({"\u{e000}": 1, "😀": 2}),
        ] {
            let serde_form = serde_json::to_vec(&v).unwrap();
            assert!(!compact(v.clone()) || super::to_vec(&v).unwrap() == serde_form, "{v}");
        }
        assert!(!compact(json!(100.0)));
        assert!(!compact(json!(9007199254740993u64)));
        assert!(!compact(json!({"\u{e000}": 1, "😀": 2})));
    }

    #[test]
    fn a_float_parses_to_the_double_it_denotes_so_its_canonical_form_is_stable() {
        // The cargo-fuzz JCS target found a near-overflow float that a build of serde_json without
        // `float_roundtrip` parsed one ULP off, so canonicalising twice gave two different texts.
        for text in ["1.7900001950813503e+308", "1.7900001950813505e+308", "5e-324", "2.2250738585072014e-308"] {
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(v.as_f64().unwrap(), text.parse::<f64>().unwrap(), "{text}");
            let canonical = super::to_vec(&v).unwrap();
            let again: Value = serde_json::from_slice(&canonical).unwrap();
            assert_eq!(super::to_vec(&again).unwrap(), canonical, "{text}");
        }
    }

    #[test]
    fn keys_the_utf8_order_puts_elsewhere_are_sorted_by_utf16_code_units() {
        // RFC 8785 §3.2.3: U+E000 sorts after U+1F600 (a surrogate pair, 0xD83D...) in UTF-16.
        let v = json!({"\u{e000}": 1, "😀": 2, "a": 3});
        assert_eq!(super::to_vec(&v).unwrap(), "{\"a\":3,\"😀\":2,\"\u{e000}\":1}".as_bytes());
        assert_eq!(super::to_vec(&json!([1.0, 1e21, 1e-7, -0.0])).unwrap(), b"[1,1e+21,1e-7,0]");
    }
}
