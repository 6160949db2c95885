//! Certificate expiry (issue 13): which certificates expire within a window, and which have
//! expired. Sans I/O: the callers gather the certificates (tokens, directories, LDAP).

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::path::CertEntry;

/// The default warning window: 30 days.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30 * 86400);

/// Where a certificate stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpiryStatus {
    /// Valid beyond the window.
    Ok,
    /// Not yet valid.
    NotYetValid,
    /// Expires within the window.
    Due,
    /// Past its notAfter.
    Expired,
}

/// One certificate's expiry.
#[derive(Clone, Debug, Serialize)]
pub struct Expiry {
    /// Subject.
    pub subject: String,
    /// E-mail addresses.
    pub emails: Vec<String>,
    /// Serial (hex).
    pub serial: String,
    /// notAfter (RFC 3339).
    pub not_after: String,
    /// Whole days until notAfter (negative: days since).
    pub days_left: i64,
    /// The verdict.
    pub status: ExpiryStatus,
    /// Where it was found (the caller's words: a token key, a file).
    pub source: String,
}

/// The expiry of `cert` at `now` with a warning `window`.
pub fn expiry(cert: &CertEntry, source: &str, now: SystemTime, window: Duration) -> Expiry {
    let v = cert.cert.tbs_certificate().validity();
    let (nb, na) = (v.not_before.to_system_time(), v.not_after.to_system_time());
    let days_left = match na.duration_since(now) {
        Ok(d) => (d.as_secs() / 86400) as i64,
        Err(e) => -((e.duration().as_secs() / 86400) as i64) - 1,
    };
    let status = if now > na {
        ExpiryStatus::Expired
    } else if now < nb {
        ExpiryStatus::NotYetValid
    } else if na.duration_since(now).unwrap_or_default() <= window {
        ExpiryStatus::Due
    } else {
        ExpiryStatus::Ok
    };
    Expiry {
        subject: cert.subject(),
        emails: cert.emails(),
        serial: cert.serial_hex(),
        not_after: v.not_after.to_string(),
        days_left,
        status,
        source: source.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_at_the_edges() {
        let pem = include_str!("../tests/data/expiry-cert.pem");
        let c = CertEntry::from_pem_or_der(pem.as_bytes())
            .expect("cert")
            .remove(0);
        let na = c
            .cert
            .tbs_certificate()
            .validity()
            .not_after
            .to_system_time();
        let nb = c
            .cert
            .tbs_certificate()
            .validity()
            .not_before
            .to_system_time();
        let at = |t: SystemTime| expiry(&c, "test", t, DEFAULT_WINDOW);
        assert_eq!(
            at(na + Duration::from_secs(1)).status,
            ExpiryStatus::Expired
        );
        assert_eq!(at(na + Duration::from_secs(1)).days_left, -1);
        assert_eq!(
            at(na - Duration::from_secs(86400 * 10)).status,
            ExpiryStatus::Due
        );
        assert_eq!(at(na - Duration::from_secs(86400 * 10)).days_left, 10);
        assert_eq!(
            at(na - Duration::from_secs(86400 * 31)).status,
            ExpiryStatus::Ok
        );
        assert_eq!(
            at(nb - Duration::from_secs(1)).status,
            ExpiryStatus::NotYetValid
        );
    }
}
