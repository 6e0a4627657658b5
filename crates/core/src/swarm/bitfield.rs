//! A piece bitfield: bit `i` set means piece `i` is present. Bits are numbered from the high bit
//! of the first byte, as on the wire (BEP 3).
//!
//! Invariant: the spare bits past `len` in the last byte are always zero.

/// Why a peer's bitfield was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BitfieldError {
    #[error("bitfield has {got} bytes, expected {expected}")]
    WrongLength { got: usize, expected: usize },
    #[error("bitfield has spare bits set past piece {0}")]
    SpareBits(u32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: u32,
    ones: u32,
}

impl Bitfield {
    /// An empty bitfield for `len` pieces.
    pub fn new(len: u32) -> Bitfield {
        Bitfield {
            bytes: vec![0; (len as usize).div_ceil(8)],
            len,
            ones: 0,
        }
    }

    /// A bitfield for `len` pieces with every bit set.
    pub fn full(len: u32) -> Bitfield {
        let mut b = Bitfield::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// Checks a wire bitfield: exact byte length and no spare bits set.
    pub fn from_bytes(bytes: &[u8], len: u32) -> Result<Bitfield, BitfieldError> {
        let expected = (len as usize).div_ceil(8);
        if bytes.len() != expected {
            return Err(BitfieldError::WrongLength {
                got: bytes.len(),
                expected,
            });
        }
        let spare = (expected * 8) as u64 - u64::from(len);
        if spare > 0 {
            if let Some(last) = bytes.last() {
                let mask = (1u8 << spare) - 1;
                if last & mask != 0 {
                    return Err(BitfieldError::SpareBits(len));
                }
            }
        }
        let ones = bytes.iter().map(|b| b.count_ones()).sum();
        Ok(Bitfield {
            bytes: bytes.to_vec(),
            len,
            ones,
        })
    }

    /// Number of pieces this bitfield covers.
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether piece `i` is set; out-of-range indices are not set.
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bytes[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Sets piece `i`; returns false (and does nothing) if `i` is out of range.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let byte = &mut self.bytes[(i / 8) as usize];
        let mask = 0x80 >> (i % 8);
        if *byte & mask == 0 {
            *byte |= mask;
            self.ones += 1;
        }
        true
    }

    /// Clears piece `i` if in range.
    pub fn clear(&mut self, i: u32) {
        if i < self.len {
            let byte = &mut self.bytes[(i / 8) as usize];
            let mask = 0x80 >> (i % 8);
            if *byte & mask != 0 {
                *byte &= !mask;
                self.ones -= 1;
            }
        }
    }

    /// Number of pieces set.
    pub fn count(&self) -> u32 {
        self.ones
    }

    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// The wire form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Indices of set pieces, ascending.
    pub fn iter_set(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wire_bit_order_is_high_bit_first() {
        let b = Bitfield::from_bytes(&[0b1000_0001, 0b0100_0000], 10).unwrap();
        assert_eq!(b.iter_set().collect::<Vec<_>>(), vec![0, 7, 9]);
        assert_eq!(b.count(), 3);
    }

    #[test]
    fn rejects_wrong_length_and_spare_bits() {
        assert_eq!(
            Bitfield::from_bytes(&[0, 0], 17),
            Err(BitfieldError::WrongLength {
                got: 2,
                expected: 3
            })
        );
        assert_eq!(
            Bitfield::from_bytes(&[0, 0b0010_0000], 10),
            Err(BitfieldError::SpareBits(10))
        );
        assert!(Bitfield::from_bytes(&[0xff, 0b1100_0000], 10)
            .unwrap()
            .is_full());
    }

    proptest! {
        #[test]
        fn set_then_wire_round_trip(len in 1u32..300, idx in proptest::collection::vec(0u32..300, 0..50)) {
            let mut b = Bitfield::new(len);
            let mut expected = std::collections::BTreeSet::new();
            for i in idx {
                let inside = b.set(i);
                prop_assert_eq!(inside, i < len);
                if i < len { expected.insert(i); }
            }
            let back = Bitfield::from_bytes(b.as_bytes(), len).unwrap();
            prop_assert_eq!(back.iter_set().collect::<Vec<_>>(), expected.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(back.count() as usize, expected.len());
        }
    }
}
