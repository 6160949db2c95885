//! What a PIV card's raw RSA needs done around it: EMSA-PKCS1 / EMSA-PSS encoding, PKCS#1 v1.5 decryption unpadding in constant time, the check of the card's signature, and slot/algorithm mapping.

#[allow(unused_imports)]
use super::*;

/// EMSA-PKCS1-v1_5 (RFC 8017 §9.2) of a digest, `k` bytes long (the core's encoder).
pub(super) fn pkcs1v15_sign_block(
    h: HashAlg,
    digest: &[u8],
    k: usize,
) -> Result<Vec<u8>, TokenError> {
    tokenmail_smime::signed::pkcs1v15_encode(h, digest, k)
        .map_err(|_| TokenError::KeyMismatch("the RSA key is too short for this digest".into()))
}

/// EMSA-PSS-ENCODE (RFC 8017 §9.1.1) with MGF1 over the same hash and a salt as long
/// as the hash (RFC 4056 defaults as we announce them), left-padded to `k` bytes.
pub(super) fn pss_block(h: HashAlg, digest: &[u8], mod_bits: usize) -> Result<Vec<u8>, TokenError> {
    match h {
        HashAlg::Sha1 => pss_block_with::<sha1::Sha1>(digest, mod_bits),
        HashAlg::Sha256 => pss_block_with::<sha2::Sha256>(digest, mod_bits),
        HashAlg::Sha384 => pss_block_with::<sha2::Sha384>(digest, mod_bits),
        HashAlg::Sha512 => pss_block_with::<sha2::Sha512>(digest, mod_bits),
    }
}

pub(super) fn pss_block_with<D: Digest>(
    digest: &[u8],
    mod_bits: usize,
) -> Result<Vec<u8>, TokenError> {
    let h_len = digest.len();
    let em_bits = mod_bits - 1;
    let em_len = em_bits.div_ceil(8);
    let s_len = h_len;
    if em_len < h_len + s_len + 2 {
        return Err(TokenError::KeyMismatch(
            "the RSA key is too short for PSS with this digest".into(),
        ));
    }
    let mut salt = vec![0u8; s_len];
    getrandom::fill(&mut salt)
        .map_err(|e| TokenError::Invalid(format!("no randomness for the PSS salt: {e}")))?;
    let mut m = vec![0u8; 8];
    m.extend_from_slice(digest);
    m.extend_from_slice(&salt);
    let hh = D::digest(&m).to_vec();
    let db_len = em_len - h_len - 1;
    let mut db = vec![0u8; db_len];
    db[db_len - s_len - 1] = 1;
    db[db_len - s_len..].copy_from_slice(&salt);
    let mask = oaep::mgf1::<D>(&hh, db_len);
    for (d, m) in db.iter_mut().zip(mask.iter()) {
        *d ^= m;
    }
    let top_bits = 8 * em_len - em_bits;
    db[0] &= 0xffu8 >> top_bits;
    let k = mod_bits.div_ceil(8);
    let mut em = vec![0u8; k - em_len];
    em.extend_from_slice(&db);
    em.extend_from_slice(&hh);
    em.push(0xbc);
    Ok(em)
}

/// The public key of a SubjectPublicKeyInfo.
pub(super) fn public_from_spki(spki: &spki::SubjectPublicKeyInfoOwned) -> PublicKey {
    PublicKey::from_spki(spki)
}

pub(super) fn alg_of(public: &PublicKey) -> Option<AlgorithmId> {
    match public {
        PublicKey::Rsa { .. } => match public.rsa_len() {
            Some(128) => Some(AlgorithmId::Rsa1024),
            Some(256) => Some(AlgorithmId::Rsa2048),
            Some(384) => Some(AlgorithmId::Rsa3072),
            Some(512) => Some(AlgorithmId::Rsa4096),
            _ => None,
        },
        PublicKey::P256(_) => Some(AlgorithmId::EccP256),
        PublicKey::P384(_) => Some(AlgorithmId::EccP384),
        PublicKey::Other(_) => None,
    }
}

pub(super) fn to_slot(id: &[u8]) -> Result<(u8, SlotId), TokenError> {
    let b = match id {
        [b] if SLOTS.contains(b) => *b,
        _ => {
            return Err(TokenError::NoSuchKey(format!(
                "id {} (PIV key ids are slots: 9a, 9c, 9d, 9e, 82..95)",
                hex::encode(id)
            )))
        }
    };
    SlotId::try_from(b)
        .map(|s| (b, s))
        .map_err(|_| TokenError::NoSuchKey(format!("slot {b:02x}")))
}

/// Constant-time EME-PKCS1-v1_5 decoding (RFC 8017 §7.2.2 step 3); one error.
pub(crate) fn pkcs1v15_decrypt_block(em: &[u8]) -> Result<Zeroizing<Vec<u8>>, oaep::DecodeError> {
    use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
    if em.len() < 11 {
        return Err(oaep::DecodeError);
    }
    let mut good: Choice = em[0].ct_eq(&0) & em[1].ct_eq(&2);
    let mut looking = Choice::from(1u8);
    let mut index: u32 = 0;
    for (i, b) in em.iter().enumerate().skip(2) {
        let z = b.ct_eq(&0);
        index.conditional_assign(&(i as u32), looking & z);
        looking &= !z;
    }
    // at least 8 bytes of non-zero padding, and a separator found
    good &= !looking;
    good &= Choice::from(u8::from(index >= 10));
    if bool::from(good) {
        Ok(Zeroizing::new(em[index as usize + 1..].to_vec()))
    } else {
        Err(oaep::DecodeError)
    }
}

pub(super) fn pss_verify(pk: &rsa::RsaPublicKey, h: HashAlg, digest: &[u8], sig: &[u8]) -> bool {
    let len = digest.len();
    match h {
        HashAlg::Sha1 => pk.verify(rsa::pss::Pss::<sha1::Sha1>::new_with_salt(len), digest, sig),
        HashAlg::Sha256 => pk.verify(
            rsa::pss::Pss::<sha2::Sha256>::new_with_salt(len),
            digest,
            sig,
        ),
        HashAlg::Sha384 => pk.verify(
            rsa::pss::Pss::<sha2::Sha384>::new_with_salt(len),
            digest,
            sig,
        ),
        HashAlg::Sha512 => pk.verify(
            rsa::pss::Pss::<sha2::Sha512>::new_with_salt(len),
            digest,
            sig,
        ),
    }
    .is_ok()
}
