//! The piece picker: rarest first, or in index order (sequential downloads and streaming).
//!
//! Pieces are kept in one array ordered by availability (how many connected peers have them),
//! split into buckets by boundaries, as libtorrent does: `[taken | avail 0 | avail 1 | ...]`.
//! A piece moves one bucket with one swap, so `have` messages, new peers and picks cost
//! O(availability) and a pick from a seeder is O(1). The "taken" bucket holds pieces we have or
//! are already downloading; everything after it is pickable. Within a bucket the order is a
//! random shuffle fixed at start, which makes the first pieces random and spreads peers apart.
//!
//! Invariants: `order` is a permutation of `0..piece_count`; `pos[order[i]] == i`; bucket `b`
//! spans `starts[b]..starts[b + 1]` (the last bucket ends at `order.len()`); a piece sits in
//! bucket 0 iff it is taken, else in bucket `availability + 1`.
//!
//! Two orders override rarest first: [`PiecePicker::set_sequential`] picks the lowest pickable
//! index, and a priority window ([`PiecePicker::set_window`], for streaming) picks the lowest
//! pickable index inside the window and nothing past it, so a reader that falls behind stops
//! new requests instead of growing buffers. `first_untaken` is at most the lowest untaken
//! piece, so sequential picks scan only from there.

use rand::seq::SliceRandom;
use rand::Rng;

use super::bitfield::Bitfield;

#[derive(Debug, Clone)]
pub struct PiecePicker {
    order: Vec<u32>,
    pos: Vec<u32>,
    avail: Vec<u32>,
    taken: Vec<bool>,
    /// `starts[b]` is the first index of bucket `b`; bucket 0 is "taken".
    starts: Vec<u32>,
    /// Pick in index order rather than rarest first.
    sequential: bool,
    /// Only pieces in this range are picked, lowest first.
    window: Option<std::ops::Range<u32>>,
    /// No piece below this index is untaken.
    first_untaken: u32,
}

impl PiecePicker {
    /// A picker over `piece_count` pieces, all pickable, in a random order drawn from `rng`.
    pub fn new(piece_count: u32, rng: &mut impl Rng) -> PiecePicker {
        let mut order: Vec<u32> = (0..piece_count).collect();
        order.shuffle(rng);
        let mut pos = vec![0u32; piece_count as usize];
        for (i, &p) in order.iter().enumerate() {
            pos[p as usize] = i as u32;
        }
        PiecePicker {
            order,
            pos,
            avail: vec![0; piece_count as usize],
            taken: vec![false; piece_count as usize],
            // bucket 0 (taken) is empty, bucket 1 (availability 0) holds everything.
            starts: vec![0, 0],
            sequential: false,
            window: None,
            first_untaken: 0,
        }
    }

    /// Picks in index order (lowest first) when `on`, rarest first otherwise.
    pub fn set_sequential(&mut self, on: bool) {
        self.sequential = on;
    }

    /// Restricts picks to `window` (lowest index first; nothing outside it is picked), or lifts
    /// the restriction with `None`.
    pub fn set_window(&mut self, window: Option<std::ops::Range<u32>>) {
        self.window = window;
    }

    fn bucket_of(&self, piece: u32) -> usize {
        if self.taken[piece as usize] {
            0
        } else {
            self.avail[piece as usize] as usize + 1
        }
    }

    fn bucket_end(&self, b: usize) -> u32 {
        self.starts
            .get(b + 1)
            .copied()
            .unwrap_or(self.order.len() as u32)
    }

    fn swap(&mut self, i: u32, j: u32) {
        if i != j {
            self.order.swap(i as usize, j as usize);
            self.pos[self.order[i as usize] as usize] = i;
            self.pos[self.order[j as usize] as usize] = j;
        }
    }

    /// Moves `piece` from bucket `b` to bucket `b + 1`.
    fn move_up(&mut self, piece: u32, b: usize) {
        if b + 1 == self.starts.len() {
            self.starts.push(self.order.len() as u32);
        }
        let last = self.bucket_end(b) - 1;
        self.swap(self.pos[piece as usize], last);
        self.starts[b + 1] -= 1;
    }

    /// Moves `piece` from bucket `b` (b >= 1) to bucket `b - 1`.
    fn move_down(&mut self, piece: u32, b: usize) {
        let first = self.starts[b];
        self.swap(self.pos[piece as usize], first);
        self.starts[b] += 1;
    }

    fn move_to_bucket(&mut self, piece: u32, target: usize) {
        let mut b = self.bucket_of_position(piece);
        while b < target {
            self.move_up(piece, b);
            b += 1;
        }
        while b > target {
            self.move_down(piece, b);
            b -= 1;
        }
    }

    /// The bucket the piece's current position lies in (before bookkeeping changes).
    fn bucket_of_position(&self, piece: u32) -> usize {
        let p = self.pos[piece as usize];
        // starts is small (max availability + 2): a linear scan from the top is fine.
        let mut b = self.starts.len() - 1;
        while self.starts[b] > p {
            b -= 1;
        }
        // Empty buckets share a start; the piece belongs to the highest bucket starting at or
        // before it whose end is after it.
        while self.bucket_end(b) <= p {
            b += 1;
        }
        b
    }

    /// One more connected peer has `piece`.
    pub fn inc(&mut self, piece: u32) {
        if let Some(a) = self.avail.get_mut(piece as usize) {
            *a += 1;
            let target = self.bucket_of(piece);
            self.move_to_bucket(piece, target);
        }
    }

    /// One fewer connected peer has `piece`.
    pub fn dec(&mut self, piece: u32) {
        if let Some(a) = self.avail.get_mut(piece as usize) {
            if *a > 0 {
                *a -= 1;
                let target = self.bucket_of(piece);
                self.move_to_bucket(piece, target);
            }
        }
    }

    /// A peer with this bitfield connected.
    pub fn add_peer(&mut self, has: &Bitfield) {
        for i in has.iter_set() {
            self.inc(i);
        }
    }

    /// A peer with this bitfield disconnected.
    pub fn remove_peer(&mut self, has: &Bitfield) {
        for i in has.iter_set() {
            self.dec(i);
        }
    }

    /// Whether the order allows starting `piece` now: inside the window, if there is one.
    /// Pieces a peer suggests or allows while choking us are started only if so.
    pub fn admits(&self, piece: u32) -> bool {
        self.window.as_ref().is_none_or(|w| w.contains(&piece))
    }

    /// Marks `piece` as taken (we have it or are downloading it): it is no longer picked.
    pub fn take(&mut self, piece: u32) {
        if (piece as usize) < self.taken.len() && !self.taken[piece as usize] {
            self.taken[piece as usize] = true;
            self.move_to_bucket(piece, 0);
            while self
                .taken
                .get(self.first_untaken as usize)
                .is_some_and(|&t| t)
            {
                self.first_untaken += 1;
            }
        }
    }

    /// Makes a taken piece pickable again (its download failed or was abandoned).
    pub fn release(&mut self, piece: u32) {
        if (piece as usize) < self.taken.len() && self.taken[piece as usize] {
            self.taken[piece as usize] = false;
            self.first_untaken = self.first_untaken.min(piece);
            let target = self.bucket_of(piece);
            self.move_to_bucket(piece, target);
        }
    }

    pub fn is_taken(&self, piece: u32) -> bool {
        self.taken.get(piece as usize).copied().unwrap_or(true)
    }

    /// The next piece to start among those the peer has, without taking it: the lowest one in
    /// the window if there is a window, else the lowest one if sequential, else the rarest.
    pub fn pick(&self, peer_has: &Bitfield) -> Option<u32> {
        let in_order = |range: std::ops::Range<u32>| {
            let start = range.start.max(self.first_untaken);
            let end = range.end.min(self.order.len() as u32);
            (start..end).find(|&p| !self.taken[p as usize] && peer_has.get(p))
        };
        if let Some(window) = &self.window {
            return in_order(window.clone());
        }
        if self.sequential {
            return in_order(0..self.order.len() as u32);
        }
        let first = self.starts.get(1).copied().unwrap_or(0) as usize;
        self.order[first..]
            .iter()
            .copied()
            .find(|&p| peer_has.get(p))
    }

    /// Whether any pickable piece is left (inside the window, if there is one: a stream's
    /// endgame is its window's, so the piece the reader waits for gets duplicate requests
    /// rather than waiting on one slow peer).
    pub fn has_pickable(&self) -> bool {
        if let Some(w) = &self.window {
            let end = w.end.min(self.order.len() as u32);
            return (w.start.max(self.first_untaken)..end).any(|p| !self.taken[p as usize]);
        }
        (self.starts.get(1).copied().unwrap_or(0) as usize) < self.order.len()
    }

    /// Number of connected peers known to have `piece`.
    pub fn availability(&self, piece: u32) -> u32 {
        self.avail.get(piece as usize).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn check_invariants(p: &PiecePicker) {
        let n = p.order.len();
        let mut seen = vec![false; n];
        for (i, &piece) in p.order.iter().enumerate() {
            assert!(!seen[piece as usize]);
            seen[piece as usize] = true;
            assert_eq!(p.pos[piece as usize] as usize, i);
            let b = p.bucket_of(piece);
            assert!(
                p.starts[b] as usize <= i,
                "piece {piece} before its bucket {b}"
            );
            assert!(
                i < p.bucket_end(b) as usize,
                "piece {piece} past its bucket {b}"
            );
        }
        for w in p.starts.windows(2) {
            assert!(w[0] <= w[1]);
        }
        assert!((0..p.first_untaken).all(|i| p.taken[i as usize]));
    }

    fn bf(len: u32, set: &[u32]) -> Bitfield {
        let mut b = Bitfield::new(len);
        for &i in set {
            b.set(i);
        }
        b
    }

    #[test]
    fn picks_rarest_piece_the_peer_has() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut p = PiecePicker::new(5, &mut rng);
        p.add_peer(&Bitfield::full(5));
        p.add_peer(&bf(5, &[0, 1, 2, 3]));
        p.add_peer(&bf(5, &[1, 2, 3]));
        // availability: 0→2, 1→3, 2→3, 3→3, 4→1
        assert_eq!(p.pick(&Bitfield::full(5)), Some(4));
        assert_eq!(p.pick(&bf(5, &[0, 1])), Some(0));
        p.take(4);
        p.take(0);
        let next = p.pick(&Bitfield::full(5)).unwrap();
        assert!([1, 2, 3].contains(&next));
        p.release(0);
        assert_eq!(p.pick(&Bitfield::full(5)), Some(0));
        assert_eq!(p.pick(&bf(5, &[4])), None);
        check_invariants(&p);
    }

    #[test]
    fn everything_taken_leaves_nothing() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut p = PiecePicker::new(3, &mut rng);
        for i in 0..3 {
            p.take(i);
        }
        assert!(!p.has_pickable());
        assert_eq!(p.pick(&Bitfield::full(3)), None);
    }

    #[test]
    fn sequential_picks_the_lowest_piece_the_peer_has() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut p = PiecePicker::new(8, &mut rng);
        p.set_sequential(true);
        p.add_peer(&Bitfield::full(8));
        p.add_peer(&bf(8, &[5]));
        assert_eq!(p.pick(&Bitfield::full(8)), Some(0));
        p.take(0);
        p.take(1);
        assert_eq!(p.pick(&Bitfield::full(8)), Some(2));
        assert_eq!(p.pick(&bf(8, &[1, 6, 7])), Some(6));
        p.release(0);
        assert_eq!(p.pick(&Bitfield::full(8)), Some(0));
        p.set_sequential(false);
        // Rarest first again: 5 is the only piece two peers have; any other is rarer.
        assert_ne!(p.pick(&Bitfield::full(8)), Some(5));
    }

    #[test]
    fn a_window_picks_in_order_inside_it_and_nothing_past_it() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut p = PiecePicker::new(10, &mut rng);
        p.add_peer(&Bitfield::full(10));
        p.set_window(Some(2..5));
        assert_eq!(p.pick(&Bitfield::full(10)), Some(2));
        p.take(2);
        p.take(4);
        assert_eq!(p.pick(&Bitfield::full(10)), Some(3));
        p.take(3);
        assert_eq!(
            p.pick(&Bitfield::full(10)),
            None,
            "back-pressure: nothing past it"
        );
        assert!(!p.has_pickable(), "nothing left in the window");
        p.set_window(Some(5..20));
        assert!(p.has_pickable());
        assert_eq!(p.pick(&bf(10, &[9])), Some(9));
        p.set_window(None);
        assert!(p.pick(&Bitfield::full(10)).is_some());
    }

    proptest! {
        #[test]
        fn ordered_picks_are_the_lowest_untaken_piece_the_peer_has(
            n in 1u32..60,
            taken in proptest::collection::vec(any::<bool>(), 60),
            released in proptest::collection::vec(0u32..60, 0..10),
            has in proptest::collection::vec(any::<bool>(), 60),
            window in proptest::option::of((0u32..70, 0u32..70)),
        ) {
            let mut rng = StdRng::seed_from_u64(5);
            let mut p = PiecePicker::new(n, &mut rng);
            p.set_sequential(true);
            for i in 0..n {
                if taken[i as usize] {
                    p.take(i);
                }
            }
            for r in released {
                p.release(r % n);
            }
            let has_bf = bf(n, &(0..n).filter(|&i| has[i as usize]).collect::<Vec<_>>());
            let range = window.map(|(a, b)| a.min(b)..a.max(b));
            p.set_window(range.clone());
            let range = range.unwrap_or(0..n);
            let expected = (range.start..range.end.min(n)).find(|&i| !p.is_taken(i) && has_bf.get(i));
            prop_assert_eq!(p.pick(&has_bf), expected);
            let any_left = (range.start..range.end.min(n)).any(|i| !p.is_taken(i));
            prop_assert_eq!(p.has_pickable(), any_left);
            check_invariants(&p);
        }

        #[test]
        fn random_operations_keep_invariants_and_pick_a_rarest(
            n in 1u32..40,
            ops in proptest::collection::vec((0u8..4, 0u32..40), 0..200),
            seed in any::<u64>(),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut p = PiecePicker::new(n, &mut rng);
            for (op, piece) in ops {
                let piece = piece % n;
                match op {
                    0 => p.inc(piece),
                    1 => p.dec(piece),
                    2 => p.take(piece),
                    _ => p.release(piece),
                }
                check_invariants(&p);
            }
            let all = Bitfield::full(n);
            match p.pick(&all) {
                Some(picked) => {
                    prop_assert!(!p.is_taken(picked));
                    let min = (0..n).filter(|&i| !p.is_taken(i)).map(|i| p.availability(i)).min().unwrap();
                    prop_assert_eq!(p.availability(picked), min);
                }
                None => prop_assert!((0..n).all(|i| p.is_taken(i))),
            }
        }
    }
}
