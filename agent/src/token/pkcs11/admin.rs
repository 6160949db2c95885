//! Enrolment on a PKCS#11 token: key generation, certificate and chain objects, and the
//! creation of an escrowed private key — each on a read-write session of the logged-in
//! token, with the key lists dropped afterwards so the new objects are used at once.

#[allow(unused_imports)]
use super::*;
use crate::token::{KeyAlgorithm, PrivateKeyParts};
use der::{Decode, Encode};
use zeroize::Zeroize;

/// Wipes the secret values of a template once the token has them.
fn wipe(template: &mut [Attribute]) {
    for a in template.iter_mut() {
        match a {
            Attribute::PrivateExponent(v)
            | Attribute::Prime1(v)
            | Attribute::Prime2(v)
            | Attribute::Exponent1(v)
            | Attribute::Exponent2(v)
            | Attribute::Coefficient(v)
            | Attribute::Value(v) => v.zeroize(),
            _ => {}
        }
    }
}

fn curve_params(alg: KeyAlgorithm) -> &'static [u8] {
    match alg {
        KeyAlgorithm::P384 => P384_PARAMS,
        _ => P256_PARAMS,
    }
}

/// The attributes of a certificate object (X.509, public, on the token).
fn certificate_template(
    der_bytes: &[u8],
    label: &str,
    id: &[u8],
) -> Result<Vec<Attribute>, TokenError> {
    let bad = |e: der::Error| TokenError::Invalid(format!("the certificate does not parse: {e}"));
    let cert = x509_cert::Certificate::from_der(der_bytes).map_err(bad)?;
    let tbs = cert.tbs_certificate();
    Ok(vec![
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::CertificateType(cryptoki::object::CertificateType::X_509),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Subject(tbs.subject().to_der().map_err(bad)?),
        Attribute::Issuer(tbs.issuer().to_der().map_err(bad)?),
        Attribute::SerialNumber(tbs.serial_number().to_der().map_err(bad)?),
        Attribute::Value(der_bytes.to_vec()),
    ])
}

fn write_protected(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::TokenWriteProtected
                | RvError::SessionReadOnly
                | RvError::SessionReadOnlyExists,
            _
        )
    )
}

impl Pkcs11Store {
    /// A read-write session on the logged-in token, for one administrative change (not pooled).
    fn rw_session(&self) -> Result<Session, TokenError> {
        let mut inner = self.lock_inner();
        self.connect(&mut inner)?;
        if !self.try_login(&mut inner)? {
            return Err(self.needs_pin(&inner));
        }
        let (ctx, slot) = match (&inner.ctx, inner.slot) {
            (Some((c, _)), Some(s)) => (c.clone(), s),
            _ => return Err(TokenError::NotPresent(self.name.clone())),
        };
        ctx.open_rw_session(slot)
            .map_err(|e| self.admin_error("C_OpenSession", e))
    }

    fn admin_error(&self, op: &'static str, e: CkError) -> TokenError {
        if write_protected(&e) {
            TokenError::ReadOnly(self.name.clone())
        } else if is_not_logged_in(&e) {
            TokenError::PinRequired(self.name.clone())
        } else {
            TokenError::Pkcs11 { op, source: e }
        }
    }

    /// The key lists and handles are read again at the next use.
    fn changed(&self) {
        let mut inner = self.lock_inner();
        inner.keys = None;
        inner.handles.clear();
    }

    /// Refuses a label or an id that an object of the token already has; returns the id
    /// to use (the one given, else 16 fresh random bytes).
    fn new_key_id(
        &self,
        sess: &Session,
        label: &str,
        id: Option<&[u8]>,
    ) -> Result<Vec<u8>, TokenError> {
        if label.is_empty() || label.len() > 255 {
            return Err(TokenError::Invalid(
                "the key label must be 1 to 255 bytes".into(),
            ));
        }
        let used = |t: Attribute| -> Result<bool, TokenError> {
            sess.find_objects(&[t])
                .map(|v| !v.is_empty())
                .map_err(|e| self.admin_error("C_FindObjects", e))
        };
        if used(Attribute::Label(label.as_bytes().to_vec()))? {
            return Err(TokenError::Invalid(format!(
                "the token {:?} already has an object labelled {label:?}: choose another --label",
                self.name
            )));
        }
        let id = match id {
            Some(id) if !id.is_empty() => id.to_vec(),
            Some(_) => return Err(TokenError::Invalid("the key id must not be empty".into())),
            None => {
                let mut id = vec![0u8; 16];
                getrandom::fill(&mut id)
                    .map_err(|e| TokenError::Invalid(format!("no randomness for a key id: {e}")))?;
                id
            }
        };
        if used(Attribute::Id(id.clone()))? {
            return Err(TokenError::Invalid(format!(
                "the token {:?} already has objects with id {}: choose another --id",
                self.name,
                hex::encode(&id)
            )));
        }
        Ok(id)
    }

    /// The key entry with `id`, read afresh.
    fn entry(&self, id: &[u8]) -> Result<KeyEntry, TokenError> {
        self.changed();
        self.keys()?
            .into_iter()
            .find(|k| k.id == id)
            .ok_or_else(|| TokenError::NoSuchKey(hex::encode(id)))
    }

    /// Writes the CA certificates of `chain` that the token does not have yet; returns how
    /// many were written.
    fn store_chain(&self, sess: &Session, chain: &[Vec<u8>]) -> Result<usize, TokenError> {
        let mut written = 0;
        for ca in chain {
            let there = sess
                .find_objects(&[
                    Attribute::Class(ObjectClass::CERTIFICATE),
                    Attribute::Value(ca.clone()),
                ])
                .map_err(|e| self.admin_error("C_FindObjects", e))?;
            if !there.is_empty() {
                continue;
            }
            // A CA certificate's id is derived from its bytes, so it never pairs with a key.
            use sha2::Digest;
            let id = sha2::Sha256::digest(ca)[..20].to_vec();
            let label = x509_cert::Certificate::from_der(ca)
                .ok()
                .and_then(|c| {
                    c.tbs_certificate()
                        .subject()
                        .to_string()
                        .split(',')
                        .find_map(|rdn| rdn.trim().strip_prefix("CN=").map(str::to_string))
                })
                .unwrap_or_else(|| "CA".into());
            let t = certificate_template(ca, &label, &id)?;
            sess.create_object(&t)
                .map_err(|e| self.admin_error("C_CreateObject (CA certificate)", e))?;
            written += 1;
        }
        Ok(written)
    }

    fn generate_on(
        &self,
        sess: &Session,
        label: &str,
        alg: KeyAlgorithm,
        id: &[u8],
    ) -> Result<(), TokenError> {
        let common = |private: bool| {
            vec![
                Attribute::Token(true),
                Attribute::Private(private),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.to_vec()),
            ]
        };
        let mut public = common(false);
        let mut private = common(true);
        private.extend([
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
        ]);
        public.push(Attribute::Verify(true));
        let mechanism = match alg {
            KeyAlgorithm::Rsa(bits) => {
                self.require(MechanismType::RSA_PKCS_KEY_PAIR_GEN, "RSA key generation")?;
                public.extend([
                    Attribute::ModulusBits((bits as u64).into()),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                    Attribute::Encrypt(true),
                ]);
                private.push(Attribute::Decrypt(true));
                Mechanism::RsaPkcsKeyPairGen
            }
            KeyAlgorithm::P256 | KeyAlgorithm::P384 => {
                self.require(MechanismType::ECC_KEY_PAIR_GEN, "EC key generation")?;
                public.push(Attribute::EcParams(curve_params(alg).to_vec()));
                private.push(Attribute::Derive(true));
                Mechanism::EccKeyPairGen
            }
        };
        sess.generate_key_pair(&mechanism, &public, &private)
            .map_err(|e| self.admin_error("C_GenerateKeyPair", e))?;
        Ok(())
    }

    fn create_on(
        &self,
        sess: &Session,
        label: &str,
        id: &[u8],
        key: &PrivateKeyParts,
    ) -> Result<(), TokenError> {
        let mut private = vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
            Attribute::Sign(true),
        ];
        let mut public = vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
            Attribute::Verify(true),
        ];
        match key {
            PrivateKeyParts::Rsa {
                modulus,
                public_exponent,
                private_exponent,
                prime1,
                prime2,
                exponent1,
                exponent2,
                coefficient,
            } => {
                private.extend([
                    Attribute::KeyType(KeyType::RSA),
                    Attribute::Decrypt(true),
                    Attribute::Modulus(modulus.clone()),
                    Attribute::PublicExponent(public_exponent.clone()),
                    Attribute::PrivateExponent(private_exponent.to_vec()),
                    Attribute::Prime1(prime1.to_vec()),
                    Attribute::Prime2(prime2.to_vec()),
                    Attribute::Exponent1(exponent1.to_vec()),
                    Attribute::Exponent2(exponent2.to_vec()),
                    Attribute::Coefficient(coefficient.to_vec()),
                ]);
                public.extend([
                    Attribute::KeyType(KeyType::RSA),
                    Attribute::Encrypt(true),
                    Attribute::Modulus(modulus.clone()),
                    Attribute::PublicExponent(public_exponent.clone()),
                ]);
            }
            PrivateKeyParts::Ec {
                curve,
                scalar,
                point,
            } => {
                let params = curve_params(*curve).to_vec();
                private.extend([
                    Attribute::KeyType(KeyType::EC),
                    Attribute::Derive(true),
                    Attribute::EcParams(params.clone()),
                    Attribute::Value(scalar.to_vec()),
                ]);
                let wrapped = der::asn1::OctetString::new(point.clone())
                    .and_then(|o| o.to_der())
                    .map_err(|e| TokenError::Invalid(format!("EC point: {e}")))?;
                public.extend([
                    Attribute::KeyType(KeyType::EC),
                    Attribute::EcParams(params),
                    Attribute::EcPoint(wrapped),
                ]);
            }
        }
        let made = sess.create_object(&private);
        wipe(&mut private);
        made.map_err(|e| self.admin_error("C_CreateObject (private key)", e))?;
        sess.create_object(&public)
            .map_err(|e| self.admin_error("C_CreateObject (public key)", e))?;
        Ok(())
    }

    /// Removes every object with `id` (undoing a half-made key after a failure).
    fn remove_id(&self, sess: &Session, id: &[u8]) {
        if let Ok(objs) = sess.find_objects(&[Attribute::Id(id.to_vec())]) {
            for o in objs {
                let _ = sess.destroy_object(o);
            }
        }
    }

    /// `KeyStore::generate_key`.
    pub(super) fn admin_generate(
        &self,
        label: &str,
        alg: KeyAlgorithm,
        id: Option<&[u8]>,
    ) -> Result<KeyEntry, TokenError> {
        let sess = self.rw_session()?;
        let id = self.new_key_id(&sess, label, id)?;
        self.generate_on(&sess, label, alg, &id)?;
        info!(token = %self.name, label, algorithm = %alg.name(), "key pair generated on the token");
        drop(sess);
        self.entry(&id)
    }

    /// `KeyStore::store_certificate`.
    pub(super) fn admin_store_certificate(
        &self,
        key: &KeyEntry,
        certificate: &[u8],
        chain: &[Vec<u8>],
    ) -> Result<Vec<String>, TokenError> {
        let sess = self.rw_session()?;
        let mut notes = Vec::new();
        let existing = sess
            .find_objects(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::Id(key.id.clone()),
            ])
            .map_err(|e| self.admin_error("C_FindObjects", e))?;
        let mut same = false;
        let mut old = Vec::new();
        for h in existing {
            let value = sess
                .get_attributes(h, &[AttributeType::Value])
                .map_err(|e| self.admin_error("C_GetAttributeValue", e))?;
            let is_same = value
                .iter()
                .any(|a| matches!(a, Attribute::Value(v) if v.as_slice() == certificate));
            if is_same {
                same = true;
            } else {
                old.push(h);
            }
        }
        if same {
            notes.push("the token already had this certificate beside the key".into());
        } else {
            let t = certificate_template(certificate, &key.label, &key.id)?;
            sess.create_object(&t)
                .map_err(|e| self.admin_error("C_CreateObject (certificate)", e))?;
        }
        // the new certificate is there before an old one goes: a failure leaves one
        for h in old {
            sess.destroy_object(h)
                .map_err(|e| self.admin_error("C_DestroyObject (old certificate)", e))?;
            notes.push("the key's previous certificate was replaced".into());
        }
        let n = self.store_chain(&sess, chain)?;
        if n > 0 {
            notes.push(format!("{n} CA certificate(s) stored on the token"));
        }
        info!(token = %self.name, key = %key.label, "certificate stored beside the key");
        drop(sess);
        self.changed();
        Ok(notes)
    }

    /// `KeyStore::create_key`.
    pub(super) fn admin_create_key(
        &self,
        label: &str,
        id: Option<&[u8]>,
        key: &PrivateKeyParts,
        certificate: &[u8],
        chain: &[Vec<u8>],
    ) -> Result<KeyEntry, TokenError> {
        let sess = self.rw_session()?;
        let id = self.new_key_id(&sess, label, id)?;
        let made = self.create_on(&sess, label, &id, key).and_then(|()| {
            let t = certificate_template(certificate, label, &id)?;
            sess.create_object(&t)
                .map_err(|e| self.admin_error("C_CreateObject (certificate)", e))?;
            self.store_chain(&sess, chain)
        });
        if let Err(e) = made {
            // nothing half-made stays behind
            self.remove_id(&sess, &id);
            return Err(e);
        }
        info!(token = %self.name, label, "private key imported (sensitive, not extractable)");
        drop(sess);
        self.entry(&id)
    }
}
