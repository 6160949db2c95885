//! A PIV card (YubiKey 4/5, or any card with the PIV applet that answers the YubiKey
//! version and serial commands) through the `yubikey` crate over PC/SC.
//!
//! Keys live in the PIV slots 9a, 9c, 9d, 9e and the retired 82–95; a key's id is its
//! slot byte (`9c`). The card does the private-key operation on input we prepare:
//! PKCS#1 v1.5 and PSS encodings are built here and the card applies the raw RSA
//! private key; ECDSA signs the (truncated) digest; RSA decryption returns the raw
//! block, whose padding is removed here in constant time; ECDH returns the shared x.
//!
//! PIN policy is honoured per slot (from the card's metadata when it has it, else the
//! YubiKey defaults: 9c "always", 9e "never", others "once"): a cached PIN is verified
//! once per card session, or before every operation on an "always" slot. Touch policy
//! is reported (the agent logs "touch the key" and clients show it); the card waits.
//!
//! The card is opened by serial. When it is removed (PC/SC says so, or an operation
//! fails with a removed/reset card) the connection is dropped and the cached PIN is
//! forgotten; requests answer "insert card <serial>" until it is back, and it is used
//! again without restarting the agent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use der::{Decode, Encode};
use secrecy::{ExposeSecret, SecretString};
use sha2::Digest;
use tokenmail_proto::v1::{PivSlotInfo, PivStatus, TokenStatus};
use tokenmail_smime::alg::{HashAlg, SignatureScheme};
use tokenmail_smime::envelope::KeyTransport;
use tracing::{debug, info, warn};
use yubikey::piv::{self, AlgorithmId, SlotAlgorithmId, SlotId};
use yubikey::{Certificate, MgmKey, PinPolicy, Serial, TouchPolicy, YubiKey};
use zeroize::Zeroizing;

use super::{cert, oaep, KeyEntry, KeyStore, PivAdmin, PivKeygen, PublicKey, TokenError};
use crate::pin::{PinSource, PinState};

/// How to find and use one PIV card.
#[derive(Clone, Debug)]
pub struct PivConfig {
    /// The name the agent shows (default `piv-<serial>`).
    pub name: String,
    /// The card's serial number; `None` = the only PIV card present.
    pub serial: Option<u32>,
    /// Unattended PIN source.
    pub pin_source: PinSource,
    /// How long a client-supplied PIN is cached (`None` = until lock or removal).
    pub pin_ttl: Option<Duration>,
    /// CA certificates (DER) to send with signatures: a PIV card holds only the
    /// end-entity certificates.
    pub chain_pool: Vec<Vec<u8>>,
}

/// Bumped by the hot-plug watcher at every reader change (card in or out, reader
/// plugged or unplugged); an absent card is looked for again only after a change.
pub static READER_EPOCH: AtomicU64 = AtomicU64::new(0);
/// Whether the hot-plug watcher is watching (else an absent card is looked for at every use).
pub static WATCHING: AtomicBool = AtomicBool::new(false);
/// Readers whose card a store holds open: other stores do not open them while looking
/// for their own card (opening selects the PIV applet, which would undo the holder's PIN
/// verification).
static CLAIMED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn claimed() -> MutexGuard<'static, Vec<String>> {
    CLAIMED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens the card with `serial` (or the only one), skipping readers another store holds.
fn open_card(serial: Option<u32>) -> Result<YubiKey, yubikey::Error> {
    let skip = claimed().clone();
    let mut readers = yubikey::reader::Context::open()?;
    let mut busy = None;
    let mut found = Vec::new();
    for reader in readers.iter()? {
        if skip.iter().any(|r| *r == reader.name()) {
            continue;
        }
        match reader.open() {
            Ok(yk) if serial.is_none_or(|s| Serial(s) == yk.serial()) => {
                if serial.is_some() {
                    return Ok(yk);
                }
                found.push(yk);
            }
            Ok(other) => {
                let _ = other.disconnect(pcsc::Disposition::LeaveCard);
            }
            Err(
                e @ yubikey::Error::PcscError {
                    inner: Some(pcsc::Error::SharingViolation),
                },
            ) => {
                busy.get_or_insert(e);
            }
            Err(_) => {}
        }
    }
    match (found.len(), busy) {
        (1, _) => found.pop().ok_or(yubikey::Error::NotFound),
        (0, Some(e)) => Err(e),
        (0, None) => Err(yubikey::Error::NotFound),
        _ => {
            for yk in found {
                let _ = yk.disconnect(pcsc::Disposition::LeaveCard);
            }
            Err(yubikey::Error::PcscError { inner: None })
        }
    }
}

/// The slots we look at, in the order keys are listed.
const SLOTS: [u8; 24] = [
    0x9a, 0x9c, 0x9d, 0x9e, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d,
    0x8e, 0x8f, 0x90, 0x91, 0x92, 0x93, 0x94, 0x95,
];

/// The SP 800-73-4 name of a slot (used as the key label).
pub fn slot_name(slot: u8) -> String {
    match slot {
        0x9a => "PIV Authentication".into(),
        0x9c => "Digital Signature".into(),
        0x9d => "Key Management".into(),
        0x9e => "Card Authentication".into(),
        0x82..=0x95 => format!("Retired Key Management {}", slot - 0x81),
        _ => format!("slot {slot:02x}"),
    }
}

/// Parses `9c`, `0x9c`, or a slot name alias (`signature`, `authentication`,
/// `key-management`, `card-authentication`, `retired1`…`retired20`).
pub fn parse_slot(s: &str) -> Option<u8> {
    let t = s.trim().to_ascii_lowercase();
    let named = match t.as_str() {
        "authentication" | "auth" => Some(0x9a),
        "signature" | "sign" => Some(0x9c),
        "key-management" | "keymgmt" | "encryption" => Some(0x9d),
        "card-authentication" | "cardauth" => Some(0x9e),
        _ => t
            .strip_prefix("retired")
            .and_then(|n| n.parse::<u8>().ok())
            .filter(|n| (1..=20).contains(n))
            .map(|n| 0x81 + n),
    };
    named.or_else(|| {
        let h = t.strip_prefix("0x").unwrap_or(&t);
        u8::from_str_radix(h, 16).ok().filter(|b| SLOTS.contains(b))
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PinUse {
    Never,
    Once,
    Always,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Touch {
    Never,
    Always,
    Cached,
}

impl Touch {
    fn name(self) -> &'static str {
        match self {
            Touch::Never => "never",
            Touch::Always => "always",
            Touch::Cached => "cached",
        }
    }
}

impl PinUse {
    fn name(self) -> &'static str {
        match self {
            PinUse::Never => "never",
            PinUse::Once => "once",
            PinUse::Always => "always",
        }
    }
}

fn default_pin_use(slot: u8) -> PinUse {
    match slot {
        0x9c => PinUse::Always,
        0x9e => PinUse::Never,
        _ => PinUse::Once,
    }
}

/// What we know of a slot's key.
#[derive(Clone, Debug)]
struct SlotKey {
    alg: AlgorithmId,
    pin: PinUse,
    touch: Touch,
    origin: Option<&'static str>,
}

#[derive(Default)]
struct Facts {
    serial: Option<u32>,
    version: String,
    reader: String,
}

struct Inner {
    yk: Option<YubiKey>,
    facts: Facts,
    /// The PIN was verified in this card session.
    verified: bool,
    pin: PinState,
    keys: Option<Vec<KeyEntry>>,
    slots: HashMap<u8, SlotKey>,
    pin_warnings: Vec<String>,
    /// Set by the hot-plug watcher when PC/SC reports the card gone.
    absent: bool,
    /// The reader epoch of the last unsuccessful look for the card.
    looked_at: Option<u64>,
}

/// A PIV card as a [`KeyStore`].
pub struct PivStore {
    cfg: PivConfig,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for PivStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PivStore")
            .field("name", &self.cfg.name)
            .field("serial", &self.cfg.serial)
            .finish()
    }
}

fn pcsc_inner(e: &yubikey::Error) -> Option<pcsc::Error> {
    match e {
        yubikey::Error::PcscError { inner } => *inner,
        _ => None,
    }
}

/// The card went away (removed, reset by another program, reader unplugged).
fn is_gone(e: &yubikey::Error) -> bool {
    matches!(
        pcsc_inner(e),
        Some(
            pcsc::Error::RemovedCard
                | pcsc::Error::ResetCard
                | pcsc::Error::NoSmartcard
                | pcsc::Error::ReaderUnavailable
                | pcsc::Error::UnknownReader
                | pcsc::Error::InvalidHandle
                | pcsc::Error::UnpoweredCard
                | pcsc::Error::UnresponsiveCard
                | pcsc::Error::NoService
                | pcsc::Error::ServiceStopped
                | pcsc::Error::CommError
        )
    )
}

/// EMSA-PKCS1-v1_5 (RFC 8017 §9.2) of a digest, `k` bytes long (the core's encoder).
fn pkcs1v15_sign_block(h: HashAlg, digest: &[u8], k: usize) -> Result<Vec<u8>, TokenError> {
    tokenmail_smime::signed::pkcs1v15_encode(h, digest, k)
        .map_err(|_| TokenError::KeyMismatch("the RSA key is too short for this digest".into()))
}

/// EMSA-PSS-ENCODE (RFC 8017 §9.1.1) with MGF1 over the same hash and a salt as long
/// as the hash (RFC 4056 defaults as we announce them), left-padded to `k` bytes.
fn pss_block(h: HashAlg, digest: &[u8], mod_bits: usize) -> Result<Vec<u8>, TokenError> {
    match h {
        HashAlg::Sha1 => pss_block_with::<sha1::Sha1>(digest, mod_bits),
        HashAlg::Sha256 => pss_block_with::<sha2::Sha256>(digest, mod_bits),
        HashAlg::Sha384 => pss_block_with::<sha2::Sha384>(digest, mod_bits),
        HashAlg::Sha512 => pss_block_with::<sha2::Sha512>(digest, mod_bits),
    }
}

fn pss_block_with<D: Digest>(digest: &[u8], mod_bits: usize) -> Result<Vec<u8>, TokenError> {
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
fn public_from_spki(spki: &spki::SubjectPublicKeyInfoOwned) -> PublicKey {
    const RSA: const_oid::ObjectIdentifier = const_oid::db::rfc5912::RSA_ENCRYPTION;
    const EC: const_oid::ObjectIdentifier = const_oid::db::rfc5912::ID_EC_PUBLIC_KEY;
    const P256: const_oid::ObjectIdentifier = const_oid::db::rfc5912::SECP_256_R_1;
    const P384: const_oid::ObjectIdentifier = const_oid::db::rfc5912::SECP_384_R_1;
    let bits = spki.subject_public_key.raw_bytes();
    if spki.algorithm.oid == RSA {
        if let Ok(k) = rsa::pkcs1::RsaPublicKey::<der::asn1::UintRef<'_>>::from_der(bits) {
            let modulus: &[u8] = k.modulus.as_bytes();
            let exponent: &[u8] = k.public_exponent.as_bytes();
            return PublicKey::Rsa {
                modulus: modulus.to_vec(),
                exponent: exponent.to_vec(),
            };
        }
    } else if spki.algorithm.oid == EC {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<const_oid::ObjectIdentifier>().ok());
        if curve == Some(P256) {
            return PublicKey::P256(bits.to_vec());
        }
        if curve == Some(P384) {
            return PublicKey::P384(bits.to_vec());
        }
    }
    PublicKey::Other(format!("unsupported key {}", spki.algorithm.oid))
}

fn alg_of(public: &PublicKey) -> Option<AlgorithmId> {
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

fn to_slot(id: &[u8]) -> Result<(u8, SlotId), TokenError> {
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

impl PivStore {
    /// A store for the card; nothing is opened until first use.
    pub fn new(cfg: PivConfig) -> Self {
        let pin = PinState::new(cfg.pin_source.clone(), cfg.pin_ttl);
        PivStore {
            inner: Mutex::new(Inner {
                yk: None,
                facts: Facts {
                    serial: cfg.serial,
                    ..Facts::default()
                },
                verified: false,
                pin,
                keys: None,
                slots: HashMap::new(),
                pin_warnings: Vec::new(),
                absent: false,
                looked_at: None,
            }),
            cfg,
        }
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn card_label(&self, inner: &Inner) -> String {
        match inner.facts.serial.or(self.cfg.serial) {
            Some(s) => format!("card {s}"),
            None => "a PIV card".into(),
        }
    }

    fn absent_error(&self, inner: &Inner) -> TokenError {
        TokenError::CardAbsent(self.card_label(inner))
    }

    fn map_open_error(&self, inner: &Inner, e: yubikey::Error) -> TokenError {
        match pcsc_inner(&e) {
            Some(pcsc::Error::NoService | pcsc::Error::ServiceStopped) => TokenError::Pcsc(
                "the PC/SC daemon is not running: start it (systemctl start pcscd.socket)".into(),
            ),
            Some(pcsc::Error::SharingViolation) => TokenError::Pcsc(format!(
                "{} is held by another program (gpg's scdaemon, a browser, OpenSC?): close it or run `gpgconf --kill scdaemon`",
                self.card_label(inner)
            )),
            Some(pcsc::Error::NoReadersAvailable) => self.absent_error(inner),
            _ => match e {
                yubikey::Error::NotFound => self.absent_error(inner),
                yubikey::Error::PcscError { inner: None } => TokenError::Pcsc(
                    "several PIV cards are present: name one by its serial (--piv-serial, or `serial` in the card's [[token]])".into(),
                ),
                other => TokenError::Pcsc(format!("cannot open {}: {other}", self.card_label(inner))),
            },
        }
    }

    /// Opens the card if needed and reads its facts and keys' policies.
    fn connect(&self, inner: &mut Inner) -> Result<(), TokenError> {
        if inner.yk.is_some() {
            return Ok(());
        }
        let epoch = READER_EPOCH.load(Ordering::SeqCst);
        if WATCHING.load(Ordering::SeqCst) && inner.looked_at == Some(epoch) {
            // Nothing changed in the readers since the last look: still absent.
            return Err(self.absent_error(inner));
        }
        let mut yk = match open_card(self.cfg.serial) {
            Ok(yk) => yk,
            Err(e) => {
                inner.looked_at = Some(epoch);
                return Err(self.map_open_error(inner, e));
            }
        };
        inner.looked_at = None;
        claimed().push(yk.name().to_string());
        let serial: u32 = yk.serial().into();
        inner.facts = Facts {
            serial: Some(serial),
            version: yk.version().to_string(),
            reader: yk.name().to_string(),
        };
        inner.verified = false;
        inner.absent = false;
        inner.keys = None;
        inner.slots.clear();
        inner.pin_warnings = pin_warnings(&mut yk);
        info!(token = %self.cfg.name, serial, reader = %inner.facts.reader, version = %inner.facts.version, "PIV card opened");
        inner.yk = Some(yk);
        Ok(())
    }

    /// Drops the connection; `removed` also forgets the cached PIN.
    fn drop_card(&self, inner: &mut Inner, removed: bool) {
        if let Some(yk) = inner.yk.take() {
            let name = yk.name().to_string();
            drop(yk);
            claimed().retain(|r| *r != name);
            info!(token = %self.cfg.name, removed, "PIV card connection closed");
        }
        inner.verified = false;
        inner.keys = None;
        inner.slots.clear();
        if removed {
            inner.absent = true;
            if inner.pin.has_cached() {
                inner.pin.forget();
                info!(token = %self.cfg.name, "card removed: cached PIN forgotten");
            }
        }
    }

    /// Verifies the PIN if the slot's policy needs it now.
    fn ensure_pin(&self, inner: &mut Inner, need: PinUse) -> Result<(), TokenError> {
        if need == PinUse::Never || (need == PinUse::Once && inner.verified) {
            return Ok(());
        }
        let pin = match inner.pin.current() {
            Ok(Some(p)) => p,
            Ok(None) => return Err(TokenError::PinRequired(self.cfg.name.clone())),
            Err(msg) => return Err(TokenError::PinSource(msg)),
        };
        self.verify(inner, &pin)
    }

    fn verify(&self, inner: &mut Inner, pin: &SecretString) -> Result<(), TokenError> {
        let Some(yk) = inner.yk.as_mut() else {
            return Err(self.absent_error(inner));
        };
        let res = yk.verify_pin(pin.expose_secret().as_bytes());
        match res {
            Ok(()) => {
                inner.verified = true;
                Ok(())
            }
            Err(yubikey::Error::WrongPin { tries }) => {
                inner.pin.reject();
                inner.verified = false;
                if tries == 0 {
                    warn!(token = %self.cfg.name, "wrong PIN: the PIN is now blocked");
                    Err(TokenError::PinLocked(self.cfg.name.clone()))
                } else {
                    warn!(token = %self.cfg.name, tries, "wrong PIN");
                    Err(TokenError::PinIncorrect {
                        token: self.cfg.name.clone(),
                        hint: format!(
                            " ({tries} {} left before the PIN is blocked)",
                            if tries == 1 { "try" } else { "tries" }
                        ),
                        tries_left: Some(u32::from(tries)),
                    })
                }
            }
            Err(yubikey::Error::PinLocked) => {
                inner.pin.reject();
                Err(TokenError::PinLocked(self.cfg.name.clone()))
            }
            Err(e) if is_gone(&e) => Err(self.gone(inner, &e)),
            Err(e) => Err(TokenError::Piv {
                op: "VERIFY",
                reason: e.to_string(),
            }),
        }
    }

    fn gone(&self, inner: &mut Inner, e: &yubikey::Error) -> TokenError {
        let removed = !matches!(pcsc_inner(e), Some(pcsc::Error::ResetCard));
        debug!(token = %self.cfg.name, "card gone: {e}");
        self.drop_card(inner, removed);
        if removed {
            self.absent_error(inner)
        } else {
            TokenError::Retry
        }
    }

    fn list(&self, inner: &mut Inner) -> Result<Vec<KeyEntry>, TokenError> {
        if let Some(k) = &inner.keys {
            return Ok(k.clone());
        }
        let Some(yk) = inner.yk.as_mut() else {
            return Err(self.absent_error(inner));
        };
        let has_metadata =
            yk.version().major > 5 || (yk.version().major == 5 && yk.version().minor >= 3);
        let mut keys = Vec::new();
        let mut slots = HashMap::new();
        for b in SLOTS {
            let Ok(slot) = SlotId::try_from(b) else {
                continue;
            };
            let certificate = match Certificate::read(yk, slot) {
                Ok(c) => c.cert.to_der().ok(),
                Err(e) if is_gone(&e) => {
                    let err = self.gone(inner, &e);
                    return Err(err);
                }
                Err(_) => None,
            };
            let meta = if has_metadata {
                match piv::metadata(yk, slot) {
                    Ok(m) => Some(m),
                    Err(e) if is_gone(&e) => {
                        let err = self.gone(inner, &e);
                        return Err(err);
                    }
                    Err(_) => None,
                }
            } else {
                None
            };
            let public = match (&meta, &certificate) {
                (Some(m), _) if m.public.is_some() => m.public.as_ref().map(public_from_spki),
                (_, Some(der)) => x509_cert::Certificate::from_der(der)
                    .ok()
                    .map(|c| public_from_spki(c.tbs_certificate().subject_public_key_info())),
                _ => None,
            };
            let Some(public) = public else { continue };
            let Some(alg) = alg_of(&public) else {
                debug!(token = %self.cfg.name, slot = b, "skipping a key of an unsupported kind");
                continue;
            };
            let (pin, touch) = match meta.as_ref().and_then(|m| m.policy) {
                Some((p, t)) => (
                    match p {
                        PinPolicy::Never => PinUse::Never,
                        PinPolicy::Always => PinUse::Always,
                        PinPolicy::Once => PinUse::Once,
                        PinPolicy::Default => default_pin_use(b),
                    },
                    match t {
                        TouchPolicy::Always => Touch::Always,
                        TouchPolicy::Cached => Touch::Cached,
                        _ => Touch::Never,
                    },
                ),
                None => (default_pin_use(b), Touch::Never),
            };
            let origin = meta.as_ref().and_then(|m| m.origin).map(|o| match o {
                piv::Origin::Generated => "generated",
                piv::Origin::Imported => "imported",
            });
            if let Some(m) = &meta {
                if !matches!(m.algorithm, SlotAlgorithmId::Asymmetric(a) if a == alg) {
                    debug!(token = %self.cfg.name, slot = b, "metadata algorithm differs from the certificate's key");
                }
            }
            let is_rsa = matches!(public, PublicKey::Rsa { .. });
            let chain = certificate
                .as_deref()
                .map(|c| cert::issuer_chain(c, &self.cfg.chain_pool))
                .unwrap_or_default();
            keys.push(KeyEntry {
                label: slot_name(b),
                id: vec![b],
                public,
                can_sign: true,
                can_decrypt: is_rsa,
                can_derive: !is_rsa,
                certificate,
                chain,
                touch: Some(touch.name().into()),
                pin_policy: Some(pin.name().into()),
            });
            slots.insert(
                b,
                SlotKey {
                    alg,
                    pin,
                    touch,
                    origin,
                },
            );
        }
        inner.slots = slots;
        inner.keys = Some(keys.clone());
        Ok(keys)
    }

    /// Runs a private-key operation on `slot`: connects, verifies the PIN as the slot's
    /// policy says, tells about touch, and retries once after a card reset.
    fn private_op<T>(
        &self,
        b: u8,
        what: &'static str,
        op: impl Fn(&mut YubiKey, SlotId, AlgorithmId) -> Result<T, yubikey::Error>,
    ) -> Result<T, TokenError> {
        let (_, slot) = to_slot(&[b])?;
        for attempt in 0..2 {
            let mut inner = self.lock_inner();
            self.connect(&mut inner)?;
            self.list(&mut inner)?;
            let Some(sk) = inner.slots.get(&b).cloned() else {
                return Err(TokenError::NoSuchKey(format!(
                    "{} (slot {b:02x} is empty on {})",
                    slot_name(b),
                    self.card_label(&inner)
                )));
            };
            match self.ensure_pin(&mut inner, sk.pin) {
                Err(TokenError::Retry) if attempt == 0 => continue,
                r => r?,
            }
            if sk.touch != Touch::Never {
                info!(token = %self.cfg.name, slot = b, "touch the key now ({what}; touch policy {})", sk.touch.name());
            }
            let Some(yk) = inner.yk.as_mut() else {
                return Err(self.absent_error(&inner));
            };
            match op(yk, slot, sk.alg) {
                Ok(v) => return Ok(v),
                Err(e) if is_gone(&e) => {
                    let err = self.gone(&mut inner, &e);
                    if matches!(err, TokenError::Retry) && attempt == 0 {
                        continue;
                    }
                    return Err(if matches!(err, TokenError::Retry) {
                        self.absent_error(&inner)
                    } else {
                        err
                    });
                }
                Err(yubikey::Error::AuthenticationError) | Err(yubikey::Error::WrongPin { .. }) => {
                    // security status not satisfied: the card forgot the PIN (another
                    // program reset it, or PIN-always): verify again and retry once
                    inner.verified = false;
                    if attempt == 0 && inner.pin.has_cached() {
                        continue;
                    }
                    return Err(TokenError::PinRequired(self.cfg.name.clone()));
                }
                Err(e) => {
                    return Err(TokenError::Piv {
                        op: what,
                        reason: e.to_string(),
                    })
                }
            }
        }
        Err(TokenError::Piv {
            op: what,
            reason: "the card was reset twice during the operation".into(),
        })
    }

    fn key(&self, id: &[u8]) -> Result<KeyEntry, TokenError> {
        let (b, _) = to_slot(id)?;
        self.keys()?
            .into_iter()
            .find(|k| k.id == [b])
            .ok_or_else(|| {
                TokenError::NoSuchKey(format!("{} (slot {b:02x} is empty)", slot_name(b)))
            })
    }

    /// Called by the hot-plug watcher: `present` = a card is in the reader this store
    /// last used (or any reader, when it never connected).
    pub fn reader_event(&self, reader: &str, present: bool) {
        let mut inner = self.lock_inner();
        if inner.facts.reader.is_empty() || inner.facts.reader != reader {
            return;
        }
        if !present {
            if inner.yk.is_some() || !inner.absent {
                info!(token = %self.cfg.name, reader, "card removed");
            }
            self.drop_card(&mut inner, true);
        } else if inner.absent {
            inner.absent = false;
            info!(token = %self.cfg.name, reader, "card inserted");
        }
    }

    fn authenticate_admin(
        &self,
        yk: &mut YubiKey,
        mgm_key: Option<&[u8]>,
        warnings: &mut Vec<String>,
    ) -> Result<(), TokenError> {
        let fail = |reason: String| TokenError::Piv {
            op: "management key authentication",
            reason,
        };
        if let Some(bytes) = mgm_key {
            let key = MgmKey::from_bytes(bytes, None).map_err(|e| {
                TokenError::Invalid(format!(
                    "management key: {e} (give 24 bytes for 3DES/AES-192, 16 or 32 for AES)"
                ))
            })?;
            return yk.authenticate(&key).map_err(|_| {
                fail(
                    "the management key was refused by the card: check it (nothing was changed)"
                        .into(),
                )
            });
        }
        // A PIN-protected management key (ykman --protect), once the PIN is verified.
        if let Ok(key) = MgmKey::get_protected(yk) {
            if yk.authenticate(&key).is_ok() {
                return Ok(());
            }
        }
        let default = MgmKey::get_default(yk).map_err(|e| fail(e.to_string()))?;
        if yk.authenticate(&default).is_ok() {
            warnings.push(format!(
                "card {} uses the factory default management key: anyone holding it can replace keys and certificates; change it (ykman piv access change-management-key --protect)",
                u32::from(yk.serial())
            ));
            return Ok(());
        }
        Err(TokenError::Invalid(
            "the card's management key is not the default: give it with --management-key-file FILE (hex)".into(),
        ))
    }
}

/// When the management key could not be found and the PIN (which may unlock a
/// PIN-protected management key) was missing or wrong, the PIN is what to ask for.
fn pin_first(e: TokenError, pin: Result<(), TokenError>) -> TokenError {
    match (e, pin) {
        (
            TokenError::Invalid(_),
            Err(
                p @ (TokenError::PinRequired(_)
                | TokenError::PinIncorrect { .. }
                | TokenError::PinLocked(_)),
            ),
        ) => p,
        (e, _) => e,
    }
}

fn pin_warnings(yk: &mut YubiKey) -> Vec<String> {
    let mut out = Vec::new();
    let v = yk.version();
    if v.major > 5 || (v.major == 5 && v.minor >= 3) {
        for (b, what) in [(0x80u8, "PIN"), (0x81, "PUK")] {
            let Ok(slot) = SlotId::try_from(b) else {
                continue;
            };
            if let Ok(m) = piv::metadata(yk, slot) {
                if m.default == Some(true) {
                    out.push(format!("the {what} is the factory default: change it"));
                }
                if let Some(r) = m.retries {
                    if r.remaining_count == 0 {
                        out.push(format!("the {what} is blocked"));
                    } else if r.remaining_count < r.retry_count {
                        out.push(format!("{} {what} tries left", r.remaining_count));
                    }
                }
            }
        }
    }
    out
}

impl KeyStore for PivStore {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn status(&self) -> TokenStatus {
        let mut inner = self.lock_inner();
        if inner.pin.expire() {
            inner.verified = false;
        }
        let present = self.connect(&mut inner).is_ok();
        if present {
            // Counters change (wrong PINs, another program): read them now.
            let verified = inner.verified;
            if let Some(yk) = inner.yk.as_mut() {
                inner.pin_warnings = pin_warnings(yk);
            }
            inner.verified = verified;
        }
        TokenStatus {
            label: self.cfg.name.clone(),
            serial: inner
                .facts
                .serial
                .or(self.cfg.serial)
                .map(|s| s.to_string())
                .unwrap_or_default(),
            model: if inner.facts.version.is_empty() {
                "PIV card".into()
            } else {
                format!("PIV card (YubiKey-compatible {})", inner.facts.version)
            },
            backend: format!(
                "piv:{}",
                if inner.facts.reader.is_empty() {
                    "pcsc"
                } else {
                    &inner.facts.reader
                }
            ),
            present,
            logged_in: present && inner.verified,
            pin_source: inner.pin.source_kind().to_string(),
            locked: inner.pin.locked,
            pin_warnings: inner.pin_warnings.clone(),
        }
    }

    fn keys(&self) -> Result<Vec<KeyEntry>, TokenError> {
        let mut inner = self.lock_inner();
        for _ in 0..2 {
            self.connect(&mut inner)?;
            match self.list(&mut inner) {
                Err(TokenError::Retry) => continue,
                r => return r,
            }
        }
        Err(self.absent_error(&inner))
    }

    fn login(&self, pin: Option<SecretString>) -> Result<(), TokenError> {
        if pin.as_ref().is_some_and(|p| p.expose_secret().is_empty()) {
            return Err(TokenError::Invalid(
                "empty PIN; nothing was sent to the card".into(),
            ));
        }
        let mut inner = self.lock_inner();
        self.connect(&mut inner)?;
        // A card reset by another program answers the first command with "reset": reopen.
        if let Some(yk) = inner.yk.as_mut() {
            if let Err(e) = yk.get_pin_retries() {
                if is_gone(&e) {
                    let _ = self.gone(&mut inner, &e);
                    self.connect(&mut inner)?;
                }
            }
        }
        let (pin, from_client) = match pin {
            Some(p) => (p, true),
            None => match inner.pin.read_source() {
                Ok(Some(p)) => (p, false),
                Ok(None) => return Err(TokenError::PinRequired(self.cfg.name.clone())),
                Err(msg) => return Err(TokenError::PinSource(msg)),
            },
        };
        self.verify(&mut inner, &pin)?;
        inner.pin.remember(pin, from_client);
        info!(token = %self.cfg.name, "PIN verified");
        Ok(())
    }

    fn lock(&self) {
        let mut inner = self.lock_inner();
        inner.pin.lock();
        // Resetting the card session (dropping the connection resets it) unverifies the PIN.
        self.drop_card(&mut inner, false);
        info!(token = %self.cfg.name, "locked: PIN forgotten and card session reset");
    }

    fn release(&self) {
        let mut inner = self.lock_inner();
        self.drop_card(&mut inner, false);
        inner.pin.forget();
        info!(token = %self.cfg.name, "card released (reset), cached PIN forgotten");
    }

    fn expire_pin(&self) {
        let mut inner = self.lock_inner();
        if inner.pin.expire() {
            self.drop_card(&mut inner, false);
            info!(token = %self.cfg.name, "PIN cache time ran out: card session reset");
        }
    }

    fn sign_digest(
        &self,
        id: &[u8],
        scheme: SignatureScheme,
        digest: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        let key = self.key(id)?;
        super::check_sign(&key, scheme, digest)?;
        let h = scheme.hash();
        let input = match (&key.public, scheme) {
            (PublicKey::Rsa { modulus, .. }, SignatureScheme::RsaPkcs1v15(_)) => {
                let k = key.public.rsa_len().unwrap_or(modulus.len());
                pkcs1v15_sign_block(h, digest, k)?
            }
            (PublicKey::Rsa { modulus, .. }, SignatureScheme::RsaPss(_)) => {
                let bits = super::rsa_bits(modulus);
                pss_block(h, digest, bits)?
            }
            (PublicKey::P256(_), SignatureScheme::Ecdsa(_)) => {
                digest[..digest.len().min(32)].to_vec()
            }
            (PublicKey::P384(_), SignatureScheme::Ecdsa(_)) => {
                digest[..digest.len().min(48)].to_vec()
            }
            _ => {
                return Err(TokenError::KeyMismatch(format!(
                    "key {:?} is {}, which cannot make {} signatures",
                    key.label,
                    key.public.algorithm_name(),
                    scheme.name()
                )))
            }
        };
        let b = key.id[0];
        let raw = self.private_op(b, "sign", |yk, slot, a| {
            piv::sign_data(yk, &input, a, slot).map(|buf| buf.to_vec())
        })?;
        match &key.public {
            PublicKey::Rsa { modulus, exponent } => {
                // Check the card's result before it leaves the agent (a faulty RSA-CRT
                // signature would leak the key; a wrong one would only fail later).
                let k = key.public.rsa_len().unwrap_or(modulus.len());
                let sig = oaep::left_pad(&raw, k).map_err(|_| {
                    TokenError::KeyMismatch("the card returned an over-long RSA signature".into())
                })?;
                let n = rsa::BoxedUint::from_be_slice_vartime(modulus);
                let e = rsa::BoxedUint::from_be_slice_vartime(exponent);
                let pk = rsa::RsaPublicKey::new(n, e)
                    .map_err(|e| TokenError::KeyMismatch(format!("bad RSA public key: {e}")))?;
                let ok = match scheme {
                    SignatureScheme::RsaPkcs1v15(_) => {
                        pk.verify(super::pkcs1v15_scheme(h), digest, &sig).is_ok()
                    }
                    _ => pss_verify(&pk, h, digest, &sig),
                };
                if !ok {
                    return Err(TokenError::Piv {
                        op: "sign",
                        reason: "the card's signature does not verify with the slot's public key (wrong certificate in the slot?)".into(),
                    });
                }
                Ok(sig.to_vec())
            }
            _ => {
                // PIV returns a DER ECDSA signature; normalise it through the parser.
                let bad = || {
                    TokenError::KeyMismatch("the card returned a malformed ECDSA signature".into())
                };
                match &key.public {
                    PublicKey::P256(_) => Ok(p256::ecdsa::Signature::from_der(&raw)
                        .map_err(|_| bad())?
                        .to_der()
                        .as_bytes()
                        .to_vec()),
                    _ => Ok(p384::ecdsa::Signature::from_der(&raw)
                        .map_err(|_| bad())?
                        .to_der()
                        .as_bytes()
                        .to_vec()),
                }
            }
        }
    }

    fn decrypt(
        &self,
        id: &[u8],
        alg: KeyTransport,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        let key = self.key(id)?;
        let k = super::check_rsa_decrypt(&key)?;
        let hash = super::oaep_hash(alg)?;
        // The card takes exactly k bytes.
        let input = oaep::left_pad(wrapped, k).map_err(|_| TokenError::DecryptFailed)?;
        let raw = Zeroizing::new(
            self.private_op(key.id[0], "decrypt", |yk, slot, a| {
                piv::decrypt_data(yk, &input, a, slot).map(|buf| buf.to_vec())
            })
            .map_err(|e| match e {
                TokenError::Piv { .. } => TokenError::DecryptFailed,
                other => other,
            })?,
        );
        let em = oaep::left_pad(&raw, k).map_err(|_| TokenError::DecryptFailed)?;
        match hash {
            None => pkcs1v15_decrypt_block(&em).map_err(|_| TokenError::DecryptFailed),
            Some(h) => oaep::decode(&em, h).map_err(|_| TokenError::DecryptFailed),
        }
    }

    fn derive(&self, id: &[u8], peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        let key = self.key(id)?;
        let field = super::check_ecdh(&key, peer_point)?;
        let out = self.private_op(key.id[0], "ECDH", |yk, slot, a| {
            piv::decrypt_data(yk, peer_point, a, slot).map(|buf| buf.to_vec())
        })?;
        if out.len() != field {
            return Err(TokenError::KeyMismatch(
                "the card returned an ECDH secret of the wrong length".into(),
            ));
        }
        Ok(Zeroizing::new(out))
    }

    fn piv(&self) -> Option<&dyn PivAdmin> {
        Some(self)
    }
}

fn pss_verify(pk: &rsa::RsaPublicKey, h: HashAlg, digest: &[u8], sig: &[u8]) -> bool {
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

impl PivAdmin for PivStore {
    fn piv_status(&self) -> Result<PivStatus, TokenError> {
        let mut inner = self.lock_inner();
        self.connect(&mut inner)?;
        self.list(&mut inner)?;
        let keys = inner.keys.clone().unwrap_or_default();
        let Some(yk) = inner.yk.as_mut() else {
            return Err(self.absent_error(&inner));
        };
        let pin_tries = yk.get_pin_retries().ok();
        // get_pin_retries re-selects the applet, which unverifies the PIN
        let mut retries = HashMap::new();
        let v = yk.version();
        if v.major > 5 || (v.major == 5 && v.minor >= 3) {
            for b in [0x80u8, 0x81] {
                if let Ok(slot) = SlotId::try_from(b) {
                    if let Ok(m) = piv::metadata(yk, slot) {
                        retries.insert(b, (m.retries.map(|r| r.remaining_count), m.default));
                    }
                }
            }
        }
        let mgm_default = SlotId::try_from(0x9bu8)
            .ok()
            .and_then(|s| piv::metadata(yk, s).ok())
            .and_then(|m| m.default);
        inner.verified = false;
        let slots = keys
            .iter()
            .map(|k| {
                let b = k.id[0];
                let sk = inner.slots.get(&b);
                PivSlotInfo {
                    slot: format!("{b:02x}"),
                    name: slot_name(b),
                    algorithm: k.public.algorithm_name(),
                    pin_policy: sk.map(|s| s.pin.name()).unwrap_or("once").into(),
                    touch_policy: sk.map(|s| s.touch.name()).unwrap_or("never").into(),
                    origin: sk.and_then(|s| s.origin).unwrap_or("").into(),
                    certificate: k
                        .certificate
                        .as_deref()
                        .and_then(cert::facts)
                        .map(|f| f.summary),
                }
            })
            .collect();
        Ok(PivStatus {
            token: self.cfg.name.clone(),
            serial: inner
                .facts
                .serial
                .map(|s| s.to_string())
                .unwrap_or_default(),
            version: inner.facts.version.clone(),
            reader: inner.facts.reader.clone(),
            pin_tries_left: pin_tries.or_else(|| retries.get(&0x80).and_then(|r| r.0)),
            puk_tries_left: retries.get(&0x81).and_then(|r| r.0),
            default_pin: retries.get(&0x80).and_then(|r| r.1),
            default_puk: retries.get(&0x81).and_then(|r| r.1),
            default_management_key: mgm_default,
            slots,
        })
    }

    fn piv_keygen(&self, req: &PivKeygen) -> Result<(Vec<u8>, Vec<String>), TokenError> {
        let (b, slot) = to_slot(&[req.slot])?;
        let alg = match req.algorithm.as_str() {
            "rsa2048" | "rsa-2048" => AlgorithmId::Rsa2048,
            "p256" | "ec-p256" | "eccp256" => AlgorithmId::EccP256,
            "p384" | "ec-p384" | "eccp384" => AlgorithmId::EccP384,
            other => {
                return Err(TokenError::Invalid(format!(
                    "algorithm {other:?}: use rsa2048, p256 or p384"
                )))
            }
        };
        let pin_policy = match req.pin_policy.as_deref() {
            None | Some("default") => PinPolicy::Default,
            Some("never") => PinPolicy::Never,
            Some("once") => PinPolicy::Once,
            Some("always") => PinPolicy::Always,
            Some(o) => {
                return Err(TokenError::Invalid(format!(
                    "PIN policy {o:?}: use default, never, once or always"
                )))
            }
        };
        let touch_policy = match req.touch_policy.as_deref() {
            None | Some("default") => TouchPolicy::Default,
            Some("never") => TouchPolicy::Never,
            Some("always") => TouchPolicy::Always,
            Some("cached") => TouchPolicy::Cached,
            Some(o) => {
                return Err(TokenError::Invalid(format!(
                    "touch policy {o:?}: use default, never, always or cached"
                )))
            }
        };
        let mut inner = self.lock_inner();
        self.connect(&mut inner)?;
        // A PIN-protected management key is stored behind the PIN.
        let pin_state = self.ensure_pin(&mut inner, PinUse::Once);
        let mut warnings = Vec::new();
        let Some(yk) = inner.yk.as_mut() else {
            return Err(self.absent_error(&inner));
        };
        self.authenticate_admin(
            yk,
            req.management_key.as_ref().map(|k| k.as_slice()),
            &mut warnings,
        )
        .map_err(|e| pin_first(e, pin_state))?;
        let spki = piv::generate(yk, slot, alg, pin_policy, touch_policy).map_err(|e| {
            TokenError::Piv {
                op: "generate key",
                reason: e.to_string(),
            }
        })?;
        let der = spki.to_der().map_err(|e| TokenError::Piv {
            op: "generate key",
            reason: e.to_string(),
        })?;
        info!(token = %self.cfg.name, slot = b, "key generated on the card");
        inner.keys = None;
        inner.verified = false;
        // the slot's old certificate no longer matches: say so
        warnings.push(format!(
            "slot {b:02x} now holds a new key: import its certificate with `tokenmail piv import-cert --slot {b:02x} CERT`"
        ));
        Ok((der, warnings))
    }

    fn piv_import_cert(
        &self,
        slot: u8,
        der: &[u8],
        management_key: Option<&[u8]>,
    ) -> Result<Vec<String>, TokenError> {
        let (b, slot_id) = to_slot(&[slot])?;
        let parsed = x509_cert::Certificate::from_der(der)
            .map_err(|e| TokenError::Invalid(format!("the certificate does not parse: {e}")))?;
        let mut inner = self.lock_inner();
        self.connect(&mut inner)?;
        // The certificate must belong to the slot's key when the card tells us the key.
        self.list(&mut inner)?;
        let cert_pub = public_from_spki(parsed.tbs_certificate().subject_public_key_info());
        let Some(yk) = inner.yk.as_mut() else {
            return Err(self.absent_error(&inner));
        };
        let v = yk.version();
        if v.major > 5 || (v.major == 5 && v.minor >= 3) {
            match piv::metadata(yk, slot_id) {
                Ok(m) => {
                    if let Some(p) = m.public.as_ref().map(public_from_spki) {
                        if p != cert_pub {
                            return Err(TokenError::KeyMismatch(format!(
                                "the certificate's public key is not the key in slot {b:02x}: nothing was written"
                            )));
                        }
                    }
                }
                Err(_) => {
                    return Err(TokenError::KeyMismatch(format!(
                        "slot {b:02x} has no key: generate one first (tokenmail piv keygen --slot {b:02x})"
                    )))
                }
            }
        }
        let pin_state = self.ensure_pin(&mut inner, PinUse::Once);
        let mut warnings = Vec::new();
        let Some(yk) = inner.yk.as_mut() else {
            return Err(self.absent_error(&inner));
        };
        self.authenticate_admin(yk, management_key, &mut warnings)
            .map_err(|e| pin_first(e, pin_state))?;
        let c = Certificate::from_bytes(der.to_vec())
            .map_err(|e| TokenError::Invalid(format!("certificate: {e}")))?;
        c.write(yk, slot_id, yubikey::certificate::CertInfo::Uncompressed)
            .map_err(|e| TokenError::Piv {
                op: "write certificate",
                reason: e.to_string(),
            })?;
        info!(token = %self.cfg.name, slot = b, "certificate written");
        inner.keys = None;
        Ok(warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_parse() {
        assert_eq!(parse_slot("9c"), Some(0x9c));
        assert_eq!(parse_slot("0x9A"), Some(0x9a));
        assert_eq!(parse_slot("signature"), Some(0x9c));
        assert_eq!(parse_slot("retired1"), Some(0x82));
        assert_eq!(parse_slot("retired20"), Some(0x95));
        assert_eq!(parse_slot("retired21"), None);
        assert_eq!(parse_slot("9b"), None);
        assert_eq!(slot_name(0x83), "Retired Key Management 2");
    }

    #[test]
    fn pss_and_pkcs1_blocks_verify_with_rsa() {
        use rsa::traits::PublicKeyParts;
        let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
        let sk = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("keygen");
        let pk = sk.to_public_key();
        let digest = sha2::Sha256::digest(b"message").to_vec();
        let n = pk.n().to_be_bytes();
        let bits = super::super::rsa_bits(&n);
        for pss in [false, true] {
            let em = if pss {
                pss_block(HashAlg::Sha256, &digest, bits).expect("pss")
            } else {
                pkcs1v15_sign_block(HashAlg::Sha256, &digest, 256).expect("pkcs1")
            };
            // raw RSA private operation, as the card does
            let m = rsa::BoxedUint::from_be_slice_vartime(&em);
            let s = rsa::hazmat::rsa_decrypt_and_check(&sk, Some(&mut rng), &m).expect("raw");
            let sig = oaep::left_pad(&s.to_be_bytes(), 256).expect("pad");
            let ok = if pss {
                pss_verify(&pk, HashAlg::Sha256, &digest, &sig)
            } else {
                pk.verify(
                    super::super::pkcs1v15_scheme(HashAlg::Sha256),
                    &digest,
                    &sig,
                )
                .is_ok()
            };
            assert!(ok, "pss={pss}");
        }
    }

    #[test]
    fn pkcs1_decrypt_block_rules() {
        let mut em = vec![0u8; 256];
        em[1] = 2;
        for b in em.iter_mut().take(250).skip(2) {
            *b = 0x55;
        }
        em[250] = 0;
        em[251..].copy_from_slice(&[1, 2, 3, 4, 5]);
        assert_eq!(
            &pkcs1v15_decrypt_block(&em).expect("valid")[..],
            &[1, 2, 3, 4, 5]
        );
        let mut bad = em.clone();
        bad[1] = 1;
        assert!(pkcs1v15_decrypt_block(&bad).is_err());
        let mut short_ps = em.clone();
        short_ps[5] = 0; // padding shorter than 8 bytes
        assert!(pkcs1v15_decrypt_block(&short_ps).is_err());
        let mut no_sep = em;
        no_sep[250] = 7;
        assert!(pkcs1v15_decrypt_block(&no_sep).is_err());
    }
}
