//! The daemon's queue: which of many torrents run at once.
//!
//! A [`TorrentQueue`] knows every torrent of a daemon by id, in queue order, with what the user
//! asked (paused or not) and what the driver reported (complete, failed). From that it decides
//! which torrents run: the first `max_active_downloads` incomplete ones and the first
//! `max_active_seeds` complete ones in queue order, among those neither paused nor failed; the
//! rest wait, queued. Every change (add, remove, pause, resume, completion, a failure, new
//! limits) is followed by a reconciliation that emits [`QueueEvent::Start`] and
//! [`QueueEvent::Stop`] for the torrents whose running state changes, drained with
//! [`TorrentQueue::poll_event`].
//!
//! Invariants: a torrent is started only when stopped and stopped only when started, so the
//! events alternate per torrent; at most [`MAX_TORRENTS`] torrents are held. There is no timing
//! here: the rules depend on the order of inputs only.

use std::collections::{BTreeMap, VecDeque};

/// A torrent's id in the daemon: small, stable while it lives, never reused by one queue.
pub type TorrentId = u64;

/// Most torrents one queue holds.
pub const MAX_TORRENTS: usize = 100_000;

/// How many torrents run at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    /// Incomplete torrents downloading at once.
    pub max_active_downloads: usize,
    /// Complete torrents seeding at once.
    pub max_active_seeds: usize,
}

impl Default for QueueLimits {
    /// 5 downloads and 100 seeds, as Transmission and qBittorrent default to about that.
    fn default() -> QueueLimits {
        QueueLimits {
            max_active_downloads: 5,
            max_active_seeds: 100,
        }
    }
}

/// Where a torrent stands in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueState {
    /// Stopped by the user; runs again only when resumed.
    Paused,
    /// Stopped after a failure the driver reported; runs again only when resumed.
    Failed,
    /// Incomplete and waiting for a download slot.
    QueuedDownload,
    /// Complete and waiting for a seeding slot.
    QueuedSeed,
    /// Running, incomplete.
    Downloading,
    /// Running, complete.
    Seeding,
}

/// What the driver must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueEvent {
    /// Start running this torrent.
    Start(TorrentId),
    /// Stop running this torrent (it stays in the queue).
    Stop(TorrentId),
}

/// Why a torrent could not be added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    #[error("torrent {0} is already in the queue")]
    Duplicate(TorrentId),
    #[error("the queue is full ({MAX_TORRENTS} torrents)")]
    Full,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    paused: bool,
    failed: bool,
    complete: bool,
    running: bool,
    /// Queue position: smaller runs first.
    position: u64,
}

/// The daemon's queue of torrents (see the module documentation).
#[derive(Debug, Default)]
pub struct TorrentQueue {
    limits: QueueLimits,
    entries: BTreeMap<TorrentId, Entry>,
    next_position: u64,
    events: VecDeque<QueueEvent>,
}

impl TorrentQueue {
    pub fn new(limits: QueueLimits) -> TorrentQueue {
        TorrentQueue {
            limits,
            ..TorrentQueue::default()
        }
    }

    pub fn limits(&self) -> QueueLimits {
        self.limits
    }

    /// Changes the limits; torrents start or stop to fit them.
    pub fn set_limits(&mut self, limits: QueueLimits) {
        self.limits = limits;
        self.reconcile();
    }

    /// Adds a torrent at the end of the queue.
    pub fn add(&mut self, id: TorrentId, complete: bool, paused: bool) -> Result<(), QueueError> {
        self.insert(id, complete, paused)?;
        self.reconcile();
        Ok(())
    }

    /// Adds torrents `(id, complete, paused)` at the end of the queue, in order, and decides
    /// which run once for all of them (deciding after each one, as [`TorrentQueue::add`]
    /// does, would make loading `n` torrents take time quadratic in `n`). Returns what
    /// became of each.
    pub fn add_all(
        &mut self,
        torrents: impl IntoIterator<Item = (TorrentId, bool, bool)>,
    ) -> Vec<Result<(), QueueError>> {
        let added = torrents
            .into_iter()
            .map(|(id, complete, paused)| self.insert(id, complete, paused))
            .collect();
        // Built again in one go: a map filled in key order keeps its nodes half empty (a
        // daemon loading thousands of torrents would carry twice the room).
        self.entries = std::mem::take(&mut self.entries).into_iter().collect();
        self.reconcile();
        added
    }

    fn insert(&mut self, id: TorrentId, complete: bool, paused: bool) -> Result<(), QueueError> {
        if self.entries.contains_key(&id) {
            return Err(QueueError::Duplicate(id));
        }
        if self.entries.len() >= MAX_TORRENTS {
            return Err(QueueError::Full);
        }
        let position = self.next_position;
        self.next_position += 1;
        self.entries.insert(
            id,
            Entry {
                paused,
                failed: false,
                complete,
                running: false,
                position,
            },
        );
        Ok(())
    }

    /// Forgets a torrent; a running one is stopped first (the event comes out). Unknown ids
    /// are ignored.
    pub fn remove(&mut self, id: TorrentId) {
        if let Some(entry) = self.entries.remove(&id) {
            if entry.running {
                self.events.push_back(QueueEvent::Stop(id));
            }
            self.reconcile();
        }
    }

    /// The user stops a torrent.
    pub fn pause(&mut self, id: TorrentId) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.paused = true;
            self.reconcile();
        }
    }

    /// The user lets a torrent run again (clearing a failure too).
    pub fn resume(&mut self, id: TorrentId) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.paused = false;
            entry.failed = false;
            self.reconcile();
        }
    }

    /// The driver reports that a torrent's wanted data is complete (`true`) or no longer is
    /// (`false`: files were unskipped, or a recheck found pieces missing).
    pub fn handle_complete(&mut self, id: TorrentId, complete: bool) {
        if let Some(entry) = self.entries.get_mut(&id) {
            if entry.complete != complete {
                entry.complete = complete;
                self.reconcile();
            }
        }
    }

    /// The driver reports that a running torrent stopped by itself (an error, or its seeding
    /// limits were reached): it is not started again until resumed.
    pub fn handle_stopped(&mut self, id: TorrentId, failed: bool) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.running = false;
            if failed {
                entry.failed = true;
            } else {
                entry.paused = true;
            }
            self.reconcile();
        }
    }

    /// Where the torrent stands, if known.
    pub fn state(&self, id: TorrentId) -> Option<QueueState> {
        let e = self.entries.get(&id)?;
        Some(match (e.failed, e.paused, e.running, e.complete) {
            (true, _, _, _) => QueueState::Failed,
            (_, true, _, _) => QueueState::Paused,
            (_, _, true, false) => QueueState::Downloading,
            (_, _, true, true) => QueueState::Seeding,
            (_, _, false, false) => QueueState::QueuedDownload,
            (_, _, false, true) => QueueState::QueuedSeed,
        })
    }

    /// The torrents in queue order.
    pub fn ids(&self) -> Vec<TorrentId> {
        let mut ids: Vec<_> = self
            .entries
            .iter()
            .map(|(&id, e)| (e.position, id))
            .collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// How many torrents are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The next thing the driver must do.
    pub fn poll_event(&mut self) -> Option<QueueEvent> {
        self.events.pop_front()
    }

    /// Decides again which torrents run; queues the changes as events.
    fn reconcile(&mut self) {
        let (mut downloads, mut seeds) = (0usize, 0usize);
        for id in self.ids() {
            let Some(e) = self.entries.get_mut(&id) else {
                continue;
            };
            let eligible = !e.paused && !e.failed;
            let should_run = eligible
                && if e.complete {
                    seeds += 1;
                    seeds <= self.limits.max_active_seeds
                } else {
                    downloads += 1;
                    downloads <= self.limits.max_active_downloads
                };
            if should_run != e.running {
                e.running = should_run;
                self.events.push_back(if should_run {
                    QueueEvent::Start(id)
                } else {
                    QueueEvent::Stop(id)
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drain(q: &mut TorrentQueue) -> Vec<QueueEvent> {
        std::iter::from_fn(|| q.poll_event()).collect()
    }

    fn limits(downloads: usize, seeds: usize) -> QueueLimits {
        QueueLimits {
            max_active_downloads: downloads,
            max_active_seeds: seeds,
        }
    }

    #[test]
    fn downloads_beyond_the_limit_wait_in_order() {
        let mut q = TorrentQueue::new(limits(2, 1));
        for id in 1..=3 {
            q.add(id, false, false).unwrap();
        }
        assert_eq!(
            drain(&mut q),
            vec![QueueEvent::Start(1), QueueEvent::Start(2)]
        );
        assert_eq!(q.state(3), Some(QueueState::QueuedDownload));
        // 1 completes: it becomes the one seed, and 3 gets its download slot.
        q.handle_complete(1, true);
        assert_eq!(drain(&mut q), vec![QueueEvent::Start(3)]);
        assert_eq!(q.state(1), Some(QueueState::Seeding));
        // 2 completes: no seed slot left, so it stops and waits as a seed.
        q.handle_complete(2, true);
        assert_eq!(drain(&mut q), vec![QueueEvent::Stop(2)]);
        assert_eq!(q.state(2), Some(QueueState::QueuedSeed));
        // Removing the seeding 1 lets 2 seed.
        q.remove(1);
        assert_eq!(
            drain(&mut q),
            vec![QueueEvent::Stop(1), QueueEvent::Start(2)]
        );
        assert_eq!(q.state(1), None);
    }

    #[test]
    fn adding_many_at_once_decides_as_adding_one_by_one() {
        let torrents = [
            (1, false, false),
            (2, true, false),
            (3, false, true),
            (4, false, false),
            (2, false, false),
            (5, true, false),
            (6, false, false),
        ];
        let mut one_by_one = TorrentQueue::new(limits(2, 1));
        let singly: Vec<_> = (torrents.iter())
            .map(|&(id, complete, paused)| one_by_one.add(id, complete, paused))
            .collect();
        let mut at_once = TorrentQueue::new(limits(2, 1));
        assert_eq!(at_once.add_all(torrents), singly);
        assert_eq!(singly[4], Err(QueueError::Duplicate(2)));
        let started = |q: &mut TorrentQueue| {
            let mut ids: Vec<_> = drain(q)
                .into_iter()
                .filter_map(|e| match e {
                    QueueEvent::Start(id) => Some(id),
                    QueueEvent::Stop(_) => None,
                })
                .collect();
            ids.sort_unstable();
            ids
        };
        assert_eq!(started(&mut at_once), vec![1, 2, 4]);
        assert_eq!(started(&mut one_by_one), vec![1, 2, 4]);
        for id in 1..=6 {
            assert_eq!(at_once.state(id), one_by_one.state(id), "torrent {id}");
        }
        assert_eq!(at_once.ids(), one_by_one.ids());
    }

    #[test]
    fn pause_resume_and_failures() {
        let mut q = TorrentQueue::new(limits(1, 1));
        q.add(1, false, false).unwrap();
        q.add(2, false, false).unwrap();
        q.add(3, false, true).unwrap();
        assert_eq!(drain(&mut q), vec![QueueEvent::Start(1)]);
        assert_eq!(q.state(3), Some(QueueState::Paused));
        q.pause(1);
        assert_eq!(
            drain(&mut q),
            vec![QueueEvent::Stop(1), QueueEvent::Start(2)]
        );
        // Resumed, 1 is first in the queue again and takes its slot back.
        q.resume(1);
        assert_eq!(
            drain(&mut q),
            vec![QueueEvent::Start(1), QueueEvent::Stop(2)]
        );
        // 1 fails: no event for it (it already stopped), 2 runs.
        q.handle_stopped(1, true);
        assert_eq!(drain(&mut q), vec![QueueEvent::Start(2)]);
        assert_eq!(q.state(1), Some(QueueState::Failed));
        assert_eq!(q.add(2, false, false), Err(QueueError::Duplicate(2)));
        q.set_limits(limits(0, 0));
        assert_eq!(drain(&mut q), vec![QueueEvent::Stop(2)]);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Add(bool, bool),
        Remove(u8),
        Pause(u8),
        Resume(u8),
        Complete(u8, bool),
        Stopped(u8, bool),
        Limits(u8, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<bool>(), any::<bool>()).prop_map(|(c, p)| Op::Add(c, p)),
            any::<u8>().prop_map(Op::Remove),
            any::<u8>().prop_map(Op::Pause),
            any::<u8>().prop_map(Op::Resume),
            (any::<u8>(), any::<bool>()).prop_map(|(i, c)| Op::Complete(i, c)),
            (any::<u8>(), any::<bool>()).prop_map(|(i, f)| Op::Stopped(i, f)),
            (0u8..4, 0u8..4).prop_map(|(d, s)| Op::Limits(d, s)),
        ]
    }

    proptest! {
        /// Whatever happens: events alternate per torrent and match what the driver saw
        /// (`handle_stopped` is the driver's own stop), and the limits always hold.
        #[test]
        fn limits_hold_and_events_alternate(ops in proptest::collection::vec(op(), 0..80)) {
            let mut q = TorrentQueue::new(limits(2, 2));
            let mut running = std::collections::BTreeSet::new();
            let mut next = 0u64;
            for op in ops {
                let pick = |i: u8| u64::from(i) % next.max(1);
                match op {
                    Op::Add(c, p) => { q.add(next, c, p).unwrap(); next += 1; }
                    Op::Remove(i) => q.remove(pick(i)),
                    Op::Pause(i) => q.pause(pick(i)),
                    Op::Resume(i) => q.resume(pick(i)),
                    Op::Complete(i, c) => q.handle_complete(pick(i), c),
                    Op::Stopped(i, f) => {
                        let id = pick(i);
                        if running.remove(&id) {
                            q.handle_stopped(id, f);
                        }
                    }
                    Op::Limits(d, s) => q.set_limits(limits(d.into(), s.into())),
                }
                while let Some(ev) = q.poll_event() {
                    match ev {
                        QueueEvent::Start(id) => prop_assert!(running.insert(id)),
                        QueueEvent::Stop(id) => prop_assert!(running.remove(&id)),
                    }
                }
                let l = q.limits();
                let states: Vec<_> = q.ids().iter().filter_map(|&id| q.state(id)).collect();
                let downloading = states.iter().filter(|s| **s == QueueState::Downloading).count();
                let seeding = states.iter().filter(|s| **s == QueueState::Seeding).count();
                prop_assert!(downloading <= l.max_active_downloads);
                prop_assert!(seeding <= l.max_active_seeds);
                prop_assert_eq!(downloading + seeding, running.len());
            }
        }
    }
}
