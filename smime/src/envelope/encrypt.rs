//! Encryption: a push API that writes BER as `openssl cms -stream` does, and a
//! whole-buffer convenience that writes DER.

use cms::authenveloped_data::AuthEnvelopedData;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{EncryptedContentInfo, EnvelopedData, RecipientInfo, RecipientInfos};
use der::asn1::OctetString;
use der::{Any, Encode};
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::KeyUsage;
use x509_cert::Certificate;

use super::ber::{write_len, write_tlv};
use super::content::{ContentCipher, ContentEncryptor};
use super::oids;
use super::recipients::{build_kari, build_ktri, random_cek, RecipientPublicKey};
use super::{EncryptError, KeyTransport, OaepHash};

/// One recipient of an encrypted message: its certificate and how its key is
/// used. RSA keys get RSAES-OAEP with SHA-256 unless told otherwise; P-256 and
/// P-384 keys get ephemeral-static ECDH (RFC 5753).
#[derive(Clone, Debug)]
pub struct EncryptRecipient {
    cert: Certificate,
    key: RecipientPublicKey,
    transport: KeyTransport,
}

fn subject(cert: &Certificate) -> String {
    cert.tbs_certificate().subject().to_string()
}

impl EncryptRecipient {
    /// Takes a recipient certificate. Fails for key types we cannot encrypt
    /// to, and when a keyUsage extension forbids the use (RSA needs
    /// keyEncipherment, EC needs keyAgreement).
    pub fn new(cert: Certificate) -> Result<Self, EncryptError> {
        let key = RecipientPublicKey::from_certificate(&cert).map_err(|reason| {
            EncryptError::UnsupportedRecipient {
                subject: subject(&cert),
                reason,
            }
        })?;
        if let Ok(Some((_, ku))) = cert.tbs_certificate().get_extension::<KeyUsage>() {
            let ok = match key {
                RecipientPublicKey::Rsa(_) => ku.key_encipherment(),
                _ => ku.key_agreement(),
            };
            if !ok {
                return Err(EncryptError::UnsupportedRecipient {
                    subject: subject(&cert),
                    reason: match key {
                        RecipientPublicKey::Rsa(_) => {
                            "its keyUsage does not allow keyEncipherment".into()
                        }
                        _ => "its keyUsage does not allow keyAgreement".into(),
                    },
                });
            }
        }
        Ok(Self {
            cert,
            key,
            transport: KeyTransport::RsaOaep {
                hash: OaepHash::Sha256,
            },
        })
    }

    /// Parses a certificate file: DER, or PEM (the first `CERTIFICATE` block;
    /// text around it, as in `openssl pkcs12` output, is ignored).
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, EncryptError> {
        use der::{Decode, DecodePem};
        const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
        const END: &[u8] = b"-----END CERTIFICATE-----";
        let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
        let parsed = match find(bytes, BEGIN) {
            Some(start) => {
                let rest = &bytes[start..];
                let end = find(rest, END).map(|e| e + END.len()).unwrap_or(rest.len());
                Certificate::from_pem(&rest[..end])
            }
            None => Certificate::from_der(bytes),
        };
        let cert = parsed.map_err(|e| EncryptError::UnsupportedRecipient {
            subject: "(unparsable)".into(),
            reason: format!("not a PEM or DER certificate: {e}"),
        })?;
        Self::new(cert)
    }

    /// Chooses the RSA key transport (no effect on EC recipients).
    pub fn with_key_transport(mut self, transport: KeyTransport) -> Self {
        self.transport = transport;
        self
    }

    /// The certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    fn recipient_info(&self, cek: &[u8]) -> Result<RecipientInfo, EncryptError> {
        match &self.key {
            RecipientPublicKey::Rsa(k) => build_ktri(&self.cert, k, self.transport, cek),
            _ => build_kari(&self.cert, &self.key, cek),
        }
    }
}

struct Prepared {
    content: ContentEncryptor,
    infos: RecipientInfos,
    alg: AlgorithmIdentifierOwned,
    version: CmsVersion,
}

fn prepare(
    recipients: &[EncryptRecipient],
    cipher: ContentCipher,
) -> Result<Prepared, EncryptError> {
    if recipients.is_empty() {
        return Err(EncryptError::NoRecipients);
    }
    let cek = random_cek(cipher.key_len())?;
    let infos = recipients
        .iter()
        .map(|r| r.recipient_info(&cek))
        .collect::<Result<Vec<_>, _>>()?;
    // RFC 5652 §6.1: version 0 when every RecipientInfo is a version-0 KTRI.
    let all_v0 = infos
        .iter()
        .all(|ri| matches!(ri, RecipientInfo::Ktri(k) if k.version == CmsVersion::V0));
    let version = if cipher.is_authenticated() || all_v0 {
        CmsVersion::V0
    } else {
        CmsVersion::V2
    };
    let infos = RecipientInfos::try_from(infos).map_err(EncryptError::Der)?;
    let (content, params) = ContentEncryptor::new(cipher, &cek)?;
    Ok(Prepared {
        content,
        infos,
        alg: AlgorithmIdentifierOwned {
            oid: cipher.oid(),
            parameters: Some(params),
        },
        version,
    })
}

/// Streaming encryptor.
///
/// ```text
/// let (mut enc, header) = Encryptor::new(&recipients, ContentCipher::Aes256Gcm)?;
/// write(header);
/// for chunk in input { write(enc.update(chunk)?); }
/// write(enc.finish()?);
/// ```
/// The concatenation is a BER-encoded ContentInfo (indefinite lengths for the
/// outer layers and the chunked encryptedContent, as `openssl cms -stream`
/// writes). Memory use is bounded by the largest chunk given to `update`.
pub struct Encryptor {
    content: Option<ContentEncryptor>,
    cipher: ContentCipher,
    scratch: Vec<u8>,
    /// `Some((declared, seen))` for the definite-length (DER) form.
    length: Option<(u64, u64)>,
}

impl std::fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryptor")
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

const EOC: [u8; 2] = [0, 0];

impl Encryptor {
    /// Starts an envelope for `recipients`; returns the encryptor and the
    /// header bytes to write first.
    pub fn new(
        recipients: &[EncryptRecipient],
        cipher: ContentCipher,
    ) -> Result<(Self, Vec<u8>), EncryptError> {
        let p = prepare(recipients, cipher)?;
        let mut h = Vec::with_capacity(1024);
        let ct_oid = if cipher.is_authenticated() {
            oids::ID_AUTH_ENVELOPED_DATA
        } else {
            oids::ID_ENVELOPED_DATA
        };
        h.extend_from_slice(&[0x30, 0x80]);
        h.extend_from_slice(&ct_oid.to_der().map_err(EncryptError::Der)?);
        h.extend_from_slice(&[0xa0, 0x80, 0x30, 0x80]);
        h.extend_from_slice(&p.version.to_der().map_err(EncryptError::Der)?);
        h.extend_from_slice(&p.infos.to_der().map_err(EncryptError::Der)?);
        h.extend_from_slice(&[0x30, 0x80]);
        h.extend_from_slice(&oids::ID_DATA.to_der().map_err(EncryptError::Der)?);
        h.extend_from_slice(&p.alg.to_der().map_err(EncryptError::Der)?);
        h.extend_from_slice(&[0xa0, 0x80]);
        Ok((
            Self {
                content: Some(p.content),
                cipher,
                scratch: Vec::new(),
                length: None,
            },
            h,
        ))
    }

    /// Like [`Encryptor::new`], for content of a length known in advance: the
    /// output is then DER (definite lengths throughout, the encryptedContent
    /// one primitive OCTET STRING), still produced as a stream. Exactly
    /// `content_len` bytes must be given to `update`; `finish` fails otherwise.
    pub fn new_with_length(
        recipients: &[EncryptRecipient],
        cipher: ContentCipher,
        content_len: u64,
    ) -> Result<(Self, Vec<u8>), EncryptError> {
        let p = prepare(recipients, cipher)?;
        let ct_len = if cipher.is_authenticated() {
            content_len
        } else {
            (content_len / 16 + 1) * 16
        };
        let ct_len = usize::try_from(ct_len).map_err(|_| EncryptError::TooLong)?;
        let der = |e: der::Error| EncryptError::Der(e);
        // EncryptedContentInfo
        let mut eci_head = oids::ID_DATA.to_der().map_err(der)?;
        eci_head.extend_from_slice(&p.alg.to_der().map_err(der)?);
        eci_head.push(0x80);
        write_len(&mut eci_head, ct_len);
        let eci_len = eci_head.len() + ct_len;
        // (Auth)EnvelopedData
        let mut env_head = p.version.to_der().map_err(der)?;
        env_head.extend_from_slice(&p.infos.to_der().map_err(der)?);
        env_head.push(0x30);
        write_len(&mut env_head, eci_len);
        let mac_len = if cipher.is_authenticated() { 18 } else { 0 };
        let env_len = env_head.len() + eci_len + mac_len;
        // [0] EXPLICIT
        let mut explicit_head = vec![0x30];
        write_len(&mut explicit_head, env_len);
        let explicit_len = explicit_head.len() + env_len;
        // ContentInfo
        let ct_oid = if cipher.is_authenticated() {
            oids::ID_AUTH_ENVELOPED_DATA
        } else {
            oids::ID_ENVELOPED_DATA
        };
        let mut ci_body_head = ct_oid.to_der().map_err(der)?;
        ci_body_head.push(0xa0);
        write_len(&mut ci_body_head, explicit_len);
        let ci_len = ci_body_head.len() + explicit_len;

        let mut h = vec![0x30];
        write_len(&mut h, ci_len);
        h.extend_from_slice(&ci_body_head);
        h.extend_from_slice(&explicit_head);
        h.extend_from_slice(&env_head);
        h.extend_from_slice(&eci_head);
        Ok((
            Self {
                content: Some(p.content),
                cipher,
                scratch: Vec::new(),
                length: Some((content_len, 0)),
            },
            h,
        ))
    }

    /// Encrypts a chunk of content; returns the bytes to write next (possibly
    /// empty).
    pub fn update(&mut self, data: &[u8]) -> Result<Vec<u8>, EncryptError> {
        let mut out = Vec::with_capacity(data.len() + 32);
        self.update_into(data, &mut out)?;
        Ok(out)
    }

    /// Like [`Encryptor::update`], appending to `out`.
    pub fn update_into(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), EncryptError> {
        let content = self.content.as_mut().ok_or(EncryptError::Finished)?;
        if let Some((declared, seen)) = &mut self.length {
            *seen += data.len() as u64;
            if *seen > *declared {
                return Err(EncryptError::LengthMismatch);
            }
            return content.update(data, out);
        }
        self.scratch.clear();
        content.update(data, &mut self.scratch)?;
        if !self.scratch.is_empty() {
            write_tlv(out, 0x04, &self.scratch);
        }
        Ok(())
    }

    /// Ends the content; returns the last bytes to write (last ciphertext
    /// block, end-of-contents octets, the GCM tag).
    pub fn finish(mut self) -> Result<Vec<u8>, EncryptError> {
        let content = self.content.take().ok_or(EncryptError::Finished)?;
        let mut last = Vec::new();
        if let Some((declared, seen)) = self.length {
            if declared != seen {
                return Err(EncryptError::LengthMismatch);
            }
            if let Some(tag) = content.finish(&mut last) {
                write_tlv(&mut last, 0x04, &tag);
            }
            return Ok(last);
        }
        let tag = content.finish(&mut last);
        let mut out = Vec::with_capacity(64);
        if !last.is_empty() {
            write_tlv(&mut out, 0x04, &last);
        }
        out.extend_from_slice(&EOC); // [0] encryptedContent
        out.extend_from_slice(&EOC); // EncryptedContentInfo
        if let Some(tag) = tag {
            write_tlv(&mut out, 0x04, &tag); // mac
        }
        out.extend_from_slice(&EOC); // (Auth)EnvelopedData
        out.extend_from_slice(&EOC); // [0] EXPLICIT
        out.extend_from_slice(&EOC); // ContentInfo
        Ok(out)
    }

    /// Bytes held between calls (for bounded-memory checks): the scratch
    /// buffer's capacity.
    pub fn buffered_capacity(&self) -> usize {
        self.scratch.capacity()
    }

    /// The content cipher.
    pub fn cipher(&self) -> ContentCipher {
        self.cipher
    }
}

/// Encrypts a whole buffer; returns a DER ContentInfo (EnvelopedData for CBC,
/// AuthEnvelopedData for GCM).
pub fn encrypt(
    recipients: &[EncryptRecipient],
    cipher: ContentCipher,
    content: &[u8],
) -> Result<Vec<u8>, EncryptError> {
    let mut p = prepare(recipients, cipher)?;
    let mut ct = Vec::with_capacity(content.len() + 16);
    p.content.update(content, &mut ct)?;
    let tag = p.content.finish(&mut ct);
    let eci = EncryptedContentInfo {
        content_type: oids::ID_DATA,
        content_enc_alg: p.alg,
        encrypted_content: Some(OctetString::new(ct).map_err(EncryptError::Der)?),
    };
    let (content_type, inner) = match tag {
        None => (
            oids::ID_ENVELOPED_DATA,
            Any::encode_from(&EnvelopedData {
                version: p.version,
                originator_info: None,
                recip_infos: p.infos,
                encrypted_content: eci,
                unprotected_attrs: None,
            }),
        ),
        Some(tag) => (
            oids::ID_AUTH_ENVELOPED_DATA,
            Any::encode_from(&AuthEnvelopedData {
                version: CmsVersion::V0,
                originator_info: None,
                recip_infos: p.infos,
                auth_encrypted_content_info: eci,
                auth_attrs: None,
                mac: OctetString::new(tag.to_vec()).map_err(EncryptError::Der)?,
                unauth_attrs: None,
            }),
        ),
    };
    ContentInfo {
        content_type,
        content: inner.map_err(EncryptError::Der)?,
    }
    .to_der()
    .map_err(EncryptError::Der)
}
