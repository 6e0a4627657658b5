//! Rarest-first piece picker.
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
        }
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

    /// Marks `piece` as taken (we have it or are downloading it): it is no longer picked.
    pub fn take(&mut self, piece: u32) {
        if (piece as usize) < self.taken.len() && !self.taken[piece as usize] {
            self.taken[piece as usize] = true;
            self.move_to_bucket(piece, 0);
        }
    }

    /// Makes a taken piece pickable again (its download failed or was abandoned).
    pub fn release(&mut self, piece: u32) {
        if (piece as usize) < self.taken.len() && self.taken[piece as usize] {
            self.taken[piece as usize] = false;
            let target = self.bucket_of(piece);
            self.move_to_bucket(piece, target);
        }
    }

    pub fn is_taken(&self, piece: u32) -> bool {
        self.taken.get(piece as usize).copied().unwrap_or(true)
    }

    /// The rarest pickable piece the peer has, without taking it.
    pub fn pick(&self, peer_has: &Bitfield) -> Option<u32> {
        let first = self.starts.get(1).copied().unwrap_or(0) as usize;
        self.order[first..]
            .iter()
            .copied()
            .find(|&p| peer_has.get(p))
    }

    /// Whether any pickable piece is left.
    pub fn has_pickable(&self) -> bool {
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

    proptest! {
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
