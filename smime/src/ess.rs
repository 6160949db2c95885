//! Enhanced Security Services (RFC 2634, RFC 5035), sans I/O: signed receipts (the
//! receiptRequest signed attribute, the Receipt content, msgSigDigest, and the checks of a
//! receipt against the message it answers) and security labels (ESSSecurityLabel).
//!
//! ReceiptRequest, ReceiptsFrom and Receipt are declared with `der`'s derive on our der 0.8
//! generation (no maintained crate has them on it; `cms` 0.3 has none). ESSSecurityLabel
//! is a SET with optional members, which the derive does not do: it is written and read
//! by hand (its members sorted by tag, as DER wants).

use der::asn1::{ObjectIdentifier, OctetString};
use der::{Choice, Decode, Encode, Sequence};
use x509_cert::ext::pkix::name::{GeneralName, GeneralNames};

use crate::alg::{oid, HashAlg};
use crate::ber::{tlv, Tlv};
use crate::verify::{Check, ParsedSignedData, ParsedSigner};
use crate::SmimeError;

/// ReceiptsFrom (RFC 2634 §2.7; the module has IMPLICIT TAGS).
#[derive(Clone, Debug, Eq, PartialEq, Choice)]
pub enum ReceiptsFrom {
    /// allOrFirstTier: 0 allReceipts, 1 firstTierRecipients
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    AllOrFirstTier(u8),
    /// receiptList: receipts from these only
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", constructed = "true")]
    ReceiptList(Vec<GeneralNames>),
}

/// ReceiptRequest (RFC 2634 §2.7).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct ReceiptRequest {
    /// signedContentIdentifier
    pub signed_content_identifier: OctetString,
    /// receiptsFrom
    pub receipts_from: ReceiptsFrom,
    /// receiptsTo
    pub receipts_to: Vec<GeneralNames>,
}

/// Receipt (RFC 2634 §2.8).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct Receipt {
    /// version, 1
    pub version: u8,
    /// the original's eContentType
    pub content_type: ObjectIdentifier,
    /// from the receiptRequest
    pub signed_content_identifier: OctetString,
    /// the original SignerInfo's signature value
    pub originator_signature_value: OctetString,
}

fn malformed(s: impl Into<String>) -> SmimeError {
    SmimeError::Malformed(s.into())
}

fn email_names(email: &str) -> Result<GeneralNames, SmimeError> {
    Ok(vec![GeneralName::Rfc822Name(der::asn1::Ia5String::new(
        email,
    )?)])
}

fn names_text(names: &[GeneralNames]) -> Vec<String> {
    names
        .iter()
        .flatten()
        .map(|n| match n {
            GeneralName::Rfc822Name(s) => s.to_string(),
            GeneralName::DirectoryName(d) => d.to_string(),
            GeneralName::DnsName(s) => format!("DNS:{s}"),
            GeneralName::UniformResourceIdentifier(s) => format!("URI:{s}"),
            _ => "(other name)".to_string(),
        })
        .collect()
}

impl ReceiptRequest {
    /// A request for receipts from all recipients, to be sent to `receipts_to`, with the
    /// signedContentIdentifier `id` (random bytes from the caller).
    pub fn all_to(id: &[u8], receipts_to: &[String]) -> Result<Self, SmimeError> {
        if receipts_to.is_empty() {
            return Err(SmimeError::Unsupported(
                "a receipt request needs an address to send receipts to".into(),
            ));
        }
        Ok(ReceiptRequest {
            signed_content_identifier: OctetString::new(id)?,
            receipts_from: ReceiptsFrom::AllOrFirstTier(0),
            receipts_to: receipts_to
                .iter()
                .map(|e| email_names(e))
                .collect::<Result<_, _>>()?,
        })
    }

    /// A request for receipts from all recipients, sent back to the signer: to the first
    /// e-mail address of `signer`'s certificate (`tokenmail sign --receipt-request` and the
    /// agent's `sign` with `receipt_request`). `id`: random bytes from the caller.
    pub fn to_signer(id: &[u8], signer: &x509_cert::Certificate) -> Result<Self, SmimeError> {
        let emails = crate::path::certificate_emails(signer);
        let Some(to) = emails.first() else {
            return Err(SmimeError::SignerCertificate(
                "the signing certificate names no e-mail address to send receipts to".into(),
            ));
        };
        Self::all_to(id, std::slice::from_ref(to))
    }

    /// The signed attribute (type, value DER) for [`crate::signed::SignOptions`].
    pub fn attribute(&self) -> Result<(ObjectIdentifier, Vec<u8>), SmimeError> {
        Ok((oid::ATTR_RECEIPT_REQUEST, self.to_der()?))
    }

    /// What `verify` shows.
    pub fn info(&self) -> ReceiptRequestInfo {
        ReceiptRequestInfo {
            signed_content_identifier: hex(self.signed_content_identifier.as_bytes()),
            receipts_from: match &self.receipts_from {
                ReceiptsFrom::AllOrFirstTier(0) => "all recipients".into(),
                ReceiptsFrom::AllOrFirstTier(1) => "first-tier recipients".into(),
                ReceiptsFrom::AllOrFirstTier(n) => format!("allOrFirstTier {n}"),
                ReceiptsFrom::ReceiptList(l) => names_text(l).join(", "),
            },
            receipts_to: names_text(&self.receipts_to),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A receipt request as `verify` reports it.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct ReceiptRequestInfo {
    /// signedContentIdentifier, hex
    pub signed_content_identifier: String,
    /// who is asked for a receipt
    pub receipts_from: String,
    /// where receipts go
    pub receipts_to: Vec<String>,
}

/// ESSSecurityLabel (RFC 2634 §3.2).
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct SecurityLabel {
    /// security-policy-identifier
    pub policy: String,
    /// security-classification (0 unmarked, 1 unclassified, 2 restricted, 3 confidential,
    /// 4 secret, 5 top-secret; others policy-defined)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<u32>,
    /// the classification's name, when it is one of RFC 2634's
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification_name: Option<String>,
    /// privacy-mark
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privacy_mark: Option<String>,
    /// security-categories: (type OID, value as text when it is a string, else hex DER)
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<SecurityCategory>,
}

/// One SecurityCategory.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct SecurityCategory {
    /// type
    #[serde(rename = "type")]
    pub kind: String,
    /// value: the string inside, or the DER in hex
    pub value: String,
}

const CLASSIFICATIONS: [&str; 6] = [
    "unmarked",
    "unclassified",
    "restricted",
    "confidential",
    "secret",
    "top-secret",
];

fn classification_name(n: u32) -> Option<String> {
    CLASSIFICATIONS.get(n as usize).map(|s| s.to_string())
}

fn uint_der(n: u32) -> Vec<u8> {
    let mut b: Vec<u8> = n.to_be_bytes().to_vec();
    while b.len() > 1 && b[0] == 0 && b[1] & 0x80 == 0 {
        b.remove(0);
    }
    if b[0] & 0x80 != 0 {
        b.insert(0, 0);
    }
    tlv(0x02, &b)
}

fn string_of(t: &Tlv<'_>) -> Option<String> {
    match t.tag {
        0x0c | 0x13 | 0x16 | 0x14 => std::str::from_utf8(t.content).ok().map(str::to_string),
        _ => None,
    }
}

impl SecurityLabel {
    /// From `POLICY-OID:CLASSIFICATION[:CATEGORY-OID=TEXT]...`, the classification a number
    /// or one of unmarked, unclassified, restricted, confidential, secret, top-secret.
    /// A category's value is carried as a UTF8String. Errors say what is wrong, for the
    /// caller to prefix with where the label came from.
    pub fn from_arg(arg: &str) -> Result<Self, String> {
        let mut parts = arg.split(':');
        let policy = parts.next().unwrap_or_default().trim();
        let policy_oid = ObjectIdentifier::new(policy).map_err(|_| {
            format!("{arg:?}: {policy:?} is not an OID; write POLICY-OID:CLASSIFICATION, e.g. 1.3.6.1.4.1.99999.1:confidential")
        })?;
        let classification = match parts.next().map(str::trim) {
            None | Some("") => None,
            Some(c) => Some(match c.parse::<u32>() {
                Ok(n) => n,
                Err(_) => CLASSIFICATIONS
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(c))
                    .map(|p| p as u32)
                    .ok_or_else(|| {
                        format!(
                            "classification {c:?} is neither a number nor one of {}",
                            CLASSIFICATIONS.join(", ")
                        )
                    })?,
            }),
        };
        let mut categories = Vec::new();
        for c in parts {
            let (k, v) = c
                .split_once('=')
                .ok_or_else(|| format!("category {c:?} must be CATEGORY-OID=TEXT"))?;
            ObjectIdentifier::new(k.trim())
                .map_err(|_| format!("category type {k:?} is not an OID"))?;
            categories.push(SecurityCategory {
                kind: k.trim().to_string(),
                value: v.to_string(),
            });
        }
        Ok(SecurityLabel {
            policy: policy_oid.to_string(),
            classification,
            classification_name: classification.and_then(classification_name),
            privacy_mark: None,
            categories,
        })
    }

    /// DER of the ESSSecurityLabel SET.
    pub fn to_der(&self) -> Result<Vec<u8>, SmimeError> {
        let policy = ObjectIdentifier::new(&self.policy)
            .map_err(|_| malformed(format!("policy {} is not an OID", self.policy)))?;
        // DER SET: members in tag order INTEGER (02), OID (06), UTF8String (0c) /
        // SEQUENCE (30), SET (31)
        let mut body = Vec::new();
        if let Some(c) = self.classification {
            body.extend_from_slice(&uint_der(c));
        }
        body.extend_from_slice(&policy.to_der()?);
        if let Some(p) = &self.privacy_mark {
            body.extend_from_slice(&tlv(0x30, &tlv(0x0c, p.as_bytes())));
        }
        if !self.categories.is_empty() {
            let mut cats = Vec::new();
            for c in &self.categories {
                let t = ObjectIdentifier::new(&c.kind)
                    .map_err(|_| malformed(format!("category {} is not an OID", c.kind)))?;
                let oid_der = t.to_der()?;
                // type [0] IMPLICIT OBJECT IDENTIFIER, value [1] EXPLICIT (ANY)
                let mut seq = tlv(0x80, &oid_der[2..]);
                seq.extend_from_slice(&tlv(0xa1, &tlv(0x0c, c.value.as_bytes())));
                cats.push(tlv(0x30, &seq));
            }
            cats.sort();
            body.extend_from_slice(&tlv(0x31, &cats.concat()));
        }
        Ok(tlv(0x31, &body))
    }

    /// The signed attribute (type, value DER).
    pub fn attribute(&self) -> Result<(ObjectIdentifier, Vec<u8>), SmimeError> {
        Ok((oid::ATTR_SECURITY_LABEL, self.to_der()?))
    }

    /// Reads an ESSSecurityLabel.
    pub fn from_der(der: &[u8]) -> Result<Self, SmimeError> {
        let top = Tlv::parse_exact(der)?;
        if top.tag != 0x31 {
            return Err(malformed("ESSSecurityLabel is not a SET"));
        }
        let mut policy = None;
        let mut classification = None;
        let mut privacy_mark = None;
        let mut categories = Vec::new();
        for m in top.children()? {
            match m.tag {
                0x06 => policy = Some(<ObjectIdentifier>::from_der(m.raw)?.to_string()),
                0x02 => {
                    let v = m.content;
                    if v.is_empty() || v.len() > 5 || v[0] & 0x80 != 0 {
                        return Err(malformed("security-classification out of range"));
                    }
                    let mut n: u64 = 0;
                    for b in v {
                        n = (n << 8) | u64::from(*b);
                    }
                    classification =
                        Some(u32::try_from(n).map_err(|_| malformed("classification too large"))?);
                }
                0x13 | 0x0c => privacy_mark = string_of(&m),
                0x30 => {
                    let parts: Vec<String> = m.children()?.iter().filter_map(string_of).collect();
                    privacy_mark = Some(parts.join(" "));
                }
                0x31 => {
                    for c in m.children()? {
                        let f = c.children()?;
                        let kind = match f.first() {
                            Some(t) if t.tag == 0x80 => {
                                let mut d = vec![0x06];
                                d.extend_from_slice(&crate::ber::der_len(t.content.len()));
                                d.extend_from_slice(t.content);
                                <ObjectIdentifier>::from_der(&d)?.to_string()
                            }
                            _ => return Err(malformed("SecurityCategory without its type")),
                        };
                        let value = match f.get(1) {
                            Some(v) if v.tag == 0xa1 => {
                                let inner = Tlv::parse_exact(v.content).ok();
                                inner
                                    .as_ref()
                                    .and_then(string_of)
                                    .unwrap_or_else(|| hex(v.content))
                            }
                            Some(v) => hex(v.raw),
                            None => String::new(),
                        };
                        categories.push(SecurityCategory { kind, value });
                    }
                }
                _ => return Err(malformed("unexpected member in ESSSecurityLabel")),
            }
        }
        let policy =
            policy.ok_or_else(|| malformed("ESSSecurityLabel without a security policy"))?;
        Ok(SecurityLabel {
            policy,
            classification,
            classification_name: classification.and_then(classification_name),
            privacy_mark,
            categories,
        })
    }

    /// One line: `policy 1.2.3, confidential (3), categories 1.2.4=x`.
    pub fn text(&self) -> String {
        let mut s = format!("policy {}", self.policy);
        if let Some(c) = self.classification {
            match &self.classification_name {
                Some(n) => s.push_str(&format!(", {n} ({c})")),
                None => s.push_str(&format!(", classification {c}")),
            }
        }
        if let Some(p) = &self.privacy_mark {
            s.push_str(&format!(", privacy mark {p:?}"));
        }
        if !self.categories.is_empty() {
            let c: Vec<String> = self
                .categories
                .iter()
                .map(|c| format!("{}={}", c.kind, c.value))
                .collect();
            s.push_str(&format!(", categories {}", c.join(", ")));
        }
        s
    }
}

/// The single value of signed attribute `o` of `s`, as DER; `Err` when repeated.
fn signed_value(s: &ParsedSigner, o: ObjectIdentifier) -> Result<Option<Vec<u8>>, SmimeError> {
    let Some(attrs) = &s.info.signed_attrs else {
        return Ok(None);
    };
    let found: Vec<_> = attrs.iter().filter(|a| a.oid == o).collect();
    match found.as_slice() {
        [] => Ok(None),
        [a] if a.values.len() == 1 => Ok(a.values.iter().next().map(|v| v.to_der()).transpose()?),
        _ => Err(malformed(format!(
            "attribute {o} must appear once with one value"
        ))),
    }
}

/// The receiptRequest of a signer, if it has one.
pub fn receipt_request(s: &ParsedSigner) -> Result<Option<ReceiptRequest>, SmimeError> {
    signed_value(s, oid::ATTR_RECEIPT_REQUEST)?
        .map(|d| ReceiptRequest::from_der(&d).map_err(SmimeError::from))
        .transpose()
}

/// The security label of a signer, if it has one.
pub fn security_label(s: &ParsedSigner) -> Result<Option<SecurityLabel>, SmimeError> {
    signed_value(s, oid::ATTR_SECURITY_LABEL)?
        .map(|d| SecurityLabel::from_der(&d))
        .transpose()
}

/// What a signed receipt for a message needs: the Receipt (the content, of type
/// id-ct-receipt) and the msgSigDigest signed attribute.
#[derive(Clone, Debug)]
pub struct ReceiptToMake {
    /// DER Receipt: sign it with [`crate::signed::sign_encapsulated_as`] and
    /// [`oid::ID_CT_RECEIPT`]
    pub receipt: Vec<u8>,
    /// the msgSigDigest attribute for the receipt's SignerInfo
    pub msg_sig_digest: (ObjectIdentifier, Vec<u8>),
    /// where the receipt is to be sent (receiptsTo)
    pub receipts_to: Vec<String>,
    /// the request
    pub request: ReceiptRequestInfo,
}

/// The msgSigDigest of a signer: the digest of its signed attributes (DER, as signed) with
/// its own digest algorithm (what OpenSSL computes and checks).
fn msg_sig_digest(s: &ParsedSigner) -> Result<Vec<u8>, SmimeError> {
    let attrs = s
        .signed_attrs_der
        .as_ref()
        .ok_or_else(|| malformed("the signer has no signed attributes"))?;
    let h = HashAlg::from_oid(&s.info.digest_alg.oid).ok_or_else(|| {
        SmimeError::Unsupported(format!("digest algorithm {}", s.info.digest_alg.oid))
    })?;
    Ok(h.digest(attrs))
}

/// The receipt for `original` (a signed message whose first signer requesting one is
/// answered). Refuses a message that requests none.
pub fn make_receipt(original: &ParsedSignedData) -> Result<ReceiptToMake, SmimeError> {
    if original.content_type == oid::ID_CT_RECEIPT {
        return Err(SmimeError::Unsupported(
            "this is a signed receipt itself: receipts are never answered with receipts".into(),
        ));
    }
    for s in &original.signers {
        let Some(rr) = receipt_request(s)? else {
            continue;
        };
        let receipt = Receipt {
            version: 1,
            content_type: original.content_type,
            signed_content_identifier: rr.signed_content_identifier.clone(),
            originator_signature_value: OctetString::new(s.info.signature.as_bytes())?,
        };
        let digest = msg_sig_digest(s)?;
        return Ok(ReceiptToMake {
            receipt: receipt.to_der()?,
            msg_sig_digest: (oid::ATTR_MSG_SIG_DIGEST, tlv(0x04, &digest)),
            receipts_to: names_text(&rr.receipts_to),
            request: rr.info(),
        });
    }
    Err(SmimeError::Unsupported(
        "the message requests no signed receipt (no receiptRequest attribute)".into(),
    ))
}

fn check(name: &str, ok: bool, reason: impl Into<String>) -> Check {
    Check {
        name: name.to_string(),
        ok,
        reason: reason.into(),
        certificates: Vec::new(),
    }
}

/// The ESS checks of a signed receipt against the message it answers (RFC 2634 §2.8):
/// content type id-ct-receipt, the originatorSignatureValue is the signature of a signer of
/// `original` that requested a receipt, the signedContentIdentifier and contentType are
/// the request's and the original's, and every receipt signer's msgSigDigest is the digest
/// of that signer's signed attributes. The receipt's own signature and certificate are
/// checked by [`crate::verify::verify`].
pub fn check_receipt(receipt: &ParsedSignedData, original: &ParsedSignedData) -> Vec<Check> {
    let mut out = Vec::new();
    if receipt.content_type != oid::ID_CT_RECEIPT {
        out.push(check(
            "receipt_content",
            false,
            format!(
                "the receipt's content type is {}, not id-ct-receipt: not a signed receipt",
                receipt.content_type
            ),
        ));
        return out;
    }
    let r = match receipt
        .encapsulated_content()
        .ok_or_else(|| malformed("no Receipt inside"))
        .and_then(|c| Receipt::from_der(c).map_err(SmimeError::from))
    {
        Ok(r) if r.version == 1 => r,
        Ok(r) => {
            out.push(check(
                "receipt_content",
                false,
                format!("Receipt version {}", r.version),
            ));
            return out;
        }
        Err(e) => {
            out.push(check("receipt_content", false, format!("the Receipt: {e}")));
            return out;
        }
    };
    out.push(check("receipt_content", true, "a Receipt (RFC 2634)"));
    let osig = r.originator_signature_value.as_bytes();
    let Some(os) = original
        .signers
        .iter()
        .find(|s| s.info.signature.as_bytes() == osig)
    else {
        out.push(check(
            "originator_signature",
            false,
            "the receipt answers a signature that is not in the original message: it is for another message",
        ));
        return out;
    };
    out.push(check(
        "originator_signature",
        true,
        "the receipt names the original message's signature",
    ));
    match receipt_request(os) {
        Ok(Some(rr)) => {
            let ok = rr.signed_content_identifier == r.signed_content_identifier
                && r.content_type == original.content_type;
            out.push(check(
                "content_identifier",
                ok,
                if ok {
                    format!(
                        "signedContentIdentifier {} and content type match the request",
                        hex(rr.signed_content_identifier.as_bytes())
                    )
                } else {
                    "the receipt's signedContentIdentifier or content type differs from the original's request".to_string()
                },
            ));
        }
        Ok(None) => out.push(check(
            "content_identifier",
            false,
            "the original message did not request a receipt",
        )),
        Err(e) => out.push(check(
            "content_identifier",
            false,
            format!("the original's receiptRequest: {e}"),
        )),
    }
    let want = msg_sig_digest(os).ok();
    for (i, s) in receipt.signers.iter().enumerate() {
        let got = signed_value(s, oid::ATTR_MSG_SIG_DIGEST)
            .ok()
            .flatten()
            .and_then(|d| OctetString::from_der(&d).ok());
        // computed with the original signer's digest algorithm (OpenSSL), or the
        // receipt signer's
        let alt = os
            .signed_attrs_der
            .as_ref()
            .and_then(|a| HashAlg::from_oid(&s.info.digest_alg.oid).map(|h| h.digest(a)));
        let ok = match &got {
            Some(g) => {
                Some(g.as_bytes()) == want.as_deref() || Some(g.as_bytes()) == alt.as_deref()
            }
            None => false,
        };
        out.push(check(
            "msg_sig_digest",
            ok,
            match (&got, ok) {
                (None, _) => format!("receipt signer {} has no msgSigDigest attribute", i + 1),
                (_, true) => "msgSigDigest is the digest of the original's signed attributes"
                    .to_string(),
                (_, false) => {
                    "msgSigDigest differs from the original's signed attributes: the receipt is for another message".to_string()
                }
            },
        ));
    }
    out
}

/// An S/MIME entity carrying a signed receipt (`smime-type=signed-receipt`), with a `To:`
/// field for `to` when given.
pub fn receipt_entity(der: &[u8], to: Option<&str>) -> Vec<u8> {
    let mut out = String::new();
    if let Some(t) = to {
        out.push_str(&format!("To: {t}\r\n"));
    }
    out.push_str("Subject: Signed receipt\r\nMIME-Version: 1.0\r\n");
    out.push_str(
        "Content-Type: application/pkcs7-mime; smime-type=signed-receipt; name=\"smime.p7m\"\r\n",
    );
    out.push_str("Content-Transfer-Encoding: base64\r\n");
    out.push_str("Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&crate::mime::Base64Lines::encode(der));
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_label_round_trips() {
        let l = SecurityLabel::from_arg(
            "1.3.6.1.4.1.99999.1:confidential:1.3.6.1.4.1.99999.2=project x",
        )
        .expect("parses");
        assert_eq!(l.classification, Some(3));
        let der = l.to_der().expect("der");
        let back = SecurityLabel::from_der(&der).expect("reads");
        assert_eq!(back, l);
        assert_eq!(
            back.text(),
            "policy 1.3.6.1.4.1.99999.1, confidential (3), categories 1.3.6.1.4.1.99999.2=project x"
        );
        assert!(SecurityLabel::from_arg("nope:1").is_err());
        assert!(SecurityLabel::from_arg("1.2.3:very-secret").is_err());
        assert_eq!(
            SecurityLabel::from_arg("1.2.3:300")
                .expect("n")
                .classification,
            Some(300)
        );
        let big = SecurityLabel::from_arg("1.2.3:200").expect("n");
        assert_eq!(
            SecurityLabel::from_der(&big.to_der().expect("der")).expect("r"),
            big
        );
    }

    #[test]
    fn receipt_request_round_trips() {
        let rr = ReceiptRequest::all_to(&[1, 2, 3], &["alice@example.com".into()]).expect("rr");
        let der = rr.to_der().expect("der");
        // receiptsFrom is [0] IMPLICIT INTEGER 0
        assert!(
            der.windows(3).any(|w| w == [0x80, 0x01, 0x00]),
            "{der:02x?}"
        );
        let back = ReceiptRequest::from_der(&der).expect("reads");
        assert_eq!(back, rr);
        assert_eq!(
            back.info().receipts_to,
            vec!["alice@example.com".to_string()]
        );
        assert_eq!(back.info().receipts_from, "all recipients");
    }
}
