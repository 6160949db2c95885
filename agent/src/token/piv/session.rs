//! The card connection: opening the card by serial, PIN verification and policy, the retry after a reset, reading slots and certificates.

#[allow(unused_imports)]
use super::*;

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

    pub(super) fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn card_label(&self, inner: &Inner) -> String {
        match inner.facts.serial.or(self.cfg.serial) {
            Some(s) => format!("card {s}"),
            None => "a PIV card".into(),
        }
    }

    pub(super) fn absent_error(&self, inner: &Inner) -> TokenError {
        TokenError::CardAbsent(self.card_label(inner))
    }

    pub(super) fn map_open_error(&self, inner: &Inner, e: yubikey::Error) -> TokenError {
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
    pub(super) fn connect(&self, inner: &mut Inner) -> Result<(), TokenError> {
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
    pub(super) fn drop_card(&self, inner: &mut Inner, removed: bool) {
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
    pub(super) fn ensure_pin(&self, inner: &mut Inner, need: PinUse) -> Result<(), TokenError> {
        if need == PinUse::Never || (need == PinUse::Once && inner.verified) {
            return Ok(());
        }
        let pin = match inner.pin.current() {
            Ok(Some(p)) => p,
            Ok(None) => return Err(inner.pin.needs_pin(&self.cfg.name, String::new(), None)),
            Err(msg) => return Err(TokenError::PinSource(msg)),
        };
        self.verify(inner, &pin)
    }

    pub(super) fn verify(&self, inner: &mut Inner, pin: &SecretString) -> Result<(), TokenError> {
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

    pub(super) fn gone(&self, inner: &mut Inner, e: &yubikey::Error) -> TokenError {
        let removed = !matches!(pcsc_inner(e), Some(pcsc::Error::ResetCard));
        debug!(token = %self.cfg.name, "card gone: {e}");
        self.drop_card(inner, removed);
        if removed {
            self.absent_error(inner)
        } else {
            TokenError::Retry
        }
    }

    pub(super) fn list(&self, inner: &mut Inner) -> Result<Vec<KeyEntry>, TokenError> {
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
                exportable: false,
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
    pub(super) fn private_op<T>(
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

    pub(super) fn key(&self, id: &[u8]) -> Result<KeyEntry, TokenError> {
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

    pub(super) fn authenticate_admin(
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
pub(super) fn pin_first(e: TokenError, pin: Result<(), TokenError>) -> TokenError {
    match (e, pin) {
        (
            TokenError::Invalid(_),
            Err(
                p @ (TokenError::PinRequired(_)
                | TokenError::PinSourceRefused { .. }
                | TokenError::PinIncorrect { .. }
                | TokenError::PinLocked(_)),
            ),
        ) => p,
        (e, _) => e,
    }
}

pub(super) fn pin_warnings(yk: &mut YubiKey) -> Vec<String> {
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
