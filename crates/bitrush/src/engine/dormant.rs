//! Dormant seeds: the torrents a daemon hosts that seed with nobody connected keep only their
//! core [`Session`](crate::session::Session), and one task drives the announces of them all.
//!
//! A seed comes here when its run ends dormant ([`HostedEnd::Dormant`](super::HostedEnd)) or
//! when it starts complete ([`Dormant::new`]). Each session is driven as any driver does:
//! `handle_timeout` once its `poll_timeout` is reached, its announces and DHT lookups carried
//! out by short tasks whose answers go back to it (announces through one shared HTTP client,
//! in turns of [`MAX_ANNOUNCING`]). Nothing else runs for a dormant seed: no swarm, no
//! connection task, no file open, and no timer but its session's next deadline (its next
//! announce). A peer's handshake for it takes the session out ([`DormantSeeds::take`]) to
//! start a full run, with the announces still out. [`DormantSeeds::stop`] sends its closing
//! announces; every session's end is reported on the channel [`DormantSeeds::start`] returns.
//! A wave of at least [`TRIM_AFTER_WAVE`] announces (a start) ends with the allocator's free
//! memory given back.
//!
//! Invariants: the timer set holds one entry per seed whose session has a deadline (but for
//! seeds just inserted, waiting in `fresh` to be looked at), and it is that deadline; a seed
//! being stopped is never taken out; the table's lock is never held across an await; at most
//! [`MAX_ANNOUNCING`] announces are out at once, besides the closing ones of seeds being
//! stopped; an announce whose session is gone is never sent.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::oneshot::error::TryRecvError;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use super::dht::{DhtHandle, LookupReply};
use super::torrent::{Dormant, Out};
use super::tracker::{self, AnnounceError, SharedClient};
use crate::session::{CloseKind, Finish, SessionEvent};
use crate::tracker::{AnnounceRequest, AnnounceResponse};

/// Most announces of dormant seeds out at once; the others wait their turn (a daemon starting
/// with thousands of seeds announces them in waves rather than opening thousands of
/// connections at once: the memory a wave takes stays small). A seed being stopped does not
/// wait: its closing announces have a deadline.
pub const MAX_ANNOUNCING: usize = 16;

/// Announces in a wave after which the allocator's free memory is given back (a daemon's start
/// with many seeds makes one; a few seeds announcing now and then do not).
pub const TRIM_AFTER_WAVE: usize = 4 * MAX_ANNOUNCING;

/// A seed's key (the daemon's torrent id).
pub type SeedKey = u64;

/// The dormant seeds and the task driving them; cheap to clone.
#[derive(Clone)]
pub struct DormantSeeds(Arc<Inner>);

struct Inner {
    table: Mutex<Table>,
    /// Told when the last seed leaves.
    emptied: Notify,
    /// Wakes the driver: a seed came, its deadline moved, or it was stopped.
    poke: Notify,
    /// A task of this seed ended (an announce if `true`, else a DHT lookup): its answer is
    /// ready for the session.
    answered: mpsc::UnboundedSender<(SeedKey, bool)>,
    ended: mpsc::UnboundedSender<(SeedKey, Finish)>,
    dht: Option<DhtHandle>,
}

/// An announce waiting for its turn.
struct Queued {
    key: SeedKey,
    url: String,
    request: AnnounceRequest,
    answer: oneshot::Sender<Result<AnnounceResponse, AnnounceError>>,
}

#[derive(Default)]
struct Table {
    /// Boxed: a table sized for thousands holds pointers in its spare room, not sessions.
    seeds: HashMap<SeedKey, Box<Seed>>,
    /// (deadline, seed), earliest first.
    timers: BTreeSet<(Instant, SeedKey)>,
    /// Seeds to look at on the driver's next passes (just inserted), oldest first.
    fresh: VecDeque<SeedKey>,
    /// Announces waiting for one of the [`MAX_ANNOUNCING`] turns, oldest first.
    queue: VecDeque<Queued>,
    /// Announces out.
    announcing: usize,
    /// Announces sent since the last time none was out or waiting (the wave's size).
    wave: usize,
    /// The client the announces of a wave share; dropped once the wave is over, so nothing of
    /// it stays between waves. `Some(None)`: it could not be made, each announce makes its
    /// own.
    http: Option<Option<SharedClient>>,
}

struct Seed {
    dormant: Dormant,
    /// The deadline in `timers`.
    deadline: Option<Instant>,
    /// Its closing announces are under way.
    stopping: bool,
}

impl DormantSeeds {
    /// Starts the driver; returns the handle, the task (to abort at the end) and where each
    /// seed's end is reported (after [`DormantSeeds::stop`], or when its seeding limits are
    /// reached).
    pub fn start(
        dht: Option<DhtHandle>,
    ) -> (
        DormantSeeds,
        JoinHandle<()>,
        mpsc::UnboundedReceiver<(SeedKey, Finish)>,
    ) {
        let (answered, answers) = mpsc::unbounded_channel();
        let (ended, ends) = mpsc::unbounded_channel();
        let seeds = DormantSeeds(Arc::new(Inner {
            table: Mutex::new(Table::default()),
            emptied: Notify::new(),
            poke: Notify::new(),
            answered,
            ended,
            dht,
        }));
        let task = tokio::spawn(seeds.clone().drive(answers));
        (seeds, task, ends)
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.0.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets `key` rest here (a seed under that key already is replaced).
    pub fn insert(&self, key: SeedKey, dormant: Dormant) {
        let mut table = self.table();
        table.remove(key);
        let pending = !dormant.out.is_empty();
        table.seeds.insert(
            key,
            Box::new(Seed {
                dormant,
                deadline: None,
                stopping: false,
            }),
        );
        table.fresh.push_back(key);
        drop(table);
        if pending {
            // Answers may have come while it moved.
            let _ = self.0.answered.send((key, false));
        }
        self.0.poke.notify_one();
    }

    /// Takes `key` out to run it (`None`: not here, or being stopped).
    pub fn take(&self, key: SeedKey) -> Option<Dormant> {
        let mut table = self.table();
        if table.seeds.get(&key)?.stopping {
            return None;
        }
        table.remove(key)
    }

    /// Stops `key`: its closing announces go out, then its end is reported. Returns whether it
    /// was here.
    pub fn stop(&self, key: SeedKey) -> bool {
        let mut table = self.table();
        let Some(seed) = table.seeds.get_mut(&key) else {
            return false;
        };
        seed.stopping = true;
        seed.dormant.session.handle_shutdown(Instant::now());
        self.service(&mut table, key, Instant::now());
        drop(table);
        self.0.poke.notify_one();
        true
    }

    /// How many seeds rest here.
    pub fn len(&self) -> usize {
        self.table().seeds.len()
    }

    /// Whether no seed rests here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until no seed rests here (each stopped one leaves once its closing announces are
    /// answered, or at their deadline).
    pub async fn wait_empty(&self) {
        loop {
            let emptied = self.0.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.is_empty() {
                return;
            }
            emptied.await;
        }
    }

    async fn drive(self, mut answers: mpsc::UnboundedReceiver<(SeedKey, bool)>) {
        loop {
            let next = {
                let mut table = self.table();
                let now = Instant::now();
                // Seeds are looked at only while announces do not wait beyond a turn's worth:
                // a wave of thousands due at once (a start) goes by in turns, and what each
                // announce takes while it waits exists for a few seeds at a time.
                while table.queue.len() < MAX_ANNOUNCING {
                    let Some(&(at, key)) = table.timers.first() else {
                        break;
                    };
                    if at > now {
                        break;
                    }
                    // Still in the set: `service` moves it to the session's next deadline.
                    self.service(&mut table, key, now);
                    if table.timers.first() == Some(&(at, key)) {
                        // Nothing moved it (an early wake-up): look again when it is due.
                        break;
                    }
                }
                while table.queue.len() < MAX_ANNOUNCING {
                    let Some(key) = table.fresh.pop_front() else {
                        break;
                    };
                    self.service(&mut table, key, now);
                }
                if table.fresh.is_empty() && table.fresh.capacity() > MAX_ANNOUNCING {
                    table.fresh = VecDeque::new();
                }
                // With announces waiting, their answers wake the driver.
                let waiting = table.queue.len() >= MAX_ANNOUNCING;
                (!waiting)
                    .then(|| table.timers.first().map(|&(at, _)| at))
                    .flatten()
            };
            tokio::select! {
                () = sleep_until(next) => {}
                () = self.0.poke.notified() => {}
                Some((key, announce)) = answers.recv() => {
                    if self.on_answered(key, announce) {
                        // What a large wave (a start: its seeds loaded and their first
                        // announces) allocated and freed is strewn over the heap: given back
                        // now rather than kept until something else trims it.
                        super::release_free_memory();
                    }
                }
            }
        }
    }

    /// Feeds `key`'s session the answers of its tasks that ended; an announce that ended lets
    /// the next one waiting go. Returns whether a wave of at least [`TRIM_AFTER_WAVE`]
    /// announces just passed (none out or waiting, no seed left to look at).
    fn on_answered(&self, key: SeedKey, announce: bool) -> bool {
        let mut table = self.table();
        let mut wave_passed = false;
        if announce {
            table.announcing = table.announcing.saturating_sub(1);
            self.launch(&mut table);
            if table.announcing == 0 {
                table.http = None;
                if table.queue.is_empty() && table.fresh.is_empty() {
                    wave_passed = table.wave >= TRIM_AFTER_WAVE;
                    table.wave = 0;
                }
                if wave_passed {
                    // The wave's seeds got their next deadlines in about the order they come:
                    // a set filled in order keeps its nodes half empty. Built again in one go.
                    table.timers = std::mem::take(&mut table.timers).into_iter().collect();
                }
            }
        }
        let Some(seed) = table.seeds.get_mut(&key) else {
            return wave_passed;
        };
        let now = Instant::now();
        let d = &mut seed.dormant;
        let mut i = 0;
        while let Some(out) = d.out.get_mut(i) {
            match out {
                Out::Announce(url, answer) => {
                    let answer = match answer.try_recv() {
                        Err(TryRecvError::Empty) => {
                            i += 1;
                            continue;
                        }
                        Ok(answer) => answer,
                        Err(TryRecvError::Closed) => Err(AnnounceError::Lost),
                    };
                    let url = std::mem::take(url);
                    d.out.swap_remove(i);
                    match answer {
                        Ok(resp) => d.session.handle_announce_response(now, &url, &resp),
                        Err(e) => {
                            tracing::debug!(tracker = %url, error = %super::error_chain(&e), "announce failed");
                            d.session.handle_announce_failure(now, &url);
                        }
                    }
                }
                Out::Lookup(lookup) => {
                    let found = match lookup.try_recv() {
                        Err(TryRecvError::Empty) => {
                            i += 1;
                            continue;
                        }
                        Ok(found) => found,
                        Err(TryRecvError::Closed) => 0,
                    };
                    d.out.swap_remove(i);
                    d.session.handle_dht_done(now, found);
                }
            }
        }
        self.service(&mut table, key, now);
        wave_passed
    }

    /// Runs `key`'s session if it is due, carries out its events and re-arms its timer.
    fn service(&self, table: &mut Table, key: SeedKey, now: Instant) {
        let Some(seed) = table.seeds.get_mut(&key) else {
            return;
        };
        let old = seed.deadline;
        let d = &mut seed.dormant;
        if d.session.poll_timeout().is_some_and(|t| t <= now) {
            d.session.handle_timeout(now);
        }
        let mut finished = None;
        let mut queued = Vec::new();
        while let Some(event) = d.session.poll_event() {
            match event {
                SessionEvent::Announce { url, request } => {
                    let (answer, rx) = oneshot::channel();
                    queued.push(Queued {
                        key,
                        url: url.clone(),
                        request,
                        answer,
                    });
                    d.out.push(Out::Announce(url, rx));
                }
                SessionEvent::DhtLookup { announce } => {
                    let (answered, dht) = (self.0.answered.clone(), self.0.dht.clone());
                    // The port announced to trackers is the one announced to the DHT.
                    let announcer = d.session.announcer();
                    let (info_hash, port) = (announcer.info_hash, announcer.port);
                    let (tx, rx) = oneshot::channel();
                    tokio::spawn(async move {
                        let found = match dht {
                            Some(dht) => lookup(&dht, info_hash, announce.then_some(port)).await,
                            None => 0,
                        };
                        let _ = tx.send(found);
                        let _ = answered.send((key, false));
                    });
                    d.out.push(Out::Lookup(rx));
                }
                // A seed dials nobody; should it ask, the dial failed.
                SessionEvent::Connect(addr) => {
                    d.session
                        .handle_connection_closed(now, addr, true, CloseKind::Transient)
                }
                SessionEvent::Finished(finish) => finished = Some(finish),
                SessionEvent::Seeding | SessionEvent::Dormant | SessionEvent::Stalled(_) => {}
            }
        }
        if d.out.is_empty() {
            // Nothing out until its next deadline: it keeps only what it uses meanwhile.
            d.session.shrink_to_fit();
            d.out = Vec::new();
        }
        let deadline = d.session.poll_timeout();
        seed.deadline = deadline;
        if seed.stopping {
            for q in queued {
                self.spawn_announce(table, q);
            }
        } else if !queued.is_empty() {
            table.queue.extend(queued);
            self.launch(table);
        }
        if let Some(finish) = finished {
            table.remove(key);
            let _ = self.0.ended.send((key, finish));
            if table.seeds.is_empty() {
                self.0.emptied.notify_waiters();
            }
            return;
        }
        if old != deadline {
            if let Some(old) = old {
                table.timers.remove(&(old, key));
            }
            if let Some(at) = deadline {
                table.timers.insert((at, key));
            }
        }
    }
}

impl DormantSeeds {
    /// Starts the announces waiting, as far as turns are free.
    fn launch(&self, table: &mut Table) {
        while table.announcing < MAX_ANNOUNCING {
            let Some(q) = table.queue.pop_front() else {
                break;
            };
            if q.answer.is_closed() {
                // Its session ended (or was dropped) while it waited: nobody wants it now.
                continue;
            }
            self.spawn_announce(table, q);
        }
        if table.queue.is_empty() && table.queue.capacity() > MAX_ANNOUNCING {
            // A wave passed: its room is not kept.
            table.queue = VecDeque::new();
        }
    }

    fn spawn_announce(&self, table: &mut Table, q: Queued) {
        table.announcing += 1;
        table.wave = table.wave.saturating_add(1);
        let http = table
            .http
            .get_or_insert_with(|| {
                SharedClient::new()
                    .inspect_err(|e| tracing::warn!(error = %super::error_chain(e), "announcing without a shared HTTP client"))
                    .ok()
            })
            .clone();
        let answered = self.0.answered.clone();
        tokio::spawn(async move {
            let result = match &http {
                Some(client) => tracker::announce_shared(client, &q.url, &q.request).await,
                None => tracker::announce(&q.url, &q.request).await,
            };
            // The answer first, then the word that it is there.
            let _ = q.answer.send(result);
            let _ = answered.send((q.key, true));
        });
    }
}

impl Table {
    fn remove(&mut self, key: SeedKey) -> Option<Dormant> {
        let seed = self.seeds.remove(&key)?;
        if let Some(at) = seed.deadline {
            self.timers.remove(&(at, key));
        }
        Some(seed.dormant)
    }
}

/// Runs a DHT lookup to its end; returns how many peers it found (a seed has no use for them:
/// the lookup is for announcing our port).
async fn lookup(dht: &DhtHandle, info_hash: crate::types::InfoHash, port: Option<u16>) -> usize {
    let mut replies = dht.lookup(info_hash, port).await;
    let mut found = 0;
    while let Some(reply) = replies.recv().await {
        match reply {
            LookupReply::Peers(peers) => found += peers.len(),
            LookupReply::Done { .. } => break,
        }
    }
    found
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
