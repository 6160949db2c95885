//! PKCS#11 objects made from the agent's key listing: a certificate, a public key and a
//! private key (without values) per key, and the CA certificates of its chain.

use cryptoki_sys::*;
use tokenmail_proto::v1::KeyInfo;

use crate::asn1::{self, PublicKey};

/// What signing, decrypting and deriving with a private-key object need.
#[derive(Debug, Clone)]
pub(crate) struct KeyUse {
    /// The name the agent resolves (`sha256:` fingerprint of the certificate, else hex id).
    pub name: String,
    /// RSA or EC, with sizes.
    pub kind: KeyKind,
    /// CKA_SIGN.
    pub sign: bool,
    /// CKA_DECRYPT.
    pub decrypt: bool,
    /// CKA_DERIVE.
    pub derive: bool,
}

/// The key's family and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// RSA with a modulus of this many bytes.
    Rsa { bytes: usize },
    /// EC over a field of this many bytes.
    Ec { field: usize },
}

/// An object: its attributes, which of them are sensitive, and the key behind it.
#[derive(Debug, Clone)]
pub(crate) struct Object {
    /// A stable name (slot, kind, id, certificate) that keeps the handle across refreshes.
    pub uid: String,
    /// The handle applications see.
    pub handle: CK_OBJECT_HANDLE,
    /// CKA_PRIVATE: listed only to a logged-in application.
    pub private: bool,
    /// The attributes and their values (CK_ULONG and CK_BBOOL in the machine's layout).
    pub attrs: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>,
    /// Attributes the object has but never reveals (CKR_ATTRIBUTE_SENSITIVE).
    pub sensitive: Vec<CK_ATTRIBUTE_TYPE>,
    /// For private keys: what the agent needs to use it.
    pub key: Option<KeyUse>,
}

impl Object {
    /// The value of an attribute.
    pub fn get(&self, t: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|(a, _)| *a == t)
            .map(|(_, v)| v.as_slice())
    }

    /// Whether every attribute of `template` has exactly that value here.
    pub fn matches(&self, template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> bool {
        template
            .iter()
            .all(|(t, v)| self.get(*t).is_some_and(|mine| mine == v.as_slice()))
    }
}

/// A CK_ULONG attribute value.
pub(crate) fn ul(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// A CK_BBOOL attribute value.
pub(crate) fn b(v: bool) -> Vec<u8> {
    vec![if v { CK_TRUE } else { CK_FALSE }]
}

/// Private-key attributes that exist but are never shown.
const SENSITIVE_PRIVATE: [CK_ATTRIBUTE_TYPE; 7] = [
    CKA_VALUE,
    CKA_PRIVATE_EXPONENT,
    CKA_PRIME_1,
    CKA_PRIME_2,
    CKA_EXPONENT_1,
    CKA_EXPONENT_2,
    CKA_COEFFICIENT,
];

/// The objects (handles still 0) of `key`, a key of the token in slot `slot_uid`.
pub(crate) fn key_objects(slot_uid: &str, key: &KeyInfo) -> Vec<Object> {
    let id = hex::decode(&key.id).unwrap_or_else(|_| key.id.as_bytes().to_vec());
    let cert = key.certificate.as_ref();
    let spki = key.public_key.as_ref().map(|p| p.0.clone()).or_else(|| {
        cert.and_then(|c| asn1::cert_fields(&c.der.0))
            .map(|f| f.spki)
    });
    let public = spki.as_deref().and_then(asn1::parse_spki);
    let kind = match &public {
        Some(PublicKey::Rsa { modulus, .. }) => Some(KeyKind::Rsa {
            bytes: modulus.len(),
        }),
        Some(PublicKey::Ec { field, .. }) => Some(KeyKind::Ec { field: *field }),
        None => kind_from_algorithm(&key.algorithm),
    };
    let base = format!("{slot_uid}|{}|{}", key.id, key.label);
    let mut out = Vec::new();
    let common = |class: CK_OBJECT_CLASS, private: bool| {
        vec![
            (CKA_CLASS, ul(class)),
            (CKA_TOKEN, b(true)),
            (CKA_PRIVATE, b(private)),
            (CKA_MODIFIABLE, b(false)),
            (CKA_COPYABLE, b(false)),
            (CKA_DESTROYABLE, b(false)),
            (CKA_LABEL, key.label.as_bytes().to_vec()),
            (CKA_ID, id.clone()),
        ]
    };

    if let Some(c) = cert {
        let mut attrs = common(CKO_CERTIFICATE, false);
        attrs.push((CKA_CERTIFICATE_TYPE, ul(CKC_X_509)));
        attrs.push((CKA_CERTIFICATE_CATEGORY, ul(1))); // token user
        attrs.push((CKA_TRUSTED, b(false)));
        attrs.push((CKA_VALUE, c.der.0.clone()));
        if let Some(f) = asn1::cert_fields(&c.der.0) {
            attrs.push((CKA_SUBJECT, f.subject));
            attrs.push((CKA_ISSUER, f.issuer));
            attrs.push((CKA_SERIAL_NUMBER, f.serial));
            attrs.push((CKA_PUBLIC_KEY_INFO, f.spki));
        }
        out.push(Object {
            uid: format!("{base}|cert|{}", c.sha256),
            handle: 0,
            private: false,
            attrs,
            sensitive: Vec::new(),
            key: None,
        });
    }

    let usage = |u: &str| key.usage.iter().any(|x| x == u);
    let (key_type, material): (CK_KEY_TYPE, Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>) = match &public {
        Some(PublicKey::Rsa { modulus, exponent }) => (
            CKK_RSA,
            vec![
                (CKA_MODULUS, modulus.clone()),
                (CKA_PUBLIC_EXPONENT, exponent.clone()),
                (CKA_MODULUS_BITS, ul(modulus_bits(modulus))),
            ],
        ),
        Some(PublicKey::Ec { params, point, .. }) => (
            CKK_EC,
            vec![
                (CKA_EC_PARAMS, params.clone()),
                (CKA_EC_POINT, asn1::octet_string(point)),
            ],
        ),
        None => match kind {
            Some(KeyKind::Rsa { .. }) => (CKK_RSA, Vec::new()),
            Some(KeyKind::Ec { .. }) => (CKK_EC, Vec::new()),
            None => return out,
        },
    };
    let Some(kind) = kind else { return out };

    if public.is_some() {
        let mut attrs = common(CKO_PUBLIC_KEY, false);
        attrs.push((CKA_KEY_TYPE, ul(key_type)));
        attrs.push((CKA_LOCAL, b(false)));
        attrs.push((CKA_VERIFY, b(usage("sign"))));
        attrs.push((CKA_ENCRYPT, b(usage("decrypt"))));
        attrs.push((CKA_WRAP, b(false)));
        attrs.push((CKA_DERIVE, b(false)));
        attrs.push((CKA_VERIFY_RECOVER, b(false)));
        attrs.extend(material.iter().cloned());
        if let Some(s) = &spki {
            attrs.push((CKA_PUBLIC_KEY_INFO, s.clone()));
        }
        out.push(Object {
            uid: format!("{base}|pub"),
            handle: 0,
            private: false,
            attrs,
            sensitive: Vec::new(),
            key: None,
        });
    }

    let mut attrs = common(CKO_PRIVATE_KEY, true);
    attrs.push((CKA_KEY_TYPE, ul(key_type)));
    attrs.push((CKA_LOCAL, b(false)));
    attrs.push((CKA_SENSITIVE, b(true)));
    attrs.push((CKA_EXTRACTABLE, b(false)));
    attrs.push((CKA_ALWAYS_SENSITIVE, b(!key.exportable)));
    attrs.push((CKA_NEVER_EXTRACTABLE, b(!key.exportable)));
    attrs.push((CKA_SIGN, b(usage("sign"))));
    attrs.push((CKA_SIGN_RECOVER, b(false)));
    attrs.push((CKA_DECRYPT, b(usage("decrypt"))));
    attrs.push((CKA_UNWRAP, b(false)));
    attrs.push((CKA_DERIVE, b(usage("derive"))));
    attrs.push((CKA_ALWAYS_AUTHENTICATE, b(false)));
    attrs.push((CKA_WRAP_WITH_TRUSTED, b(false)));
    if let Some(c) = cert.and_then(|c| asn1::cert_fields(&c.der.0)) {
        attrs.push((CKA_SUBJECT, c.subject));
    }
    // NSS and OpenSSL read the modulus / curve from the private key object itself
    attrs.extend(
        material
            .into_iter()
            .filter(|(t, _)| *t != CKA_EC_POINT && *t != CKA_MODULUS_BITS),
    );
    if let Some(s) = &spki {
        attrs.push((CKA_PUBLIC_KEY_INFO, s.clone()));
    }
    let name = match cert {
        Some(c) => format!("sha256:{}", c.sha256),
        None => key.id.clone(),
    };
    out.push(Object {
        uid: format!("{base}|priv"),
        handle: 0,
        private: true,
        attrs,
        sensitive: SENSITIVE_PRIVATE.to_vec(),
        key: Some(KeyUse {
            name,
            kind,
            sign: usage("sign"),
            decrypt: usage("decrypt"),
            derive: usage("derive"),
        }),
    });
    out
}

/// CA certificate objects for the chain certificates (DER) of the slot's keys.
pub(crate) fn ca_object(slot_uid: &str, der: &[u8]) -> Object {
    use sha2::Digest;
    let fp = hex::encode(sha2::Sha256::digest(der));
    let mut attrs = vec![
        (CKA_CLASS, ul(CKO_CERTIFICATE)),
        (CKA_TOKEN, b(true)),
        (CKA_PRIVATE, b(false)),
        (CKA_MODIFIABLE, b(false)),
        (CKA_LABEL, format!("CA {}", &fp[..16]).into_bytes()),
        (CKA_ID, hex::decode(&fp[..16]).unwrap_or_default()),
        (CKA_CERTIFICATE_TYPE, ul(CKC_X_509)),
        (CKA_CERTIFICATE_CATEGORY, ul(2)), // authority
        (CKA_TRUSTED, b(false)),
        (CKA_VALUE, der.to_vec()),
    ];
    if let Some(f) = asn1::cert_fields(der) {
        attrs.push((CKA_SUBJECT, f.subject));
        attrs.push((CKA_ISSUER, f.issuer));
        attrs.push((CKA_SERIAL_NUMBER, f.serial));
    }
    Object {
        uid: format!("{slot_uid}|ca|{fp}"),
        handle: 0,
        private: false,
        attrs,
        sensitive: Vec::new(),
        key: None,
    }
}

/// A session secret key made by C_DeriveKey: the template's attributes, the value, and
/// CKA_VALUE readable unless the template asked for a sensitive key.
pub(crate) fn secret_object(
    uid: String,
    template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    value: &[u8],
) -> Object {
    let mut attrs: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> = template
        .iter()
        .filter(|(t, _)| ![CKA_VALUE, CKA_VALUE_LEN, CKA_TOKEN, CKA_CLASS, CKA_LOCAL].contains(t))
        .cloned()
        .collect();
    let flag = |t: CK_ATTRIBUTE_TYPE| {
        template
            .iter()
            .find(|(a, _)| *a == t)
            .map(|(_, v)| v.first().copied().unwrap_or(0) != 0)
    };
    let sensitive = flag(CKA_SENSITIVE).unwrap_or(false) || flag(CKA_EXTRACTABLE) == Some(false);
    let mut set = |t: CK_ATTRIBUTE_TYPE, v: Vec<u8>| {
        if !attrs.iter().any(|(a, _)| *a == t) {
            attrs.push((t, v));
        }
    };
    set(CKA_KEY_TYPE, ul(CKK_GENERIC_SECRET));
    set(CKA_SENSITIVE, b(sensitive));
    set(CKA_EXTRACTABLE, b(!sensitive));
    set(CKA_PRIVATE, b(false));
    set(CKA_LABEL, Vec::new());
    set(CKA_ID, Vec::new());
    attrs.push((CKA_CLASS, ul(CKO_SECRET_KEY)));
    attrs.push((CKA_TOKEN, b(false)));
    attrs.push((CKA_LOCAL, b(false)));
    attrs.push((CKA_VALUE_LEN, ul(value.len() as CK_ULONG)));
    attrs.push((CKA_VALUE, value.to_vec()));
    Object {
        uid,
        handle: 0,
        private: false,
        attrs,
        sensitive: if sensitive {
            vec![CKA_VALUE]
        } else {
            Vec::new()
        },
        key: None,
    }
}

fn modulus_bits(m: &[u8]) -> CK_ULONG {
    let lead = m.first().map_or(0, |b| 8 - b.leading_zeros() as usize);
    (m.len().saturating_sub(1) * 8 + lead) as CK_ULONG
}

/// `rsa-2048`, `ec-p256`, `ec-p384` when the public key itself is unknown.
fn kind_from_algorithm(alg: &str) -> Option<KeyKind> {
    if let Some(bits) = alg.strip_prefix("rsa-") {
        let bits: usize = bits.parse().ok()?;
        return Some(KeyKind::Rsa { bytes: bits / 8 });
    }
    match alg {
        "ec-p256" => Some(KeyKind::Ec { field: 32 }),
        "ec-p384" => Some(KeyKind::Ec { field: 48 }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_bits_count_the_leading_byte() {
        assert_eq!(modulus_bits(&[0x80, 0, 0]), 24);
        assert_eq!(modulus_bits(&[0x01, 0]), 9);
    }

    #[test]
    fn a_listed_key_without_certificate_gets_a_private_key_object() {
        let key: KeyInfo = serde_json_like();
        let objs = key_objects("s", &key);
        assert_eq!(objs.len(), 1);
        let k = &objs[0];
        assert!(k.private);
        assert_eq!(k.get(CKA_CLASS), Some(&ul(CKO_PRIVATE_KEY)[..]));
        assert_eq!(k.get(CKA_SENSITIVE), Some(&[CK_TRUE][..]));
        assert_eq!(k.get(CKA_ID), Some(&[1u8][..]));
        assert!(k.sensitive.contains(&CKA_VALUE));
        assert_eq!(
            k.key.as_ref().map(|u| u.kind),
            Some(KeyKind::Rsa { bytes: 256 })
        );
        assert!(k.matches(&[(CKA_CLASS, ul(CKO_PRIVATE_KEY)), (CKA_ID, vec![1])]));
        assert!(!k.matches(&[(CKA_ID, vec![2])]));
        assert!(!k.matches(&[(CKA_VALUE, vec![])]));
    }

    fn serde_json_like() -> KeyInfo {
        KeyInfo {
            label: "k".into(),
            id: "01".into(),
            token: "t".into(),
            algorithm: "rsa-2048".into(),
            usage: vec!["sign".into(), "decrypt".into()],
            certificate: None,
            chain: Vec::new(),
            touch: None,
            pin_policy: None,
            exportable: false,
            public_key: None,
        }
    }
}
