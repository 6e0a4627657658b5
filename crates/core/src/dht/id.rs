//! Node ids and the XOR metric of Kademlia (BEP 5).
//!
//! Invariants: an id is exactly 160 bits; distances compare as unsigned 160-bit big-endian
//! numbers, so sorting by [`Distance`] is sorting by closeness.

use std::fmt;

use rand::RngCore;

use crate::types::{to_hex, InfoHash};

/// Length of a node id (and of an info hash) in bytes.
pub const ID_LEN: usize = 20;
/// Bits in an id: the most buckets a routing table can have.
pub const ID_BITS: usize = ID_LEN * 8;

/// A DHT node id, in the same 160-bit space as info hashes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; ID_LEN]);

/// The XOR distance between two ids.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Distance(pub [u8; ID_LEN]);

impl NodeId {
    /// A uniformly random id.
    pub fn random(rng: &mut impl RngCore) -> NodeId {
        let mut id = [0u8; ID_LEN];
        rng.fill_bytes(&mut id);
        NodeId(id)
    }

    /// The id from exactly 20 bytes; `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<NodeId> {
        bytes.try_into().ok().map(NodeId)
    }

    /// `self XOR other`.
    pub fn distance(&self, other: &NodeId) -> Distance {
        let mut d = [0u8; ID_LEN];
        for (slot, (a, b)) in d.iter_mut().zip(self.0.iter().zip(other.0.iter())) {
            *slot = a ^ b;
        }
        Distance(d)
    }

    /// How many leading bits `self` and `other` share (160 when equal).
    pub fn common_prefix_len(&self, other: &NodeId) -> usize {
        self.distance(other).leading_zeros()
    }

    /// A random id sharing exactly `prefix_len` leading bits with `self` (the next bit
    /// differs), i.e. an id in bucket `prefix_len` of a table centred on `self`. With
    /// `prefix_len >= 160`, `self` itself.
    pub fn random_in_bucket(&self, prefix_len: usize, rng: &mut impl RngCore) -> NodeId {
        if prefix_len >= ID_BITS {
            return *self;
        }
        let mut id = NodeId::random(rng).0;
        for (byte, slot) in id.iter_mut().enumerate() {
            let first = byte * 8;
            // Bits before `prefix_len` copy ours, bit `prefix_len` is flipped, the rest stay.
            for b in 0..8 {
                let pos = first + b;
                let mask = 0x80u8 >> b;
                if pos < prefix_len {
                    *slot = (*slot & !mask) | (self.0[byte] & mask);
                } else if pos == prefix_len {
                    *slot = (*slot & !mask) | (!self.0[byte] & mask);
                }
            }
        }
        NodeId(id)
    }
}

impl Distance {
    /// Leading zero bits (160 for a zero distance).
    pub fn leading_zeros(&self) -> usize {
        let mut n = 0;
        for &b in &self.0 {
            if b == 0 {
                n += 8;
            } else {
                return n + b.leading_zeros() as usize;
            }
        }
        n
    }
}

impl From<InfoHash> for NodeId {
    fn from(h: InfoHash) -> NodeId {
        NodeId(h.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn id(bytes: [u8; 20]) -> NodeId {
        NodeId(bytes)
    }

    #[test]
    fn distance_and_prefix_known_values() {
        let zero = id([0; 20]);
        let mut b = [0u8; 20];
        b[0] = 0x10;
        assert_eq!(zero.common_prefix_len(&id(b)), 3);
        assert_eq!(zero.common_prefix_len(&zero), 160);
        b = [0; 20];
        b[19] = 1;
        assert_eq!(zero.common_prefix_len(&id(b)), 159);
        assert_eq!(zero.distance(&id(b)).0[19], 1);
        assert_eq!(NodeId::from_slice(&[1; 19]), None);
        assert_eq!(NodeId::from_slice(&[1; 21]), None);
        assert_eq!(NodeId::from_slice(&[1; 20]), Some(id([1; 20])));
    }

    proptest! {
        #[test]
        fn xor_metric_properties(a in any::<[u8; 20]>(), b in any::<[u8; 20]>(), c in any::<[u8; 20]>()) {
            let (a, b, c) = (id(a), id(b), id(c));
            prop_assert_eq!(a.distance(&b), b.distance(&a));
            prop_assert_eq!(a.distance(&a), Distance([0; 20]));
            // Unidirectional: for a fixed point, distinct ids are at distinct distances.
            prop_assert_eq!(a.distance(&b) == a.distance(&c), b == c);
        }

        #[test]
        fn random_in_bucket_lands_in_that_bucket(own in any::<[u8; 20]>(), prefix in 0usize..=160, seed in any::<u64>()) {
            let own = id(own);
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let target = own.random_in_bucket(prefix, &mut rng);
            prop_assert_eq!(own.common_prefix_len(&target), prefix);
        }
    }
}
