//! Certificate summaries for `status` and key selection.

use der::Decode;
use sha2::{Digest, Sha256};
use tokenmail_proto::v1::{Bytes, CertSummary};
use x509_cert::Certificate;

/// Parsed facts about a certificate.
#[derive(Clone, Debug)]
pub struct CertFacts {
    /// The summary sent to clients.
    pub summary: CertSummary,
    /// notBefore, seconds since the epoch.
    pub not_before: u64,
    /// notAfter, seconds since the epoch.
    pub not_after: u64,
}

/// Parses a certificate; `None` if it is not a valid X.509 certificate.
pub fn facts(der_bytes: &[u8]) -> Option<CertFacts> {
    let cert = Certificate::from_der(der_bytes).ok()?;
    let tbs = cert.tbs_certificate();
    let nb = tbs.validity().not_before.to_unix_duration().as_secs();
    let na = tbs.validity().not_after.to_unix_duration().as_secs();
    let summary = CertSummary {
        subject: tbs.subject().to_string(),
        issuer: tbs.issuer().to_string(),
        serial: hex::encode(tbs.serial_number().as_bytes()),
        not_before: rfc3339(nb),
        not_after: rfc3339(na),
        emails: emails(&cert),
        sha256: hex::encode(Sha256::digest(der_bytes)),
        der: Bytes(der_bytes.to_vec()),
    };
    Some(CertFacts {
        summary,
        not_before: nb,
        not_after: na,
    })
}

/// Email addresses of a certificate (the S/MIME core's one extraction), lower-cased for
/// key selection by email.
pub fn emails(cert: &Certificate) -> Vec<String> {
    let mut out: Vec<String> = tokenmail_smime::path::certificate_emails(cert)
        .into_iter()
        .map(|e| e.to_ascii_lowercase())
        .collect();
    out.dedup();
    out
}

/// The CA certificates among `pool` that chain `leaf` upward (issuer first), matched by
/// subject = issuer name, at most 8 deep, stopping at a self-issued certificate. The
/// chain is for inclusion in signatures; verifiers validate it.
pub fn issuer_chain(leaf: &[u8], pool: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let parsed: Vec<(Certificate, &Vec<u8>)> = pool
        .iter()
        .filter_map(|d| Certificate::from_der(d).ok().map(|c| (c, d)))
        .collect();
    let Ok(mut cur) = Certificate::from_der(leaf) else {
        return Vec::new();
    };
    let mut out: Vec<Vec<u8>> = Vec::new();
    for _ in 0..8 {
        let tbs = cur.tbs_certificate();
        if tbs.issuer() == tbs.subject() {
            break;
        }
        let Some((next, der)) = parsed
            .iter()
            .find(|(c, d)| c.tbs_certificate().subject() == tbs.issuer() && !out.contains(d))
        else {
            break;
        };
        out.push((*der).clone());
        cur = next.clone();
    }
    out
}

/// Seconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(secs: u64) -> String {
    match der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs)) {
        Ok(dt) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            dt.year(),
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minutes(),
            dt.seconds()
        ),
        Err(_) => secs.to_string(),
    }
}
