//! Bencode: a strict decoder, a canonical encoder and JSON rendering.
//!
//! Invariants: decoding never panics and never allocates more than the input can justify
//! (string lengths are checked against the remaining input before allocating; nesting depth is
//! bounded by [`MAX_DEPTH`] and the decoder is iterative, so deep input cannot overflow the
//! stack). Byte strings stay bytes; nothing assumes UTF-8.
//!
//! Strictness: integers are `i<digits>e` without leading zeros or `-0`; string lengths have
//! no leading zeros; dictionary keys must be byte strings and unique. Keys out of sorted order
//! are accepted (real torrents have them); [`encode`] always writes them sorted.

use std::collections::BTreeMap;

mod json;

pub use json::to_json;

/// Deepest list/dict nesting the decoder accepts.
pub const MAX_DEPTH: usize = 512;

/// A decoded bencode value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `i<n>e`.
    Int(i64),
    /// `<len>:<bytes>`.
    Bytes(Vec<u8>),
    /// `l...e`.
    List(Vec<Value>),
    /// `d...e`, keys unique and kept sorted.
    Dict(BTreeMap<Vec<u8>, Value>),
}

impl Value {
    /// The bytes of a byte string, or `None` for other kinds.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The integer, or `None` for other kinds.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The list items, or `None` for other kinds.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// The dictionary, or `None` for other kinds.
    pub fn as_dict(&self) -> Option<&BTreeMap<Vec<u8>, Value>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }
}

/// Why some bytes are not valid bencode, with the byte offset where it was found.
///
/// The message reads well after a `invalid bencode: ` prefix, e.g.
/// `leading zero in integer at byte 1`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BencodeError {
    /// What is wrong and the byte offset (from the start of the input) where it was found.
    #[error("{what} at byte {offset}")]
    Invalid { what: String, offset: usize },
}

fn err<T>(what: impl Into<String>, offset: usize) -> Result<T, BencodeError> {
    Err(BencodeError::Invalid {
        what: what.into(),
        offset,
    })
}

/// A readable name for an unexpected byte.
fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", char::from(b))
    } else {
        format!("0x{b:02x}")
    }
}

/// Parses `i<digits>e` starting at `start` (which holds `i`). Returns the value and the offset
/// just past the `e`.
fn parse_int(input: &[u8], start: usize) -> Result<(i64, usize), BencodeError> {
    let mut pos = start.saturating_add(1);
    let negative = input.get(pos) == Some(&b'-');
    if negative {
        pos += 1;
    }
    let digits_start = pos;
    let mut value: i64 = 0;
    loop {
        match input.get(pos) {
            None => return err("unterminated integer (missing 'e')", input.len()),
            Some(&b'e') => break,
            Some(&c @ b'0'..=b'9') => {
                if pos > digits_start && input[digits_start] == b'0' {
                    return err("leading zero in integer", digits_start);
                }
                let digit = i64::from(c - b'0');
                let next = value.checked_mul(10).and_then(|v| {
                    if negative {
                        v.checked_sub(digit)
                    } else {
                        v.checked_add(digit)
                    }
                });
                match next {
                    Some(v) => value = v,
                    None => return err("integer does not fit in 64 bits", start),
                }
                pos += 1;
            }
            Some(&c) => {
                return err(
                    format!("unexpected byte {} in integer", describe_byte(c)),
                    pos,
                )
            }
        }
    }
    if pos == digits_start {
        return err("integer has no digits", digits_start);
    }
    if negative && value == 0 {
        return err("negative zero integer", start);
    }
    Ok((value, pos + 1))
}

/// Parses `<len>:<bytes>` starting at `start` (which holds a digit). Returns the byte range of
/// the string's contents; the length is checked against the input before anything is copied.
fn parse_bytes(input: &[u8], start: usize) -> Result<(usize, usize), BencodeError> {
    let mut pos = start;
    let mut len: usize = 0;
    loop {
        match input.get(pos) {
            None => return err("unterminated string length (missing ':')", input.len()),
            Some(&b':') => break,
            Some(&c @ b'0'..=b'9') => {
                if pos > start && input[start] == b'0' {
                    return err("leading zero in string length", start);
                }
                len = match len
                    .checked_mul(10)
                    .and_then(|l| l.checked_add(usize::from(c - b'0')))
                {
                    Some(l) => l,
                    None => return err("string length is too large", start),
                };
                pos += 1;
            }
            Some(&c) => {
                return err(
                    format!("unexpected byte {} in string length", describe_byte(c)),
                    pos,
                )
            }
        }
    }
    let body = pos + 1;
    let remaining = input.len().saturating_sub(body);
    if len > remaining {
        return err(
            format!("string length {len} exceeds the {remaining} bytes left"),
            start,
        );
    }
    Ok((body, body + len))
}

/// A container being filled by the iterative decoder.
enum Frame {
    List(Vec<Value>),
    /// The dictionary so far and the key waiting for its value.
    Dict(BTreeMap<Vec<u8>, Value>, Option<Vec<u8>>),
}

/// Decodes exactly one value spanning the whole input (trailing bytes are an error).
pub fn decode(input: &[u8]) -> Result<Value, BencodeError> {
    let (value, used) = decode_prefix(input)?;
    if used != input.len() {
        return err("trailing bytes after the value", used);
    }
    Ok(value)
}

/// Decodes one value at the start of `input`; returns it and the number of bytes it used.
pub fn decode_prefix(input: &[u8]) -> Result<(Value, usize), BencodeError> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut pos = 0usize;
    loop {
        let Some(&c) = input.get(pos) else {
            let what = if stack.is_empty() {
                "empty input"
            } else {
                "unexpected end of input inside a list or dictionary"
            };
            return err(what, pos);
        };

        // Inside a dictionary with no pending key: expect a key or the end.
        if let Some(Frame::Dict(map, pending @ None)) = stack.last_mut() {
            if c == b'e' {
                pos += 1;
                let done = Value::Dict(std::mem::take(map));
                stack.pop();
                if let Some(v) = attach(&mut stack, done) {
                    return Ok((v, pos));
                }
                continue;
            }
            let (from, to) = parse_key(input, pos)?;
            let key = &input[from..to];
            if map.contains_key(key) {
                return err("duplicate dictionary key", pos);
            }
            *pending = Some(key.to_vec());
            pos = to;
            continue;
        }

        let value = match c {
            b'i' => {
                let (v, next) = parse_int(input, pos)?;
                pos = next;
                Value::Int(v)
            }
            b'0'..=b'9' => {
                let (from, to) = parse_bytes(input, pos)?;
                pos = to;
                Value::Bytes(input[from..to].to_vec())
            }
            b'l' | b'd' => {
                if stack.len() >= MAX_DEPTH {
                    return err(format!("nesting deeper than {MAX_DEPTH} levels"), pos);
                }
                stack.push(if c == b'l' {
                    Frame::List(Vec::new())
                } else {
                    Frame::Dict(BTreeMap::new(), None)
                });
                pos += 1;
                continue;
            }
            b'e' => match stack.last_mut() {
                Some(Frame::List(items)) => {
                    pos += 1;
                    let done = Value::List(std::mem::take(items));
                    stack.pop();
                    done
                }
                Some(Frame::Dict(..)) => {
                    return err("dictionary key has no value", pos);
                }
                None => return err("unexpected byte 'e'", pos),
            },
            other => return err(format!("unexpected byte {}", describe_byte(other)), pos),
        };
        if let Some(v) = attach(&mut stack, value) {
            return Ok((v, pos));
        }
    }
}

/// Adds a finished value to the innermost container; returns it if there is none (done).
fn attach(stack: &mut [Frame], value: Value) -> Option<Value> {
    match stack.last_mut() {
        None => Some(value),
        Some(Frame::List(items)) => {
            items.push(value);
            None
        }
        Some(Frame::Dict(map, pending)) => {
            // The decoder only produces a value inside a dict after reading its key.
            if let Some(key) = pending.take() {
                map.insert(key, value);
            }
            None
        }
    }
}

/// Canonical encoding (dictionary keys in sorted order).
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out);
    out
}

fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

fn encode_into(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Int(i) => {
            out.push(b'i');
            out.extend_from_slice(i.to_string().as_bytes());
            out.push(b'e');
        }
        Value::Bytes(b) => encode_bytes(b, out),
        Value::List(items) => {
            out.push(b'l');
            for item in items {
                encode_into(item, out);
            }
            out.push(b'e');
        }
        Value::Dict(map) => {
            out.push(b'd');
            for (k, v) in map {
                encode_bytes(k, out);
                encode_into(v, out);
            }
            out.push(b'e');
        }
    }
}

/// A dictionary key at `pos` (which must be a byte string): the range of its bytes.
fn parse_key(input: &[u8], pos: usize) -> Result<(usize, usize), BencodeError> {
    match input.get(pos) {
        Some(c) if c.is_ascii_digit() => parse_bytes(input, pos),
        Some(&c) => err(
            format!(
                "dictionary key is not a byte string (found {})",
                describe_byte(c)
            ),
            pos,
        ),
        None => err("unexpected end of input inside a list or dictionary", pos),
    }
}

/// The raw bytes of the value stored under `key` in the top-level dictionary `input`,
/// exactly as they appear (used for the info hash). `Ok(None)` if the key is absent.
///
/// The whole input is validated as it is scanned: it must be exactly one dictionary (no
/// trailing bytes) with unique keys and valid values.
pub fn raw_dict_value<'a>(input: &'a [u8], key: &[u8]) -> Result<Option<&'a [u8]>, BencodeError> {
    match input.first() {
        None => return err("empty input", 0),
        Some(&b'd') => {}
        Some(_) => return err("top-level value is not a dictionary", 0),
    }
    let mut seen: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
    let mut found = None;
    let mut pos = 1usize;
    loop {
        match input.get(pos) {
            None => return err("unexpected end of input inside a list or dictionary", pos),
            Some(&b'e') => {
                pos += 1;
                break;
            }
            Some(_) => {}
        }
        let (from, to) = parse_key(input, pos)?;
        let k = &input[from..to];
        if !seen.insert(k) {
            return err("duplicate dictionary key", pos);
        }
        match input.get(to) {
            None => return err("unexpected end of input inside a list or dictionary", to),
            Some(&b'e') => return err("dictionary key has no value", to),
            Some(_) => {}
        }
        let rest = &input[to..];
        let used = match decode_prefix(rest) {
            Ok((_, used)) => used,
            Err(BencodeError::Invalid { what, offset }) => {
                return err(what, offset.saturating_add(to))
            }
        };
        let value_end = to + used;
        if k == key {
            found = Some(&input[to..value_end]);
        }
        pos = value_end;
    }
    if pos != input.len() {
        return err("trailing bytes after the value", pos);
    }
    Ok(found)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod fuzz_tests;
