//! Streaming content encryption: AES-CBC (RFC 3565), AES-GCM (RFC 5084) and,
//! for reading legacy mail only, DES-EDE3-CBC.
//!
//! GCM is built from AES-CTR and GHASH (NIST SP 800-38D) so that it can run
//! over a stream; `aes-gcm` only seals whole buffers. The unit tests check it
//! against `aes-gcm`.

use aes::{Aes128, Aes192, Aes256};
use cipher::{
    Array, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, KeyInit, KeyIvInit, StreamCipher,
};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Decode, Encode, Sequence};
use ghash::universal_hash::UniversalHash;
use ghash::GHash;
use spki::AlgorithmIdentifierOwned;
use subtle::{ConstantTimeEq, ConstantTimeGreater};
use zeroize::Zeroizing;

use super::oids;
use super::{DecryptError, EncryptError};

/// Content-encryption algorithms we produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ContentCipher {
    /// AES-128-CBC in EnvelopedData (not authenticated).
    Aes128Cbc,
    /// AES-256-CBC in EnvelopedData (not authenticated).
    Aes256Cbc,
    /// AES-128-GCM in AuthEnvelopedData.
    Aes128Gcm,
    /// AES-256-GCM in AuthEnvelopedData (the default).
    #[default]
    Aes256Gcm,
}

impl ContentCipher {
    /// Parses the CLI spelling: `aes256-gcm`, `aes128-gcm`, `aes256-cbc`, `aes128-cbc`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "aes256-gcm" | "aes-256-gcm" => Some(Self::Aes256Gcm),
            "aes128-gcm" | "aes-128-gcm" => Some(Self::Aes128Gcm),
            "aes256-cbc" | "aes-256-cbc" => Some(Self::Aes256Cbc),
            "aes128-cbc" | "aes-128-cbc" => Some(Self::Aes128Cbc),
            _ => None,
        }
    }

    /// Content-encryption key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Self::Aes128Cbc | Self::Aes128Gcm => 16,
            Self::Aes256Cbc | Self::Aes256Gcm => 32,
        }
    }

    /// Whether this cipher authenticates (AuthEnvelopedData).
    pub fn is_authenticated(self) -> bool {
        matches!(self, Self::Aes128Gcm | Self::Aes256Gcm)
    }

    pub(crate) fn oid(self) -> ObjectIdentifier {
        match self {
            Self::Aes128Cbc => oids::AES128_CBC,
            Self::Aes256Cbc => oids::AES256_CBC,
            Self::Aes128Gcm => oids::AES128_GCM,
            Self::Aes256Gcm => oids::AES256_GCM,
        }
    }
}

/// GCMParameters (RFC 5084).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub(crate) struct GcmParameters {
    pub nonce: OctetString,
    #[asn1(default = "default_icv_len")]
    pub icv_len: u8,
}

fn default_icv_len() -> u8 {
    12
}

/// The parsed content-encryption algorithm of an envelope we read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ContentAlg {
    AesCbc {
        key_len: usize,
        iv: [u8; 16],
    },
    DesEde3Cbc {
        iv: [u8; 8],
    },
    AesGcm {
        key_len: usize,
        nonce: [u8; 12],
        icv_len: usize,
    },
}

impl ContentAlg {
    pub fn parse(alg: &AlgorithmIdentifierOwned) -> Result<Self, DecryptError> {
        let params = || -> Result<Vec<u8>, DecryptError> {
            alg.parameters
                .as_ref()
                .ok_or(DecryptError::Malformed(
                    "content algorithm without parameters",
                ))?
                .to_der()
                .map_err(|_| DecryptError::Malformed("content algorithm parameters"))
        };
        let aes_cbc = |key_len| -> Result<Self, DecryptError> {
            let iv =
                OctetString::from_der(&params()?).map_err(|_| DecryptError::Malformed("CBC IV"))?;
            let iv: [u8; 16] = iv
                .as_bytes()
                .try_into()
                .map_err(|_| DecryptError::Malformed("CBC IV length"))?;
            Ok(Self::AesCbc { key_len, iv })
        };
        let aes_gcm = |key_len| -> Result<Self, DecryptError> {
            let p = GcmParameters::from_der(&params()?)
                .map_err(|_| DecryptError::Malformed("GCM parameters"))?;
            let nonce: [u8; 12] = p.nonce.as_bytes().try_into().map_err(|_| {
                DecryptError::Unsupported("AES-GCM nonces other than 12 bytes".into())
            })?;
            if !(12..=16).contains(&p.icv_len) {
                return Err(DecryptError::Malformed("GCM ICV length"));
            }
            Ok(Self::AesGcm {
                key_len,
                nonce,
                icv_len: p.icv_len as usize,
            })
        };
        match alg.oid {
            oids::AES128_CBC => aes_cbc(16),
            oids::AES192_CBC => aes_cbc(24),
            oids::AES256_CBC => aes_cbc(32),
            oids::AES128_GCM => aes_gcm(16),
            oids::AES192_GCM => aes_gcm(24),
            oids::AES256_GCM => aes_gcm(32),
            oids::DES_EDE3_CBC => {
                let iv = OctetString::from_der(&params()?)
                    .map_err(|_| DecryptError::Malformed("3DES IV"))?;
                let iv: [u8; 8] = iv
                    .as_bytes()
                    .try_into()
                    .map_err(|_| DecryptError::Malformed("3DES IV length"))?;
                Ok(Self::DesEde3Cbc { iv })
            }
            other => Err(DecryptError::Unsupported(format!(
                "content encryption algorithm {other}"
            ))),
        }
    }

    pub fn key_len(&self) -> usize {
        match self {
            Self::AesCbc { key_len, .. } | Self::AesGcm { key_len, .. } => *key_len,
            Self::DesEde3Cbc { .. } => 24,
        }
    }

    pub fn is_authenticated(&self) -> bool {
        matches!(self, Self::AesGcm { .. })
    }

    /// The algorithm's name for people: `AES-256-GCM`, `AES-128-CBC`, `3DES-CBC`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::AesCbc { key_len: 16, .. } => "AES-128-CBC",
            Self::AesCbc { key_len: 24, .. } => "AES-192-CBC",
            Self::AesCbc { .. } => "AES-256-CBC",
            Self::AesGcm { key_len: 16, .. } => "AES-128-GCM",
            Self::AesGcm { key_len: 24, .. } => "AES-192-GCM",
            Self::AesGcm { .. } => "AES-256-GCM",
            Self::DesEde3Cbc { .. } => "3DES-CBC",
        }
    }

    /// A 64-bit-block legacy cipher (3DES).
    pub fn is_legacy(&self) -> bool {
        matches!(self, Self::DesEde3Cbc { .. })
    }
}

/// Fills `buf` from the operating system's CSPRNG.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), EncryptError> {
    getrandom::fill(buf).map_err(|_| EncryptError::Random)
}

// ---------------------------------------------------------------------------
// CBC

trait CbcEnc: Send {
    /// `data.len()` is a multiple of the block size.
    fn encrypt(&mut self, data: &mut [u8]);
}

trait CbcDec: Send {
    fn decrypt(&mut self, data: &mut [u8]);
}

impl<C> CbcEnc for cbc::Encryptor<C>
where
    C: BlockCipherEncrypt + Send,
    cbc::Encryptor<C>: BlockModeEncrypt<BlockSize = cipher::consts::U16>,
{
    fn encrypt(&mut self, data: &mut [u8]) {
        let (blocks, rest) = Array::slice_as_chunks_mut(data);
        debug_assert!(rest.is_empty());
        self.encrypt_blocks(blocks);
    }
}

struct Dec<M>(M);

impl<M> CbcDec for Dec<M>
where
    M: BlockModeDecrypt + Send,
{
    fn decrypt(&mut self, data: &mut [u8]) {
        let (blocks, rest) = Array::slice_as_chunks_mut(data);
        debug_assert!(rest.is_empty());
        self.0.decrypt_blocks(blocks);
    }
}

fn cbc_dec(alg: &ContentAlg, key: &[u8]) -> Result<(Box<dyn CbcDec>, usize), DecryptError> {
    let bad = |_| DecryptError::Failed;
    Ok(match alg {
        ContentAlg::AesCbc { key_len: 16, iv } => (
            Box::new(Dec(
                cbc::Decryptor::<Aes128>::new_from_slices(key, iv).map_err(bad)?
            )),
            16,
        ),
        ContentAlg::AesCbc { key_len: 24, iv } => (
            Box::new(Dec(
                cbc::Decryptor::<Aes192>::new_from_slices(key, iv).map_err(bad)?
            )),
            16,
        ),
        ContentAlg::AesCbc { key_len: 32, iv } => (
            Box::new(Dec(
                cbc::Decryptor::<Aes256>::new_from_slices(key, iv).map_err(bad)?
            )),
            16,
        ),
        ContentAlg::DesEde3Cbc { iv } => (
            Box::new(Dec(cbc::Decryptor::<des::TdesEde3>::new_from_slices(
                key, iv,
            )
            .map_err(bad)?)),
            8,
        ),
        _ => return Err(DecryptError::Failed),
    })
}

/// Constant-time PKCS#7 padding check; returns the number of content bytes
/// in `block` when the padding is valid.
fn unpad(block: &[u8]) -> Option<usize> {
    let bs = block.len();
    let p = *block.last()?;
    let mut ok = !p.ct_eq(&0) & !p.ct_gt(&(bs as u8));
    for (i, b) in block.iter().enumerate() {
        let from_end = (bs - i) as u8; // 1..=bs
        let in_pad = !from_end.ct_gt(&p);
        ok &= !in_pad | b.ct_eq(&p);
    }
    if bool::from(ok) {
        Some(bs - p as usize)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// GCM

trait Ctr: Send {
    fn apply(&mut self, data: &mut [u8]) -> Result<(), ()>;
}

impl<C: StreamCipher + Send> Ctr for C {
    fn apply(&mut self, data: &mut [u8]) -> Result<(), ()> {
        self.try_apply_keystream(data).map_err(|_| ())
    }
}

struct Gcm {
    ctr: Box<dyn Ctr>,
    ghash: GHash,
    partial: [u8; 16],
    partial_len: usize,
    ct_len: u64,
    tag_mask: Zeroizing<[u8; 16]>,
}

impl Gcm {
    fn new(key: &[u8], nonce: &[u8; 12]) -> Option<Self> {
        let mut j0 = [0u8; 16];
        j0[..12].copy_from_slice(nonce);
        j0[15] = 1;
        let mut ctr0 = j0;
        ctr0[15] = 2;
        let mut h = Array::from([0u8; 16]);
        let mut mask = Array::from(j0);
        let ctr: Box<dyn Ctr> = match key.len() {
            16 => {
                let c = Aes128::new_from_slice(key).ok()?;
                c.encrypt_block(&mut h);
                c.encrypt_block(&mut mask);
                Box::new(ctr::Ctr32BE::<Aes128>::new_from_slices(key, &ctr0).ok()?)
            }
            24 => {
                let c = Aes192::new_from_slice(key).ok()?;
                c.encrypt_block(&mut h);
                c.encrypt_block(&mut mask);
                Box::new(ctr::Ctr32BE::<Aes192>::new_from_slices(key, &ctr0).ok()?)
            }
            32 => {
                let c = Aes256::new_from_slice(key).ok()?;
                c.encrypt_block(&mut h);
                c.encrypt_block(&mut mask);
                Box::new(ctr::Ctr32BE::<Aes256>::new_from_slices(key, &ctr0).ok()?)
            }
            _ => return None,
        };
        let ghash = GHash::new(&h);
        Some(Self {
            ctr,
            ghash,
            partial: [0; 16],
            partial_len: 0,
            ct_len: 0,
            tag_mask: Zeroizing::new(mask.into()),
        })
    }

    fn absorb(&mut self, mut ct: &[u8]) {
        self.ct_len += ct.len() as u64;
        if self.partial_len > 0 {
            let n = (16 - self.partial_len).min(ct.len());
            self.partial[self.partial_len..self.partial_len + n].copy_from_slice(&ct[..n]);
            self.partial_len += n;
            ct = &ct[n..];
            if self.partial_len < 16 {
                return;
            }
            let block = Array::from(self.partial);
            self.ghash.update(&[block]);
            self.partial_len = 0;
        }
        let (blocks, rest) = Array::slice_as_chunks(ct);
        self.ghash.update(blocks);
        self.partial[..rest.len()].copy_from_slice(rest);
        self.partial_len = rest.len();
    }

    fn tag(mut self) -> [u8; 16] {
        self.ghash.update_padded(&self.partial[..self.partial_len]);
        let mut lens = [0u8; 16];
        lens[8..].copy_from_slice(&(self.ct_len * 8).to_be_bytes());
        self.ghash.update(&[Array::from(lens)]);
        let s: [u8; 16] = self.ghash.finalize().into();
        let mut t = [0u8; 16];
        for i in 0..16 {
            t[i] = s[i] ^ self.tag_mask[i];
        }
        t
    }
}

// ---------------------------------------------------------------------------
// Encryptor

enum EncMode {
    Cbc(Box<dyn CbcEnc>),
    Gcm(Gcm),
}

/// Streaming content encryptor.
pub(crate) struct ContentEncryptor {
    mode: EncMode,
    /// CBC: bytes waiting for a full block.
    partial: Vec<u8>,
}

impl std::fmt::Debug for ContentEncryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentEncryptor").finish_non_exhaustive()
    }
}

/// Largest plaintext AES-GCM can take with one nonce: 2^39 - 256 bits.
const GCM_MAX: u64 = (1 << 36) - 32;

impl ContentEncryptor {
    /// Returns the encryptor and the DER of the AlgorithmIdentifier parameters.
    pub fn new(cipher: ContentCipher, key: &[u8]) -> Result<(Self, der::Any), EncryptError> {
        let fail = |_| EncryptError::Internal("content cipher key");
        match cipher {
            ContentCipher::Aes128Cbc | ContentCipher::Aes256Cbc => {
                let mut iv = [0u8; 16];
                random_bytes(&mut iv)?;
                let enc: Box<dyn CbcEnc> = if cipher == ContentCipher::Aes128Cbc {
                    Box::new(cbc::Encryptor::<Aes128>::new_from_slices(key, &iv).map_err(fail)?)
                } else {
                    Box::new(cbc::Encryptor::<Aes256>::new_from_slices(key, &iv).map_err(fail)?)
                };
                let params = der::Any::encode_from(
                    &OctetString::new(iv.to_vec()).map_err(EncryptError::Der)?,
                )
                .map_err(EncryptError::Der)?;
                Ok((
                    Self {
                        mode: EncMode::Cbc(enc),
                        partial: Vec::with_capacity(16),
                    },
                    params,
                ))
            }
            ContentCipher::Aes128Gcm | ContentCipher::Aes256Gcm => {
                let mut nonce = [0u8; 12];
                random_bytes(&mut nonce)?;
                let gcm =
                    Gcm::new(key, &nonce).ok_or(EncryptError::Internal("content cipher key"))?;
                let params = der::Any::encode_from(&GcmParameters {
                    nonce: OctetString::new(nonce.to_vec()).map_err(EncryptError::Der)?,
                    icv_len: 16,
                })
                .map_err(EncryptError::Der)?;
                Ok((
                    Self {
                        mode: EncMode::Gcm(gcm),
                        partial: Vec::new(),
                    },
                    params,
                ))
            }
        }
    }

    /// Encrypts `data`, appending ciphertext to `out`.
    pub fn update(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), EncryptError> {
        match &mut self.mode {
            EncMode::Cbc(enc) => {
                let start = out.len();
                out.extend_from_slice(&self.partial);
                out.extend_from_slice(data);
                let total = out.len() - start;
                let full = total - total % 16;
                self.partial.clear();
                self.partial.extend_from_slice(&out[start + full..]);
                out.truncate(start + full);
                enc.encrypt(&mut out[start..]);
            }
            EncMode::Gcm(gcm) => {
                if gcm.ct_len + data.len() as u64 > GCM_MAX {
                    return Err(EncryptError::TooLong);
                }
                let start = out.len();
                out.extend_from_slice(data);
                gcm.ctr
                    .apply(&mut out[start..])
                    .map_err(|_| EncryptError::TooLong)?;
                gcm.absorb(&out[start..]);
            }
        }
        Ok(())
    }

    /// Ends the stream: appends the last (padded) CBC block to `out`, and
    /// returns the GCM tag.
    pub fn finish(self, out: &mut Vec<u8>) -> Option<[u8; 16]> {
        match self.mode {
            EncMode::Cbc(mut enc) => {
                let p = 16 - self.partial.len();
                let mut block = [p as u8; 16];
                block[..self.partial.len()].copy_from_slice(&self.partial);
                enc.encrypt(&mut block);
                out.extend_from_slice(&block);
                None
            }
            EncMode::Gcm(gcm) => Some(gcm.tag()),
        }
    }
}

// ---------------------------------------------------------------------------
// Decryptor

enum DecMode {
    Cbc { dec: Box<dyn CbcDec>, bs: usize },
    Gcm { gcm: Gcm, icv_len: usize },
}

/// Streaming content decryptor.
pub(crate) struct ContentDecryptor {
    mode: DecMode,
    /// CBC: ciphertext not yet decrypted (at most one block plus a partial one).
    pending: Vec<u8>,
}

impl std::fmt::Debug for ContentDecryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentDecryptor").finish_non_exhaustive()
    }
}

impl ContentDecryptor {
    pub fn new(alg: &ContentAlg, key: &[u8]) -> Result<Self, DecryptError> {
        if key.len() != alg.key_len() {
            return Err(DecryptError::Failed);
        }
        let mode = match alg {
            ContentAlg::AesGcm { nonce, icv_len, .. } => DecMode::Gcm {
                gcm: Gcm::new(key, nonce).ok_or(DecryptError::Failed)?,
                icv_len: *icv_len,
            },
            _ => {
                let (dec, bs) = cbc_dec(alg, key)?;
                DecMode::Cbc { dec, bs }
            }
        };
        Ok(Self {
            mode,
            pending: Vec::with_capacity(32),
        })
    }

    /// Decrypts `ct`, appending (unverified) plaintext to `out`.
    pub fn update(&mut self, ct: &[u8], out: &mut Vec<u8>) -> Result<(), DecryptError> {
        match &mut self.mode {
            DecMode::Gcm { gcm, .. } => {
                if gcm.ct_len + ct.len() as u64 > GCM_MAX {
                    return Err(DecryptError::Failed);
                }
                gcm.absorb(ct);
                let start = out.len();
                out.extend_from_slice(ct);
                gcm.ctr
                    .apply(&mut out[start..])
                    .map_err(|_| DecryptError::Failed)?;
            }
            DecMode::Cbc { dec, bs } => {
                let bs = *bs;
                let start = out.len();
                out.extend_from_slice(&self.pending);
                out.extend_from_slice(ct);
                let total = out.len() - start;
                // keep the last full block back for unpadding at the end
                let rem = total % bs;
                let keep = if rem == 0 { bs.min(total) } else { rem };
                let now = total - keep;
                self.pending.clear();
                self.pending.extend_from_slice(&out[start + now..]);
                out.truncate(start + now);
                dec.decrypt(&mut out[start..]);
            }
        }
        Ok(())
    }

    /// Ends the stream. For CBC, checks and strips the padding and appends the
    /// last plaintext bytes; for GCM, checks the tag `mac`.
    pub fn finish(self, mac: Option<&[u8]>, out: &mut Vec<u8>) -> Result<(), DecryptError> {
        match self.mode {
            DecMode::Gcm { gcm, icv_len } => {
                let mac = mac.ok_or(DecryptError::Failed)?;
                let tag = gcm.tag();
                if mac.len() != icv_len || !bool::from(tag[..icv_len].ct_eq(mac)) {
                    return Err(DecryptError::Failed);
                }
                Ok(())
            }
            DecMode::Cbc { mut dec, bs } => {
                if self.pending.len() != bs {
                    return Err(DecryptError::Failed);
                }
                let mut block = Zeroizing::new(self.pending.clone());
                dec.decrypt(&mut block);
                let n = unpad(&block).ok_or(DecryptError::Failed)?;
                out.extend_from_slice(&block[..n]);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::Aead;

    #[test]
    fn unpad_cases() {
        let mut b = [7u8; 16];
        b[15] = 1;
        assert_eq!(unpad(&b), Some(15));
        assert_eq!(unpad(&[16u8; 16]), Some(0));
        let mut b = [3u8; 16];
        b[13] = 2;
        assert_eq!(unpad(&b), None);
        assert_eq!(unpad(&[0u8; 16]), None);
        assert_eq!(unpad(&[17u8; 16]), None);
        assert_eq!(unpad(&[8u8; 8]), Some(0));
    }

    #[test]
    fn streaming_gcm_matches_aes_gcm() {
        for key_len in [16usize, 32] {
            let key = vec![0x42u8; key_len];
            let nonce = [7u8; 12];
            for len in [0usize, 1, 15, 16, 17, 100, 1000] {
                let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let mut gcm = Gcm::new(&key, &nonce).expect("gcm");
                let mut ct = pt.clone();
                // feed in odd pieces
                let mut off = 0;
                let mut step = 1;
                while off < ct.len() {
                    let end = (off + step).min(ct.len());
                    gcm.ctr.apply(&mut ct[off..end]).expect("ctr");
                    let piece = ct[off..end].to_vec();
                    gcm.absorb(&piece);
                    off = end;
                    step = step * 2 + 1;
                }
                let tag = gcm.tag();
                let reference = if key_len == 16 {
                    aes_gcm::Aes128Gcm::new_from_slice(&key)
                        .expect("key")
                        .encrypt(&nonce.into(), pt.as_slice())
                        .expect("seal")
                } else {
                    aes_gcm::Aes256Gcm::new_from_slice(&key)
                        .expect("key")
                        .encrypt(&nonce.into(), pt.as_slice())
                        .expect("seal")
                };
                assert_eq!(&reference[..len], &ct[..]);
                assert_eq!(&reference[len..], &tag[..]);
            }
        }
    }

    #[test]
    fn cbc_round_trip_in_pieces() {
        let key = [9u8; 32];
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 500] {
            let pt: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let (mut enc, params) =
                ContentEncryptor::new(ContentCipher::Aes256Cbc, &key).expect("encryptor");
            let mut ct = Vec::new();
            for piece in pt.chunks(7) {
                enc.update(piece, &mut ct).expect("update");
            }
            assert!(enc.finish(&mut ct).is_none());
            assert_eq!(ct.len(), (len / 16 + 1) * 16);
            let alg = ContentAlg::parse(&AlgorithmIdentifierOwned {
                oid: oids::AES256_CBC,
                parameters: Some(params),
            })
            .expect("alg");
            let mut dec = ContentDecryptor::new(&alg, &key).expect("decryptor");
            let mut out = Vec::new();
            for piece in ct.chunks(5) {
                dec.update(piece, &mut out).expect("update");
            }
            dec.finish(None, &mut out).expect("finish");
            assert_eq!(out, pt);
        }
    }
}
