//! BEP 11 peer exchange: the `ut_pex` extended message's payload, a bencoded dictionary of
//! compact peers added (`added`, `added6`, each with one flag byte per peer in `added.f`,
//! `added6.f`) and dropped (`dropped`, `dropped6`) since the previous message. Codec only: when
//! to send and whom to list is the swarm's business.
//!
//! Bounds. We send at most [`MAX_ADDED`] added and [`MAX_DROPPED`] dropped peers per message
//! (both families together): BEP 11 asks for no more than 50 of each, it keeps a message under
//! 2 KiB even with only IPv6 peers, and at one message a minute it is more than a swarm's
//! churn. We accept up to [`MAX_RECEIVED`] entries per list, twice the 100 added peers
//! libtorrent puts in one message, so no well-behaved client is refused, and payloads up to
//! [`MAX_PAYLOAD_LEN`].
//!
//! Invariants: decoding never panics; a list that is not whole compact entries, or flags whose
//! length differs from their list's, make the message malformed (a missing flags string means
//! no flags, as old clients send); unknown keys are ignored. Decoded peers come IPv4 first,
//! each family in message order.

use core::net::SocketAddr;
use std::collections::BTreeMap;

use crate::bencode::{self, BencodeError, Value};
use crate::dht::compact;

/// Most added peers we put in one message.
pub const MAX_ADDED: usize = 50;
/// Most dropped peers we put in one message.
pub const MAX_DROPPED: usize = 50;
/// Most entries accepted in each received list (`added`, `added6`, `dropped`, `dropped6`).
pub const MAX_RECEIVED: usize = 200;
/// Largest payload accepted (four full lists of IPv6 peers with flags take about 11 KiB).
pub const MAX_PAYLOAD_LEN: usize = 16 * 1024;

/// The flag byte of an added peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PexFlags(pub u8);

impl PexFlags {
    /// 0x01: the peer prefers encrypted connections (BEP 8 / MSE).
    pub const ENCRYPTION: PexFlags = PexFlags(0x01);
    /// 0x02: the peer is a seed (upload only).
    pub const SEED: PexFlags = PexFlags(0x02);
    /// 0x04: the peer supports uTP.
    pub const UTP: PexFlags = PexFlags(0x04);
    /// 0x08: the peer supports `ut_holepunch`.
    pub const HOLEPUNCH: PexFlags = PexFlags(0x08);
    /// 0x10: the sender reached the peer with an outgoing connection, so it is reachable.
    pub const OUTGOING: PexFlags = PexFlags(0x10);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: PexFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for PexFlags {
    type Output = PexFlags;
    fn bitor(self, rhs: PexFlags) -> PexFlags {
        PexFlags(self.0 | rhs.0)
    }
}

/// An added peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PexPeer {
    /// Its listening address.
    pub addr: SocketAddr,
    /// What the sender knows of it.
    pub flags: PexFlags,
}

/// One `ut_pex` message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PexMessage {
    /// Peers connected since the last message, IPv4 and IPv6 mixed.
    pub added: Vec<PexPeer>,
    /// Peers disconnected since the last message.
    pub dropped: Vec<SocketAddr>,
}

/// Why a `ut_pex` payload was refused or cannot be sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PexError {
    /// Bigger than [`MAX_PAYLOAD_LEN`].
    #[error("ut_pex payload of {0} bytes is over the limit")]
    TooLong(usize),
    /// A list longer than allowed (received: [`MAX_RECEIVED`]; sent: [`MAX_ADDED`] or
    /// [`MAX_DROPPED`]).
    #[error("ut_pex list `{list}` has {count} entries, over the limit")]
    TooMany {
        /// The key.
        list: &'static str,
        /// Its entries.
        count: usize,
    },
    /// Not one bencoded value.
    #[error("ut_pex payload is not valid bencode")]
    Bencode(#[source] BencodeError),
    /// Bencode, but not a well-formed message.
    #[error("malformed ut_pex message: {0}")]
    Malformed(&'static str),
}

type Dict = BTreeMap<Vec<u8>, Value>;

fn list<'a>(d: &'a Dict, key: &'static str) -> Result<&'a [u8], PexError> {
    match d.get(key.as_bytes()) {
        None => Ok(&[]),
        Some(Value::Bytes(b)) => Ok(b),
        Some(_) => Err(PexError::Malformed("a peer list is not a string")),
    }
}

fn peers(d: &Dict, key: &'static str, v6: bool) -> Result<Vec<SocketAddr>, PexError> {
    let bytes = list(d, key)?;
    let size = if v6 {
        compact::PEER_V6_LEN
    } else {
        compact::PEER_V4_LEN
    };
    let count = bytes.len() / size;
    if count > MAX_RECEIVED {
        return Err(PexError::TooMany { list: key, count });
    }
    compact::peers(bytes, v6).ok_or(PexError::Malformed(
        "a peer list is not whole compact entries",
    ))
}

fn added(
    d: &Dict,
    key: &'static str,
    flags_key: &'static str,
    v6: bool,
) -> Result<Vec<PexPeer>, PexError> {
    let addrs = peers(d, key, v6)?;
    let flags = match d.get(flags_key.as_bytes()) {
        None => None,
        Some(Value::Bytes(f)) if f.len() == addrs.len() => Some(f),
        Some(Value::Bytes(_)) => {
            return Err(PexError::Malformed("flags do not match the added peers"))
        }
        Some(_) => return Err(PexError::Malformed("flags are not a string")),
    };
    Ok(addrs
        .into_iter()
        .enumerate()
        .map(|(i, addr)| PexPeer {
            addr,
            flags: PexFlags(flags.and_then(|f| f.get(i)).copied().unwrap_or(0)),
        })
        .collect())
}

impl PexMessage {
    /// Parses a `ut_pex` payload (exactly one dictionary).
    pub fn decode(payload: &[u8]) -> Result<PexMessage, PexError> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(PexError::TooLong(payload.len()));
        }
        let Value::Dict(d) = bencode::decode(payload).map_err(PexError::Bencode)? else {
            return Err(PexError::Malformed("not a dictionary"));
        };
        let mut added_peers = added(&d, "added", "added.f", false)?;
        added_peers.extend(added(&d, "added6", "added6.f", true)?);
        let mut dropped = peers(&d, "dropped", false)?;
        dropped.extend(peers(&d, "dropped6", true)?);
        Ok(PexMessage {
            added: added_peers,
            dropped,
        })
    }

    /// The payload: all six keys, empty ones included (as libtorrent writes them). Fails if
    /// more than [`MAX_ADDED`] peers are added or [`MAX_DROPPED`] dropped.
    pub fn encode(&self) -> Result<Vec<u8>, PexError> {
        if self.added.len() > MAX_ADDED {
            return Err(PexError::TooMany {
                list: "added",
                count: self.added.len(),
            });
        }
        if self.dropped.len() > MAX_DROPPED {
            return Err(PexError::TooMany {
                list: "dropped",
                count: self.dropped.len(),
            });
        }
        let (mut a4, mut f4, mut a6, mut f6) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for p in &self.added {
            let (addrs, flags) = if p.addr.is_ipv4() {
                (&mut a4, &mut f4)
            } else {
                (&mut a6, &mut f6)
            };
            compact::push_addr(addrs, p.addr);
            flags.push(p.flags.0);
        }
        let (mut d4, mut d6) = (Vec::new(), Vec::new());
        for &a in &self.dropped {
            compact::push_addr(if a.is_ipv4() { &mut d4 } else { &mut d6 }, a);
        }
        let d: Dict = [
            ("added", a4),
            ("added.f", f4),
            ("added6", a6),
            ("added6.f", f6),
            ("dropped", d4),
            ("dropped6", d6),
        ]
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), Value::Bytes(v)))
        .collect();
        Ok(bencode::encode(&Value::Dict(d)))
    }
}

#[cfg(test)]
#[path = "pex_tests.rs"]
mod tests;
