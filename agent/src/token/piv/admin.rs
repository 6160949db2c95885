//! `tokenmail piv`: status, key generation on the card, certificate import (`PivAdmin`).

#[allow(unused_imports)]
use super::*;

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

    fn piv_import_key(
        &self,
        slot: u8,
        key: &crate::token::PrivateKeyParts,
        certificate: &[u8],
        management_key: Option<&[u8]>,
    ) -> Result<Vec<String>, TokenError> {
        use crate::token::{KeyAlgorithm, PrivateKeyParts};
        if !(0x82..=0x95).contains(&slot) {
            return Err(TokenError::Invalid(format!(
                "escrowed keys go into the retired key-management slots 82..95, not {slot:02x}"
            )));
        }
        let (b, slot_id) = to_slot(&[slot])?;
        let mut inner = self.lock_inner();
        self.connect(&mut inner)?;
        self.list(&mut inner)?;
        if inner
            .keys
            .as_ref()
            .is_some_and(|ks| ks.iter().any(|k| k.id == [b]))
        {
            return Err(TokenError::Invalid(format!(
                "slot {b:02x} already holds a key: choose a free retired slot (82..95, `tokenmail piv status`)"
            )));
        }
        let pin_state = self.ensure_pin(&mut inner, PinUse::Once);
        let mut warnings = Vec::new();
        let Some(yk) = inner.yk.as_mut() else {
            return Err(self.absent_error(&inner));
        };
        self.authenticate_admin(yk, management_key, &mut warnings)
            .map_err(|e| pin_first(e, pin_state))?;
        let failed = |e: yubikey::Error| TokenError::Piv {
            op: "import key",
            reason: e.to_string(),
        };
        match key {
            PrivateKeyParts::Rsa {
                modulus,
                public_exponent,
                prime1,
                prime2,
                ..
            } => {
                if public_exponent.as_slice() != [0x01, 0x00, 0x01] {
                    return Err(TokenError::KeyMismatch(
                        "a PIV card takes RSA keys with the public exponent 65537 only".into(),
                    ));
                }
                let alg = match crate::token::rsa_bits(modulus) {
                    1024 => AlgorithmId::Rsa1024,
                    2048 => AlgorithmId::Rsa2048,
                    3072 => AlgorithmId::Rsa3072,
                    4096 => AlgorithmId::Rsa4096,
                    n => {
                        return Err(TokenError::KeyMismatch(format!(
                            "a PIV card takes RSA keys of 2048, 3072 or 4096 bits, not {n}"
                        )))
                    }
                };
                let data = piv::RsaKeyData::new(prime1, prime2).map_err(failed)?;
                piv::import_rsa_key(
                    yk,
                    slot_id,
                    alg,
                    data,
                    TouchPolicy::Default,
                    PinPolicy::Default,
                )
                .map_err(failed)?;
            }
            PrivateKeyParts::Ec { curve, scalar, .. } => {
                let alg = if *curve == KeyAlgorithm::P384 {
                    AlgorithmId::EccP384
                } else {
                    AlgorithmId::EccP256
                };
                piv::import_ecc_key(
                    yk,
                    slot_id,
                    alg,
                    scalar,
                    TouchPolicy::Default,
                    PinPolicy::Default,
                )
                .map_err(failed)?;
            }
        }
        let c = Certificate::from_bytes(certificate.to_vec())
            .map_err(|e| TokenError::Invalid(format!("certificate: {e}")))?;
        c.write(yk, slot_id, yubikey::certificate::CertInfo::Uncompressed)
            .map_err(|e| TokenError::Piv {
                op: "write certificate",
                reason: e.to_string(),
            })?;
        info!(token = %self.cfg.name, slot = b, "escrowed key imported into the card");
        inner.keys = None;
        inner.verified = false;
        Ok(warnings)
    }
}
