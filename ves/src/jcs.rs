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

/// Whether `text`, a JSON text, is byte for byte its own canonical form (RFC 8785) and serde_json's
/// compact form of its parse, so that it can be hashed, stored and served as it is, without building a
/// `Value` (the sequencer reads every payload this way: `envelope::RawPayload`). One pass, no
/// allocation.
///
/// `false` means "not known to be": the caller parses the text and canonicalises the `Value`. Besides
/// every text that is not canonical (whitespace, keys out of order or repeated, `1.0`, `-0`, `\/`,
/// `\u0041`, an integer beyond ±2^53, ...), it declines some that are, which are rare in payloads and
/// which the parse handles: a number with an exponent, a key with an escape or a character at or above
/// U+E000 (where UTF-8 and UTF-16 orders part), a string holding U+0000, and nesting deeper than
/// [`MAX_CANONICAL_NESTING`].
pub fn is_canonical(text: &str) -> bool {
    let mut scan = Scan { bytes: text.as_bytes(), at: 0 };
    scan.value(0) && scan.at == scan.bytes.len()
}

/// The deepest nesting of arrays and objects [`is_canonical`] scans: what serde_json parses of a value
/// within an ingest request (its 128 levels less the request's own three: the body, `events`, the
/// event).
pub const MAX_CANONICAL_NESTING: usize = 124;

/// [`is_canonical`]'s cursor.
struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.at += usize::from(found);
        found
    }

    fn value(&mut self, depth: usize) -> bool {
        match self.peek() {
            Some(b'{') => depth < MAX_CANONICAL_NESTING && self.object(depth + 1),
            Some(b'[') => depth < MAX_CANONICAL_NESTING && self.array(depth + 1),
            Some(b'"') => self.string().is_some(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let found = self.bytes[self.at..].starts_with(word);
        self.at += word.len();
        found
    }

    fn array(&mut self, depth: usize) -> bool {
        self.at += 1;
        if self.eat(b']') {
            return true;
        }
        loop {
            if !self.value(depth) {
                return false;
            }
            if self.eat(b']') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn object(&mut self, depth: usize) -> bool {
        self.at += 1;
        if self.eat(b'}') {
            return true;
        }
        let mut previous: Option<&[u8]> = None;
        loop {
            // A key must be plain (no escape, nothing at or above U+E000: lead bytes 0xEE and up) for
            // its bytes to order as its UTF-16 code units do, and strictly after the one before.
            if self.peek() != Some(b'"') {
                return false;
            }
            let Some((key, plain)) = self.string() else { return false };
            if !plain || key.iter().any(|&b| b >= 0xEE) || previous.is_some_and(|p| p >= key) {
                return false;
            }
            previous = Some(key);
            if !self.eat(b':') || !self.value(depth) {
                return false;
            }
            if self.eat(b'}') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    /// A string (the cursor on its opening quote) whose escapes are the ones both forms write;
    /// returns its bytes between the quotes and whether it had no escape at all.
    fn string(&mut self) -> Option<(&'a [u8], bool)> {
        let bytes = self.bytes;
        let start = self.at + 1;
        let mut at = start;
        let mut plain = true;
        loop {
            match *bytes.get(at)? {
                b'"' => {
                    self.at = at + 1;
                    return Some((&bytes[start..at], plain));
                }
                b'\\' => {
                    plain = false;
                    match *bytes.get(at + 1)? {
                        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                        b'u' => {
                            // `\u00xx`, lowercase, for a control character without a short form.
                            let hex = bytes.get(at + 2..at + 6)?;
                            let lower = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
                            if !hex.iter().all(lower) || &hex[..2] != b"00" {
                                return None;
                            }
                            let code = u8::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()?;
                            if code == 0 || code >= 0x20 || matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                                return None;
                            }
                            at += 6;
                        }
                        _ => return None,
                    }
                }
                0..=0x1f => return None,
                _ => at += 1,
            }
        }
    }

    /// A number both forms print as written: an integer within ±2^53 other than `-0`, or a float
    /// without an exponent that is its own shortest form in ryu and in ECMAScript.
    fn number(&mut self) -> bool {
        let bytes = self.bytes;
        let start = self.at;
        let mut at = start + usize::from(bytes[start] == b'-');
        let digits = |at: &mut usize| {
            let from = *at;
            while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
                *at += 1;
            }
            *at - from
        };
        let integer = digits(&mut at);
        if integer == 0 || (integer > 1 && bytes[at - integer] == b'0') {
            return false;
        }
        let fraction = bytes.get(at) == Some(&b'.');
        if fraction {
            at += 1;
            if digits(&mut at) == 0 {
                return false;
            }
        }
        if matches!(bytes.get(at), Some(b'e' | b'E')) {
            return false;
        }
        self.at = at;
        let token = &bytes[start..at];
        let Ok(token) = std::str::from_utf8(token) else { return false };
        if !fraction {
            const EXACT: u64 = 1 << 53;
            let magnitude = token.trim_start_matches('-');
            return token != "-0" && magnitude.len() <= 16 && magnitude.parse::<u64>().is_ok_and(|m| m <= EXACT);
        }
        let Ok(f) = token.parse::<f64>() else { return false };
        f.is_finite() && ryu_js::Buffer::new().format_finite(f) == token && ryu::Buffer::new().format_finite(f) == token
    }
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

    /// JSON texts of `v` in the forms a client may send: compact, canonical, pretty.
    fn texts(v: &Value) -> Vec<String> {
        vec![
            serde_json::to_string(v).unwrap(),
            String::from_utf8(super::to_vec(v).unwrap()).unwrap(),
            serde_json::to_string_pretty(v).unwrap(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn a_text_called_canonical_is_its_canonical_and_its_compact_form(v in value(), cut in 0usize..64) {
            let mut candidates = texts(&v);
            // And texts that are not JSON values at all: a prefix and the text with one byte removed.
            let compact = candidates[0].clone();
            let at = cut.min(compact.len());
            if compact.is_char_boundary(at) {
                candidates.push(compact[..at].to_owned());
                let mut without = compact.clone();
                if at < without.len() && without.is_char_boundary(at + 1) {
                    without.remove(at);
                    candidates.push(without);
                }
            }
            for text in candidates {
                if super::is_canonical(&text) {
                    let parsed: Value = serde_json::from_str(&text)
                        .map_err(|e| TestCaseError::fail(format!("{text:?} called canonical, not JSON: {e}")))?;
                    prop_assert_eq!(&String::from_utf8(super::to_vec(&parsed).unwrap()).unwrap(), &text);
                    prop_assert_eq!(&serde_json::to_string(&parsed).unwrap(), &text);
                }
            }
        }
    }

    #[test]
    fn payloads_of_plain_keys_strings_integers_and_short_floats_are_taken_as_they_are() {
        for v in [
            json!({"counted_by": "agent-7", "delta": -8, "lot": {"expires": "2027-03-01", "id": "LOT-3"}, "note": "x",
                   "reason": "cycle_count", "sku": "SKU-00003", "unit_cost": 12.78, "warehouse": "WH-EAST-2"}),
            json!({"a": [1, 2.5, "x\u{1}\"\\\n", null, true, false, {}, []], "b": 9007199254740992u64, "é": "😀\u{e000}"}),
            json!([]),
            json!("plain"),
            json!(-9007199254740992i64),
            json!(0.001),
        ] {
            let text = serde_json::to_string(&v).unwrap();
            assert!(super::is_canonical(&text), "{text}");
        }
        for text in [
            "{\"b\":1,\"a\":2}",
            "{\"a\":1,\"a\":2}",
            "{ \"a\":1}",
            "[1,2] ",
            "1.0",
            "-0",
            "-0.0",
            "1e3",
            "1E3",
            "0.000001",
            "9007199254740993",
            "12345678901234567890",
            "01",
            "\"\\/\"",
            "\"\\u0041\"",
            "\"\\u001F\"",
            "\"\\u0000\"",
            "\"\\u000a\"",
            "{\"\\n\":1}",
            "{\"\u{e000}\":1}",
            "{\"😀\":1}",
            "tru",
            "[1,]",
            "",
        ] {
            assert!(!super::is_canonical(text), "{text}");
        }
        let n = super::MAX_CANONICAL_NESTING;
        let deep = format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(super::is_canonical(&deep));
        let deeper = format!("{}{}", "[".repeat(n + 1), "]".repeat(n + 1));
        assert!(!super::is_canonical(&deeper));
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
