//! Keys and certificates on the token: listing, pairing by CKA_ID, public key decoding.

#[allow(unused_imports)]
use super::*;

/// Unwraps a DER OCTET STRING around an EC point if present (tokens differ).
pub(super) fn unwrap_ec_point(raw: &[u8]) -> Vec<u8> {
    use der::Decode;
    match der::asn1::OctetString::from_der(raw) {
        Ok(os) if matches!(os.as_bytes().first(), Some(0x04)) => os.as_bytes().to_vec(),
        _ => raw.to_vec(),
    }
}

pub(super) fn ec_point_from_cert(cert: &[u8]) -> Option<Vec<u8>> {
    use der::Decode;
    let c = x509_cert::Certificate::from_der(cert).ok()?;
    c.tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .as_bytes()
        .map(|b| b.to_vec())
}

pub(super) fn list_keys(sess: &Session) -> Result<Vec<KeyEntry>, CkError> {
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
                AttributeType::Sensitive,
                AttributeType::Extractable,
            ],
        )?;
        let mut label = String::new();
        let mut id = Vec::new();
        let mut kt = None;
        let (mut modulus, mut exponent, mut params) = (Vec::new(), Vec::new(), Vec::new());
        let (mut sign, mut decrypt, mut derive) = (false, false, false);
        // private keys only (public objects stand in before login): readable off the token?
        let (mut sensitive, mut extractable) = (true, false);
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
                Attribute::Sensitive(b) => sensitive = b,
                Attribute::Extractable(b) => extractable = b,
                _ => {}
            }
        }
        let exportable = !public_only && (extractable || !sensitive);
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
            exportable,
        });
    }
    keys.sort_by(|a, b| a.id.cmp(&b.id).then(a.label.cmp(&b.label)));
    let all: Vec<Vec<u8>> = certs.into_values().map(|(der, _)| der).collect();
    for k in &mut keys {
        if let Some(c) = &k.certificate {
            k.chain = crate::token::cert::issuer_chain(c, &all);
        }
    }
    Ok(keys)
}

/// Key entries from certificate objects alone (tokens that hide every key before login).
pub(super) fn keys_from_certificates(certs: HashMap<Vec<u8>, (Vec<u8>, String)>) -> Vec<KeyEntry> {
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
                crate::token::cert::emails(&cert)
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
                chain: crate::token::cert::issuer_chain(&der, &all),
                certificate: Some(der),
                touch: None,
                pin_policy: None,
                exportable: false,
            })
        })
        .collect();
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    keys
}
