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

mod admin;
mod encoding;
mod ops;
mod session;

use encoding::*;
use session::*;

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
