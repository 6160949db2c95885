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
}

impl std::fmt::Debug for Pkcs11Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Store")
            .field("module", &self.cfg.module)
            .field("name", &self.name)
            .finish()
    }
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

impl Pkcs11Store {
    /// Creates the store. Loads the module now (so a wrong path fails at start) but
    /// does not require the token to be present.
    pub fn new(cfg: Pkcs11Config) -> Result<Self, TokenError> {
        let name = cfg
            .label
            .clone()
            .or_else(|| cfg.serial.as_ref().map(|s| format!("serial:{s}")))
            .unwrap_or_else(|| "pkcs11".into());
        let module = Module::get(&cfg.module)?;
        let ctx = module.context()?;
        let pin = PinState::new(cfg.pin_source.clone(), cfg.pin_ttl);
        Ok(Pkcs11Store {
            name,
            inner: Mutex::new(Inner {
                ctx: Some(ctx),
                slot: None,
                facts: TokenFacts::default(),
                generation: 0,
                login_session: None,
                logged_in: false,
                pin,
                pool: Vec::new(),
                open: 0,
                keys: None,
                handles: HashMap::new(),
                mechanisms: Vec::new(),
                oaep_native: HashMap::new(),
                pin_warnings: Vec::new(),
            }),
            freed: Condvar::new(),
            module,
            cfg,
        })
    }

    /// Sessions currently open for operations (diagnostics and tests).
    pub fn sessions_open(&self) -> usize {
        self.lock_inner().open
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough state: recover it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finds the slot, reads token facts. Re-initialises the module when needed.
    fn connect(&self, inner: &mut Inner) -> Result<(), TokenError> {
        if inner.slot.is_some() {
            return Ok(());
        }
        if inner
            .ctx
            .as_ref()
            .is_none_or(|(_, e)| *e != self.module.epoch())
        {
            inner.ctx = Some(self.module.context()?);
        }
        let ctx = match &inner.ctx {
            Some((c, _)) => c.clone(),
            None => return Err(TokenError::NotPresent(self.name.clone())),
        };
        let slots = ctx.get_slots_with_token().map_err(ck("C_GetSlotList"))?;
        for slot in slots {
            let Ok(ti) = ctx.get_token_info(slot) else {
                continue;
            };
            let label_ok = self
                .cfg
                .label
                .as_deref()
                .is_none_or(|l| ti.label().trim_end() == l);
            let serial_ok = self
                .cfg
                .serial
                .as_deref()
                .is_none_or(|s| ti.serial_number().trim_end() == s);
            if label_ok && serial_ok && ti.token_initialized() {
                inner.slot = Some(slot);
                inner.facts = TokenFacts {
                    label: ti.label().trim_end().to_string(),
                    serial: ti.serial_number().trim_end().to_string(),
                    model: format!(
                        "{} {}",
                        ti.manufacturer_id().trim_end(),
                        ti.model().trim_end()
                    ),
                };
                inner.mechanisms = ctx.get_mechanism_list(slot).unwrap_or_default();
                inner.oaep_native.clear();
                inner.generation += 1;
                info!(token = %self.name, serial = %inner.facts.serial, "token connected");
                return Ok(());
            }
        }
        // Not there. Finalise the module so the next try sees tokens created since
        // (SoftHSM, among others, reads its token list at C_Initialize).
        self.drop_connection(inner, true);
        Err(TokenError::NotPresent(self.name.clone()))
    }

    /// Drops sessions and login state; with `finalize`, the module context too.
    fn drop_connection(&self, inner: &mut Inner, finalize: bool) {
        inner.pool.clear();
        inner.open = 0;
        inner.login_session = None;
        inner.logged_in = false;
        inner.slot = None;
        inner.keys = None;
        inner.handles.clear();
        inner.generation += 1;
        if finalize {
            if let Some((_, epoch)) = inner.ctx.take() {
                self.module.reinit(epoch);
            }
        }
        self.freed.notify_all();
    }

    /// Logs in with whatever PIN may be used now. Returns Ok(false) when none is available.
    fn try_login(&self, inner: &mut Inner) -> Result<bool, TokenError> {
        if inner.logged_in {
            return Ok(true);
        }
        let pin = match inner.pin.current() {
            Ok(Some(pin)) => pin,
            Ok(None) => return Ok(false),
            Err(msg) => {
                warn!(token = %self.name, "{msg}");
                return Ok(false);
            }
        };
        self.login_with(inner, pin, false).map(|_| true)
    }

    fn login_with(
        &self,
        inner: &mut Inner,
        pin: SecretString,
        from_client: bool,
    ) -> Result<(), TokenError> {
        self.connect(inner)?;
        let (ctx, slot) = match (&inner.ctx, inner.slot) {
            (Some((c, _)), Some(s)) => (c.clone(), s),
            _ => return Err(TokenError::NotPresent(self.name.clone())),
        };
        if inner.login_session.is_none() {
            inner.login_session = Some(ctx.open_ro_session(slot).map_err(ck("C_OpenSession"))?);
        }
        let sess = inner
            .login_session
            .as_ref()
            .ok_or_else(|| TokenError::NotPresent(self.name.clone()))?;
        // CKR_USER_ALREADY_LOGGED_IN: PKCS#11 login state is per process and token, and
        // another store on the same token logged in. Logging out to re-check this PIN would
        // pull the login from under that store's running operations, so it is accepted.
        match sess.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                inner.logged_in = true;
                inner.keys = None;
                inner.pin.remember(pin, from_client);
                inner.pin_warnings.clear();
                info!(token = %self.name, "logged in");
                Ok(())
            }
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                inner.pin.reject();
                let warnings = pin_warnings(&ctx, slot);
                let hint = if warnings.iter().any(|w| w == "locked") {
                    return Err(TokenError::PinLocked(self.name.clone()));
                } else if warnings.iter().any(|w| w == "final-try") {
                    " (one try left before the PIN is blocked)".to_string()
                } else if warnings.iter().any(|w| w == "count-low") {
                    " (the token reports few tries left)".to_string()
                } else {
                    " (the token does not report tries left; nothing was retried)".to_string()
                };
                let final_try = warnings.iter().any(|w| w == "final-try");
                inner.pin_warnings = warnings;
                warn!(token = %self.name, "login refused: wrong PIN");
                let tries_left = final_try.then_some(1);
                Err(TokenError::PinIncorrect {
                    token: self.name.clone(),
                    hint,
                    tries_left,
                })
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                inner.pin.reject();
                Err(TokenError::PinLocked(self.name.clone()))
            }
            Err(e) if is_gone(&e) => {
                self.drop_connection(inner, true);
                Err(TokenError::NotPresent(self.name.clone()))
            }
            Err(e) => Err(TokenError::Pkcs11 {
                op: "C_Login",
                source: e,
            }),
        }
    }

    /// Takes a session for an operation: connected, logged in as `need` says.
    fn acquire(&self, need: Need) -> Result<(Session, u64), TokenError> {
        let mut inner = self.lock_inner();
        self.connect(&mut inner)?;
        let logged = self.try_login(&mut inner)?;
        if !logged && matches!(need, Need::Login) {
            return Err(TokenError::PinRequired(self.name.clone()));
        }
        loop {
            if let Some(s) = inner.pool.pop() {
                return Ok((s, inner.generation));
            }
            if inner.open < self.cfg.max_sessions.max(1) {
                let (ctx, slot) = match (&inner.ctx, inner.slot) {
                    (Some((c, _)), Some(s)) => (c.clone(), s),
                    _ => return Err(TokenError::NotPresent(self.name.clone())),
                };
                let s = ctx.open_ro_session(slot);
                match s {
                    Ok(s) => {
                        inner.open += 1;
                        return Ok((s, inner.generation));
                    }
                    Err(e) if is_gone(&e) => {
                        self.drop_connection(&mut inner, true);
                        return Err(TokenError::NotPresent(self.name.clone()));
                    }
                    Err(e) => {
                        return Err(TokenError::Pkcs11 {
                            op: "C_OpenSession",
                            source: e,
                        })
                    }
                }
            }
            inner = self.freed.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn give_back(&self, s: Session, generation: u64) {
        let mut inner = self.lock_inner();
        if inner.generation == generation {
            inner.pool.push(s);
        }
        // else: the connection was reset; dropping `s` closes it (or fails harmlessly).
        self.freed.notify_one();
    }

    /// Runs `f` with a pooled session, reconnecting and retrying once if the token went away.
    fn with_session<T>(
        &self,
        need: Need,
        f: impl Fn(&Session) -> Result<T, CkError>,
        op: &'static str,
    ) -> Result<T, TokenError> {
        for attempt in 0..2 {
            let (sess, generation) = match self.acquire(need) {
                Ok(x) => x,
                Err(TokenError::NotPresent(_)) if attempt == 0 => continue,
                Err(e) => return Err(e),
            };
            // The token call runs without the store's lock held.
            let res = f(&sess);
            match self.after(res, sess, generation, attempt, op)? {
                Try::Done(v) => return Ok(v),
                Try::Retry => continue,
            }
        }
        Err(TokenError::NotPresent(self.name.clone()))
    }

    fn after<T>(
        &self,
        res: Result<T, CkError>,
        sess: Session,
        generation: u64,
        attempt: u32,
        op: &'static str,
    ) -> Result<Try<T>, TokenError> {
        match res {
            Ok(v) => {
                self.give_back(sess, generation);
                Ok(Try::Done(v))
            }
            Err(e) if is_gone(&e) => {
                drop(sess);
                let mut inner = self.lock_inner();
                if inner.generation == generation {
                    warn!(token = %self.name, "token or session went away ({e}); reconnecting");
                    self.drop_connection(&mut inner, true);
                }
                if attempt == 0 {
                    Ok(Try::Retry)
                } else {
                    Err(TokenError::NotPresent(self.name.clone()))
                }
            }
            Err(e) if is_not_logged_in(&e) && attempt == 0 => {
                let mut inner = self.lock_inner();
                if inner.generation == generation {
                    inner.logged_in = false;
                }
                drop(inner);
                self.give_back(sess, generation);
                Ok(Try::Retry)
            }
            Err(CkError::Pkcs11(RvError::UserNotLoggedIn, _)) => {
                self.give_back(sess, generation);
                Err(TokenError::PinRequired(self.name.clone()))
            }
            Err(CkError::Pkcs11(RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid, _))
                if attempt == 0 && self.lock_inner().handles.keys().next().is_some() =>
            {
                // A cached handle went stale (object re-created): search again.
                self.lock_inner().handles.clear();
                self.give_back(sess, generation);
                Ok(Try::Retry)
            }
            Err(e) => {
                // Some modules keep sessions valid when their token is deleted or replaced
                // (SoftHSM: objects just vanish). Check that the token is still the one we
                // connected to before blaming the request.
                if !self.still_there(generation) {
                    drop(sess);
                    warn!(token = %self.name, "token went away ({e}); reconnecting");
                    return if attempt == 0 {
                        Ok(Try::Retry)
                    } else {
                        Err(TokenError::NotPresent(self.name.clone()))
                    };
                }
                self.give_back(sess, generation);
                Err(TokenError::Pkcs11 { op, source: e })
            }
        }
    }

    /// True if the slot still holds the token (same serial) of connection `generation`;
    /// otherwise drops the connection so the next attempt finds the token again.
    fn still_there(&self, generation: u64) -> bool {
        let mut inner = self.lock_inner();
        if inner.generation != generation {
            return false;
        }
        let same = match (&inner.ctx, inner.slot) {
            (Some((ctx, _)), Some(slot)) => ctx.get_token_info(slot).is_ok_and(|ti| {
                ti.token_initialized() && ti.serial_number().trim_end() == inner.facts.serial
            }),
            _ => false,
        };
        if !same {
            self.drop_connection(&mut inner, true);
        }
        same
    }

    /// Finds a key for a private-key operation: requires a login first, so that a
    /// missing PIN is reported as such rather than as a missing key.
    fn find_key(&self, id: &[u8]) -> Result<KeyEntry, TokenError> {
        {
            let mut inner = self.lock_inner();
            self.connect(&mut inner)?;
            if !self.try_login(&mut inner)? {
                return Err(TokenError::PinRequired(self.name.clone()));
            }
        }
        {
            let inner = self.lock_inner();
            if let (Some(keys), true) = (&inner.keys, inner.slot.is_some()) {
                return keys
                    .iter()
                    .find(|k| k.id == id)
                    .cloned()
                    .ok_or_else(|| TokenError::NoSuchKey(hex::encode(id)));
            }
        }
        self.keys()?
            .into_iter()
            .find(|k| k.id == id)
            .ok_or_else(|| TokenError::NoSuchKey(hex::encode(id)))
    }

    /// The private key's object handle: from the cache, else searched once.
    fn key_handle(&self, sess: &Session, id: &[u8]) -> Result<ObjectHandle, CkError> {
        if let Some(h) = self.lock_inner().handles.get(id) {
            return Ok(*h);
        }
        let found = sess.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(id.to_vec()),
        ])?;
        let h = found.into_iter().next().ok_or(CkError::Pkcs11(
            RvError::KeyHandleInvalid,
            cryptoki::context::Function::FindObjects,
        ))?;
        self.lock_inner().handles.insert(id.to_vec(), h);
        Ok(h)
    }

    /// Whether OAEP with `hash` ran on the token (`Some(true)`), through CKM_RSA_X_509 with
    /// in-process decoding (`Some(false)`), or has not been used yet (`None`).
    pub fn oaep_path(&self, hash: HashAlg) -> Option<bool> {
        self.lock_inner().oaep_native.get(&hash).copied()
    }

    /// Whether the token lists `m` (an empty list — a module that does not answer — counts as yes).
    fn has_mechanism(&self, m: MechanismType) -> bool {
        let inner = self.lock_inner();
        inner.mechanisms.is_empty() || inner.mechanisms.contains(&m)
    }

    fn require(&self, m: MechanismType, what: &str) -> Result<(), TokenError> {
        if self.has_mechanism(m) {
            Ok(())
        } else {
            Err(TokenError::Mechanism(format!("{what} ({m})")))
        }
    }

    fn set_oaep_path(&self, hash: HashAlg, native: bool) {
        self.lock_inner().oaep_native.insert(hash, native);
    }
}

/// A PKCS#11 module, loaded once per process: C_Initialize is process-wide, so every
/// token on the same module shares one context. Re-initialising it (to see tokens
/// created since, after a token went away) bumps its epoch; stores holding sessions of
/// an older epoch reconnect.
#[derive(Debug)]
struct Module {
    path: PathBuf,
    state: Mutex<(Option<Pkcs11>, u64)>,
}

static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();

impl Module {
    fn get(path: &std::path::Path) -> Result<Arc<Module>, TokenError> {
        let mut all = MODULES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(m) = all.get(path) {
            return Ok(m.clone());
        }
        let m = Arc::new(Module {
            path: path.to_path_buf(),
            state: Mutex::new((Some(load_module(path)?), 0)),
        });
        all.insert(path.to_path_buf(), m.clone());
        Ok(m)
    }

    fn lock(&self) -> MutexGuard<'_, (Option<Pkcs11>, u64)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn epoch(&self) -> u64 {
        self.lock().1
    }

    /// The live context (initialising the module again if it was finalised).
    fn context(&self) -> Result<(Pkcs11, u64), TokenError> {
        let mut st = self.lock();
        if st.0.is_none() {
            st.0 = Some(load_module(&self.path)?);
        }
        match &st.0 {
            Some(c) => Ok((c.clone(), st.1)),
            None => Err(TokenError::Module {
                module: self.path.display().to_string(),
                reason: "not initialised".into(),
            }),
        }
    }

    /// Finalises the module if nobody did since `seen_epoch`.
    fn reinit(&self, seen_epoch: u64) {
        let mut st = self.lock();
        if st.1 != seen_epoch {
            return;
        }
        if let Some(ctx) = st.0.take() {
            if let Err(e) = ctx.finalize() {
                debug!(module = %self.path.display(), "C_Finalize: {e}");
            }
        }
        st.1 += 1;
    }
}

fn load_module(path: &std::path::Path) -> Result<Pkcs11, TokenError> {
    let ctx = Pkcs11::new(path).map_err(|e| TokenError::Module {
        module: path.display().to_string(),
        reason: e.to_string(),
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(e) => Err(TokenError::Module {
            module: path.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

fn pin_warnings(ctx: &Pkcs11, slot: Slot) -> Vec<String> {
    let mut w = Vec::new();
    if let Ok(ti) = ctx.get_token_info(slot) {
        if ti.user_pin_locked() {
            w.push("locked".into());
        }
        if ti.user_pin_final_try() {
            w.push("final-try".into());
        }
        if ti.user_pin_count_low() {
            w.push("count-low".into());
        }
    }
    w
}

/// Unwraps a DER OCTET STRING around an EC point if present (tokens differ).
fn unwrap_ec_point(raw: &[u8]) -> Vec<u8> {
    use der::Decode;
    match der::asn1::OctetString::from_der(raw) {
        Ok(os) if matches!(os.as_bytes().first(), Some(0x04)) => os.as_bytes().to_vec(),
        _ => raw.to_vec(),
    }
}

fn ec_point_from_cert(cert: &[u8]) -> Option<Vec<u8>> {
    use der::Decode;
    let c = x509_cert::Certificate::from_der(cert).ok()?;
    c.tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .as_bytes()
        .map(|b| b.to_vec())
}

fn list_keys(sess: &Session) -> Result<Vec<KeyEntry>, CkError> {
    // CKA_ID → (certificate DER, certificate CKA_LABEL)
    let mut certs: HashMap<Vec<u8>, (Vec<u8>, String)> = HashMap::new();
    for h in sess.find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)])? {
        let attrs = sess.get_attributes(
            h,
            &[
                AttributeType::Id,
                AttributeType::Value,
                AttributeType::Label,
            ],
        )?;
        let (mut id, mut value, mut label) = (None, None, String::new());
        for a in attrs {
            match a {
                Attribute::Id(v) => id = Some(v),
                Attribute::Value(v) => value = Some(v),
                Attribute::Label(v) => label = String::from_utf8_lossy(&v).into_owned(),
                _ => {}
            }
        }
        if let (Some(id), Some(v)) = (id, value) {
            certs.entry(id).or_insert((v, label));
        }
    }
    let mut points: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for h in sess.find_objects(&[
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC),
    ])? {
        let attrs = sess.get_attributes(h, &[AttributeType::Id, AttributeType::EcPoint])?;
        let (mut id, mut point) = (None, None);
        for a in attrs {
            match a {
                Attribute::Id(v) => id = Some(v),
                Attribute::EcPoint(v) => point = Some(unwrap_ec_point(&v)),
                _ => {}
            }
        }
        if let (Some(id), Some(p)) = (id, point) {
            points.insert(id, p);
        }
    }
    // Private keys when logged in; before login only public objects are visible: public
    // keys, or else certificates, stand in for their private halves in listings.
    let mut handles = sess.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])?;
    let public_only = handles.is_empty();
    if public_only {
        handles = sess.find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY)])?;
        if handles.is_empty() {
            return Ok(keys_from_certificates(certs));
        }
    }
    let mut keys = Vec::new();
    for h in handles {
        let attrs = sess.get_attributes(
            h,
            &[
                AttributeType::Label,
                AttributeType::Id,
                AttributeType::KeyType,
                AttributeType::Modulus,
                AttributeType::PublicExponent,
                AttributeType::EcParams,
                AttributeType::Sign,
                AttributeType::Decrypt,
                AttributeType::Derive,
                AttributeType::Verify,
                AttributeType::Encrypt,
            ],
        )?;
        let mut label = String::new();
        let mut id = Vec::new();
        let mut kt = None;
        let (mut modulus, mut exponent, mut params) = (Vec::new(), Vec::new(), Vec::new());
        let (mut sign, mut decrypt, mut derive) = (false, false, false);
        for a in attrs {
            match a {
                Attribute::Label(v) => label = String::from_utf8_lossy(&v).into_owned(),
                Attribute::Id(v) => id = v,
                Attribute::KeyType(t) => kt = Some(t),
                Attribute::Modulus(v) => modulus = v,
                Attribute::PublicExponent(v) => exponent = v,
                Attribute::EcParams(v) => params = v,
                Attribute::Sign(b) | Attribute::Verify(b) => sign |= b,
                Attribute::Decrypt(b) | Attribute::Encrypt(b) => decrypt |= b,
                Attribute::Derive(b) => derive = b,
                _ => {}
            }
        }
        let cert = certs.get(&id).map(|(der, _)| der.clone());
        let public = match kt {
            Some(t) if t == KeyType::RSA => PublicKey::Rsa {
                modulus: strip_leading_zeros(&modulus).to_vec(),
                exponent,
            },
            Some(t) if t == KeyType::EC => {
                let point = points
                    .get(&id)
                    .cloned()
                    .or_else(|| cert.as_deref().and_then(ec_point_from_cert))
                    .unwrap_or_default();
                if params == P256_PARAMS {
                    PublicKey::P256(point)
                } else if params == P384_PARAMS {
                    PublicKey::P384(point)
                } else {
                    PublicKey::Other(format!("ec-{}", hex::encode(&params)))
                }
            }
            Some(t) => PublicKey::Other(format!("{t}")),
            None => PublicKey::Other("unknown".into()),
        };
        // Report only what the algorithm can do: SoftHSM marks EC keys CKA_DECRYPT, and EC
        // public keys may lack CKA_DERIVE (their private halves usually have it).
        let is_ec = matches!(public, PublicKey::P256(_) | PublicKey::P384(_));
        decrypt &= matches!(public, PublicKey::Rsa { .. });
        derive = is_ec && (derive || public_only);
        keys.push(KeyEntry {
            label,
            id,
            public,
            can_sign: sign,
            can_decrypt: decrypt,
            can_derive: derive,
            certificate: cert,
            chain: Vec::new(),
            touch: None,
            pin_policy: None,
        });
    }
    keys.sort_by(|a, b| a.id.cmp(&b.id).then(a.label.cmp(&b.label)));
    let all: Vec<Vec<u8>> = certs.into_values().map(|(der, _)| der).collect();
    for k in &mut keys {
        if let Some(c) = &k.certificate {
            k.chain = super::cert::issuer_chain(c, &all);
        }
    }
    Ok(keys)
}

/// Key entries from certificate objects alone (tokens that hide every key before login).
fn keys_from_certificates(certs: HashMap<Vec<u8>, (Vec<u8>, String)>) -> Vec<KeyEntry> {
    use der::{Decode, Encode};
    let all: Vec<Vec<u8>> = certs.values().map(|(der, _)| der.clone()).collect();
    let mut keys: Vec<KeyEntry> = certs
        .into_iter()
        .filter_map(|(id, (der, cert_label))| {
            let cert = x509_cert::Certificate::from_der(&der).ok()?;
            // CA certificates on the token (chains) are not keys of ours.
            if let Ok(Some(bc)) = cert
                .tbs_certificate()
                .get_extension::<x509_cert::ext::pkix::BasicConstraints>()
            {
                if bc.1.ca {
                    return None;
                }
            }
            let spki = cert.tbs_certificate().subject_public_key_info();
            let bits = spki.subject_public_key.as_bytes()?.to_vec();
            let alg = spki.algorithm.oid;
            let public = if alg == const_oid::db::rfc5912::RSA_ENCRYPTION {
                let spki_der = spki.to_der().ok()?;
                let pk = <rsa::RsaPublicKey as rsa::pkcs8::DecodePublicKey>::from_public_key_der(
                    &spki_der,
                )
                .ok()?;
                use rsa::traits::PublicKeyParts;
                PublicKey::Rsa {
                    modulus: pk.n().to_be_bytes().to_vec(),
                    exponent: pk.e().to_be_bytes().to_vec(),
                }
            } else if alg == const_oid::db::rfc5912::ID_EC_PUBLIC_KEY {
                match bits.len() {
                    65 => PublicKey::P256(bits),
                    97 => PublicKey::P384(bits),
                    _ => PublicKey::Other("ec".into()),
                }
            } else {
                PublicKey::Other(alg.to_string())
            };
            let label = if cert_label.is_empty() {
                super::cert::emails(&cert)
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| hex::encode(&id))
            } else {
                cert_label
            };
            let is_rsa = matches!(public, PublicKey::Rsa { .. });
            Some(KeyEntry {
                label,
                id,
                can_sign: true,
                can_decrypt: is_rsa,
                can_derive: !is_rsa,
                public,
                chain: super::cert::issuer_chain(&der, &all),
                certificate: Some(der),
                touch: None,
                pin_policy: None,
            })
        })
        .collect();
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    keys
}

fn hash_mech(h: HashAlg) -> (MechanismType, PkcsMgfType) {
    match h {
        HashAlg::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        HashAlg::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        HashAlg::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
        HashAlg::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
    }
}

impl KeyStore for Pkcs11Store {
    fn name(&self) -> &str {
        &self.name
    }

    fn status(&self) -> TokenStatus {
        let mut inner = self.lock_inner();
        inner.pin.expire();
        let present = self.connect(&mut inner).is_ok();
        TokenStatus {
            label: if inner.facts.label.is_empty() {
                self.name.clone()
            } else {
                inner.facts.label.clone()
            },
            serial: inner.facts.serial.clone(),
            model: inner.facts.model.clone(),
            backend: format!("pkcs11:{}", self.cfg.module.display()),
            present,
            logged_in: present && inner.logged_in,
            pin_source: inner.pin.source_kind().to_string(),
            locked: inner.pin.locked,
            pin_warnings: inner.pin_warnings.clone(),
        }
    }

    fn keys(&self) -> Result<Vec<KeyEntry>, TokenError> {
        {
            let inner = self.lock_inner();
            if let (Some(k), true) = (&inner.keys, inner.slot.is_some()) {
                return Ok(k.clone());
            }
        }
        let keys = self.with_session(Need::IfPossible, list_keys, "list keys")?;
        let mut inner = self.lock_inner();
        if inner.logged_in {
            inner.keys = Some(keys.clone());
        }
        Ok(keys)
    }

    fn login(&self, pin: Option<SecretString>) -> Result<(), TokenError> {
        if pin.as_ref().is_some_and(|p| p.expose_secret().is_empty()) {
            return Err(TokenError::Invalid(
                "empty PIN; nothing was sent to the token".into(),
            ));
        }
        let mut inner = self.lock_inner();
        self.connect(&mut inner)?;
        if inner.logged_in {
            if let Some(sess) = inner.login_session.as_ref() {
                let _ = sess.logout();
            }
            inner.logged_in = false;
        }
        inner.keys = None;
        let (pin, from_client) = match pin {
            Some(p) => (p, true),
            None => match inner.pin.read_source() {
                Ok(Some(p)) => (p, false),
                Ok(None) => return Err(TokenError::PinRequired(self.name.clone())),
                Err(msg) => return Err(TokenError::PinSource(msg)),
            },
        };
        self.login_with(&mut inner, pin, from_client)
    }

    fn lock(&self) {
        let mut inner = self.lock_inner();
        if let Some(sess) = inner.login_session.as_ref() {
            let _ = sess.logout();
        }
        inner.logged_in = false;
        inner.keys = None;
        inner.handles.clear();
        inner.pin.lock();
        info!(token = %self.name, "locked: logged out and PIN forgotten");
    }

    fn release(&self) {
        let mut inner = self.lock_inner();
        self.drop_connection(&mut inner, false);
        inner.pin.forget();
        info!(token = %self.name, "sessions released, cached PIN forgotten");
    }

    fn expire_pin(&self) {
        let mut inner = self.lock_inner();
        if inner.pin.expire() {
            if let Some(sess) = inner.login_session.as_ref() {
                let _ = sess.logout();
            }
            inner.logged_in = false;
            inner.keys = None;
            info!(token = %self.name, "PIN cache time ran out: logged out");
        }
    }

    fn sign_digest(
        &self,
        id: &[u8],
        scheme: SignatureScheme,
        digest: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        let key = self.find_key(id)?;
        super::check_sign(&key, scheme, digest)?;
        let hash = scheme.hash();
        if !key.can_sign {
            return Err(TokenError::KeyMismatch(format!(
                "key {:?} is not allowed to sign (CKA_SIGN false)",
                key.label
            )));
        }
        // CKM_RSA_PKCS signs what it is given: the DigestInfo, built once, in the core
        let input = match scheme {
            SignatureScheme::RsaPkcs1v15(_) => {
                self.require(MechanismType::RSA_PKCS, "RSA PKCS#1 v1.5 signatures")?;
                tokenmail_smime::signed::digest_info(hash, digest)
                    .map_err(|e| TokenError::Invalid(e.to_string()))?
            }
            SignatureScheme::RsaPss(_) => {
                self.require(MechanismType::RSA_PKCS_PSS, "RSA-PSS signatures")?;
                digest.to_vec()
            }
            SignatureScheme::Ecdsa(_) => {
                self.require(MechanismType::ECDSA, "ECDSA signatures")?;
                digest.to_vec()
            }
        };
        let raw = self.with_session(
            Need::Login,
            |s| {
                let h = self.key_handle(s, id)?;
                match scheme {
                    SignatureScheme::RsaPkcs1v15(_) => s.sign(&Mechanism::RsaPkcs, h, &input),
                    SignatureScheme::RsaPss(_) => {
                        let (hm, mgf) = hash_mech(hash);
                        let params = PkcsPssParams {
                            hash_alg: hm,
                            mgf,
                            s_len: (hash.output_len() as u64).into(),
                        };
                        s.sign(&Mechanism::RsaPkcsPss(params), h, &input)
                    }
                    SignatureScheme::Ecdsa(_) => s.sign(&Mechanism::Ecdsa, h, &input),
                }
            },
            "C_Sign",
        )?;
        match scheme {
            SignatureScheme::Ecdsa(_) => super::ecdsa_der(&key.public, &raw),
            _ => Ok(raw),
        }
    }

    fn decrypt(
        &self,
        id: &[u8],
        alg: KeyTransport,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        let key = self.find_key(id)?;
        let k = super::check_rsa_decrypt(&key)?;
        if !key.can_decrypt {
            return Err(TokenError::KeyMismatch(format!(
                "key {:?} is not allowed to decrypt (CKA_DECRYPT false)",
                key.label
            )));
        }
        let hash = super::oaep_hash(alg)?;
        // Every failure of the decryption itself is the same error: no padding oracle.
        let uniform = |e: TokenError| match e {
            TokenError::Pkcs11 { .. } => TokenError::DecryptFailed,
            other => other,
        };
        let Some(hash) = hash else {
            self.require(MechanismType::RSA_PKCS, "RSA PKCS#1 v1.5 decryption")?;
            let out = self
                .with_session(
                    Need::Login,
                    |s| {
                        let h = self.key_handle(s, id)?;
                        s.decrypt(&Mechanism::RsaPkcs, h, wrapped)
                    },
                    "C_Decrypt",
                )
                .map_err(uniform)?;
            return Ok(Zeroizing::new(out));
        };
        if self.oaep_path(hash).is_none() && !self.has_mechanism(MechanismType::RSA_PKCS_OAEP) {
            debug!(token = %self.name, "token lists no CKM_RSA_PKCS_OAEP");
            self.set_oaep_path(hash, false);
        }
        if self.oaep_path(hash) != Some(false) {
            let (hm, mgf) = hash_mech(hash);
            let res = self.with_session(
                Need::Login,
                |s| {
                    let h = self.key_handle(s, id)?;
                    let params = PkcsOaepParams::new(hm, mgf, PkcsOaepSource::empty());
                    s.decrypt(&Mechanism::RsaPkcsOaep(params), h, wrapped)
                },
                "C_Decrypt",
            );
            match res {
                Ok(out) => {
                    if self.oaep_path(hash).is_none() {
                        debug!(token = %self.name, ?hash, "OAEP decryption done by the token (CKM_RSA_PKCS_OAEP)");
                    }
                    self.set_oaep_path(hash, true);
                    return Ok(Zeroizing::new(out));
                }
                Err(TokenError::Pkcs11 {
                    source:
                        CkError::Pkcs11(
                            RvError::ArgumentsBad
                            | RvError::MechanismParamInvalid
                            | RvError::MechanismInvalid,
                            _,
                        ),
                    ..
                }) => {
                    debug!(token = %self.name, ?hash, "token refused CKM_RSA_PKCS_OAEP with this hash; using CKM_RSA_X_509 on the token and OAEP decoding in-process");
                    self.set_oaep_path(hash, false);
                }
                Err(e) => return Err(uniform(e)),
            }
        }
        self.require(
            MechanismType::RSA_X_509,
            "RSA-OAEP decryption with this hash",
        )?;
        debug!(token = %self.name, ?hash, "OAEP via CKM_RSA_X_509 + constant-time in-process decode");
        let raw = Zeroizing::new(
            self.with_session(
                Need::Login,
                |s| {
                    let h = self.key_handle(s, id)?;
                    s.decrypt(&Mechanism::RsaX509, h, wrapped)
                },
                "C_Decrypt",
            )
            .map_err(uniform)?,
        );
        let em = oaep::left_pad(&raw, k).map_err(|_| TokenError::DecryptFailed)?;
        oaep::decode(&em, hash).map_err(|_| TokenError::DecryptFailed)
    }

    fn derive(&self, id: &[u8], peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        let key = self.find_key(id)?;
        let field = super::check_ecdh(&key, peer_point)?;
        self.require(MechanismType::ECDH1_DERIVE, "ECDH key agreement")?;
        let out = self.with_session(
            Need::Login,
            |s| {
                let h = self.key_handle(s, id)?;
                let params = Ecdh1DeriveParams::new(EcKdf::null(), peer_point);
                let template = [
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::GENERIC_SECRET),
                    Attribute::ValueLen((field as u64).into()),
                    Attribute::Token(false),
                    Attribute::Sensitive(false),
                    Attribute::Extractable(true),
                ];
                let secret = s.derive_key(&Mechanism::Ecdh1Derive(params), h, &template)?;
                let value = s.get_attributes(secret, &[AttributeType::Value]);
                let _ = s.destroy_object(secret);
                let mut out = Vec::new();
                for a in value? {
                    if let Attribute::Value(mut v) = a {
                        out = std::mem::take(&mut v);
                    }
                }
                Ok(out)
            },
            "C_DeriveKey",
        )?;
        if out.len() != field {
            return Err(TokenError::KeyMismatch(
                "the token returned an ECDH secret of the wrong length".into(),
            ));
        }
        Ok(Zeroizing::new(out))
    }
}
