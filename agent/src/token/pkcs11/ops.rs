//! The private-key operations (`KeyStore`): sign, decrypt, derive, and the store's status.

#[allow(unused_imports)]
use super::*;

pub(super) fn hash_mech(h: HashAlg) -> (MechanismType, PkcsMgfType) {
    match h {
        HashAlg::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        HashAlg::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        HashAlg::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
        HashAlg::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
    }
}

impl Pkcs11Store {
    /// Forgets a PIN whose cache time ran out and logs out: expiry always does both,
    /// whoever notices it first (a status poll or the timer).
    fn expire_locked(&self, inner: &mut Inner) {
        if inner.pin.expire() {
            if let Some(sess) = inner.login_session.as_ref() {
                let _ = sess.logout();
            }
            inner.logged_in = false;
            inner.keys = None;
            info!(token = %self.name, "PIN cache time ran out: logged out");
        }
    }
}

impl KeyStore for Pkcs11Store {
    fn name(&self) -> &str {
        &self.name
    }

    fn generate_key(
        &self,
        label: &str,
        alg: crate::token::KeyAlgorithm,
        id: Option<&[u8]>,
    ) -> Result<KeyEntry, TokenError> {
        self.admin_generate(label, alg, id)
    }

    fn store_certificate(
        &self,
        key: &KeyEntry,
        certificate: &[u8],
        chain: &[Vec<u8>],
    ) -> Result<Vec<String>, TokenError> {
        self.admin_store_certificate(key, certificate, chain)
    }

    fn create_key(
        &self,
        label: &str,
        id: Option<&[u8]>,
        key: &crate::token::PrivateKeyParts,
        certificate: &[u8],
        chain: &[Vec<u8>],
    ) -> Result<KeyEntry, TokenError> {
        self.admin_create_key(label, id, key, certificate, chain)
    }

    fn status(&self) -> TokenStatus {
        let mut inner = self.lock_inner();
        // an expired PIN logs out here too: the periodic timer then has nothing left to do
        self.expire_locked(&mut inner);
        let present = self.connect(&mut inner).is_ok();
        TokenStatus {
            name: String::new(),
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
        let before = self.lock_inner().generation;
        let keys = self.with_session(Need::IfPossible, list_keys, "list keys")?;
        // SoftHSM lists nothing, without an error, on a session of a deleted token: an
        // empty list is believed only from a token that is still there.
        if keys.is_empty() {
            let generation = self.lock_inner().generation;
            if !self.still_there(generation) {
                return Err(TokenError::NotPresent(self.name.clone()));
            }
        }
        let mut inner = self.lock_inner();
        // Not cached when the connection changed meanwhile: the list may be of a token that
        // went away (read from a session that outlived it).
        if inner.logged_in && inner.generation == before {
            inner.keys = Some(keys.clone());
        }
        Ok(keys)
    }

    fn check_present(&self) -> Result<(), TokenError> {
        let generation = {
            let mut inner = self.lock_inner();
            self.connect(&mut inner)?;
            inner.generation
        };
        if self.still_there(generation) {
            self.lock_inner().keys = None;
            Ok(())
        } else {
            Err(TokenError::NotPresent(self.name.clone()))
        }
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
        let (pin, from_client) = inner.pin.for_login(pin, &self.name)?;
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
        self.expire_locked(&mut inner);
    }

    fn sign_digest(
        &self,
        id: &[u8],
        scheme: SignatureScheme,
        digest: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        let key = self.find_key(id)?;
        crate::token::check_sign(&key, scheme, digest)?;
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
            SignatureScheme::Ecdsa(_) => crate::token::ecdsa_der(&key.public, &raw),
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
        let k = crate::token::check_rsa_decrypt(&key)?;
        if !key.can_decrypt {
            return Err(TokenError::KeyMismatch(format!(
                "key {:?} is not allowed to decrypt (CKA_DECRYPT false)",
                key.label
            )));
        }
        let hash = crate::token::oaep_hash(alg)?;
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
        let field = crate::token::check_ecdh(&key, peer_point)?;
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
