//! Scripted peers for the simulation: an honest seeder and the hostile behaviours of
//! `tests/support/scripted_peer.py` and `bad_peer.py`, and a few more, as plain state
//! machines over [`Message`]s.
//!
//! A scripted peer that serves data has every piece, announces it with a full bitfield and
//! unchokes at once (as the Python scripts do), unless its behaviour says otherwise. Only a
//! leecher requests anything (and checks every block it gets); all send keep-alives (except a staller, which goes silent). It counts
//! what it saw and did in [`ScriptStats`], which the scenarios
//! assert on; a request bitrush should never send (outside the torrent, or for a piece not
//! announced) is counted as invalid, as is a wrong block bitrush uploads.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{LinkId, Output, Torrent};
use crate::swarm::{Bitfield, MAX_REQUEST_LEN};
use crate::wire::{BlockRef, Message};

/// How often a scripted peer sends a keep-alive.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Which of a scripted peer's timers fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tick {
    KeepAlive,
    /// The behaviour's own: a slow answer, the end of a pause, the next choke of a storm.
    Script,
}

/// What is wrong with a bad bitfield.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BitfieldFault {
    /// One byte too many.
    TooLong,
    /// One byte too few.
    TooShort,
    /// Right length, every bit set, the spare ones past the last piece too.
    SpareBits,
}

/// What is wrong with a bad request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestFault {
    /// Longer than [`MAX_REQUEST_LEN`].
    TooLong,
    /// Zero bytes.
    Empty,
    /// Runs one byte past the end of piece 0.
    PastPieceEnd,
    /// For the piece after the last.
    NoSuchPiece,
    /// For piece 0, which the other side does not have (if it does not).
    NotHad,
}

/// How a scripted peer behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// Full bitfield, unchoke, the right block for every valid request.
    Honest,
    /// As honest, but every `every`-th block it serves has bytes flipped (1: every block).
    Corrupt { every: u32 },
    /// Full bitfield and unchoke, then reads requests and never answers one.
    Staller,
    /// As honest, but each block leaves `delay` after its request arrived.
    Slow { delay: Duration },
    /// A broken bitfield, then nothing.
    BadBitfield(BitfieldFault),
    /// Full bitfield and unchoke, then `have` for the piece after the last.
    HaveOutOfRange,
    /// A leecher: `interested`, then one bad request.
    BadRequest(RequestFault),
    /// While still choking, a wrong block for every block of the torrent, none of them
    /// requested; then unchoke and serve honestly.
    Unrequested,
    /// Answers the first request with `choke` and wrong bytes for it and for every request
    /// that arrives until it unchokes again `pause` later; honest from then on.
    ChokeData { pause: Duration },
    /// Serves `blocks` blocks honestly, then closes the connection.
    DisconnectMidPiece { blocks: u32 },
    /// Serves `blocks` blocks with bytes flipped, then closes the connection at once (before
    /// the pieces they went into can be judged).
    CorruptThenLeave { blocks: u32 },
    /// Honest, but chokes and unchokes in turn every `period`, `toggles` times.
    ChokeStorm { period: Duration, toggles: u32 },
    /// Honest, but chokes right behind every `every`-th block it serves (in the same read),
    /// and unchokes again `pause` later.
    ChokeAfter { every: u32, pause: Duration },
    /// Full bitfield, never unchokes.
    NeverUnchoke,
    /// One of a flood of connections: the handshake, then keep-alives only.
    Idle,
    /// Says it is interested, then sends keep-alives only: it holds an upload slot it never
    /// uses if it gets one.
    Hog,
    /// Honest, but has only the pieces in `mask` (bit `i % 8` for piece `i`) at first and
    /// announces the others with `have` after `later`.
    Partial { mask: u8, later: Duration },
    /// Has nothing; asks for every block, `pipeline` at a time, cancels every `cancel_every`-th
    /// request (0: none; 1 would cancel every request forever), and checks what it gets.
    Leecher { pipeline: u32, cancel_every: u32 },
}

impl Behaviour {
    /// Whether it announces every piece.
    fn seeds(self) -> bool {
        !matches!(
            self,
            Behaviour::BadBitfield(_)
                | Behaviour::BadRequest(_)
                | Behaviour::Idle
                | Behaviour::Hog
                | Behaviour::Partial { .. }
                | Behaviour::Leecher { .. }
        )
    }
}

/// What a scripted peer saw and did, over all its connections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ScriptStats {
    pub connections: u32,
    /// Connections the other side closed.
    pub closed_by_remote: u32,
    pub requests: u32,
    /// Requests for blocks outside the torrent or of pieces not announced (bitrush must never
    /// send one).
    pub invalid_requests: u32,
    /// Right blocks a leecher got.
    pub leeched: u32,
    /// Hash requests answered.
    pub hash_requests: u32,
    /// Wrong blocks a leecher got (bitrush must never upload one).
    pub corrupt_received: u32,
    pub cancels: u32,
    /// Correct blocks sent.
    pub served: u32,
    /// Wrong blocks sent (flipped bytes).
    pub bogus: u32,
    /// The hostile message went out.
    pub violations: u32,
}

#[derive(Debug)]
struct Conn {
    open: bool,
    choking: bool,
    /// Requests waiting to be answered (slow peers), with when they are due.
    pending: VecDeque<(BlockRef, Instant)>,
    /// Blocks served on this connection.
    served: u32,
    /// A choke trick is under way (choke-data) or done.
    trick: Trick,
    toggles: u32,
    /// Pieces this peer says it has on this connection.
    has: Bitfield,
    /// A leecher's view of the other side: its pieces and whether it chokes us.
    remote_has: Bitfield,
    remote_choking: bool,
    /// A leecher's requests not answered yet.
    outstanding: BTreeSet<(u32, u32)>,
    /// Blocks a leecher cancelled: asked again only once nothing else is left to ask.
    cancelled: BTreeSet<(u32, u32)>,
    /// Blocks a leecher still needs, as (piece, begin).
    needed: BTreeSet<(u32, u32)>,
    requests_sent: u32,
}

/// Where a choke-data peer is in its trick.
#[derive(Debug, PartialEq, Eq)]
enum Trick {
    Pending,
    Active,
    Done,
}

/// A scripted peer and its connections.
#[derive(Debug)]
pub(crate) struct ScriptedPeer {
    pub behaviour: Behaviour,
    torrent: Arc<Torrent>,
    conns: BTreeMap<LinkId, Conn>,
    pub stats: ScriptStats,
    /// Blocks a corrupt peer served over all its connections (it spoils every `every`-th).
    served_blocks: u32,
}

/// `block` with bytes flipped (always differs from it), as `scripted_peer.py` does.
fn flipped(block: &[u8]) -> Bytes {
    let mut b = block.to_vec();
    for i in (0..b.len()).step_by(997) {
        b[i] ^= 0x5A;
    }
    if let Some(last) = b.last_mut() {
        *last ^= 0xFF;
    }
    b.into()
}

impl ScriptedPeer {
    pub fn new(behaviour: Behaviour, torrent: Arc<Torrent>) -> ScriptedPeer {
        ScriptedPeer {
            behaviour,
            torrent,
            conns: BTreeMap::new(),
            stats: ScriptStats::default(),
            served_blocks: 0,
        }
    }

    /// Whether a leecher got every block over `link`.
    pub fn leeched_all(&self, link: LinkId) -> bool {
        self.conns.get(&link).is_some_and(|c| c.needed.is_empty())
    }

    /// Connections still open.
    pub fn open_connections(&self) -> usize {
        self.conns.values().filter(|c| c.open).count()
    }

    pub fn on_connected(&mut self, link: LinkId, out: &mut Vec<Output>) {
        self.stats.connections += 1;
        let t = self.torrent.clone();
        let n = t.piece_count();
        let mut conn = Conn {
            open: true,
            choking: true,
            has: if self.behaviour.seeds() {
                Bitfield::full(n)
            } else {
                Bitfield::new(n)
            },
            remote_has: Bitfield::new(n),
            remote_choking: true,
            pending: VecDeque::new(),
            served: 0,
            trick: Trick::Pending,
            toggles: 0,
            outstanding: BTreeSet::new(),
            cancelled: BTreeSet::new(),
            needed: BTreeSet::new(),
            requests_sent: 0,
        };
        let send = |out: &mut Vec<Output>, m| out.push(Output::Send(link, m));
        let full = Bytes::copy_from_slice(Bitfield::full(n).as_bytes());
        if self.behaviour != Behaviour::Staller {
            out.push(Output::Timer(link, KEEPALIVE, Tick::KeepAlive));
        }
        if self.behaviour.seeds() {
            send(out, Message::Bitfield(full.clone()));
        }
        match self.behaviour {
            Behaviour::BadBitfield(fault) => {
                let bits = match fault {
                    BitfieldFault::TooLong => [&full[..], &[0xFF]].concat(),
                    BitfieldFault::TooShort => full[..full.len() - 1].to_vec(),
                    BitfieldFault::SpareBits => vec![0xFF; full.len()],
                };
                send(out, Message::Bitfield(bits.into()));
                self.stats.violations += 1;
            }
            Behaviour::BadRequest(fault) => {
                let block = |index, begin, length| BlockRef {
                    index,
                    begin,
                    length,
                };
                let bad = match fault {
                    RequestFault::TooLong => block(0, 0, MAX_REQUEST_LEN + 1),
                    RequestFault::Empty => block(0, 0, 0),
                    RequestFault::PastPieceEnd => block(0, t.piece_len(0) - 1, 2),
                    RequestFault::NoSuchPiece => block(n, 0, 16 * 1024),
                    RequestFault::NotHad => block(0, 0, t.piece_len(0).min(16 * 1024)),
                };
                send(out, Message::Interested);
                send(out, Message::Request(bad));
                self.stats.violations += 1;
            }
            Behaviour::Unrequested => {
                for index in 0..n {
                    let len = t.piece_len(index);
                    for begin in (0..len).step_by(16 * 1024) {
                        let block = BlockRef {
                            index,
                            begin,
                            length: (len - begin).min(16 * 1024),
                        };
                        self.send_block(out, link, block, true);
                    }
                }
                self.stats.violations += 1;
                conn.choking = false;
                send(out, Message::Unchoke);
            }
            Behaviour::HaveOutOfRange => {
                send(out, Message::Unchoke);
                send(out, Message::Have(n));
                conn.choking = false;
                self.stats.violations += 1;
            }
            Behaviour::ChokeStorm { period, .. } => {
                send(out, Message::Unchoke);
                conn.choking = false;
                out.push(Output::Timer(link, period, Tick::Script));
            }
            Behaviour::NeverUnchoke | Behaviour::Idle => {}
            Behaviour::Hog => send(out, Message::Interested),
            Behaviour::Partial { mask, later } => {
                for i in (0..n).filter(|i| mask & (1 << (i % 8)) != 0) {
                    conn.has.set(i);
                }
                send(out, Message::Bitfield(conn.has.as_bytes().to_vec().into()));
                send(out, Message::Unchoke);
                conn.choking = false;
                out.push(Output::Timer(link, later, Tick::Script));
            }
            Behaviour::Leecher { .. } => {
                for index in 0..n {
                    for begin in (0..t.piece_len(index)).step_by(16 * 1024) {
                        conn.needed.insert((index, begin));
                    }
                }
                send(out, Message::Interested);
            }
            Behaviour::Honest
            | Behaviour::ChokeAfter { .. }
            | Behaviour::Corrupt { .. }
            | Behaviour::Staller
            | Behaviour::Slow { .. }
            | Behaviour::ChokeData { .. }
            | Behaviour::DisconnectMidPiece { .. }
            | Behaviour::CorruptThenLeave { .. } => {
                send(out, Message::Unchoke);
                conn.choking = false;
            }
        }
        self.conns.insert(link, conn);
    }

    pub fn on_closed(&mut self, link: LinkId) {
        if let Some(c) = self.conns.get_mut(&link) {
            c.open = false;
            self.stats.closed_by_remote += 1;
        }
    }

    pub fn on_message(&mut self, now: Instant, link: LinkId, msg: Message, out: &mut Vec<Output>) {
        if matches!(self.behaviour, Behaviour::Leecher { .. }) {
            self.leech(link, msg, out);
            return;
        }
        match msg {
            Message::Request(block) => self.on_request(now, link, block, out),
            // A v2 torrent's peers answer hash requests truly (all have every piece), but a
            // staller, which answers nothing.
            Message::HashRequest(request) if self.behaviour != Behaviour::Staller => {
                self.stats.hash_requests += 1;
                out.push(Output::Send(link, self.torrent.answer_hashes(&request)));
            }
            Message::Cancel(block) => {
                self.stats.cancels += 1;
                if let Some(c) = self.conns.get_mut(&link) {
                    c.pending.retain(|(b, _)| *b != block);
                }
            }
            _ => {}
        }
    }

    fn on_request(&mut self, now: Instant, link: LinkId, block: BlockRef, out: &mut Vec<Output>) {
        self.stats.requests += 1;
        if self.torrent.range(block).is_none() {
            self.stats.invalid_requests += 1;
            return;
        }
        let Some(conn) = self.conns.get_mut(&link) else {
            return;
        };
        if !conn.has.get(block.index) {
            self.stats.invalid_requests += 1;
            return;
        }
        match self.behaviour {
            Behaviour::Staller => {}
            Behaviour::Slow { delay } => {
                conn.pending.push_back((block, now + delay));
                out.push(Output::Timer(link, delay, Tick::Script));
            }
            Behaviour::ChokeData { pause } if conn.trick != Trick::Done => {
                if conn.trick == Trick::Pending {
                    conn.trick = Trick::Active;
                    conn.choking = true;
                    out.push(Output::Send(link, Message::Choke));
                    out.push(Output::Timer(link, pause, Tick::Script));
                    self.stats.violations += 1;
                }
                self.send_block(out, link, block, true);
            }
            Behaviour::DisconnectMidPiece { blocks } | Behaviour::CorruptThenLeave { blocks } => {
                let corrupt = matches!(self.behaviour, Behaviour::CorruptThenLeave { .. });
                if conn.served < blocks {
                    conn.served += 1;
                    self.send_block(out, link, block, corrupt);
                }
                if self.conns.get(&link).is_some_and(|c| c.served >= blocks) {
                    self.close(out, link);
                }
            }
            Behaviour::Corrupt { every } => {
                conn.served += 1;
                let bad = self.served_blocks.is_multiple_of(every.max(1));
                self.served_blocks += 1;
                self.send_block(out, link, block, bad);
            }
            _ if conn.choking => {}
            Behaviour::ChokeAfter { every, pause } => {
                conn.served += 1;
                let choke = conn.served.is_multiple_of(every.max(1));
                if choke {
                    conn.choking = true;
                }
                self.send_block(out, link, block, false);
                if choke {
                    out.push(Output::Send(link, Message::Choke));
                    out.push(Output::Timer(link, pause, Tick::Script));
                }
            }
            _ => {
                conn.served += 1;
                self.send_block(out, link, block, false);
            }
        }
    }

    pub fn on_timer(&mut self, now: Instant, link: LinkId, tick: Tick, out: &mut Vec<Output>) {
        let Some(conn) = self.conns.get_mut(&link) else {
            return;
        };
        if !conn.open {
            return;
        }
        if tick == Tick::KeepAlive {
            out.push(Output::Send(link, Message::KeepAlive));
            out.push(Output::Timer(link, KEEPALIVE, Tick::KeepAlive));
            // A leecher whose cancels were all honoured has nothing to wake it otherwise.
            self.leech(link, Message::KeepAlive, out);
            return;
        }
        match self.behaviour {
            Behaviour::Slow { .. } => {
                let mut due = Vec::new();
                while let Some(&(b, at)) = conn.pending.front() {
                    if at > now {
                        break;
                    }
                    conn.pending.pop_front();
                    due.push(b);
                }
                for b in due {
                    self.send_block(out, link, b, false);
                }
            }
            Behaviour::ChokeAfter { .. } => {
                conn.choking = false;
                out.push(Output::Send(link, Message::Unchoke));
            }
            Behaviour::ChokeData { .. } => {
                conn.trick = Trick::Done;
                conn.choking = false;
                out.push(Output::Send(link, Message::Unchoke));
            }
            Behaviour::Partial { .. } => {
                let n = self.torrent.piece_count();
                for i in 0..n {
                    if conn.has.set(i) {
                        out.push(Output::Send(link, Message::Have(i)));
                    }
                }
            }
            Behaviour::ChokeStorm { period, toggles } => {
                conn.choking = !conn.choking;
                conn.toggles += 1;
                let m = if conn.choking {
                    Message::Choke
                } else {
                    Message::Unchoke
                };
                out.push(Output::Send(link, m));
                // The storm ends unchoked.
                if conn.toggles < toggles || conn.choking {
                    out.push(Output::Timer(link, period, Tick::Script));
                }
            }
            _ => {}
        }
    }

    /// A leecher's side: follows what the other end has and whether it chokes, asks for the
    /// blocks it needs and checks each one it gets.
    fn leech(&mut self, link: LinkId, msg: Message, out: &mut Vec<Output>) {
        let Behaviour::Leecher {
            pipeline,
            cancel_every,
        } = self.behaviour
        else {
            return;
        };
        let t = self.torrent.clone();
        let Some(conn) = self.conns.get_mut(&link) else {
            return;
        };
        match msg {
            Message::Bitfield(bits) => {
                if let Ok(has) = Bitfield::from_bytes(&bits, t.piece_count()) {
                    conn.remote_has = has;
                }
            }
            Message::Have(i) => {
                conn.remote_has.set(i);
            }
            Message::Choke => {
                // Without the fast extension a choke voids every request.
                conn.remote_choking = true;
                conn.outstanding.clear();
            }
            Message::Unchoke => conn.remote_choking = false,
            Message::Piece { index, begin, data } => {
                let block = BlockRef {
                    index,
                    begin,
                    length: data.len() as u32,
                };
                if t.range(block).is_some_and(|r| t.payload[r] == data[..]) {
                    self.stats.leeched += 1;
                    if conn.needed.remove(&(index, begin)) && conn.needed.is_empty() {
                        out.push(Output::Send(link, Message::NotInterested));
                    }
                } else {
                    self.stats.corrupt_received += 1;
                }
                conn.outstanding.remove(&(index, begin));
                conn.cancelled.remove(&(index, begin));
            }
            _ => {}
        }
        if conn.remote_choking || !conn.open {
            return;
        }
        let askable = |c: &Conn, block: &(u32, u32)| {
            c.remote_has.get(block.0) && !c.outstanding.contains(block)
        };
        // Fills the pipeline. A cancelled request leaves its room free at once (a real client
        // does not wait for the next message to ask again: nothing may come, as the other end
        // rightly sends nothing for a cancelled block). Cancelled blocks are asked again once
        // nothing else is left, at most once a call (so the loop ends whatever `cancel_every`).
        let mut retried = false;
        while (conn.outstanding.len() as u32) < pipeline {
            let next = conn
                .needed
                .iter()
                .find(|b| askable(conn, b) && !conn.cancelled.contains(b))
                .copied();
            let Some((index, begin)) = next else {
                if retried || !conn.outstanding.is_empty() || conn.cancelled.is_empty() {
                    break;
                }
                retried = true;
                conn.cancelled.clear();
                continue;
            };
            let block = BlockRef {
                index,
                begin,
                length: (t.piece_len(index) - begin).min(16 * 1024),
            };
            out.push(Output::Send(link, Message::Request(block)));
            conn.requests_sent += 1;
            if cancel_every > 0 && conn.requests_sent.is_multiple_of(cancel_every) {
                out.push(Output::Send(link, Message::Cancel(block)));
                conn.cancelled.insert((index, begin));
            } else {
                conn.outstanding.insert((index, begin));
            }
        }
    }

    fn close(&mut self, out: &mut Vec<Output>, link: LinkId) {
        if let Some(c) = self.conns.get_mut(&link) {
            c.open = false;
        }
        out.push(Output::Close(link));
    }

    /// Sends `block` from the payload, with flipped bytes if `bad`.
    fn send_block(&mut self, out: &mut Vec<Output>, link: LinkId, block: BlockRef, bad: bool) {
        let Some(r) = self.torrent.range(block) else {
            return;
        };
        let data = &self.torrent.payload[r];
        let data = if bad {
            self.stats.bogus += 1;
            flipped(data)
        } else {
            self.stats.served += 1;
            self.torrent.payload.slice_ref(data)
        };
        out.push(Output::Send(
            link,
            Message::Piece {
                index: block.index,
                begin: block.begin,
                data,
            },
        ));
    }
}
