//! The little DER the module needs: certificate fields for CKA_SUBJECT/ISSUER/SERIAL,
//! public keys (RSA modulus and exponent, EC parameters and point), DigestInfo, and ECDSA
//! signatures from DER to the raw `r || s` PKCS#11 returns.

use der::asn1::UintRef;
use der::{Decode, Encode};
use tokenmail_proto::v1::HashAlgorithm;

/// rsaEncryption, 1.2.840.113549.1.1.1
const RSA_ENCRYPTION: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-ecPublicKey, 1.2.840.10045.2.1
const EC_PUBLIC_KEY: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// prime256v1
const P256: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// secp384r1
const P384: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// secp521r1
const P521: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// What the certificate objects show.
#[derive(Debug, Clone)]
pub(crate) struct CertFields {
    /// The subject Name, DER.
    pub subject: Vec<u8>,
    /// The issuer Name, DER.
    pub issuer: Vec<u8>,
    /// The serial number, DER INTEGER (as CKA_SERIAL_NUMBER holds it).
    pub serial: Vec<u8>,
    /// The SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
}

/// The fields of a certificate, or `None` when it does not parse.
pub(crate) fn cert_fields(der: &[u8]) -> Option<CertFields> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let tbs = cert.tbs_certificate();
    Some(CertFields {
        subject: tbs.subject().to_der().ok()?,
        issuer: tbs.issuer().to_der().ok()?,
        serial: tbs.serial_number().to_der().ok()?,
        spki: tbs.subject_public_key_info().to_der().ok()?,
    })
}

/// A public key as the key objects show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublicKey {
    /// RSA: big-endian modulus and public exponent, no leading zeros.
    Rsa { modulus: Vec<u8>, exponent: Vec<u8> },
    /// EC: CKA_EC_PARAMS (the named curve's OID, DER), the uncompressed point, and the
    /// field size in bytes.
    Ec {
        params: Vec<u8>,
        point: Vec<u8>,
        field: usize,
    },
}

#[derive(der::Sequence)]
struct RsaPub<'a> {
    n: UintRef<'a>,
    e: UintRef<'a>,
}

#[derive(der::Sequence)]
struct EcdsaSig<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

/// Parses a SubjectPublicKeyInfo (DER).
pub(crate) fn parse_spki(der: &[u8]) -> Option<PublicKey> {
    let spki = spki::SubjectPublicKeyInfoRef::from_der(der).ok()?;
    let bits = spki.subject_public_key.as_bytes()?;
    if spki.algorithm.oid == RSA_ENCRYPTION {
        let k = RsaPub::from_der(bits).ok()?;
        Some(PublicKey::Rsa {
            modulus: k.n.as_bytes().to_vec(),
            exponent: k.e.as_bytes().to_vec(),
        })
    } else if spki.algorithm.oid == EC_PUBLIC_KEY {
        let params = spki.algorithm.parameters?;
        let curve: der::asn1::ObjectIdentifier = params.decode_as().ok()?;
        let field = if curve == P256 {
            32
        } else if curve == P384 {
            48
        } else if curve == P521 {
            66
        } else {
            return None;
        };
        Some(PublicKey::Ec {
            params: params.to_der().ok()?,
            point: bits.to_vec(),
            field,
        })
    } else {
        None
    }
}

/// `bytes` as a DER OCTET STRING (CKA_EC_POINT holds the point that way).
pub(crate) fn octet_string(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0x04];
    let n = bytes.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(bytes);
    out
}

/// A peer's EC point given to ECDH1: either the raw uncompressed point or, as some
/// applications send it, that point inside a DER OCTET STRING.
pub(crate) fn peer_point(data: &[u8]) -> &[u8] {
    if data.len() > 2 && data[0] == 0x04 {
        let (len, hdr) = match data[1] {
            n if n < 0x80 => (n as usize, 2),
            0x81 if data.len() > 3 => (data[2] as usize, 3),
            _ => return data,
        };
        if hdr + len == data.len() && data.get(hdr) == Some(&0x04) && len % 2 == 1 {
            return &data[hdr..];
        }
    }
    data
}

/// DigestInfo prefixes (RFC 8017 §9.2 note 1) of the hashes the agent signs.
const DIGEST_INFO: [(HashAlgorithm, &[u8]); 3] = [
    (
        HashAlgorithm::Sha256,
        &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
    ),
    (
        HashAlgorithm::Sha384,
        &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
    ),
    (
        HashAlgorithm::Sha512,
        &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
    ),
];

/// Splits a DER DigestInfo into its hash and digest; `None` for anything else (other
/// hashes included: the agent signs SHA-256, SHA-384 and SHA-512 only).
pub(crate) fn parse_digest_info(data: &[u8]) -> Option<(HashAlgorithm, &[u8])> {
    DIGEST_INFO.iter().find_map(|(hash, prefix)| {
        let digest = data.strip_prefix(*prefix)?;
        (digest.len() == hash.digest_len()).then_some((*hash, digest))
    })
}

/// An ECDSA signature, DER `Ecdsa-Sig-Value`, as the raw `r || s` of `field` bytes each.
pub(crate) fn ecdsa_raw(der: &[u8], field: usize) -> Option<Vec<u8>> {
    let sig = EcdsaSig::from_der(der).ok()?;
    let mut out = vec![0u8; 2 * field];
    for (i, v) in [sig.r.as_bytes(), sig.s.as_bytes()].into_iter().enumerate() {
        if v.len() > field {
            return None;
        }
        out[(i + 1) * field - v.len()..(i + 1) * field].copy_from_slice(v);
    }
    Some(out)
}

/// Hashes `data`.
pub(crate) fn hash(alg: HashAlgorithm, data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    match alg {
        HashAlgorithm::Sha256 => sha2::Sha256::digest(data).to_vec(),
        HashAlgorithm::Sha384 => sha2::Sha384::digest(data).to_vec(),
        HashAlgorithm::Sha512 => sha2::Sha512::digest(data).to_vec(),
        // not reachable from the mechanisms this module lists; SHA-1 is never signed
        HashAlgorithm::Sha1 => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_info_is_split_and_other_inputs_refused() {
        let mut di = DIGEST_INFO[0].1.to_vec();
        di.extend_from_slice(&[7u8; 32]);
        assert_eq!(
            parse_digest_info(&di),
            Some((HashAlgorithm::Sha256, &[7u8; 32][..]))
        );
        assert_eq!(parse_digest_info(&di[..di.len() - 1]), None);
        assert_eq!(parse_digest_info(&[7u8; 32]), None);
    }

    #[test]
    fn ecdsa_der_becomes_fixed_width_r_s() {
        // r = 0x01, s = 0x00ff (leading zero for the sign)
        let der = [0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x02, 0x00, 0xff];
        let raw = ecdsa_raw(&der, 4).expect("parses");
        assert_eq!(raw, vec![0, 0, 0, 1, 0, 0, 0, 0xff]);
        assert!(ecdsa_raw(&der[..8], 4).is_none());
    }

    #[test]
    fn peer_points_are_taken_raw_or_from_an_octet_string() {
        let mut point = vec![0x04];
        point.extend_from_slice(&[9u8; 64]);
        assert_eq!(peer_point(&point), &point[..]);
        let wrapped = octet_string(&point);
        assert_eq!(wrapped[..2], [0x04, 65]);
        assert_eq!(peer_point(&wrapped), &point[..]);
    }
}
