//! Multi-tracker bookkeeping (BEP 12), sans-IO: tiers of tracker URLs, the order to try them,
//! and when each tier is due for its next announce.
//!
//! Invariants: a URL appears once in the whole list (first occurrence wins) and no tier is
//! empty; a tracker that answers moves to the front of its tier, so the front tracker of a
//! tier is the one last known to work; intervals from trackers are clamped to
//! [[`MIN_INTERVAL`], [`MAX_INTERVAL`]] and never below the tracker's `min interval`; failed
//! trackers are retried after a doubling backoff capped at [`MAX_RETRY`]. Time is passed in.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;

use super::AnnounceResponse;

/// Interval used when a tracker does not send one.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// Shortest interval we honour, whatever the tracker says.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// Longest interval we honour, whatever the tracker says.
pub const MAX_INTERVAL: Duration = Duration::from_secs(6 * 3600);
/// Wait after a tracker's first failure; doubles with every further failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(30);
/// Longest wait between retries of a failing tracker.
pub const MAX_RETRY: Duration = Duration::from_secs(30 * 60);

/// How soon a tracker that answered is asked again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    /// After its interval.
    Normal,
    /// We want more peers: after [`EAGER_INTERVAL`], but never before its `min interval`.
    MorePeers,
    /// We have nobody to talk to: after this long, whatever it asked.
    Starving(Duration),
}

/// The wait after a success when we want more peers (unless the tracker asks for longer).
pub const EAGER_INTERVAL: Duration = Duration::from_secs(30);

/// One tracker and what we know about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracker {
    /// The announce URL.
    pub url: String,
    /// When it last answered.
    pub last_success: Option<Instant>,
    /// When we last asked it (answered or not).
    pub last_attempt: Option<Instant>,
    /// Wait after a success before announcing again (already clamped).
    pub interval: Duration,
    /// The shortest wait the tracker asked for (`min interval`, zero if it did not say).
    pub min_interval: Duration,
    /// Failures since the last success.
    pub failures: u32,
}

fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or(t)
}

/// The wait before retrying after `failures` consecutive failures (`failures >= 1`).
fn retry_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1u32 << exp).min(MAX_RETRY)
}

/// The interval to wait after `resp`: its `interval` (or the default), at least its
/// `min interval`, clamped to our bounds.
pub fn announce_interval(resp: &AnnounceResponse) -> Duration {
    let interval = resp
        .interval
        .map_or(DEFAULT_INTERVAL, |s| Duration::from_secs(u64::from(s)));
    let min = resp
        .min_interval
        .map_or(Duration::ZERO, |s| Duration::from_secs(u64::from(s)));
    interval.max(min).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

impl Tracker {
    /// A tracker never asked yet.
    pub fn new(url: String) -> Tracker {
        Tracker {
            url,
            last_success: None,
            last_attempt: None,
            interval: DEFAULT_INTERVAL,
            min_interval: Duration::ZERO,
            failures: 0,
        }
    }

    /// Whether its last announce succeeded.
    pub fn is_working(&self) -> bool {
        self.last_success.is_some() && self.failures == 0
    }

    /// When it should be asked next: `now` if never asked, after the wait `urgency` asks
    /// for following a success, or after the retry backoff following failures.
    pub fn next_announce(&self, now: Instant, urgency: Urgency) -> Instant {
        if self.failures > 0 {
            let since = self.last_attempt.unwrap_or(now);
            return later(since, retry_delay(self.failures));
        }
        let wait = match urgency {
            Urgency::Normal => self.interval,
            Urgency::MorePeers => EAGER_INTERVAL.max(self.min_interval).min(self.interval),
            Urgency::Starving(d) => d.min(self.interval),
        };
        match self.last_success {
            Some(t) => later(t, wait),
            None => now,
        }
    }
}

/// Tiers of trackers in the order to try them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerList {
    tiers: Vec<Vec<Tracker>>,
}

impl TrackerList {
    /// Keeps the given order; trims URLs, drops empty ones, duplicates and empty tiers.
    pub fn new(tiers: Vec<Vec<String>>) -> TrackerList {
        let mut seen = HashSet::new();
        let tiers = tiers
            .into_iter()
            .map(|tier| {
                let mut tier = (tier.into_iter())
                    .map(|u| u.trim().to_string())
                    .filter(|u| !u.is_empty() && seen.insert(u.clone()))
                    .map(Tracker::new)
                    .collect::<Vec<_>>();
                // Kept as long as the torrent: no spare room.
                tier.shrink_to_fit();
                tier
            })
            .filter(|tier| !tier.is_empty())
            .collect();
        TrackerList { tiers }
    }

    /// Like [`TrackerList::new`], then shuffles each tier as BEP 12 asks (pass a seeded rng
    /// for a deterministic order).
    pub fn shuffled<R: Rng + ?Sized>(tiers: Vec<Vec<String>>, rng: &mut R) -> TrackerList {
        let mut list = TrackerList::new(tiers);
        for tier in &mut list.tiers {
            tier.shuffle(rng);
        }
        list
    }

    /// Whether there is no tracker at all.
    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    /// The tiers and their trackers, in try order.
    pub fn tiers(&self) -> &[Vec<Tracker>] {
        &self.tiers
    }

    /// Every URL, tier by tier, in try order (e.g. for a `stopped` announce to all).
    pub fn urls(&self) -> Vec<Vec<String>> {
        self.tiers
            .iter()
            .map(|t| t.iter().map(|tr| tr.url.clone()).collect())
            .collect()
    }

    fn find(&self, url: &str) -> Option<(usize, usize)> {
        self.tiers
            .iter()
            .enumerate()
            .find_map(|(ti, tier)| tier.iter().position(|t| t.url == url).map(|pos| (ti, pos)))
    }

    /// When tier `tier` is next due: its front tracker's time if that one works, otherwise the
    /// earliest time any of its trackers may be tried. `None` if there is no such tier.
    pub fn tier_next_announce(
        &self,
        tier: usize,
        now: Instant,
        urgency: Urgency,
    ) -> Option<Instant> {
        let trackers = self.tiers.get(tier)?;
        let front = trackers.first()?;
        if front.is_working() {
            return Some(front.next_announce(now, urgency));
        }
        trackers.iter().map(|t| t.next_announce(now, urgency)).min()
    }

    /// The earliest time any tier is due; `None` if the list is empty.
    pub fn next_announce(&self, now: Instant, urgency: Urgency) -> Option<Instant> {
        (0..self.tiers.len())
            .filter_map(|i| self.tier_next_announce(i, now, urgency))
            .min()
    }

    /// For every tier due at `now`, its index and the URLs to try in order (those not waiting
    /// out a retry backoff). Tiers not due are left out.
    pub fn due(&self, now: Instant, urgency: Urgency) -> Vec<(usize, Vec<String>)> {
        (0..self.tiers.len())
            .filter(|&i| {
                self.tier_next_announce(i, now, urgency)
                    .is_some_and(|t| t <= now)
            })
            .map(|i| {
                let urls = self.tiers[i]
                    .iter()
                    .filter(|t| t.next_announce(now, urgency) <= now)
                    .map(|t| t.url.clone())
                    .collect::<Vec<_>>();
                (i, urls)
            })
            .filter(|(_, urls)| !urls.is_empty())
            .collect()
    }

    /// The tier holding `url`.
    pub fn tier_of(&self, url: &str) -> Option<usize> {
        self.find(url).map(|(tier, _)| tier)
    }

    /// Whether every tracker failed its last `n` announces or more.
    pub fn all_failing(&self, n: u32) -> bool {
        self.tiers.iter().flatten().all(|t| t.failures >= n)
    }

    /// Whether some tracker ever answered.
    pub fn any_answered(&self) -> bool {
        self.tiers
            .iter()
            .flatten()
            .any(|t| t.last_success.is_some())
    }

    /// Whether `url` ever answered.
    pub fn has_answered(&self, url: &str) -> bool {
        self.find(url)
            .is_some_and(|(ti, pos)| self.tiers[ti][pos].last_success.is_some())
    }

    /// Every tracker that ever answered, in tier order.
    pub fn answered(&self) -> Vec<String> {
        (self.tiers.iter().flatten())
            .filter(|t| t.last_success.is_some())
            .map(|t| t.url.clone())
            .collect()
    }

    /// The front tracker (last known to work) of every tier where some tracker answered.
    pub fn working_fronts(&self) -> Vec<String> {
        self.tiers
            .iter()
            .filter(|tier| tier.iter().any(|t| t.last_success.is_some()))
            .filter_map(|tier| tier.first().map(|t| t.url.clone()))
            .collect()
    }

    /// Records an answer from `url` and moves it to the front of its tier. Returns `false`
    /// if the URL is not in the list.
    pub fn on_success(&mut self, url: &str, now: Instant, resp: &AnnounceResponse) -> bool {
        let Some((ti, pos)) = self.find(url) else {
            return false;
        };
        let tier = &mut self.tiers[ti];
        let mut tracker = tier.remove(pos);
        tracker.last_success = Some(now);
        tracker.last_attempt = Some(now);
        tracker.failures = 0;
        tracker.interval = announce_interval(resp);
        tracker.min_interval = resp
            .min_interval
            .map_or(Duration::ZERO, |s| Duration::from_secs(u64::from(s)));
        tier.insert(0, tracker);
        true
    }

    /// Records a failed announce to `url`. Returns `false` if the URL is not in the list.
    pub fn on_failure(&mut self, url: &str, now: Instant) -> bool {
        let Some((ti, pos)) = self.find(url) else {
            return false;
        };
        let tracker = &mut self.tiers[ti][pos];
        tracker.last_attempt = Some(now);
        tracker.failures = tracker.failures.saturating_add(1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn s(v: &[&[&str]]) -> Vec<Vec<String>> {
        v.iter()
            .map(|t| t.iter().map(|u| u.to_string()).collect())
            .collect()
    }

    fn due(list: &TrackerList, now: Instant) -> Vec<Vec<String>> {
        list.due(now, Urgency::Normal)
            .into_iter()
            .map(|(_, urls)| urls)
            .collect()
    }

    fn resp(interval: Option<u32>, min: Option<u32>) -> AnnounceResponse {
        AnnounceResponse {
            interval,
            min_interval: min,
            ..Default::default()
        }
    }

    #[test]
    fn new_cleans_up() {
        let list = TrackerList::new(s(&[&["a", " b ", ""], &[], &["a", "c"], &["b"]]));
        assert_eq!(list.urls(), s(&[&["a", "b"], &["c"]]));
        assert!(TrackerList::new(s(&[&[], &[""]])).is_empty());
    }

    #[test]
    fn shuffle_is_deterministic_per_seed_and_keeps_tiers() {
        let urls: Vec<String> = (0..10).map(|i| format!("u{i}")).collect();
        let tiers = vec![urls.clone(), vec!["x".to_string()]];
        let a = TrackerList::shuffled(tiers.clone(), &mut StdRng::seed_from_u64(7));
        let b = TrackerList::shuffled(tiers.clone(), &mut StdRng::seed_from_u64(7));
        assert_eq!(a, b);
        let mut first = a.urls()[0].clone();
        assert_ne!(first, urls, "10 elements almost surely move");
        first.sort();
        let mut sorted = urls.clone();
        sorted.sort();
        assert_eq!(first, sorted);
        assert_eq!(a.urls()[1], vec!["x".to_string()]);
    }

    #[test]
    fn success_moves_to_front_of_its_tier() {
        let t0 = Instant::now();
        let mut list = TrackerList::new(s(&[&["a", "b", "c"], &["d", "e"]]));
        assert!(list.on_success("c", t0, &resp(Some(900), None)));
        assert!(list.on_success("e", t0, &resp(None, None)));
        assert!(!list.on_success("zzz", t0, &resp(None, None)));
        assert_eq!(list.urls(), s(&[&["c", "a", "b"], &["e", "d"]]));
    }

    #[test]
    fn intervals_are_clamped_and_respect_min_interval() {
        assert_eq!(announce_interval(&resp(None, None)), DEFAULT_INTERVAL);
        assert_eq!(
            announce_interval(&resp(Some(900), Some(1200))),
            Duration::from_secs(1200)
        );
        assert_eq!(announce_interval(&resp(Some(5), None)), MIN_INTERVAL);
        assert_eq!(announce_interval(&resp(Some(u32::MAX), None)), MAX_INTERVAL);
    }

    #[test]
    fn scheduling_follows_interval_and_backoff() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let mut list = TrackerList::new(s(&[&["a", "b"]]));
        assert_eq!(
            list.next_announce(t0, Urgency::Normal),
            Some(t0),
            "never asked: due now"
        );
        assert_eq!(due(&list, t0), s(&[&["a", "b"]]));

        list.on_success("b", t0, &resp(Some(900), None));
        assert_eq!(
            list.next_announce(t0, Urgency::Normal),
            Some(t0 + secs(900))
        );
        assert!(
            due(&list, t0 + secs(899)).is_empty(),
            "a never asked, but b works"
        );
        assert_eq!(due(&list, t0 + secs(900)), s(&[&["b", "a"]]));

        // b fails: a (never asked) becomes due at once; b waits out its backoff.
        let t1 = t0 + secs(900);
        list.on_failure("b", t1);
        assert_eq!(due(&list, t1), s(&[&["a"]]));
        list.on_failure("a", t1);
        assert_eq!(list.next_announce(t1, Urgency::Normal), Some(t1 + secs(30)));
        list.on_failure("a", t1);
        list.on_failure("a", t1);
        assert_eq!(
            list.tiers()[0][1].next_announce(t1, Urgency::Normal),
            t1 + secs(120)
        );
        assert_eq!(due(&list, t1 + secs(30)), s(&[&["b"]]));
        for _ in 0..40 {
            list.on_failure("b", t1);
        }
        assert_eq!(
            list.tiers()[0][0].next_announce(t1, Urgency::Normal),
            t1 + MAX_RETRY
        );
        // a recovers and goes to the front.
        list.on_success("a", t1, &resp(Some(60), None));
        assert_eq!(list.urls(), s(&[&["a", "b"]]));
        assert_eq!(list.next_announce(t1, Urgency::Normal), Some(t1 + secs(60)));
    }

    #[test]
    fn urgency_shortens_the_wait_after_a_success_only() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let mut list = TrackerList::new(s(&[&["a"], &["b"]]));
        list.on_success("a", t0, &resp(Some(1800), Some(120)));
        list.on_failure("b", t0);
        let next = |u| list.tier_next_announce(0, t0, u);
        assert_eq!(next(Urgency::Normal), Some(t0 + secs(1800)));
        assert_eq!(
            next(Urgency::MorePeers),
            Some(t0 + secs(120)),
            "min interval wins"
        );
        assert_eq!(next(Urgency::Starving(secs(2))), Some(t0 + secs(2)));
        // A failing tracker keeps its retry backoff whatever the urgency.
        assert_eq!(
            list.tier_next_announce(1, t0, Urgency::Starving(secs(2))),
            Some(t0 + FIRST_RETRY)
        );
        assert_eq!(list.working_fronts(), vec!["a".to_string()]);
        assert!(!list.all_failing(1));
        assert!(list.any_answered());
    }
}
