//! Compact JSON objects written by hand, member by member, for the two things written for every event:
//! the transparency log's entry (`store::events`) and the ingest answer's receipt (`ingest`).
//!
//! NB: written here rather than derived because serde_json scans every string it writes for characters
//! to escape (a table lookup and a branch per byte, then its writer's calls), and writes hex through the
//! `fmt` machinery (`collect_str`). Ids, hashes, signatures and times never need escaping, and the
//! strings an agent chose almost never do, so they are copied. The output is the bytes serde_json's
//! compact writer gives for the same members in the same order: a string that needs escaping is
//! written by serde_json.

use uuid::Uuid;

/// An object being written to the end of a buffer: members in the order they are written, then
/// [`Object::end`].
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Object<'a> {
    /// Opens an object at the end of `out`.
    pub fn start(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, empty: true }
    }

    /// Writes the next member's key and returns the buffer, for a value written by the caller.
    pub fn key(&mut self, name: &str) -> &mut Vec<u8> {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    pub fn int(&mut self, name: &str, n: impl itoa::Integer) {
        let out = self.key(name);
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    /// An integer, or `null`.
    pub fn int_or_null(&mut self, name: &str, n: Option<impl itoa::Integer>) {
        match n {
            Some(n) => self.int(name, n),
            None => self.key(name).extend_from_slice(b"null"),
        }
    }

    pub fn text(&mut self, name: &str, s: &str) {
        string(self.key(name), s);
    }

    /// A hyphenated lowercase UUID.
    pub fn uuid(&mut self, name: &str, id: Uuid) {
        self.text(name, id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    }

    /// `0x` and lowercase hex.
    pub fn hex<const N: usize>(&mut self, name: &str, bytes: &[u8; N]) {
        let out = self.key(name);
        out.extend_from_slice(b"\"0x");
        let at = out.len();
        out.resize(at + 2 * N, 0);
        hex::encode_to_slice(bytes, &mut out[at..]).expect("twice the length");
        out.push(b'"');
    }

    pub fn end(self) {
        self.out.push(b'}');
    }
}

/// `s` as a JSON string, as serde_json writes it.
fn string(out: &mut Vec<u8>, s: &str) {
    // NB: the characters serde_json escapes are exactly the controls, `"` and `\`.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::Object;

    proptest! {
        #[test]
        fn an_object_is_serde_jsons_compact_form_byte_for_byte(
            text in "\\PC{0,6}|[\"\\\\\u{0}-\u{1f}\u{7f}é😀]{0,4}",
            n in any::<i64>(),
            maybe in proptest::option::of(any::<u64>()),
            bytes in any::<[u8; 32]>(),
            id in any::<u128>(),
        ) {
            let id = uuid::Uuid::from_u128(id);
            // NB: in the keys' order, which is the order serde_json's (sorted) map writes them in.
            let mut out = b"[".to_vec();
            let mut o = Object::start(&mut out);
            o.hex("h", &bytes);
            o.int_or_null("m", maybe);
            o.int("n", n);
            o.text("t", &text);
            o.uuid("u", id);
            serde_json::to_writer(o.key("v"), &json!({"k": text})).unwrap();
            o.end();
            let expected = json!({
                "h": format!("0x{}", hex::encode(bytes)), "m": maybe, "n": n, "t": text, "u": id, "v": {"k": text}
            });
            prop_assert_eq!(String::from_utf8(out).unwrap(), format!("[{expected}"));
        }
    }
}
