//! The Diffie-Hellman exchange of MSE: the fixed 768-bit prime P, generator 2, 160-bit private
//! keys, public keys and the shared secret S as 96 big-endian bytes (leading zeros kept).
//!
//! Invariants: exponentiation is constant-time in the private key (`crypto-bigint`'s fixed-window
//! Montgomery exponentiation over a fixed 160 bits); a peer's public key is accepted only in `2..=P-2`, so
//! the degenerate secrets 0, 1 and ±1 cannot be forced on us; nothing allocates.

use crypto_bigint::modular::ConstMontyForm;
use crypto_bigint::{const_monty_params, U192, U768};
use rand::RngCore;

use super::{MseError, DH_KEY_LEN};

const_monty_params!(
    MsePrime,
    U768,
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563",
    "The MSE prime P (768 bits)"
);

type Residue = ConstMontyForm<MsePrime, { U768::LIMBS }>;

/// Bits of a private key (the specification asks for at least 128).
pub(crate) const PRIVATE_KEY_BITS: u32 = 160;

/// One side's key pair. The private key never leaves this type.
pub(crate) struct KeyPair {
    private: U192,
    public: [u8; DH_KEY_LEN],
}

impl KeyPair {
    /// A fresh key pair: 160 random bits as the private key.
    pub(crate) fn generate<R: RngCore + ?Sized>(rng: &mut R) -> KeyPair {
        let mut bytes = [0u8; 24];
        rng.fill_bytes(&mut bytes[4..]);
        KeyPair::from_private(&bytes)
    }

    /// The key pair of a given private key (24 big-endian bytes, the top 4 zero).
    pub(crate) fn from_private(bytes: &[u8; 24]) -> KeyPair {
        let private = U192::from_be_slice(bytes);
        let two = Residue::new(&U768::from_u8(2));
        let public = encode(&two.pow_bounded_exp(&private, PRIVATE_KEY_BITS).retrieve());
        KeyPair { private, public }
    }

    /// Our public key Y = 2^X mod P as sent on the wire.
    pub(crate) fn public(&self) -> &[u8; DH_KEY_LEN] {
        &self.public
    }

    /// The shared secret S = Y_peer^X mod P, or an error if the peer's key is out of range.
    pub(crate) fn shared_secret(
        &self,
        peer_public: &[u8; DH_KEY_LEN],
    ) -> Result<[u8; DH_KEY_LEN], MseError> {
        let y = U768::from_be_slice(peer_public);
        let p_minus_one = Residue::MODULUS.get().wrapping_sub(&U768::ONE);
        if y <= U768::ONE || y >= p_minus_one {
            return Err(MseError::InvalidPublicKey);
        }
        let secret = Residue::new(&y).pow_bounded_exp(&self.private, PRIVATE_KEY_BITS);
        Ok(encode(&secret.retrieve()))
    }
}

fn encode(n: &U768) -> [u8; DH_KEY_LEN] {
    let mut out = [0u8; DH_KEY_LEN];
    out.copy_from_slice(n.to_be_bytes().as_slice());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn private(tail: &[u8]) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[24 - tail.len()..].copy_from_slice(tail);
        b
    }

    #[test]
    fn small_exponents_match_plain_arithmetic() {
        // 2^1, 2^8, 2^100 are below P, so Y is the power itself.
        assert_eq!(KeyPair::from_private(&private(&[1])).public()[95], 2);
        let y = KeyPair::from_private(&private(&[8]));
        assert_eq!(&y.public()[94..], &[1, 0]);
        let y = KeyPair::from_private(&private(&[100]));
        let mut want = [0u8; 96];
        want[96 - 13] = 0x10; // 2^100 = 0x10 followed by 12 zero bytes
        assert_eq!(y.public(), &want);
    }

    #[test]
    fn known_answer_from_an_independent_computation() {
        // Python: pow(2, 0x0102030405060708090a0b0c0d0e0f1011121314, P).to_bytes(96, 'big')
        let x: Vec<u8> = (1..=20).collect();
        let kp = KeyPair::from_private(&private(&x));
        assert_eq!(
            crate::types::to_hex(kp.public()),
            super::super::tests::KAT_PUBLIC_X1_20
        );
    }

    #[test]
    fn shared_secret_is_symmetric() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..8 {
            let a = KeyPair::generate(&mut rng);
            let b = KeyPair::generate(&mut rng);
            let sa = a.shared_secret(b.public()).unwrap();
            let sb = b.shared_secret(a.public()).unwrap();
            assert_eq!(sa, sb);
            assert_ne!(sa, [0u8; 96]);
        }
    }

    #[test]
    fn rejects_degenerate_public_keys() {
        let kp = KeyPair::generate(&mut StdRng::seed_from_u64(1));
        let p = encode(&Residue::MODULUS.get());
        let p_minus_1 = encode(&Residue::MODULUS.get().wrapping_sub(&U768::ONE));
        let mut one = [0u8; 96];
        one[95] = 1;
        for bad in [[0u8; 96], one, p_minus_1, p, [0xff; 96]] {
            assert!(matches!(
                kp.shared_secret(&bad),
                Err(MseError::InvalidPublicKey)
            ));
        }
        let mut two = [0u8; 96];
        two[95] = 2;
        assert!(kp.shared_secret(&two).is_ok());
    }
}
