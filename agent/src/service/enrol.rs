//! Enrolment requests: `keygen`, `import-cert`, `import-key` — on a PKCS#11 token through
//! the store's own administration, on a PIV card through its slots.

use tokenmail_proto::v1::{Bytes, KeyInfo, Response, SecretBytes};
use tracing::info;

use super::{bad_slot, parse_piv_slot, Service};
use crate::error::AgentError;
use crate::token::{KeyAlgorithm, PivKeygen, PrivateKeyParts, PublicKey, TokenError};

/// A `keygen` request as the service takes it.
pub(super) struct Keygen {
    pub token: Option<String>,
    pub label: String,
    pub algorithm: String,
    pub id: Option<Vec<u8>>,
    pub pin_policy: Option<String>,
    pub touch_policy: Option<String>,
    pub management_key: Option<SecretBytes>,
}

fn generated(
    key: KeyInfo,
    public: &PublicKey,
    warnings: Vec<String>,
) -> Result<Response, AgentError> {
    Ok(Response::Generated {
        key: Box::new(key),
        public_key: Bytes(public.to_spki_der()?),
        warnings,
    })
}

impl Service {
    pub(super) fn keygen(&self, req: Keygen) -> Result<Response, AgentError> {
        let store = self.pick_store(req.token.as_deref())?;
        let alg = KeyAlgorithm::parse(&req.algorithm)?;
        if store.piv().is_some() {
            let slot = parse_piv_slot(&req.label).ok_or_else(|| bad_slot(&req.label))?;
            if req.id.as_ref().is_some_and(|id| id.as_slice() != [slot]) {
                return Err(AgentError::bad(
                    "on a PIV card the slot is the key's id: leave out --id",
                ));
            }
            if store.keys()?.iter().any(|k| k.id == [slot]) {
                return Err(AgentError::bad(format!(
                    "slot {slot:02x} of {:?} already holds a key; `tokenmail piv keygen --slot {slot:02x}` replaces it (the old key is lost)",
                    store.name()
                )));
            }
            let piv_req = PivKeygen {
                slot,
                algorithm: alg.name(),
                pin_policy: req.pin_policy,
                touch_policy: req.touch_policy,
                management_key: req.management_key.map(|k| k.0),
            };
            let piv = store
                .piv()
                .ok_or_else(|| AgentError::bad("not a PIV card"))?;
            let r = piv.piv_keygen(&piv_req);
            store.audit_admin(
                "keygen",
                &[slot],
                Some(&req.label),
                r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
            );
            let (spki, warnings) = r?;
            let public = spki::SubjectPublicKeyInfoOwned::try_from(spki.as_slice())
                .map(|s| PublicKey::from_spki(&s))
                .map_err(|e| AgentError::bad(format!("the card's public key: {e}")))?;
            let key = store
                .keys()
                .ok()
                .and_then(|ks| ks.into_iter().find(|k| k.id == [slot]))
                .map(|k| Self::key_info(store.as_ref(), &k))
                .unwrap_or_else(|| KeyInfo {
                    label: format!("{slot:02x}"),
                    id: format!("{slot:02x}"),
                    token: store.name().to_string(),
                    algorithm: public.algorithm_name(),
                    usage: vec!["sign".into()],
                    certificate: None,
                    chain: Vec::new(),
                    touch: None,
                    pin_policy: None,
                    exportable: false,
                    public_key: Some(Bytes(spki.clone())),
                });
            return generated(key, &public, warnings);
        }
        if req.pin_policy.is_some() || req.touch_policy.is_some() || req.management_key.is_some() {
            return Err(AgentError::bad(
                "PIN and touch policies and the management key are for PIV cards only",
            ));
        }
        let entry = store.generate_key(&req.label, alg, req.id.as_deref())?;
        let info = Self::key_info(store.as_ref(), &entry);
        generated(info, &entry.public, Vec::new())
    }

    pub(super) fn import_cert(
        &self,
        key: &str,
        certificate: &[u8],
        chain: &[Vec<u8>],
        management_key: Option<&[u8]>,
    ) -> Result<Response, AgentError> {
        let found = self.resolve(key)?;
        let public = PublicKey::from_certificate(certificate).ok_or_else(|| {
            AgentError::bad("the certificate does not parse (DER X.509 expected)")
        })?;
        if !public.same_key(&found.key.public) {
            return Err(TokenError::KeyMismatch(format!(
                "the certificate's public key is not the one of key {:?}: nothing was stored",
                found.key.label
            ))
            .into());
        }
        for ca in chain {
            if PublicKey::from_certificate(ca).is_none() {
                return Err(AgentError::bad(
                    "a chain certificate does not parse: nothing was stored",
                ));
            }
        }
        let warnings = if let Some(piv) = found.store.piv() {
            let r = piv.piv_import_cert(
                found.key.id.first().copied().unwrap_or(0),
                certificate,
                management_key,
            );
            found.store.audit_admin(
                "import-cert",
                &found.key.id,
                Some(&found.key.label),
                r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
            );
            let mut w = r?;
            if !chain.is_empty() {
                w.push("a PIV card keeps no CA certificates: the chain was not stored (list it in [trust] intermediates)".into());
            }
            w
        } else {
            found
                .store
                .store_certificate(&found.key, certificate, chain)?
        };
        info!(token = %found.store.name(), key = %found.key.label, "certificate imported");
        Ok(Response::Done { warnings })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn import_key(
        &self,
        token: Option<&str>,
        label: &str,
        id: Option<&[u8]>,
        private_key: &[u8],
        certificate: &[u8],
        chain: &[Vec<u8>],
        management_key: Option<&[u8]>,
    ) -> Result<Response, AgentError> {
        let store = self.pick_store(token)?;
        let parts = PrivateKeyParts::from_pkcs8(private_key)?;
        let public = PublicKey::from_certificate(certificate).ok_or_else(|| {
            AgentError::bad("the certificate does not parse (DER X.509 expected)")
        })?;
        if !public.same_key(&parts.public()) {
            return Err(TokenError::KeyMismatch(
                "the certificate's public key is not the private key's: nothing was stored".into(),
            )
            .into());
        }
        if let Some(piv) = store.piv() {
            let slot = parse_piv_slot(label).ok_or_else(|| bad_slot(label))?;
            let r = piv.piv_import_key(slot, &parts, certificate, management_key);
            store.audit_admin(
                "import-key",
                &[slot],
                Some(label),
                r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
            );
            let mut warnings = r?;
            if !chain.is_empty() {
                warnings.push("a PIV card keeps no CA certificates: the chain was not stored (list it in [trust] intermediates)".into());
            }
            let key = store
                .keys()?
                .into_iter()
                .find(|k| k.id == [slot])
                .ok_or_else(|| TokenError::NoSuchKey(format!("{slot:02x}")))?;
            let info = Self::key_info(store.as_ref(), &key);
            return generated(info, &key.public, warnings);
        }
        let entry = store.create_key(label, id, &parts, certificate, chain)?;
        let info = Self::key_info(store.as_ref(), &entry);
        generated(info, &entry.public, Vec::new())
    }
}
