//! Tracker protocol messages, sans-IO: HTTP announce URLs and responses (BEP 3, BEP 23, BEP 7),
//! the UDP tracker state machine (BEP 15) and multi-tracker tier bookkeeping (BEP 12). The
//! `bitrush` crate's engine does the sending.
//!
//! Invariants: nothing here reads a clock or touches a socket; every peer list is bounded by
//! [`MAX_PEERS`] and deduplicated, keeping the tracker's order.

pub mod http;
pub mod tiers;
pub mod udp;

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::collections::HashSet;

use crate::types::{InfoHash, PeerId};

pub use tiers::{Tracker, TrackerList};
pub use udp::{UdpAnnounce, UdpConfig};

/// Largest tracker response body / datagram we read.
pub const MAX_RESPONSE_LEN: usize = 4 * 1024 * 1024;
/// Most peers kept from one response (extra ones are dropped).
pub const MAX_PEERS: usize = 5000;

/// The `event` of an announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A regular announce.
    None,
    /// First announce of a download.
    Started,
    /// The download just completed.
    Completed,
    /// We are leaving the swarm.
    Stopped,
}

/// What we tell a tracker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceRequest {
    /// The torrent.
    pub info_hash: InfoHash,
    /// Our peer id.
    pub peer_id: PeerId,
    /// Our listening port.
    pub port: u16,
    /// Bytes uploaded this session.
    pub uploaded: u64,
    /// Bytes downloaded this session.
    pub downloaded: u64,
    /// Bytes still missing.
    pub left: u64,
    /// Why we announce.
    pub event: Event,
    /// Peers wanted (`None`: the tracker's default).
    pub numwant: Option<u32>,
    /// Random per-session key (BEP 7 / BEP 15).
    pub key: u32,
    /// Our global IPv6 address, told to HTTP trackers as BEP 7's `ipv6=` (so that a tracker
    /// reached over IPv4 can give IPv6 peers our address too); `None` when we have none.
    pub ipv6: Option<Ipv6Addr>,
}

/// Who we are to trackers: everything an announce says that does not change during a session.
/// The one place announce requests are built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announcer {
    /// The torrent.
    pub info_hash: InfoHash,
    /// Our peer id.
    pub peer_id: PeerId,
    /// The port we listen on (or, before we listen, the one we would).
    pub port: u16,
    /// The BEP 7 / BEP 15 key: random, drawn once per session.
    pub key: u32,
    /// Peers wanted per announce.
    pub numwant: u32,
    /// Our global IPv6 address, if we have one and accept peers over IPv6 (BEP 7 `ipv6=`).
    pub ipv6: Option<Ipv6Addr>,
}

/// Peers asked for in each announce.
pub const NUMWANT: u32 = 200;

impl Announcer {
    /// The request for `event` with these transfer counters.
    pub fn request(
        &self,
        event: Event,
        uploaded: u64,
        downloaded: u64,
        left: u64,
    ) -> AnnounceRequest {
        AnnounceRequest {
            info_hash: self.info_hash,
            peer_id: self.peer_id,
            port: self.port,
            uploaded,
            downloaded,
            left,
            event,
            numwant: Some(self.numwant),
            key: self.key,
            ipv6: self.ipv6,
        }
    }
}

/// Whether `ip` is a global unicast address (2000::/3, less the documentation prefix
/// 2001:db8::/32): one a tracker or peer elsewhere on the internet could reach. Loopback,
/// link-local, unique-local (fc00::/7), multicast and IPv4-mapped addresses are not.
pub fn is_global_ipv6(ip: &Ipv6Addr) -> bool {
    let [first, second, ..] = ip.segments();
    first & 0xe000 == 0x2000 && !(first == 0x2001 && second == 0x0db8)
}

/// What a tracker told us.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnnounceResponse {
    /// Seconds until the next regular announce.
    pub interval: Option<u32>,
    /// Seconds the tracker wants at least between announces.
    pub min_interval: Option<u32>,
    /// IPv4 and IPv6 peers, in the tracker's order, deduplicated.
    pub peers: Vec<SocketAddr>,
    /// The tracker's `warning message`.
    pub warning: Option<String>,
    /// Complete peers (`complete` / UDP seeders).
    pub seeders: Option<u32>,
    /// Incomplete peers (`incomplete` / UDP leechers).
    pub leechers: Option<u32>,
}

/// Why a tracker's answer was unusable (protocol level; the engine adds transport failures).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrackerError {
    /// The tracker's own `failure reason`.
    #[error("tracker failure: {0}")]
    Failure(String),
    /// A response we cannot parse.
    #[error("malformed tracker response: {0}")]
    Malformed(String),
    /// No answer in time.
    #[error("tracker timed out")]
    Timeout,
}

/// Longest tracker-supplied text (failure reason, warning) we keep.
pub(crate) const MAX_TEXT_LEN: usize = 1024;

/// Lossy UTF-8 of tracker-supplied text, cut to [`MAX_TEXT_LEN`] bytes.
pub(crate) fn tracker_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_TEXT_LEN)]).into_owned()
}

/// Adds peers to `out` skipping port 0 and duplicates (tracked in `seen`), up to [`MAX_PEERS`].
pub fn push_peers(
    out: &mut Vec<SocketAddr>,
    seen: &mut HashSet<SocketAddr>,
    peers: impl IntoIterator<Item = SocketAddr>,
) {
    for peer in peers {
        if out.len() >= MAX_PEERS {
            return;
        }
        if peer.port() != 0 && seen.insert(peer) {
            out.push(peer);
        }
    }
}

/// Compact IPv4 peers: 6 bytes each (address, port, big-endian). A trailing partial entry is
/// ignored; callers that must reject it check the length first.
pub(crate) fn compact_v4(bytes: &[u8]) -> impl Iterator<Item = SocketAddr> + '_ {
    bytes.chunks_exact(6).map(|c| {
        let ip = Ipv4Addr::new(c[0], c[1], c[2], c[3]);
        SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([c[4], c[5]]))
    })
}

/// Compact IPv6 peers: 18 bytes each. A trailing partial entry is ignored.
pub(crate) fn compact_v6(bytes: &[u8]) -> impl Iterator<Item = SocketAddr> + '_ {
    bytes.chunks_exact(18).map(|c| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&c[..16]);
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::from(a)),
            u16::from_be_bytes([c[16], c[17]]),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_ipv6_addresses() {
        let global = |s: &str| is_global_ipv6(&s.parse().unwrap());
        assert!(global("2a01:4f8::1"));
        assert!(global("2001:470::1"));
        assert!(global("3fff:ffff::1"));
        for not in [
            "::",
            "::1",
            "fe80::1",
            "fd00::2",
            "fc00::1",
            "ff02::1",
            "::ffff:1.2.3.4",
            "2001:db8::1",
            "4000::1",
        ] {
            assert!(!global(not), "{not}");
        }
    }

    #[test]
    fn announcer_passes_its_ipv6_address_on() {
        let ip: Ipv6Addr = "2a01:4f8::1".parse().unwrap();
        let announcer = Announcer {
            info_hash: InfoHash([1; 20]),
            peer_id: PeerId([2; 20]),
            port: 6881,
            key: 5,
            numwant: NUMWANT,
            ipv6: Some(ip),
        };
        let req = announcer.request(Event::Started, 1, 2, 3);
        assert_eq!(req.ipv6, Some(ip));
        let req = Announcer {
            ipv6: None,
            ..announcer
        }
        .request(Event::None, 0, 0, 0);
        assert_eq!(req.ipv6, None);
    }
}
