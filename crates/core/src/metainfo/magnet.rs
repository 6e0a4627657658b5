//! Magnet links (BEP 9): `magnet:?xt=urn:btih:<hex or base32>&dn=..&tr=..&x.pe=..`.
//!
//! Invariants of a parsed [`Magnet`]: exactly one BitTorrent v1 info hash (repeats of the
//! same hash, in either form, are tolerated; two different ones are an error); tracker URLs
//! are percent-decoded, non-empty and in link order; `x.pe` peers are valid `ip:port` with a
//! non-zero port. Parameter values are percent-decoded; `+` means a space only in `dn`.
//! Unknown parameters (and `xt` values that are not `urn:btih:`) are ignored.

use core::net::SocketAddr;

use super::quoted;
use crate::types::{from_hex20, InfoHash};

/// A parsed magnet link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash: InfoHash,
    /// Percent-decoded tracker URLs in link order.
    pub trackers: Vec<String>,
    /// The display name (`dn`), if any; non-UTF-8 bytes are replaced by U+FFFD.
    pub name: Option<String>,
    /// Peer addresses from `x.pe`.
    pub peers: Vec<SocketAddr>,
}

/// Why a magnet link was refused, e.g.
/// `invalid magnet link: missing xt=urn:btih: parameter`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MagnetError {
    /// What is wrong with the link.
    #[error("invalid magnet link: {0}")]
    Invalid(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, MagnetError> {
    Err(MagnetError::Invalid(msg.into()))
}

/// Percent-decodes a parameter value; `plus_is_space` turns `+` into a space (for `dn`).
fn percent_decode(value: &str, key: &str, plus_is_space: bool) -> Result<Vec<u8>, MagnetError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(crate::types::hex_value);
                let lo = bytes.get(i + 2).copied().and_then(crate::types::hex_value);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push((hi << 4) | lo),
                    _ => {
                        let end = value.len().min(i + 3);
                        let shown = value.get(i..end).unwrap_or("%");
                        return invalid(format!(
                            "bad percent-encoding {} in {key} parameter",
                            quoted(shown)
                        ));
                    }
                }
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Percent-decodes a value that must be UTF-8 afterwards.
fn decode_utf8(value: &str, key: &str) -> Result<String, MagnetError> {
    match String::from_utf8(percent_decode(value, key, false)?) {
        Ok(s) => Ok(s),
        Err(_) => invalid(format!(
            "{key} parameter is not valid UTF-8 after percent-decoding"
        )),
    }
}

/// RFC 4648 base32 (case-insensitive, no padding) of exactly 20 bytes: 32 characters.
fn from_base32_20(s: &str) -> Option<[u8; 20]> {
    let chars = s.as_bytes();
    if chars.len() != 32 {
        return None;
    }
    let mut out = [0u8; 20];
    let mut n = 0usize;
    let mut buffer: u16 = 0;
    let mut bits: u32 = 0;
    for &c in chars {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        // At most 7 bits are kept between characters, so 12 bits fit in u16.
        buffer = (buffer << 5) | u16::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(n)? = (buffer >> bits) as u8;
            n += 1;
            buffer &= (1u16 << bits) - 1;
        }
    }
    (n == 20).then_some(out)
}

/// The info hash from the text after `urn:btih:`.
fn parse_btih(text: &str) -> Result<InfoHash, MagnetError> {
    let bytes = match text.len() {
        40 => from_hex20(text),
        32 => from_base32_20(text),
        _ => None,
    };
    match bytes {
        Some(b) => Ok(InfoHash(b)),
        None => invalid(format!(
            "info hash {} is neither 40 hex nor 32 base32 characters",
            quoted(text)
        )),
    }
}

/// `prefix` at the start of `s`, compared ignoring ASCII case; returns the rest.
fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

impl Magnet {
    /// Parses a `magnet:?` link; see the module docs for what is accepted.
    pub fn parse(link: &str) -> Result<Magnet, MagnetError> {
        let Some(query) = strip_prefix_ignore_case(link, "magnet:?") else {
            return invalid("it does not start with \"magnet:?\"");
        };
        // A fragment is not part of the query.
        let query = query.split('#').next().unwrap_or(query);

        let mut info_hash: Option<InfoHash> = None;
        let mut trackers = Vec::new();
        let mut name = None;
        let mut peers = Vec::new();
        for param in query.split('&') {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key {
                "xt" => {
                    let xt = decode_utf8(value, "xt")?;
                    let Some(text) = strip_prefix_ignore_case(&xt, "urn:btih:") else {
                        continue;
                    };
                    let hash = parse_btih(text)?;
                    match info_hash {
                        None => info_hash = Some(hash),
                        Some(first) if first == hash => {}
                        Some(first) => {
                            return invalid(format!("two different info hashes {first} and {hash}"))
                        }
                    }
                }
                "tr" => {
                    let url = decode_utf8(value, "tr")?;
                    if !url.is_empty() {
                        trackers.push(url);
                    }
                }
                "dn" => {
                    let bytes = percent_decode(value, "dn", true)?;
                    if name.is_none() {
                        name = Some(String::from_utf8_lossy(&bytes).into_owned());
                    }
                }
                "x.pe" => {
                    let text = decode_utf8(value, "x.pe")?;
                    match text.parse::<SocketAddr>() {
                        Ok(addr) if addr.port() != 0 => peers.push(addr),
                        _ => {
                            return invalid(format!(
                                "peer address {} in x.pe is not ip:port",
                                quoted(&text)
                            ))
                        }
                    }
                }
                _ => {}
            }
        }
        let Some(info_hash) = info_hash else {
            return invalid("missing xt=urn:btih: parameter");
        };
        Ok(Magnet {
            info_hash,
            trackers,
            name,
            peers,
        })
    }
}

#[cfg(test)]
#[path = "magnet_tests.rs"]
mod tests;
