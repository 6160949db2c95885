//! Organisation policy at send time (`[policy]` of the configuration): whether a message is
//! signed, encrypted, both or triple-wrapped, and to whom it is encrypted — decided from
//! the sender, the recipients and which recipients have a certificate. Sans I/O: the
//! caller looks the certificates up.
//!
//! The rules, in order:
//! 1. Each recipient gets the rule of its domain: a `[policy.domains."example.org"]` entry
//!    (the domain or, written `*.example.org`, any subdomain), else the global `sign` /
//!    `encrypt`. A domain in `must_encrypt_domains` always means `encrypt = "always"`.
//! 2. One message goes to all recipients, so it is encrypted to all or none: it is
//!    encrypted when some recipient's rule is `always`, or when some rule is
//!    `when-possible` and every recipient has a certificate. When encryption is required
//!    and a recipient has no certificate, nothing is sent (fail closed) and those
//!    recipients are named.
//! 3. It is signed when some recipient's sign rule is `always`.
//! 4. Triple wrap (`triple_wrap = true`) applies when the message is both signed and
//!    encrypted. The archive recipient is added to every encrypted message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `sign = …`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignRule {
    /// Sign every message.
    Always,
    /// Do not sign (the default).
    #[default]
    Never,
}

/// `encrypt = …`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncryptRule {
    /// Do not encrypt (the default).
    #[default]
    Never,
    /// Encrypt when every recipient has a certificate.
    WhenPossible,
    /// Encrypt, or send nothing.
    Always,
}

/// A per-domain override.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainRule {
    /// Overrides `sign`.
    #[serde(default)]
    pub sign: Option<SignRule>,
    /// Overrides `encrypt`.
    #[serde(default)]
    pub encrypt: Option<EncryptRule>,
}

/// `[policy]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgPolicy {
    /// `always` or `never` (default).
    #[serde(default)]
    pub sign: SignRule,
    /// `never` (default), `when-possible` or `always`.
    #[serde(default)]
    pub encrypt: EncryptRule,
    /// Domains mail to which is always encrypted (fail closed).
    #[serde(default)]
    pub must_encrypt_domains: Vec<String>,
    /// A PEM certificate file added as a recipient of every encrypted message.
    #[serde(default)]
    pub archive_recipient: Option<PathBuf>,
    /// The signing key (label, hex id, sha256:…, email); default the From address.
    #[serde(default)]
    pub signer: Option<String>,
    /// Sign, encrypt, sign again (RFC 2634) when signing and encrypting.
    #[serde(default)]
    pub triple_wrap: bool,
    /// The program that delivers (argv); default `["/usr/sbin/sendmail", "-i"]`.
    #[serde(default)]
    pub mta: Option<Vec<String>>,
    /// Where a message that cannot be sent is kept.
    #[serde(default)]
    pub queue_dir: Option<PathBuf>,
    /// SMTP submission instead of `mta` (`[policy.smtp]`).
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
    /// Per-domain overrides.
    #[serde(default)]
    pub domains: BTreeMap<String, DomainRule>,
}

/// How `[policy.smtp]` protects the connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpTls {
    /// STARTTLS, required (the default; submission on port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No TLS: only to a loopback host (a local relay).
    None,
}

/// `[policy.smtp]`: submission to a mail server instead of a local MTA command.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// The server, `host` or `host:port` (default port: 587, 465 with implicit TLS).
    pub server: String,
    /// `starttls` (default), `implicit`, or `none` (loopback only).
    #[serde(default)]
    pub tls: SmtpTls,
    /// AUTH user name (needs `password_file`).
    #[serde(default)]
    pub username: Option<String>,
    /// The password, first line of this file (0600; never logged).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Seconds for connecting and each command (default 30).
    #[serde(default)]
    pub timeout: Option<u64>,
}

impl SmtpConfig {
    /// `(host, port)` of `server`.
    pub fn host_port(&self) -> Result<(String, u16), String> {
        let default = if self.tls == SmtpTls::Implicit {
            465
        } else {
            587
        };
        let s = self.server.trim();
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => (
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>().map_err(|_| {
                    format!("[policy.smtp] server {s:?}: the port must be a number")
                })?,
            ),
            _ => (s, default),
        };
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(format!(
                "[policy.smtp] server {s:?}: give host or host:port, e.g. \"mail.example.org:587\""
            ));
        }
        Ok((host.to_string(), port))
    }

    fn validate(&self) -> Result<(), String> {
        let (host, _) = self.host_port()?;
        let loopback = host == "localhost"
            || host == "::1"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| a.is_loopback());
        if self.tls == SmtpTls::None && !loopback {
            return Err(format!(
                "[policy.smtp] tls = \"none\" is only for a relay on this machine (localhost), not {host}: use starttls or implicit"
            ));
        }
        if self.username.is_some() != self.password_file.is_some() {
            return Err("[policy.smtp] username and password_file go together".into());
        }
        Ok(())
    }
}

/// Why a message cannot be sent as the policy wants.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRefusal {
    /// Encryption is required and these recipients have no usable certificate.
    #[error("policy requires encryption ({reason}), but there is no usable certificate for {}", .missing.join(", "))]
    NoCertificate {
        /// The recipients without a certificate.
        missing: Vec<String>,
        /// Which rule required it.
        reason: String,
    },
    /// No recipients.
    #[error("no recipients: give them as arguments or use -t")]
    NoRecipients,
}

/// What the policy decided for one message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Sign.
    pub sign: bool,
    /// Encrypt (to `recipients` plus the archive recipient).
    pub encrypt: bool,
    /// Sign, encrypt, sign.
    pub triple_wrap: bool,
    /// Add the archive recipient.
    pub archive: bool,
    /// The recipients, each with its rule.
    pub recipients: Vec<RecipientPlan>,
    /// Why, in words.
    pub reasons: Vec<String>,
}

/// One recipient in a [`Plan`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecipientPlan {
    /// The address.
    pub address: String,
    /// Its sign rule.
    pub sign: SignRule,
    /// Its encrypt rule.
    pub encrypt: EncryptRule,
    /// Whether a usable certificate was found.
    pub certificate: bool,
}

fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or("")
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Whether `domain` is `pattern` (or, for `*.x`, a subdomain of x).
fn domain_matches(pattern: &str, domain: &str) -> bool {
    let p = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
    match p.strip_prefix("*.") {
        Some(base) => domain.ends_with(&format!(".{base}")),
        None => p == domain,
    }
}

impl OrgPolicy {
    /// Checks the policy when it is loaded: domains look like domains, the archive
    /// certificate exists, the MTA is a command.
    pub fn validate(&self) -> Result<(), String> {
        let check = |d: &str, what: &str| -> Result<(), String> {
            let base = d.strip_prefix("*.").unwrap_or(d);
            if base.is_empty()
                || base.contains(['@', ' ', '/'])
                || !base
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                return Err(format!(
                    "[policy] {what}: {d:?} is not a domain (example.org, or *.example.org for its subdomains)"
                ));
            }
            Ok(())
        };
        for d in &self.must_encrypt_domains {
            check(d, "must_encrypt_domains")?;
        }
        for d in self.domains.keys() {
            check(d, "domains")?;
        }
        if let Some(smtp) = &self.smtp {
            smtp.validate()?;
            if self.mta.is_some() {
                return Err("[policy]: set mta or [policy.smtp], not both".into());
            }
        }
        if let Some(mta) = &self.mta {
            if mta.first().is_none_or(|p| p.trim().is_empty()) {
                return Err(
                    "[policy] mta: give the command as a list, e.g. [\"/usr/sbin/sendmail\", \"-i\"]"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// Makes relative paths relative to `dir` (the configuration file's directory).
    pub fn resolve_paths(&mut self, dir: &Path) {
        let smtp_pw = self.smtp.as_mut().and_then(|s| s.password_file.as_mut());
        for p in [
            self.archive_recipient.as_mut(),
            self.queue_dir.as_mut(),
            smtp_pw,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }

    /// Whether any rule signs or encrypts (a policy of all defaults does nothing).
    pub fn is_active(&self) -> bool {
        self.sign != SignRule::Never
            || self.encrypt != EncryptRule::Never
            || !self.must_encrypt_domains.is_empty()
            || self.domains.values().any(|r| {
                r.sign == Some(SignRule::Always)
                    || r.encrypt.is_some_and(|e| e != EncryptRule::Never)
            })
    }

    /// The rules for one recipient, and why.
    fn rules_for(&self, address: &str) -> (SignRule, EncryptRule, Option<String>) {
        let domain = domain_of(address);
        let mut sign = self.sign;
        let mut encrypt = self.encrypt;
        let mut why = None;
        // the most specific override: an exact domain before a wildcard
        let mut entries: Vec<(&String, &DomainRule)> = self
            .domains
            .iter()
            .filter(|(p, _)| domain_matches(p, &domain))
            .collect();
        entries.sort_by_key(|(p, _)| p.starts_with("*."));
        if let Some((p, r)) = entries.first() {
            if let Some(s) = r.sign {
                sign = s;
            }
            if let Some(e) = r.encrypt {
                encrypt = e;
            }
            why = Some(format!("[policy.domains.\"{p}\"]"));
        }
        if self
            .must_encrypt_domains
            .iter()
            .any(|p| domain_matches(p, &domain))
        {
            encrypt = EncryptRule::Always;
            why = Some(format!("{domain} is in must_encrypt_domains"));
        }
        (sign, encrypt, why)
    }

    /// Decides for a message to `recipients`; `has_certificate` says whether a usable
    /// certificate was found for an address.
    pub fn plan(
        &self,
        recipients: &[String],
        has_certificate: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Plan, PolicyRefusal> {
        if recipients.is_empty() {
            return Err(PolicyRefusal::NoRecipients);
        }
        let mut plans = Vec::new();
        let mut reasons = Vec::new();
        let mut required_by = None;
        for r in recipients {
            let (sign, encrypt, why) = self.rules_for(r);
            let certificate = encrypt != EncryptRule::Never && has_certificate(r);
            if encrypt == EncryptRule::Always && required_by.is_none() {
                required_by = Some(why.clone().unwrap_or_else(|| "encrypt = \"always\"".into()));
            }
            plans.push(RecipientPlan {
                address: r.clone(),
                sign,
                encrypt,
                certificate,
            });
        }
        // one message for all: certificates are needed for everyone once it is encrypted
        let any_when_possible = plans.iter().any(|p| p.encrypt == EncryptRule::WhenPossible);
        if required_by.is_some() || any_when_possible {
            for p in plans.iter_mut().filter(|p| p.encrypt == EncryptRule::Never) {
                p.certificate = has_certificate(&p.address);
            }
        }
        let missing: Vec<String> = plans
            .iter()
            .filter(|p| !p.certificate)
            .map(|p| p.address.clone())
            .collect();
        let encrypt = if let Some(reason) = required_by {
            if !missing.is_empty() {
                return Err(PolicyRefusal::NoCertificate { missing, reason });
            }
            reasons.push(format!("encrypted: {reason}"));
            true
        } else if any_when_possible {
            if missing.is_empty() {
                reasons.push(
                    "encrypted: encrypt = \"when-possible\" and every recipient has a certificate"
                        .into(),
                );
                true
            } else {
                reasons.push(format!(
                    "not encrypted: encrypt = \"when-possible\" and no certificate for {}",
                    missing.join(", ")
                ));
                false
            }
        } else {
            reasons.push("not encrypted: no rule asks for it".into());
            false
        };
        let sign = plans.iter().any(|p| p.sign == SignRule::Always);
        reasons.push(if sign {
            "signed: sign = \"always\"".into()
        } else {
            "not signed: no rule asks for it".into()
        });
        let triple_wrap = sign && encrypt && self.triple_wrap;
        if triple_wrap {
            reasons.push("triple-wrapped: triple_wrap = true".into());
        }
        let archive = encrypt && self.archive_recipient.is_some();
        if archive {
            reasons.push("archive recipient added".into());
        }
        Ok(Plan {
            sign,
            encrypt,
            triple_wrap,
            archive,
            recipients: plans,
            reasons,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> OrgPolicy {
        let p: OrgPolicy = toml::from_str(text).expect("toml");
        p.validate().expect("valid");
        p
    }

    fn addrs(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn must_encrypt_fails_closed_and_names_the_recipients() {
        let p = policy("sign = \"always\"\nmust_encrypt_domains = [\"partner.example\"]\n");
        let mut certs = |a: &str| a == "bob@partner.example";
        let plan = p
            .plan(&addrs(&["bob@partner.example"]), &mut certs)
            .expect("plan");
        assert!(plan.sign && plan.encrypt);
        let e = p
            .plan(
                &addrs(&[
                    "bob@partner.example",
                    "eve@other.example",
                    "carl@PARTNER.example",
                ]),
                &mut certs,
            )
            .expect_err("refused");
        assert_eq!(
            e,
            PolicyRefusal::NoCertificate {
                missing: addrs(&["eve@other.example", "carl@PARTNER.example"]),
                reason: "partner.example is in must_encrypt_domains".into()
            }
        );
        // other mail is only signed
        let plan = p
            .plan(&addrs(&["eve@other.example"]), &mut certs)
            .expect("plan");
        assert!(plan.sign && !plan.encrypt);
    }

    #[test]
    fn when_possible_encrypts_only_when_everyone_has_a_certificate() {
        let p = policy("encrypt = \"when-possible\"\narchive_recipient = \"archive.pem\"\ntriple_wrap = true\nsign = \"always\"\n");
        let mut certs = |a: &str| a.starts_with("has");
        let plan = p
            .plan(&addrs(&["has1@x.org", "has2@y.org"]), &mut certs)
            .expect("plan");
        assert!(plan.encrypt && plan.archive && plan.triple_wrap);
        let plan = p
            .plan(&addrs(&["has1@x.org", "no@y.org"]), &mut certs)
            .expect("plan");
        assert!(!plan.encrypt && !plan.archive && plan.sign);
    }

    #[test]
    fn domain_overrides_exact_before_wildcard() {
        let p = policy(
            "[domains.\"*.corp.example\"]\nencrypt = \"always\"\n[domains.\"open.corp.example\"]\nencrypt = \"never\"\nsign = \"always\"\n",
        );
        let mut none = |_: &str| false;
        assert!(p.plan(&addrs(&["a@hr.corp.example"]), &mut none).is_err());
        let plan = p
            .plan(&addrs(&["a@open.corp.example"]), &mut none)
            .expect("plan");
        assert!(plan.sign && !plan.encrypt);
        assert!(
            !p.plan(&addrs(&["a@corp.example"]), &mut none)
                .expect("plan")
                .encrypt
        );
    }

    #[test]
    fn bad_policies_are_refused_at_load() {
        assert!(toml::from_str::<OrgPolicy>("sign = \"sometimes\"").is_err());
        assert!(toml::from_str::<OrgPolicy>("encrypt_always = true").is_err());
        let p: OrgPolicy = toml::from_str("must_encrypt_domains = [\"bob@x.org\"]").expect("toml");
        assert!(p.validate().is_err());
        let p: OrgPolicy = toml::from_str("mta = []").expect("toml");
        assert!(p.validate().is_err());
        let smtp = |t: &str| toml::from_str::<OrgPolicy>(&format!("[smtp]\n{t}")).expect("toml");
        assert!(smtp("server = \"mail.example.org\"").validate().is_ok());
        assert_eq!(
            smtp("server = \"mail.example.org\"")
                .smtp
                .expect("smtp")
                .host_port(),
            Ok(("mail.example.org".into(), 587))
        );
        assert!(smtp("server = \"mail.example.org\"\ntls = \"none\"")
            .validate()
            .is_err());
        assert!(smtp("server = \"127.0.0.1:2525\"\ntls = \"none\"")
            .validate()
            .is_ok());
        assert!(smtp("server = \"mail.example.org\"\nusername = \"a\"")
            .validate()
            .is_err());
        assert!(smtp("server = \"mail:x\"").validate().is_err());
        assert_eq!(
            OrgPolicy::default().plan(&[], &mut |_| true),
            Err(PolicyRefusal::NoRecipients)
        );
    }
}
