//! One-line JSON rendering of bencode values for the `decode` command.
//!
//! Output is compact like serde_json's (`["a",1]`, `{"k":1}`): integers are bare numbers,
//! lists are arrays, dictionaries are objects with keys in sorted (byte) order. Byte strings
//! that are valid UTF-8 become JSON strings; byte strings that are NOT valid UTF-8 also become
//! JSON strings, converted lossily: each invalid sequence is replaced by U+FFFD (so the
//! rendering is not reversible for binary data such as `pieces`, and two distinct non-UTF-8
//! keys may render the same). String escaping is done by serde_json.

use super::Value;

/// One-line compact JSON for a value; non-UTF-8 byte strings are rendered lossily with U+FFFD.
pub fn to_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

fn write_string(bytes: &[u8], out: &mut String) {
    let text = String::from_utf8_lossy(bytes);
    match serde_json::to_string(text.as_ref()) {
        Ok(quoted) => out.push_str(&quoted),
        // Serialising a plain string cannot fail; keep a valid (empty) string if it ever did.
        Err(_) => out.push_str("\"\""),
    }
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Bytes(b) => write_string(b, out),
        Value::List(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Dict(map) => {
            out.push('{');
            for (n, (k, v)) in map.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_value(v, out);
            }
            out.push('}');
        }
    }
}
