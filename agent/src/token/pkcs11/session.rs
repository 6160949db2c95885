//! The store's sessions: finding the token, logging in, the session pool, and the retry after the token went away.

#[allow(unused_imports)]
use super::*;

impl Pkcs11Store {
    /// How often the token's presence was checked after a failed call (diagnostics).
    pub fn presence_checks(&self) -> u64 {
        self.presence_checks
            .load(std::sync::atomic::Ordering::Relaxed)
    }

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
            presence_checks: std::sync::atomic::AtomicU64::new(0),
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

    pub(super) fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough state: recover it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finds the slot, reads token facts. Re-initialises the module when needed.
    pub(super) fn connect(&self, inner: &mut Inner) -> Result<(), TokenError> {
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
        // the labels seen, for the error when none is the configured token
        let mut labels = Vec::new();
        for slot in slots {
            let Ok(ti) = ctx.get_token_info(slot) else {
                continue;
            };
            if ti.token_initialized() {
                labels.push(ti.label().trim_end().to_string());
            }
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
                // The PIN cache belongs to a token, not to a label: another token under the
                // same label (a replaced card, a re-created token) must not be sent the PIN
                // typed for the previous one, which would cost it a try.
                let serial = ti.serial_number().trim_end();
                if !inner.facts.serial.is_empty()
                    && inner.facts.serial != serial
                    && inner.pin.has_cached()
                {
                    warn!(
                        token = %self.name,
                        previous = %inner.facts.serial,
                        serial = %serial,
                        "another token under this label: the cached PIN is forgotten"
                    );
                    inner.pin.forget();
                }
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
        if labels.is_empty() {
            // no token at all: a card or token to insert
            return Err(TokenError::NotPresent(self.name.clone()));
        }
        labels.sort();
        labels.dedup();
        Err(TokenError::NotInModule {
            token: self.name.clone(),
            module: self.cfg.module.display().to_string(),
            labels,
        })
    }

    /// Drops sessions and login state; with `finalize`, the module context too.
    pub(super) fn drop_connection(&self, inner: &mut Inner, finalize: bool) {
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
    pub(super) fn try_login(&self, inner: &mut Inner) -> Result<bool, TokenError> {
        if inner.logged_in {
            return Ok(true);
        }
        let Some(pin) = inner.pin.usable(&self.name) else {
            return Ok(false);
        };
        self.login_with(inner, pin, false).map(|_| true)
    }

    pub(super) fn login_with(
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
                if warnings.iter().any(|w| w == "locked") {
                    return Err(TokenError::PinLocked(self.name.clone()));
                }
                inner.pin_warnings = warnings;
                warn!(token = %self.name, "login refused: wrong PIN");
                let (hint, tries_left) = tries_hint(&inner.pin_warnings);
                if from_client {
                    Err(TokenError::PinIncorrect {
                        token: self.name.clone(),
                        hint,
                        tries_left,
                    })
                } else {
                    // the PIN file's (or variable's): named, and not used again
                    Err(inner.pin.needs_pin(&self.name, hint, tries_left))
                }
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

    /// "Needs its PIN", naming a refused PIN file with what the token said of the tries.
    pub(super) fn needs_pin(&self, inner: &Inner) -> TokenError {
        let (hint, tries_left) = tries_hint(&inner.pin_warnings);
        inner.pin.needs_pin(&self.name, hint, tries_left)
    }

    /// Takes a session for an operation: connected, logged in as `need` says.
    pub(super) fn acquire(&self, need: Need) -> Result<(Session, u64), TokenError> {
        let mut inner = self.lock_inner();
        self.connect(&mut inner)?;
        let logged = self.try_login(&mut inner)?;
        if !logged && matches!(need, Need::Login) {
            return Err(self.needs_pin(&inner));
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

    pub(super) fn give_back(&self, s: Session, generation: u64) {
        let mut inner = self.lock_inner();
        if inner.generation == generation {
            inner.pool.push(s);
        }
        // else: the connection was reset; dropping `s` closes it (or fails harmlessly).
        self.freed.notify_one();
    }

    /// Runs `f` with a pooled session, reconnecting and retrying once if the token went away.
    pub(super) fn with_session<T>(
        &self,
        need: Need,
        f: impl Fn(&Session) -> Result<T, CkError>,
        op: &'static str,
    ) -> Result<T, TokenError> {
        for attempt in 0..2 {
            let (sess, generation) = match self.acquire(need) {
                Ok(x) => x,
                Err(TokenError::NotPresent(_) | TokenError::NotInModule { .. }) if attempt == 0 => {
                    continue
                }
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

    pub(super) fn after<T>(
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
            // A failed decryption is answered as is, whatever the code (SoftHSM says
            // CKR_GENERAL_ERROR for bad padding): a presence check only after failures would
            // make them slower than successes, a padding oracle. A token that really went
            // away is noticed by the next call.
            Err(e) if is_operation_failure(&e) || op == "C_Decrypt" => {
                self.give_back(sess, generation);
                Err(TokenError::Pkcs11 { op, source: e })
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
    pub(super) fn still_there(&self, generation: u64) -> bool {
        self.presence_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
    pub(super) fn find_key(&self, id: &[u8]) -> Result<KeyEntry, TokenError> {
        {
            let mut inner = self.lock_inner();
            self.connect(&mut inner)?;
            if !self.try_login(&mut inner)? {
                return Err(self.needs_pin(&inner));
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
    pub(super) fn key_handle(&self, sess: &Session, id: &[u8]) -> Result<ObjectHandle, CkError> {
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
    pub(super) fn has_mechanism(&self, m: MechanismType) -> bool {
        let inner = self.lock_inner();
        inner.mechanisms.is_empty() || inner.mechanisms.contains(&m)
    }

    pub(super) fn require(&self, m: MechanismType, what: &str) -> Result<(), TokenError> {
        if self.has_mechanism(m) {
            Ok(())
        } else {
            Err(TokenError::Mechanism(format!("{what} ({m})")))
        }
    }

    pub(super) fn set_oaep_path(&self, hash: HashAlg, native: bool) {
        self.lock_inner().oaep_native.insert(hash, native);
    }
}

/// What the token's flags say of the PIN tries left: a hint for messages (` (one try
/// left ...)`), and the number when it is known.
fn tries_hint(warnings: &[String]) -> (String, Option<u32>) {
    if warnings.iter().any(|w| w == "final-try") {
        (
            " (one try left before the PIN is blocked)".to_string(),
            Some(1),
        )
    } else if warnings.iter().any(|w| w == "count-low") {
        (" (the token reports few tries left)".to_string(), None)
    } else if warnings.is_empty() {
        (String::new(), None)
    } else {
        (
            " (the token does not report tries left; nothing was retried)".to_string(),
            None,
        )
    }
}
