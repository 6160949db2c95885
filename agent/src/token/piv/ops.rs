//! The private-key operations on the card (`KeyStore`).

#[allow(unused_imports)]
use super::*;

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
            name: String::new(),
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
        let (pin, from_client) = inner.pin.for_login(pin, &self.cfg.name)?;
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
        crate::token::check_sign(&key, scheme, digest)?;
        let h = scheme.hash();
        let input = match (&key.public, scheme) {
            (PublicKey::Rsa { modulus, .. }, SignatureScheme::RsaPkcs1v15(_)) => {
                let k = key.public.rsa_len().unwrap_or(modulus.len());
                pkcs1v15_sign_block(h, digest, k)?
            }
            (PublicKey::Rsa { modulus, .. }, SignatureScheme::RsaPss(_)) => {
                let bits = crate::token::rsa_bits(modulus);
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
                    SignatureScheme::RsaPkcs1v15(_) => pk
                        .verify(crate::token::pkcs1v15_scheme(h), digest, &sig)
                        .is_ok(),
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
        let k = crate::token::check_rsa_decrypt(&key)?;
        let hash = crate::token::oaep_hash(alg)?;
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
        let field = crate::token::check_ecdh(&key, peer_point)?;
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
