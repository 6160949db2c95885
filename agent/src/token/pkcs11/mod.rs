//! A PKCS#11 token through `cryptoki`.
//!
//! One module context, one logged-in session (PKCS#11 login state is per application,
//! so every other session of the token shares it) and a pool of sessions for the
//! operations: a `cryptoki::Session` is `Send` but not `Sync`, so each operation takes a
//! session out of the pool, uses it on its own thread, and puts it back.
//!
//! When the token or a session goes away (removed, re-created, module re-initialised)
//! the next operation drops the pool, re-initialises the module, finds the token again
//! by label or serial, logs in again with the cached PIN and retries once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use secrecy::{ExposeSecret, SecretString};
use tokenmail_proto::v1::TokenStatus;
use tokenmail_smime::alg::{HashAlg, SignatureScheme};
use tokenmail_smime::envelope::KeyTransport;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use super::{oaep, strip_leading_zeros, KeyEntry, KeyStore, PublicKey, TokenError};
use crate::pin::{PinSource, PinState};

mod admin;
mod module;
mod objects;
mod ops;
mod session;

use module::*;
use objects::*;

/// DER of the P-256 curve OID (namedCurve in CKA_EC_PARAMS).
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the P-384 curve OID.
const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// How to find and use one PKCS#11 token.
#[derive(Clone, Debug)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module.
    pub module: PathBuf,
    /// Token label to look for.
    pub label: Option<String>,
    /// Token serial to look for.
    pub serial: Option<String>,
    /// Unattended PIN source.
    pub pin_source: PinSource,
    /// How long a client-supplied PIN is cached (`None` = until lock).
    pub pin_ttl: Option<Duration>,
    /// Most sessions open at once for operations.
    pub max_sessions: usize,
}

/// Token facts read at connect.
#[derive(Clone, Debug, Default)]
struct TokenFacts {
    label: String,
    serial: String,
    model: String,
}

struct Inner {
    /// The module context and the module epoch it belongs to.
    ctx: Option<(Pkcs11, u64)>,
    slot: Option<Slot>,
    facts: TokenFacts,
    /// Bumped at every reconnect; pooled sessions of older generations are dropped.
    generation: u64,
    login_session: Option<Session>,
    logged_in: bool,
    pin: PinState,
    pool: Vec<Session>,
    open: usize,
    keys: Option<Vec<KeyEntry>>,
    /// Private-key object handles by CKA_ID (valid for the connection's generation):
    /// searching the token for every operation costs more than a P-256 signature.
    handles: HashMap<Vec<u8>, ObjectHandle>,
    mechanisms: Vec<MechanismType>,
    /// Whether the token did OAEP with a given hash natively (learned on first use).
    oaep_native: HashMap<HashAlg, bool>,
    pin_warnings: Vec<String>,
}

/// A PKCS#11 token as a [`KeyStore`].
pub struct Pkcs11Store {
    cfg: Pkcs11Config,
    module: Arc<Module>,
    name: String,
    inner: Mutex<Inner>,
    freed: Condvar,
    /// How often the token's presence was checked after a failed call (a diagnostic:
    /// tests prove that a failed decryption does no more token I/O than a good one).
    presence_checks: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Pkcs11Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Store")
            .field("module", &self.cfg.module)
            .field("name", &self.name)
            .finish()
    }
}

/// Errors of the operation itself — the ciphertext or the input was wrong — which say
/// nothing about the token's presence. They are answered without any further token call,
/// so a failed decryption costs what a good one costs (no timing or I/O oracle).
fn is_operation_failure(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::DataInvalid
                | RvError::DataLenRange,
            _
        )
    )
}

/// Errors that mean the token, the session or the module went away.
fn is_gone(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::CryptokiNotInitialized
                | RvError::SlotIdInvalid,
            _
        )
    )
}

fn is_not_logged_in(e: &CkError) -> bool {
    matches!(e, CkError::Pkcs11(RvError::UserNotLoggedIn, _))
}

fn ck(op: &'static str) -> impl FnOnce(CkError) -> TokenError {
    move |source| TokenError::Pkcs11 { op, source }
}

#[derive(Clone, Copy)]
enum Need {
    Login,
    IfPossible,
}

/// Outcome of one try of an operation.
enum Try<T> {
    Done(T),
    Retry,
}
