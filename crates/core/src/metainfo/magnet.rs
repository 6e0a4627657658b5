//! Magnet links (BEP 9, BEP 52): `magnet:?xt=urn:btih:<hex or base32>&xt=urn:btmh:1220<hex>
//! &dn=..&tr=..&x.pe=..&ws=..`.
//!
//! Invariants of a parsed [`Magnet`]: at least one info hash, at most one v1 (`btih`) and one
//! v2 (`btmh`, SHA-256 multihash `1220` + 64 hex) hash (repeats of the same hash, in either v1
//! form, are tolerated; two different ones of a kind are an error); tracker URLs are
//! percent-decoded, non-empty and in link order; `x.pe` peers are valid `ip:port` with a
//! non-zero port; `ws` web seeds (BEP 19) are HTTP(S) URLs, at most
//! [`super::MAX_WEB_SEEDS`] (others are ignored). Parameter values are percent-decoded; `+` means a space only in `dn`.
//! Unknown parameters (and `xt` values that are neither `urn:btih:` nor `urn:btmh:`) are
//! ignored.

use core::net::SocketAddr;

use super::quoted;
use crate::types::{from_hex20, from_hex32, InfoHash, InfoHashV2};

/// A parsed magnet link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Magnet {
    /// The 20-byte hash that names the torrent on the wire and to trackers: the v1 hash
    /// (`btih`), or the v2 hash truncated to 20 bytes when the link has only `btmh`.
    pub info_hash: InfoHash,
    /// The v2 info hash (`btmh`), if the link has one.
    pub info_hash_v2: Option<InfoHashV2>,
    /// Whether the link has a v1 hash (else `info_hash` is the truncated v2 hash).
    pub has_v1: bool,
    /// Percent-decoded tracker URLs in link order.
    pub trackers: Vec<String>,
    /// The display name (`dn`), if any; non-UTF-8 bytes are replaced by U+FFFD.
    pub name: Option<String>,
    /// Peer addresses from `x.pe`.
    pub peers: Vec<SocketAddr>,
    /// Percent-decoded web seed URLs from `ws` (BEP 19), in link order.
    pub web_seeds: Vec<String>,
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

/// Percent-encodes every byte outside `A-Za-z0-9-._~`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

/// The v2 info hash from the text after `urn:btmh:`: the multihash of a SHA-256 digest.
fn parse_btmh(text: &str) -> Result<InfoHashV2, MagnetError> {
    let digest = strip_prefix_ignore_case(text, "1220").and_then(from_hex32);
    match digest {
        Some(b) => Ok(InfoHashV2(b)),
        None => invalid(format!(
            "v2 info hash {} is not 1220 followed by 64 hex characters",
            quoted(text)
        )),
    }
}

/// Keeps the first of repeated hashes; a different second one is an error.
fn keep_one<H: PartialEq + core::fmt::Display>(
    slot: &mut Option<H>,
    hash: H,
) -> Result<(), MagnetError> {
    match slot {
        None => *slot = Some(hash),
        Some(first) if *first == hash => {}
        Some(first) => return invalid(format!("two different info hashes {first} and {hash}")),
    }
    Ok(())
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
        let mut info_hash_v2: Option<InfoHashV2> = None;
        let mut trackers = Vec::new();
        let mut name = None;
        let mut peers = Vec::new();
        let mut web_seeds: Vec<String> = Vec::new();
        for param in query.split('&') {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key {
                "xt" => {
                    let xt = decode_utf8(value, "xt")?;
                    if let Some(text) = strip_prefix_ignore_case(&xt, "urn:btih:") {
                        keep_one(&mut info_hash, parse_btih(text)?)?;
                    } else if let Some(text) = strip_prefix_ignore_case(&xt, "urn:btmh:") {
                        keep_one(&mut info_hash_v2, parse_btmh(text)?)?;
                    }
                }
                "tr" => {
                    let url = decode_utf8(value, "tr")?;
                    if !url.is_empty() {
                        trackers.push(url);
                    }
                }
                "ws" => {
                    let url = decode_utf8(value, "ws")?;
                    let lower = url.to_ascii_lowercase();
                    let http = lower.starts_with("http://") || lower.starts_with("https://");
                    if http && web_seeds.len() < super::MAX_WEB_SEEDS && !web_seeds.contains(&url) {
                        web_seeds.push(url);
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
        let has_v1 = info_hash.is_some();
        let Some(info_hash) = info_hash.or(info_hash_v2.map(|h| h.truncated())) else {
            return invalid("missing xt=urn:btih: or xt=urn:btmh: parameter");
        };
        Ok(Magnet {
            info_hash,
            info_hash_v2,
            has_v1,
            trackers,
            name,
            peers,
            web_seeds,
        })
    }

    /// The link that says all of this: `xt=urn:btih:` (when there is a v1 hash), `xt=urn:btmh:`
    /// (when there is a v2 hash), `dn`, every `tr`, `x.pe` and `ws`, percent-encoded as needed.
    pub fn to_link(&self) -> String {
        let mut link = String::from("magnet:?");
        let mut params: Vec<String> = Vec::new();
        if self.has_v1 {
            params.push(format!("xt=urn:btih:{}", self.info_hash));
        }
        if let Some(v2) = self.info_hash_v2 {
            params.push(format!("xt=urn:btmh:1220{v2}"));
        }
        if let Some(name) = &self.name {
            params.push(format!("dn={}", percent_encode(name)));
        }
        params.extend(
            self.trackers
                .iter()
                .map(|t| format!("tr={}", percent_encode(t))),
        );
        params.extend(
            self.peers
                .iter()
                .map(|p| format!("x.pe={}", percent_encode(&p.to_string()))),
        );
        params.extend(
            self.web_seeds
                .iter()
                .map(|w| format!("ws={}", percent_encode(w))),
        );
        link.push_str(&params.join("&"));
        link
    }

    /// The v1 info hash, if the link has one.
    pub fn info_hash_v1(&self) -> Option<InfoHash> {
        self.has_v1.then_some(self.info_hash)
    }
}

#[cfg(test)]
#[path = "magnet_tests.rs"]
mod tests;
