//! The addresses we may dial, and when: one queue for downloads and metadata fetches alike.
//!
//! Addresses come from trackers, the DHT, peer exchange or a magnet link. Each is dialled at
//! most once at a time. A connection that fails in transit (refused, reset, timed out) makes
//! its address wait before the next try, doubling from [`FIRST_RETRY`] up to [`MAX_RETRY`];
//! after [`MAX_QUICK_RETRIES`] failures in a row the address counts as *given up*: it is still
//! tried after its (long) wait, but no longer counts as something left to try. A peer that
//! broke the protocol waits [`MAX_RETRY`] at once; a banned peer is never dialled again.
//! Hearing of an address again never shortens its wait.
//!
//! Invariants: at most `max_known` addresses are remembered (new ones are refused beyond);
//! `ready` holds exactly the addresses in state `Ready`, each once; no table is kept while no
//! address is known (a seed's queue, once it forgot all but the banned); time is passed in.

use core::net::SocketAddr;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Wait after a first failed connection; doubles with each further failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Longest wait between tries of one address.
pub const MAX_RETRY: Duration = Duration::from_secs(10 * 60);
/// Failures in a row after which an address no longer counts as something left to try.
pub const MAX_QUICK_RETRIES: u32 = 3;
/// Default bound on remembered addresses.
pub const DEFAULT_MAX_KNOWN: usize = 4096;

/// How a connection we dialled ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseKind {
    /// Refused, reset, timed out: worth trying again later.
    Transient,
    /// The peer broke the protocol or served another torrent: not worth trying soon.
    Protocol,
    /// The peer sent bad data: never again.
    Banned,
    /// We closed it ourselves (shutdown, no longer needed): no blame.
    Ours,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Ready,
    Dialled,
    Waiting(Instant),
    Banned,
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    state: State,
    /// Failed connections in a row.
    failures: u32,
}

/// Why nothing is being dialled, for "no progress" reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CandidateCounts {
    /// Addresses waiting to be dialled.
    pub ready: usize,
    /// Addresses dialled and not closed yet.
    pub dialled: usize,
    /// Addresses waiting out a retry delay after a few failures.
    pub retrying: usize,
    /// Addresses that failed many times in a row.
    pub given_up: usize,
    /// Addresses banned for bad data.
    pub banned: usize,
}

/// The dial queue.
#[derive(Debug)]
pub struct PeerCandidates {
    /// `None` while no address is known: boxed, as a seed (a thousand of them resting in a
    /// daemon) keeps none.
    tables: Option<Box<Tables>>,
    /// At most `u32::MAX` (any larger bound is that).
    max_known: u32,
    /// Our own listening address on loopback (never dialled).
    own_port: Option<u16>,
}

#[derive(Debug, Default)]
struct Tables {
    known: HashMap<SocketAddr, Candidate>,
    ready: VecDeque<SocketAddr>,
}

impl PeerCandidates {
    /// An empty queue remembering at most `max_known` addresses.
    pub fn new(max_known: usize) -> PeerCandidates {
        PeerCandidates {
            tables: None,
            max_known: u32::try_from(max_known).unwrap_or(u32::MAX),
            own_port: None,
        }
    }

    fn known(&self) -> impl Iterator<Item = (&SocketAddr, &Candidate)> {
        self.tables.iter().flat_map(|t| t.known.iter())
    }

    fn candidate_mut(&mut self, addr: &SocketAddr) -> Option<&mut Candidate> {
        self.tables.as_mut()?.known.get_mut(addr)
    }

    fn known_len(&self) -> usize {
        self.tables.as_ref().map_or(0, |t| t.known.len())
    }

    fn is_full(&self) -> bool {
        self.known_len() >= self.max_known as usize
    }

    /// Our listening port: loopback addresses on it are ourselves and never dialled.
    pub fn set_own_port(&mut self, port: u16) {
        self.own_port = Some(port);
    }

    /// Hears of `addr`. Returns whether it was new and queued.
    pub fn add(&mut self, addr: SocketAddr) -> bool {
        let is_self = self.own_port == Some(addr.port()) && addr.ip().is_loopback();
        let known = self
            .tables
            .as_ref()
            .is_some_and(|t| t.known.contains_key(&addr));
        if is_self || addr.port() == 0 || known || self.is_full() {
            return false;
        }
        let t = self.tables.get_or_insert_default();
        t.known.insert(
            addr,
            Candidate {
                state: State::Ready,
                failures: 0,
            },
        );
        t.ready.push_back(addr);
        true
    }

    /// The next address to dial, marked dialled.
    pub fn next_to_dial(&mut self) -> Option<SocketAddr> {
        let t = self.tables.as_deref_mut()?;
        while let Some(addr) = t.ready.pop_front() {
            if let Some(c) = t.known.get_mut(&addr) {
                if c.state == State::Ready {
                    c.state = State::Dialled;
                    return Some(addr);
                }
            }
        }
        None
    }

    /// The connection to `addr` completed its handshake: its failures are forgiven.
    pub fn on_established(&mut self, addr: SocketAddr) {
        if let Some(c) = self.candidate_mut(&addr) {
            c.failures = 0;
        }
    }

    /// A connection we dialled to `addr` ended.
    pub fn on_closed(&mut self, now: Instant, addr: SocketAddr, kind: CloseKind) {
        let Some(t) = self.tables.as_deref_mut() else {
            return;
        };
        let Some(c) = t.known.get_mut(&addr) else {
            return;
        };
        if c.state != State::Dialled {
            return;
        }
        c.state = match kind {
            CloseKind::Banned => State::Banned,
            CloseKind::Ours => State::Waiting(now),
            CloseKind::Protocol => {
                c.failures = c.failures.saturating_add(MAX_QUICK_RETRIES);
                State::Waiting(now + MAX_RETRY)
            }
            CloseKind::Transient => {
                c.failures = c.failures.saturating_add(1);
                let exp = c.failures.saturating_sub(1).min(16);
                State::Waiting(now + FIRST_RETRY.saturating_mul(1 << exp).min(MAX_RETRY))
            }
        };
        if kind == CloseKind::Ours {
            // No blame, and no wait: it may be dialled again whenever it is needed.
            c.state = State::Ready;
            t.ready.push_back(addr);
        }
    }

    /// Bans `addr` (bad data): it is never dialled again.
    pub fn ban(&mut self, addr: SocketAddr) {
        if let Some(t) = self.tables.as_deref_mut() {
            if let Some(c) = t.known.get_mut(&addr) {
                if c.state == State::Ready {
                    t.ready.retain(|a| *a != addr);
                }
                c.state = State::Banned;
                return;
            }
        }
        if !self.is_full() {
            let t = self.tables.get_or_insert_default();
            t.known.insert(
                addr,
                Candidate {
                    state: State::Banned,
                    failures: 0,
                },
            );
        }
    }

    /// Forgets every address but the banned ones, and gives back the memory they held (a seed
    /// dials nobody: it keeps only whom to refuse).
    pub fn forget_all_but_banned(&mut self) {
        let Some(t) = self.tables.as_deref_mut() else {
            return;
        };
        t.known.retain(|_, c| c.state == State::Banned);
        if t.known.is_empty() {
            self.tables = None;
            return;
        }
        t.known.shrink_to_fit();
        t.ready = VecDeque::new();
    }

    /// Whether `addr` is banned.
    pub fn is_banned(&self, addr: &SocketAddr) -> bool {
        (self.tables.as_ref())
            .and_then(|t| t.known.get(addr))
            .is_some_and(|c| c.state == State::Banned)
    }

    /// Addresses whose wait is over become ready.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(t) = self.tables.as_deref_mut() else {
            return;
        };
        for (addr, c) in t.known.iter_mut() {
            if let State::Waiting(until) = c.state {
                if until <= now {
                    c.state = State::Ready;
                    t.ready.push_back(*addr);
                }
            }
        }
    }

    /// When the next waiting address becomes ready.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.known()
            .filter_map(|(_, c)| match c.state {
                State::Waiting(t) => Some(t),
                _ => None,
            })
            .min()
    }

    /// Whether an address is ready to dial.
    pub fn has_ready(&self) -> bool {
        self.tables.as_ref().is_some_and(|t| !t.ready.is_empty())
    }

    /// Whether anything is left to try soon: an address ready, dialled, or waiting after only a
    /// few failures.
    pub fn has_hope(&self) -> bool {
        let c = self.counts();
        c.ready + c.dialled + c.retrying > 0
    }

    /// How many addresses are in each state.
    pub fn counts(&self) -> CandidateCounts {
        let mut out = CandidateCounts::default();
        for (_, c) in self.known() {
            match c.state {
                State::Ready => out.ready += 1,
                State::Dialled => out.dialled += 1,
                State::Banned => out.banned += 1,
                State::Waiting(_) if c.failures >= MAX_QUICK_RETRIES => out.given_up += 1,
                State::Waiting(_) => out.retrying += 1,
            }
        }
        out
    }

    /// Checks the invariants in the module doc.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        if self.known_len() > self.max_known as usize {
            return Err("too many addresses".into());
        }
        let Some(t) = self.tables.as_deref() else {
            return Ok(());
        };
        if t.known.is_empty() {
            return Err("tables kept with no address known".into());
        }
        let mut queued = std::collections::HashSet::new();
        for a in &t.ready {
            if !queued.insert(a) {
                return Err(format!("{a} queued twice"));
            }
            if t.known.get(a).map(|c| c.state) != Some(State::Ready) {
                return Err(format!("{a} queued but not ready"));
            }
        }
        let ready = self.counts().ready;
        if ready != queued.len() {
            return Err(format!("{ready} ready but {} queued", queued.len()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn dials_each_address_once_and_skips_ourselves() {
        let mut c = PeerCandidates::new(10);
        c.set_own_port(7000);
        assert!(c.add(addr(1)));
        assert!(!c.add(addr(1)));
        assert!(!c.add(SocketAddr::from(([127, 0, 0, 1], 7000))));
        assert!(c.add(SocketAddr::from(([127, 0, 0, 1], 7001))));
        assert!(!c.add(addr(0)));
        assert_eq!(c.next_to_dial(), Some(addr(1)));
        assert!(!c.add(addr(1)), "known while dialled");
        assert_eq!(
            c.next_to_dial(),
            Some(SocketAddr::from(([127, 0, 0, 1], 7001)))
        );
        assert_eq!(c.next_to_dial(), None);
    }

    #[test]
    fn failures_back_off_and_hearing_again_does_not_shorten_the_wait() {
        let t = Instant::now();
        let mut c = PeerCandidates::new(10);
        c.add(addr(1));
        let mut at = t;
        for (i, wait) in [5, 10, 20, 40].into_iter().enumerate() {
            assert_eq!(c.next_to_dial(), Some(addr(1)), "try {i}");
            c.on_closed(at, addr(1), CloseKind::Transient);
            assert_eq!(c.poll_timeout(), Some(at + Duration::from_secs(wait)));
            c.add(addr(1));
            c.handle_timeout(at + Duration::from_secs(wait - 1));
            assert_eq!(c.next_to_dial(), None, "dialled again before its wait");
            at += Duration::from_secs(wait);
            c.handle_timeout(at);
            c.check_invariants().unwrap();
        }
        assert!(c.has_ready());
        c.next_to_dial();
        c.on_closed(at, addr(1), CloseKind::Transient);
        assert_eq!(c.counts().given_up, 1);
        assert!(!c.has_hope());
    }

    #[test]
    fn established_connections_are_forgiven_and_bans_stick() {
        let t = Instant::now();
        let mut c = PeerCandidates::new(10);
        c.add(addr(1));
        c.add(addr(2));
        c.next_to_dial();
        c.on_closed(t, addr(1), CloseKind::Transient);
        c.handle_timeout(t + FIRST_RETRY);
        assert_eq!(c.next_to_dial(), Some(addr(2)));
        assert_eq!(c.next_to_dial(), Some(addr(1)));
        c.on_established(addr(1));
        c.on_closed(t, addr(1), CloseKind::Transient);
        assert_eq!(c.poll_timeout(), Some(t + FIRST_RETRY), "failures forgiven");
        c.on_closed(t, addr(2), CloseKind::Banned);
        c.add(addr(2));
        c.handle_timeout(t + MAX_RETRY * 2);
        assert!(c.is_banned(&addr(2)));
        assert_eq!(c.next_to_dial(), Some(addr(1)));
        assert_eq!(c.next_to_dial(), None);
    }

    proptest! {
        #[test]
        fn invariants_hold_under_any_sequence(ops in proptest::collection::vec((0u8..6, 1u16..20, 0u64..100), 0..200)) {
            let t0 = Instant::now();
            let mut c = PeerCandidates::new(8);
            for (op, port, secs) in ops {
                let now = t0 + Duration::from_secs(secs);
                match op {
                    0 => { c.add(addr(port)); }
                    1 => { c.next_to_dial(); }
                    2 => c.on_closed(now, addr(port), CloseKind::Transient),
                    3 => c.on_closed(now, addr(port), CloseKind::Ours),
                    4 => c.ban(addr(port)),
                    _ => c.handle_timeout(now),
                }
                prop_assert!(c.check_invariants().is_ok(), "{:?}", c.check_invariants());
            }
        }
    }
}
