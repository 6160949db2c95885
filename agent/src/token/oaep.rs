//! EME-OAEP decoding (RFC 8017 §7.1.2, steps 3a–3g) in constant time.
//!
//! Used when a token cannot do RSAES-OAEP with the wanted hash itself (SoftHSM 2.6.1
//! rejects CKM_RSA_PKCS_OAEP with SHA-256): the token performs the raw RSA private
//! operation (CKM_RSA_X_509) — the key never leaves it — and the padding is removed
//! here. Every failure is the same unit error, and the work done does not depend on
//! where the padding is wrong.

use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use tokenmail_smime::alg::HashAlg;
use zeroize::Zeroizing;

/// The one error of OAEP decoding: deliberately without detail (no padding oracle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError;

/// MGF1 (RFC 8017 §B.2.1) over `D`.
pub(crate) fn mgf1<D: Digest>(seed: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + 64));
    let mut counter: u32 = 0;
    while out.len() < len {
        let mut h = D::new();
        h.update(seed);
        h.update(counter.to_be_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

fn decode_with<D: Digest>(em: &[u8], label: &[u8]) -> Result<Zeroizing<Vec<u8>>, DecodeError> {
    let h_len = <D as Digest>::output_size();
    let k = em.len();
    if k < 2 * h_len + 2 {
        return Err(DecodeError);
    }
    let y = em[0];
    let masked_seed = &em[1..1 + h_len];
    let masked_db = &em[1 + h_len..];

    let seed_mask = mgf1::<D>(masked_db, h_len);
    let mut seed = Zeroizing::new(vec![0u8; h_len]);
    for i in 0..h_len {
        seed[i] = masked_seed[i] ^ seed_mask[i];
    }
    let db_mask = mgf1::<D>(&seed, masked_db.len());
    let mut db = Zeroizing::new(vec![0u8; masked_db.len()]);
    for i in 0..db.len() {
        db[i] = masked_db[i] ^ db_mask[i];
    }

    let l_hash = D::digest(label);
    let mut good: Choice = y.ct_eq(&0) & db[..h_len].ct_eq(&l_hash[..]);

    // Find the 0x01 separator after the zero padding without branching on secret bytes.
    let rest = &db[h_len..];
    let mut looking = Choice::from(1u8);
    let mut index: u32 = 0;
    let mut invalid = Choice::from(0u8);
    for (i, b) in rest.iter().enumerate() {
        let is_zero = b.ct_eq(&0);
        let is_one = b.ct_eq(&1);
        index.conditional_assign(&(i as u32), looking & is_one);
        invalid |= looking & !is_zero & !is_one;
        looking &= !is_one;
    }
    good &= !looking & !invalid;
    if bool::from(good) {
        Ok(Zeroizing::new(rest[index as usize + 1..].to_vec()))
    } else {
        Err(DecodeError)
    }
}

/// Decodes an OAEP-encoded block `em` (exactly the modulus length, left-padded with
/// zeros) with MGF1 over the same hash and an empty label.
pub fn decode(em: &[u8], hash: HashAlg) -> Result<Zeroizing<Vec<u8>>, DecodeError> {
    match hash {
        HashAlg::Sha1 => decode_with::<Sha1>(em, b""),
        HashAlg::Sha256 => decode_with::<Sha256>(em, b""),
        HashAlg::Sha384 => decode_with::<Sha384>(em, b""),
        HashAlg::Sha512 => decode_with::<Sha512>(em, b""),
    }
}

/// Left-pads a raw RSA output to the modulus length `k` (tokens may strip leading zeros).
pub fn left_pad(raw: &[u8], k: usize) -> Result<Zeroizing<Vec<u8>>, DecodeError> {
    if raw.len() > k {
        return Err(DecodeError);
    }
    let mut out = Zeroizing::new(vec![0u8; k]);
    out[k - raw.len()..].copy_from_slice(raw);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds an OAEP block the RFC 8017 way (encoding side) to test the decoder.
    fn encode<D: Digest>(msg: &[u8], k: usize, seed: &[u8]) -> Vec<u8> {
        let h_len = <D as Digest>::output_size();
        // DB = lHash || PS (zeros) || 0x01 || M, of length k - hLen - 1
        let mut db = D::digest(b"").to_vec();
        db.resize(h_len + (k - msg.len() - 2 * h_len - 2), 0);
        db.push(1);
        db.extend_from_slice(msg);
        let db_mask = mgf1::<D>(seed, db.len());
        let masked_db: Vec<u8> = db.iter().zip(db_mask.iter()).map(|(a, b)| a ^ b).collect();
        let seed_mask = mgf1::<D>(&masked_db, h_len);
        let masked_seed: Vec<u8> = seed
            .iter()
            .zip(seed_mask.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        let mut em = vec![0u8];
        em.extend_from_slice(&masked_seed);
        em.extend_from_slice(&masked_db);
        em
    }

    #[test]
    fn round_trip_and_every_corruption_fails() {
        let seed = [7u8; 32];
        let msg = b"content encryption key 32 bytes!";
        let em = encode::<Sha256>(msg, 256, &seed);
        assert_eq!(em.len(), 256);
        assert_eq!(&decode(&em, HashAlg::Sha256).expect("valid block")[..], msg);
        // wrong hash
        assert!(decode(&em, HashAlg::Sha1).is_err());
        // flip each byte in turn: never accepted with the same message
        for i in 0..em.len() {
            let mut bad = em.clone();
            bad[i] ^= 0x80;
            if let Ok(m) = decode(&bad, HashAlg::Sha256) {
                panic!("corruption at {i} accepted ({} bytes)", m.len());
            }
        }
        // too short
        assert!(decode(&em[..60], HashAlg::Sha256).is_err());
    }

    #[test]
    fn empty_message_and_left_pad() {
        let em = encode::<Sha1>(b"", 128, &[1u8; 20]);
        assert!(decode(&em, HashAlg::Sha1).expect("valid").is_empty());
        let padded = left_pad(&em[1..], 128).expect("fits");
        assert_eq!(&padded[..], &em[..]);
        assert!(left_pad(&[1u8; 129], 128).is_err());
    }
}
