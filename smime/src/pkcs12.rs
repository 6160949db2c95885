//! Reading PKCS#12 files (RFC 7292) for the import of escrowed encryption keys: the
//! private key (PKCS#8), its certificate and the CA certificates.
//!
//! RustCrypto's `pkcs12` crate is on another `cms` pre-release than ours (it pins
//! `cms =0.3.0-pre.1`; two pre-releases of one crate cannot coexist in a build), so this
//! is the least code that reads what OpenSSL writes, on our `der`/`cms` types:
//! - OpenSSL 3 defaults: PBES2 (PBKDF2 with HMAC-SHA-256, AES-256-CBC) through `pkcs5`,
//!   MAC HMAC-SHA-256 with the PKCS#12 key derivation;
//! - `-legacy` and older files: `pbeWithSHAAnd3-KeyTripleDES-CBC`, `pbeWithSHAAnd40BitRC2-CBC`
//!   and `pbeWithSHAAnd128BitRC2-CBC` with the PKCS#12 key derivation (Appendix B), MAC
//!   HMAC-SHA-1.
//!
//! The MAC is checked before anything is decrypted; iteration counts are bounded, so a
//! hostile file cannot ask for hours of key derivation. Errors name what to do; a wrong
//! password is one error whatever part found it.

use cms::content_info::ContentInfo;
use cms::encrypted_data::EncryptedData;
use der::asn1::{Any, BmpString, ObjectIdentifier as Oid, OctetString, SetOfVec};
use der::{Decode, Encode, Sequence};
use hmac::{KeyInit, Mac};
use spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

use crate::alg::HashAlg;

/// The most key-derivation iterations a file may ask for (OpenSSL writes 2048; 600 000 is
/// what OWASP asks of PBKDF2-SHA-256 today).
pub const MAX_ITERATIONS: u32 = 1_000_000;
/// The most bags a file may hold.
const MAX_BAGS: usize = 256;

const ID_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
const ID_ENCRYPTED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.6");
const KEY_BAG: Oid = Oid::new_unwrap("1.2.840.113549.1.12.10.1.1");
const SHROUDED_KEY_BAG: Oid = Oid::new_unwrap("1.2.840.113549.1.12.10.1.2");
const CERT_BAG: Oid = Oid::new_unwrap("1.2.840.113549.1.12.10.1.3");
const X509_CERTIFICATE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.22.1");
const LOCAL_KEY_ID: Oid = Oid::new_unwrap("1.2.840.113549.1.9.21");
const FRIENDLY_NAME: Oid = Oid::new_unwrap("1.2.840.113549.1.9.20");
const PBES2: Oid = Oid::new_unwrap("1.2.840.113549.1.5.13");
const PBE_SHA1_3DES: Oid = Oid::new_unwrap("1.2.840.113549.1.12.1.3");
const PBE_SHA1_2DES: Oid = Oid::new_unwrap("1.2.840.113549.1.12.1.4");
const PBE_SHA1_RC2_128: Oid = Oid::new_unwrap("1.2.840.113549.1.12.1.5");
const PBE_SHA1_RC2_40: Oid = Oid::new_unwrap("1.2.840.113549.1.12.1.6");

/// What went wrong reading a PKCS#12 file.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs12Error {
    /// Not a PKCS#12 file, or a damaged one.
    #[error("not a readable PKCS#12 file ({0}); export it again (openssl pkcs12 -export)")]
    Format(String),
    /// The password does not open the file.
    #[error("wrong password for the PKCS#12 file (or the file is damaged)")]
    Password,
    /// Something the file uses that is not read here.
    #[error("the PKCS#12 file uses {0}, which is not supported; export it again with OpenSSL 3 defaults")]
    Unsupported(String),
    /// The file asks for too much work.
    #[error("the PKCS#12 file asks for {0} key-derivation iterations (at most {MAX_ITERATIONS} are done)")]
    TooCostly(u64),
    /// No private key, no certificate for it, or several keys.
    #[error("{0}")]
    Content(String),
}

fn format(e: impl std::fmt::Display) -> Pkcs12Error {
    Pkcs12Error::Format(e.to_string())
}

/// The contents of a PKCS#12 file.
pub struct Pkcs12 {
    /// The private key, PKCS#8 PrivateKeyInfo DER.
    pub private_key: Zeroizing<Vec<u8>>,
    /// The key's certificate, DER.
    pub certificate: Vec<u8>,
    /// The other certificates (CA certificates, usually), DER.
    pub chain: Vec<Vec<u8>>,
    /// The key's friendlyName, when the file has one.
    pub friendly_name: Option<String>,
}

/// Never prints the key.
impl std::fmt::Debug for Pkcs12 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs12")
            .field("certificate", &self.certificate.len())
            .field("chain", &self.chain.len())
            .field("friendly_name", &self.friendly_name)
            .finish()
    }
}

#[derive(Clone, Debug, Sequence)]
struct Pfx {
    version: u8,
    auth_safe: ContentInfo,
    #[asn1(optional = "true")]
    mac_data: Option<MacData>,
}

#[derive(Clone, Debug, Sequence)]
struct MacData {
    mac: DigestInfo,
    mac_salt: OctetString,
    #[asn1(default = "one")]
    iterations: u32,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Sequence)]
struct DigestInfo {
    algorithm: AlgorithmIdentifierOwned,
    digest: OctetString,
}

#[derive(Clone, Debug, Sequence)]
struct SafeBag {
    bag_id: Oid,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    bag_value: Any,
    #[asn1(optional = "true")]
    bag_attributes: Option<SetOfVec<x509_cert::attr::Attribute>>,
}

#[derive(Clone, Debug, Sequence)]
struct CertBag {
    cert_id: Oid,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    cert_value: OctetString,
}

#[derive(Clone, Debug, Sequence)]
struct EncryptedPrivateKeyInfo {
    algorithm: AlgorithmIdentifierOwned,
    data: OctetString,
}

#[derive(Clone, Debug, Sequence)]
struct PbeParams {
    salt: OctetString,
    iterations: u32,
}

/// The password as the PKCS#12 key derivation takes it: BMPString with a terminating
/// NUL; an empty password is also tried as no bytes at all (OpenSSL writes either).
fn bmp_passwords(password: &str) -> Result<Vec<Zeroizing<Vec<u8>>>, Pkcs12Error> {
    let bmp = BmpString::from_utf8(password)
        .map_err(|_| Pkcs12Error::Content("the password has characters outside the BMP".into()))?;
    let mut p = Zeroizing::new(bmp.into_bytes().to_vec());
    p.extend_from_slice(&[0, 0]);
    let mut out = vec![p];
    if password.is_empty() {
        out.push(Zeroizing::new(Vec::new()));
    }
    Ok(out)
}

/// RFC 7292 Appendix B.2: `n` bytes of key material of purpose `id` (1 key, 2 IV, 3 MAC).
fn kdf(
    hash: HashAlg,
    password: &[u8],
    salt: &[u8],
    id: u8,
    iterations: u32,
    n: usize,
) -> Zeroizing<Vec<u8>> {
    let (u, v) = match hash {
        HashAlg::Sha384 | HashAlg::Sha512 => (hash.output_len(), 128),
        _ => (hash.output_len(), 64),
    };
    let fill = |src: &[u8]| -> Vec<u8> {
        if src.is_empty() {
            return Vec::new();
        }
        let len = v * src.len().div_ceil(v);
        src.iter().copied().cycle().take(len).collect()
    };
    let d = vec![id; v];
    let mut i = Zeroizing::new(fill(salt));
    i.extend_from_slice(&fill(password));
    let mut out = Zeroizing::new(Vec::with_capacity(n + u));
    while out.len() < n {
        let mut input = Zeroizing::new(d.clone());
        input.extend_from_slice(&i);
        let mut a = Zeroizing::new(hash.digest(&input));
        for _ in 1..iterations {
            a = Zeroizing::new(hash.digest(&a));
        }
        out.extend_from_slice(&a);
        if out.len() >= n {
            break;
        }
        let b: Vec<u8> = a.iter().copied().cycle().take(v).collect();
        for block in i.chunks_mut(v) {
            // block = (block + b + 1) mod 2^(8v)
            let mut carry = 1u16;
            for k in (0..v).rev() {
                let s = u16::from(block[k]) + u16::from(b[k]) + carry;
                block[k] = s as u8;
                carry = s >> 8;
            }
        }
    }
    out.truncate(n);
    out
}

fn check_iterations(n: u64) -> Result<(), Pkcs12Error> {
    if n > u64::from(MAX_ITERATIONS) {
        Err(Pkcs12Error::TooCostly(n))
    } else {
        Ok(())
    }
}

/// Checks the MAC; returns the password encoding that verified it.
fn check_mac(
    mac: &MacData,
    content: &[u8],
    password: &str,
) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    check_iterations(u64::from(mac.iterations))?;
    let hash = HashAlg::from_oid(&mac.mac.algorithm.oid)
        .ok_or_else(|| Pkcs12Error::Unsupported(format!("MAC digest {}", mac.mac.algorithm.oid)))?;
    for p in bmp_passwords(password)? {
        let key = kdf(
            hash,
            &p,
            mac.mac_salt.as_bytes(),
            3,
            mac.iterations,
            hash.output_len(),
        );
        let ok = match hash {
            HashAlg::Sha1 => hmac_verify::<sha1::Sha1>(&key, content, mac.mac.digest.as_bytes()),
            HashAlg::Sha256 => {
                hmac_verify::<sha2::Sha256>(&key, content, mac.mac.digest.as_bytes())
            }
            HashAlg::Sha384 => {
                hmac_verify::<sha2::Sha384>(&key, content, mac.mac.digest.as_bytes())
            }
            HashAlg::Sha512 => {
                hmac_verify::<sha2::Sha512>(&key, content, mac.mac.digest.as_bytes())
            }
        };
        if ok {
            return Ok(p);
        }
    }
    Err(Pkcs12Error::Password)
}

fn hmac_verify<D>(key: &[u8], data: &[u8], tag: &[u8]) -> bool
where
    D: hmac::digest::Digest + hmac::digest::block_api::BlockSizeUser + Clone,
    hmac::SimpleHmac<D>: KeyInit + Mac,
{
    let Ok(mut m) = <hmac::SimpleHmac<D> as KeyInit>::new_from_slice(key) else {
        return false;
    };
    m.update(data);
    m.verify_slice(tag).is_ok()
}

/// CBC decryption with PKCS#7 padding removed.
fn cbc_decrypt<C>(cipher: C, iv: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error>
where
    C: cipher::BlockCipherDecrypt,
    cbc::Decryptor<C>: cipher::BlockModeDecrypt,
{
    use cipher::{BlockModeDecrypt, InnerIvInit};
    let mut dec =
        cbc::Decryptor::<C>::inner_iv_slice_init(cipher, iv).map_err(|_| Pkcs12Error::Password)?;
    let bs = iv.len();
    if data.is_empty() || data.len() % bs != 0 {
        return Err(Pkcs12Error::Password);
    }
    let mut buf = Zeroizing::new(data.to_vec());
    let (blocks, _) = cipher::Array::slice_as_chunks_mut(&mut buf);
    dec.decrypt_blocks(blocks);
    let pad = usize::from(*buf.last().ok_or(Pkcs12Error::Password)?);
    if pad == 0
        || pad > bs
        || buf[buf.len() - pad..]
            .iter()
            .any(|b| usize::from(*b) != pad)
    {
        return Err(Pkcs12Error::Password);
    }
    let n = buf.len() - pad;
    buf.truncate(n);
    Ok(buf)
}

/// Decrypts `data` encrypted with `alg` under the password (`bmp`: its PKCS#12 form).
fn decrypt(
    alg: &AlgorithmIdentifierOwned,
    data: &[u8],
    password: &str,
    bmp: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    use cipher::KeyInit as _;
    if alg.oid == PBES2 {
        let der_bytes = alg.to_der().map_err(format)?;
        let scheme = pkcs8::pkcs5::EncryptionScheme::try_from(der_bytes.as_slice())
            .map_err(|e| Pkcs12Error::Unsupported(format!("this PBES2 form ({e})")))?;
        let params = scheme
            .pbes2()
            .ok_or_else(|| Pkcs12Error::Unsupported("PBES1".into()))?;
        match params.kdf.pbkdf2() {
            Some(p) => check_iterations(u64::from(p.iteration_count))?,
            None => return Err(Pkcs12Error::Unsupported("scrypt".into())),
        }
        return scheme
            .decrypt(password.as_bytes(), data)
            .map(Zeroizing::new)
            .map_err(|_| Pkcs12Error::Password);
    }
    let params = alg
        .parameters
        .as_ref()
        .ok_or_else(|| Pkcs12Error::Format("PBE without parameters".into()))?
        .decode_as::<PbeParams>()
        .map_err(format)?;
    check_iterations(u64::from(params.iterations))?;
    let salt = params.salt.as_bytes();
    let derive = |id, n| kdf(HashAlg::Sha1, bmp, salt, id, params.iterations, n);
    if alg.oid == PBE_SHA1_3DES || alg.oid == PBE_SHA1_2DES {
        let mut key = derive(1, if alg.oid == PBE_SHA1_3DES { 24 } else { 16 });
        if key.len() == 16 {
            let first = key[..8].to_vec();
            key.extend_from_slice(&first);
        }
        let iv = derive(2, 8);
        let c = des::TdesEde3::new_from_slice(&key).map_err(|_| Pkcs12Error::Password)?;
        return cbc_decrypt(c, &iv, data);
    }
    if alg.oid == PBE_SHA1_RC2_40 || alg.oid == PBE_SHA1_RC2_128 {
        let n = if alg.oid == PBE_SHA1_RC2_40 { 5 } else { 16 };
        let key = derive(1, n);
        let iv = derive(2, 8);
        let c = rc2::Rc2::new_with_eff_key_len(&key, n * 8);
        return cbc_decrypt(c, &iv, data);
    }
    Err(Pkcs12Error::Unsupported(format!("encryption {}", alg.oid)))
}

/// Reads a PKCS#12 file (DER, or BER as some producers write) with `password`.
pub fn parse(input: &[u8], password: &str) -> Result<Pkcs12, Pkcs12Error> {
    let der_input = crate::ber::ber_to_der(input).map_err(format)?;
    let pfx = Pfx::from_der(&der_input).map_err(format)?;
    if pfx.version != 3 {
        return Err(Pkcs12Error::Format(format!("version {}", pfx.version)));
    }
    if pfx.auth_safe.content_type != ID_DATA {
        return Err(Pkcs12Error::Unsupported("public-key integrity mode".into()));
    }
    let auth = pfx
        .auth_safe
        .content
        .decode_as::<OctetString>()
        .map_err(format)?;
    let bmp = match &pfx.mac_data {
        Some(mac) => check_mac(mac, auth.as_bytes(), password)?,
        None => bmp_passwords(password)?.remove(0),
    };
    let safes = Vec::<ContentInfo>::from_der(auth.as_bytes()).map_err(format)?;
    let mut bags = Vec::new();
    for ci in safes {
        let plain: Zeroizing<Vec<u8>> = if ci.content_type == ID_DATA {
            Zeroizing::new(
                ci.content
                    .decode_as::<OctetString>()
                    .map_err(format)?
                    .into_bytes()
                    .into_vec(),
            )
        } else if ci.content_type == ID_ENCRYPTED_DATA {
            let ed = ci.content.decode_as::<EncryptedData>().map_err(format)?;
            let ct = ed
                .enc_content_info
                .encrypted_content
                .as_ref()
                .ok_or_else(|| Pkcs12Error::Format("encrypted data without content".into()))?;
            decrypt(
                &ed.enc_content_info.content_enc_alg,
                ct.as_bytes(),
                password,
                &bmp,
            )?
        } else {
            return Err(Pkcs12Error::Unsupported(format!(
                "content {}",
                ci.content_type
            )));
        };
        let contents = Vec::<SafeBag>::from_der(&plain).map_err(|e| {
            if pfx.mac_data.is_none() {
                Pkcs12Error::Password
            } else {
                format(e)
            }
        })?;
        bags.extend(contents);
        if bags.len() > MAX_BAGS {
            return Err(Pkcs12Error::Format(format!("more than {MAX_BAGS} bags")));
        }
    }
    collect(bags, password, &bmp)
}

fn attribute(bag: &SafeBag, oid: Oid) -> Option<&Any> {
    bag.bag_attributes
        .as_ref()?
        .iter()
        .find(|a| a.oid == oid)
        .and_then(|a| a.values.iter().next())
}

fn collect(bags: Vec<SafeBag>, password: &str, bmp: &[u8]) -> Result<Pkcs12, Pkcs12Error> {
    // (PKCS#8, localKeyId, friendlyName)
    type KeyBag = (Zeroizing<Vec<u8>>, Option<Vec<u8>>, Option<String>);
    let mut keys: Vec<KeyBag> = Vec::new();
    let mut certs: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    for bag in &bags {
        let local_id = attribute(bag, LOCAL_KEY_ID)
            .and_then(|a| a.decode_as::<OctetString>().ok())
            .map(|o| o.into_bytes().into_vec());
        if bag.bag_id == KEY_BAG || bag.bag_id == SHROUDED_KEY_BAG {
            let key = if bag.bag_id == KEY_BAG {
                Zeroizing::new(bag.bag_value.to_der().map_err(format)?)
            } else {
                let epki = bag
                    .bag_value
                    .decode_as::<EncryptedPrivateKeyInfo>()
                    .map_err(format)?;
                decrypt(&epki.algorithm, epki.data.as_bytes(), password, bmp)?
            };
            let name = attribute(bag, FRIENDLY_NAME)
                .and_then(|a| a.decode_as::<BmpString>().ok())
                .map(|b| b.to_string());
            keys.push((key, local_id, name));
        } else if bag.bag_id == CERT_BAG {
            let cb = bag.bag_value.decode_as::<CertBag>().map_err(format)?;
            if cb.cert_id != X509_CERTIFICATE {
                continue;
            }
            certs.push((cb.cert_value.into_bytes().into_vec(), local_id));
        }
    }
    let (key, key_id, friendly_name) = match keys.len() {
        1 => keys.remove(0),
        0 => {
            return Err(Pkcs12Error::Content(
                "the PKCS#12 file holds no private key".into(),
            ))
        }
        n => {
            return Err(Pkcs12Error::Content(format!(
                "the PKCS#12 file holds {n} private keys; export one key per file"
            )))
        }
    };
    // the key's certificate: the one with the key's localKeyId, else the one whose public
    // key is the key's
    let by_id = key_id
        .as_ref()
        .and_then(|id| certs.iter().position(|(_, cid)| cid.as_ref() == Some(id)));
    let index = by_id.or_else(|| certs.iter().position(|(c, _)| same_public_key(&key, c)));
    let Some(index) = index else {
        return Err(Pkcs12Error::Content(
            "the PKCS#12 file has no certificate for its private key".into(),
        ));
    };
    let certificate = certs.remove(index).0;
    if !same_public_key(&key, &certificate) {
        return Err(Pkcs12Error::Content(
            "the certificate of the PKCS#12 file is not the one of its private key".into(),
        ));
    }
    Ok(Pkcs12 {
        private_key: key,
        certificate,
        chain: certs.into_iter().map(|(c, _)| c).collect(),
        friendly_name,
    })
}

/// Whether the PKCS#8 key and the certificate have the same public key.
fn same_public_key(pkcs8_der: &[u8], cert_der: &[u8]) -> bool {
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let Ok(cert) = x509_cert::Certificate::from_der(cert_der) else {
        return false;
    };
    let Ok(cert_spki) = cert.tbs_certificate().subject_public_key_info().to_der() else {
        return false;
    };
    let spki = if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8_der) {
        k.to_public_key().to_public_key_der().ok()
    } else if let Ok(k) = p256::SecretKey::from_pkcs8_der(pkcs8_der) {
        k.public_key().to_public_key_der().ok()
    } else if let Ok(k) = p384::SecretKey::from_pkcs8_der(pkcs8_der) {
        k.public_key().to_public_key_der().ok()
    } else {
        None
    };
    spki.is_some_and(|d| d.as_bytes() == cert_spki.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_matches_rfc7292_test_vectors() {
        // From the PKCS#12 KDF vectors used by OpenSSL/BouncyCastle: password "smeg",
        // salt 0A58CF64530D823F, id 1, 1 iteration, 24 bytes.
        let pw = bmp_passwords("smeg").expect("bmp").remove(0);
        let salt = hex("0A58CF64530D823F");
        let key = kdf(HashAlg::Sha1, &pw, &salt, 1, 1, 24);
        assert_eq!(
            key.as_slice(),
            hex("8AAAE6297B6CB04642AB5B077851284EB7128F1A2A7FBCA3").as_slice()
        );
        let iv = kdf(HashAlg::Sha1, &pw, &salt, 2, 1, 8);
        assert_eq!(iv.as_slice(), hex("79993DFE048D3B76").as_slice());
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn garbage_and_costly_files_fail_cleanly() {
        assert!(matches!(
            parse(b"not der", "x"),
            Err(Pkcs12Error::Format(_))
        ));
        assert!(matches!(
            check_iterations(u64::from(MAX_ITERATIONS) + 1),
            Err(Pkcs12Error::TooCostly(_))
        ));
    }
}
