//! UDP tracker protocol (BEP 15) as a state machine over datagrams and time.
//!
//! The driver calls [`UdpAnnounce::poll_transmit`] to get the next datagram to send (if one is
//! due), sleeps until [`UdpAnnounce::poll_timeout`], feeds every received datagram to
//! [`UdpAnnounce::handle_datagram`] and stops once [`UdpAnnounce::result`] is `Some`.
//!
//! Invariants: no clock is read here (every `Instant` comes from the caller); datagrams that
//! are too short or carry another transaction id are ignored; a request is retransmitted after
//! `base_timeout · 2^n` (n capped at 8) and the exchange fails with
//! [`TrackerError::Timeout`] after `max_tries` unanswered sends; a connection id is used for
//! at most [`CONNECTION_ID_LIFETIME`] after it was obtained.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::{
    compact_v4, compact_v6, push_peers, tracker_text, AnnounceRequest, AnnounceResponse, Event,
    TrackerError,
};

/// The magic constant opening a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// How long a connection id may be used after the connect response.
pub const CONNECTION_ID_LIFETIME: Duration = Duration::from_secs(60);
/// Largest backoff exponent (BEP 15: 15 · 2^8 s).
const MAX_BACKOFF_EXP: u32 = 8;

const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_ERROR: u32 = 3;

/// Retransmission settings and address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpConfig {
    /// Wait after the first send; doubles after every retransmission.
    pub base_timeout: Duration,
    /// Sends left unanswered before giving up (at least 1).
    pub max_tries: u32,
    /// The tracker is reached over IPv6, so its peers are 18-byte entries.
    pub ipv6: bool,
}

impl Default for UdpConfig {
    /// BEP 15's values: 15 s doubling up to 8 times, IPv4.
    fn default() -> UdpConfig {
        UdpConfig {
            base_timeout: Duration::from_secs(15),
            max_tries: 9,
            ipv6: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Connect,
    Announce { connection_id: u64 },
    Done,
}

/// One announce exchange with a UDP tracker (connect if needed, then announce).
#[derive(Debug)]
pub struct UdpAnnounce {
    req: AnnounceRequest,
    config: UdpConfig,
    stage: Stage,
    connection: Option<(u64, Instant)>,
    /// The connection id came from the caller's cache and has not been confirmed yet.
    from_cache: bool,
    transaction_id: u32,
    rng: u64,
    /// When the next send is due (the pending request's timeout while `awaiting`).
    next_send: Instant,
    awaiting: bool,
    timeouts: u32,
    result: Option<Result<AnnounceResponse, TrackerError>>,
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// `now + d` without panicking on overflow.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(3600)))
        .unwrap_or(now)
}

fn is_fresh(obtained: Instant, now: Instant) -> bool {
    now.saturating_duration_since(obtained) < CONNECTION_ID_LIFETIME
}

impl UdpAnnounce {
    /// Starts an exchange at `now`. A `cached` connection id still fresh at `now` skips the
    /// connect step. `seed` feeds the transaction-id generator (pass a random value; tests
    /// pass constants).
    pub fn new(
        req: AnnounceRequest,
        cached: Option<(u64, Instant)>,
        now: Instant,
        seed: u64,
        config: UdpConfig,
    ) -> UdpAnnounce {
        let cached = cached.filter(|(_, obtained)| is_fresh(*obtained, now));
        let stage = match cached {
            Some((connection_id, _)) => Stage::Announce { connection_id },
            None => Stage::Connect,
        };
        let mut rng = seed;
        let transaction_id = splitmix64(&mut rng) as u32;
        UdpAnnounce {
            req,
            config,
            stage,
            connection: cached,
            from_cache: cached.is_some(),
            transaction_id,
            rng,
            next_send: now,
            awaiting: false,
            timeouts: 0,
            result: None,
        }
    }

    fn new_transaction(&mut self) {
        let old = self.transaction_id;
        while self.transaction_id == old {
            self.transaction_id = splitmix64(&mut self.rng) as u32;
        }
    }

    fn finish(&mut self, result: Result<AnnounceResponse, TrackerError>) {
        self.stage = Stage::Done;
        self.result = Some(result);
    }

    /// Goes (back) to the connect step, sending the connect request as soon as polled.
    fn reconnect(&mut self, now: Instant) {
        self.stage = Stage::Connect;
        self.connection = None;
        self.from_cache = false;
        self.new_transaction();
        self.next_send = now;
        self.awaiting = false;
    }

    /// Time passed: an unanswered request whose wait is over counts as lost (to be sent again
    /// by [`UdpAnnounce::poll_transmit`]), and the last one lost ends the exchange with
    /// [`TrackerError::Timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.stage == Stage::Done || now < self.next_send || !self.awaiting {
            return;
        }
        self.timeouts = self.timeouts.saturating_add(1);
        if self.timeouts >= self.config.max_tries.max(1) {
            self.finish(Err(TrackerError::Timeout));
        } else {
            self.awaiting = false;
        }
    }

    /// The next datagram to send, if one is due at `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.stage == Stage::Done || now < self.next_send || self.awaiting {
            return None;
        }
        if let Some((_, obtained)) = self.connection {
            if !is_fresh(obtained, now) {
                let timeouts = self.timeouts;
                self.reconnect(now);
                self.timeouts = timeouts;
            }
        }
        let packet = match self.stage {
            Stage::Connect => self.connect_packet(),
            Stage::Announce { connection_id } => self.announce_packet(connection_id),
            Stage::Done => return None,
        };
        let backoff = self
            .config
            .base_timeout
            .saturating_mul(1u32 << self.timeouts.min(MAX_BACKOFF_EXP));
        self.next_send = later(now, backoff);
        self.awaiting = true;
        Some(packet)
    }

    /// When [`UdpAnnounce::handle_timeout`] should be called next; `None` once finished.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.stage != Stage::Done).then_some(self.next_send)
    }

    /// Feeds one received datagram. Too-short datagrams, other transaction ids and actions
    /// that do not fit the current step are ignored.
    pub fn handle_datagram(&mut self, now: Instant, data: &[u8]) {
        if data.len() < 8 || self.stage == Stage::Done {
            return;
        }
        let action = be_u32(&data[0..4]);
        if be_u32(&data[4..8]) != self.transaction_id {
            return;
        }
        match (action, self.stage) {
            (ACTION_ERROR, Stage::Announce { .. }) if self.from_cache => {
                // Most likely our cached connection id expired on the tracker's side:
                // get a fresh one once before believing the error.
                self.reconnect(now);
            }
            (ACTION_ERROR, _) => {
                let message = tracker_text(&data[8..]);
                self.finish(Err(TrackerError::Failure(message)));
            }
            (ACTION_CONNECT, Stage::Connect) if data.len() >= 16 => {
                let connection_id = be_u64(&data[8..16]);
                self.connection = Some((connection_id, now));
                self.from_cache = false;
                self.stage = Stage::Announce { connection_id };
                self.new_transaction();
                self.next_send = now;
                self.awaiting = false;
            }
            (ACTION_ANNOUNCE, Stage::Announce { .. }) if data.len() >= 20 => {
                let response = self.parse_announce(data);
                self.from_cache = false;
                self.finish(Ok(response));
            }
            _ => {}
        }
    }

    fn parse_announce(&self, data: &[u8]) -> AnnounceResponse {
        let mut peers = Vec::new();
        let mut seen = HashSet::new();
        let list = &data[20..];
        if self.config.ipv6 {
            push_peers(&mut peers, &mut seen, compact_v6(list));
        } else {
            push_peers(&mut peers, &mut seen, compact_v4(list));
        }
        AnnounceResponse {
            interval: Some(be_u32(&data[8..12])),
            min_interval: None,
            peers,
            warning: None,
            leechers: Some(be_u32(&data[12..16])),
            seeders: Some(be_u32(&data[16..20])),
        }
    }

    /// The outcome once the exchange is over (given once): the response, the tracker's error
    /// message, or a timeout.
    pub fn poll_result(&mut self) -> Option<Result<AnnounceResponse, TrackerError>> {
        self.result.take()
    }

    /// The connection id in use and when it was obtained, for reuse by later announces to
    /// the same tracker (valid [`CONNECTION_ID_LIFETIME`] from then).
    pub fn connection(&self) -> Option<(u64, Instant)> {
        self.connection
    }

    fn connect_packet(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(16);
        p.extend_from_slice(&PROTOCOL_ID.to_be_bytes());
        p.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
        p.extend_from_slice(&self.transaction_id.to_be_bytes());
        p
    }

    fn announce_packet(&self, connection_id: u64) -> Vec<u8> {
        let r = &self.req;
        let event: u32 = match r.event {
            Event::None => 0,
            Event::Completed => 1,
            Event::Started => 2,
            Event::Stopped => 3,
        };
        let num_want: i32 = match r.numwant {
            None => -1,
            Some(n) => i32::try_from(n).unwrap_or(i32::MAX),
        };
        let mut p = Vec::with_capacity(98);
        p.extend_from_slice(&connection_id.to_be_bytes());
        p.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
        p.extend_from_slice(&self.transaction_id.to_be_bytes());
        p.extend_from_slice(&r.info_hash.0);
        p.extend_from_slice(&r.peer_id.0);
        p.extend_from_slice(&r.downloaded.to_be_bytes());
        p.extend_from_slice(&r.left.to_be_bytes());
        p.extend_from_slice(&r.uploaded.to_be_bytes());
        p.extend_from_slice(&event.to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes()); // ip: the sender's address
        p.extend_from_slice(&r.key.to_be_bytes());
        p.extend_from_slice(&num_want.to_be_bytes());
        p.extend_from_slice(&r.port.to_be_bytes());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{InfoHash, PeerId};
    use core::net::SocketAddr;
    use proptest::prelude::*;

    /// Lets time pass to `now`, then takes the datagram due, as a driver does.
    fn step(sm: &mut UdpAnnounce, now: Instant) -> Option<Vec<u8>> {
        sm.handle_timeout(now);
        sm.poll_transmit(now)
    }

    fn req() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: InfoHash([7; 20]),
            peer_id: PeerId([9; 20]),
            port: 6881,
            uploaded: 3,
            downloaded: 2,
            left: 1,
            event: Event::Started,
            numwant: None,
            key: 0x0102_0304,
            ipv6: None,
        }
    }

    fn config() -> UdpConfig {
        UdpConfig {
            base_timeout: Duration::from_secs(1),
            max_tries: 3,
            ipv6: false,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn tid(packet: &[u8]) -> u32 {
        be_u32(&packet[12..16])
    }

    fn connect_reply(tid: u32, id: u64) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&0u32.to_be_bytes());
        r.extend_from_slice(&tid.to_be_bytes());
        r.extend_from_slice(&id.to_be_bytes());
        r
    }

    fn announce_reply(tid: u32, peers: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&1u32.to_be_bytes());
        r.extend_from_slice(&tid.to_be_bytes());
        r.extend_from_slice(&1800u32.to_be_bytes());
        r.extend_from_slice(&4u32.to_be_bytes());
        r.extend_from_slice(&9u32.to_be_bytes());
        r.extend_from_slice(peers);
        r
    }

    #[test]
    fn full_exchange() {
        let t0 = Instant::now();
        let mut sm = UdpAnnounce::new(req(), None, t0, 42, config());
        assert_eq!(sm.poll_timeout(), Some(t0));
        let connect = step(&mut sm, t0).unwrap();
        assert_eq!(connect.len(), 16);
        assert_eq!(be_u64(&connect[0..8]), PROTOCOL_ID);
        assert_eq!(be_u32(&connect[8..12]), 0);
        let ctid = be_u32(&connect[12..16]);
        assert_eq!(step(&mut sm, t0 + ms(10)), None, "nothing due yet");
        assert_eq!(sm.poll_timeout(), Some(t0 + ms(1000)));

        // Wrong transaction id, short packets and wrong actions are ignored.
        sm.handle_datagram(t0 + ms(20), &connect_reply(ctid.wrapping_add(1), 5));
        sm.handle_datagram(t0 + ms(20), &connect_reply(ctid, 5)[..12]);
        sm.handle_datagram(t0 + ms(20), &[0, 0, 0]);
        sm.handle_datagram(t0 + ms(20), &announce_reply(ctid, &[]));
        assert_eq!(sm.connection(), None);
        assert!(sm.poll_result().is_none());

        sm.handle_datagram(t0 + ms(30), &connect_reply(ctid, 0xaabb));
        assert_eq!(sm.connection(), Some((0xaabb, t0 + ms(30))));
        let ann = step(&mut sm, t0 + ms(30)).unwrap();
        assert_eq!(ann.len(), 98);
        assert_eq!(be_u64(&ann[0..8]), 0xaabb);
        assert_eq!(be_u32(&ann[8..12]), 1);
        let atid = tid(&ann);
        assert_ne!(atid, ctid);
        assert_eq!(&ann[16..36], &[7; 20]);
        assert_eq!(&ann[36..56], &[9; 20]);
        assert_eq!(be_u64(&ann[56..64]), 2, "downloaded");
        assert_eq!(be_u64(&ann[64..72]), 1, "left");
        assert_eq!(be_u64(&ann[72..80]), 3, "uploaded");
        assert_eq!(be_u32(&ann[80..84]), 2, "started");
        assert_eq!(be_u32(&ann[84..88]), 0, "ip");
        assert_eq!(be_u32(&ann[88..92]), 0x0102_0304, "key");
        assert_eq!(be_u32(&ann[92..96]), u32::MAX, "num_want -1");
        assert_eq!(&ann[96..98], &6881u16.to_be_bytes());

        let peers = [
            10, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 2, 0, 80, 1, 2,
        ];
        sm.handle_datagram(t0 + ms(40), &announce_reply(atid, &peers));
        let resp = sm.poll_result().unwrap().unwrap();
        assert_eq!(resp.interval, Some(1800));
        assert_eq!(resp.leechers, Some(4));
        assert_eq!(resp.seeders, Some(9));
        let want: Vec<SocketAddr> = vec![
            "10.0.0.1:6881".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        ];
        assert_eq!(resp.peers, want);
        assert_eq!(step(&mut sm, t0 + ms(5000)), None);
        assert_eq!(sm.poll_timeout(), None);
    }

    #[test]
    fn retransmits_with_backoff_then_times_out() {
        let t0 = Instant::now();
        let mut sm = UdpAnnounce::new(req(), None, t0, 1, config());
        let first = step(&mut sm, t0).unwrap();
        assert_eq!(step(&mut sm, t0 + ms(999)), None);
        let second = step(&mut sm, t0 + ms(1000)).unwrap();
        assert_eq!(first, second, "same request, same transaction id");
        assert_eq!(sm.poll_timeout(), Some(t0 + ms(3000)));
        assert_eq!(step(&mut sm, t0 + ms(2999)), None);
        assert!(step(&mut sm, t0 + ms(3000)).is_some());
        assert_eq!(sm.poll_timeout(), Some(t0 + ms(7000)));
        assert_eq!(step(&mut sm, t0 + ms(7000)), None);
        assert_eq!(sm.poll_result(), Some(Err(TrackerError::Timeout)));
        assert_eq!(sm.poll_timeout(), None);
    }

    #[test]
    fn backoff_is_capped() {
        let t0 = Instant::now();
        let cfg = UdpConfig {
            max_tries: 20,
            ..config()
        };
        let mut sm = UdpAnnounce::new(req(), None, t0, 1, cfg);
        let mut now = t0;
        for _ in 0..12 {
            assert!(step(&mut sm, now).is_some());
            now = sm.poll_timeout().unwrap();
        }
        // Past the cap every wait is base · 2^8.
        assert!(step(&mut sm, now).is_some());
        assert_eq!(sm.poll_timeout(), Some(now + Duration::from_secs(256)));
    }

    #[test]
    fn error_action_is_failure() {
        let t0 = Instant::now();
        let mut sm = UdpAnnounce::new(req(), None, t0, 3, config());
        let p = step(&mut sm, t0).unwrap();
        let mut err = Vec::new();
        err.extend_from_slice(&3u32.to_be_bytes());
        err.extend_from_slice(&tid(&p).to_be_bytes());
        err.extend_from_slice(b"torrent not registered");
        sm.handle_datagram(t0 + ms(5), &err);
        assert_eq!(
            sm.poll_result(),
            Some(Err(TrackerError::Failure("torrent not registered".into())))
        );
    }

    #[test]
    fn fresh_cached_connection_skips_connect() {
        let t0 = Instant::now();
        let cached = Some((77u64, t0));
        let mut sm = UdpAnnounce::new(req(), cached, t0 + ms(59_000), 3, config());
        let p = step(&mut sm, t0 + ms(59_000)).unwrap();
        assert_eq!(p.len(), 98);
        assert_eq!(be_u64(&p[0..8]), 77);
        // Stale cache: connect first.
        let mut sm = UdpAnnounce::new(req(), cached, t0 + ms(60_000), 3, config());
        assert_eq!(sm.connection(), None);
        assert_eq!(step(&mut sm, t0 + ms(60_000)).unwrap().len(), 16);
    }

    #[test]
    fn rejected_cached_connection_reconnects_once() {
        let t0 = Instant::now();
        let mut sm = UdpAnnounce::new(req(), Some((77, t0)), t0, 3, config());
        let p = step(&mut sm, t0).unwrap();
        let mut err = Vec::new();
        err.extend_from_slice(&3u32.to_be_bytes());
        err.extend_from_slice(&tid(&p).to_be_bytes());
        err.extend_from_slice(b"bad connection id");
        sm.handle_datagram(t0 + ms(5), &err);
        assert!(sm.poll_result().is_none());
        assert_eq!(sm.connection(), None);
        let c = step(&mut sm, t0 + ms(5)).unwrap();
        assert_eq!(c.len(), 16, "connects again");
        sm.handle_datagram(t0 + ms(6), &connect_reply(tid(&c), 88));
        let a = step(&mut sm, t0 + ms(6)).unwrap();
        err[4..8].copy_from_slice(&tid(&a).to_be_bytes());
        sm.handle_datagram(t0 + ms(7), &err);
        assert_eq!(
            sm.poll_result(),
            Some(Err(TrackerError::Failure("bad connection id".into())))
        );
    }

    #[test]
    fn expired_connection_during_retries_reconnects() {
        let t0 = Instant::now();
        let cfg = UdpConfig {
            base_timeout: Duration::from_secs(40),
            max_tries: 5,
            ipv6: false,
        };
        let mut sm = UdpAnnounce::new(req(), None, t0, 3, cfg);
        let c = step(&mut sm, t0).unwrap();
        sm.handle_datagram(t0, &connect_reply(tid(&c), 5));
        assert_eq!(step(&mut sm, t0).unwrap().len(), 98);
        // Timeout at 40 s: connection still fresh, announce again.
        assert_eq!(
            step(&mut sm, t0 + Duration::from_secs(40)).unwrap().len(),
            98
        );
        // Next timeout at 120 s: connection id expired, connect again.
        assert_eq!(
            step(&mut sm, t0 + Duration::from_secs(120)).unwrap().len(),
            16
        );
        assert_eq!(sm.connection(), None);
    }

    #[test]
    fn ipv6_peers() {
        let t0 = Instant::now();
        let cfg = UdpConfig {
            ipv6: true,
            ..config()
        };
        let mut sm = UdpAnnounce::new(req(), Some((1, t0)), t0, 3, cfg);
        let a = step(&mut sm, t0).unwrap();
        let mut peer = [0u8; 18];
        peer[15] = 1;
        peer[16] = 0x1a;
        peer[17] = 0xe1;
        sm.handle_datagram(t0, &announce_reply(tid(&a), &peer));
        let want: SocketAddr = "[::1]:6881".parse().unwrap();
        assert_eq!(sm.poll_result().unwrap().unwrap().peers, vec![want]);
    }

    proptest! {
        #[test]
        fn prop_arbitrary_datagrams_never_panic(
            dgrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
            seed in any::<u64>(),
        ) {
            let t0 = Instant::now();
            let mut sm = UdpAnnounce::new(req(), None, t0, seed, config());
            let p = step(&mut sm, t0).unwrap();
            for mut d in dgrams {
                // Half of them carry the right transaction id, to reach the parsers.
                if d.len() >= 8 && d[0] % 2 == 0 {
                    d[4..8].copy_from_slice(&p[12..16]);
                    let action = u32::from(d[1] % 4);
                    d[0..4].copy_from_slice(&action.to_be_bytes());
                }
                sm.handle_datagram(t0, &d);
                let _ = step(&mut sm, t0);
            }
        }
    }
}
