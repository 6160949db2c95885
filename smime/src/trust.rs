//! The trust policy of the configuration's `[trust]` table (docs/configuration.md): one
//! policy for `tokenmail verify`, `decrypt`'s inner signature, `encrypt`'s recipient checks,
//! `tokenmail-gpgsm` and the agent's `verify` operation.
//!
//! Sans I/O: the callers read the file and the certificates; this module defines the
//! fields, their defaults, their validation, and what they mean for [`Policy`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::path::{CertEntry, Policy};
use crate::revocation::{Crl, RevocationInputs, RevocationMode, RevocationSources};

/// Default most intermediate CAs between a certificate and its anchor.
pub const DEFAULT_MAX_PATH_LENGTH: usize = 3;
/// Default clock skew (seconds) for CRL and OCSP times.
pub const DEFAULT_CLOCK_SKEW_SECS: u64 = 300;

/// `[trust]` as written in the file. Unknown keys are an error (a typo must not weaken
/// the policy silently).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Trust anchors: PEM or DER certificate files (relative to the configuration file).
    #[serde(default)]
    pub anchors: Vec<PathBuf>,
    /// Intermediate CA certificates offered for path building (as `--untrusted`).
    #[serde(default)]
    pub intermediates: Vec<PathBuf>,
    /// `soft-fail` (default), `hard-fail` or `off`.
    pub revocation: Option<RevocationMode>,
    /// Network sources when the given CRLs do not decide: `ocsp-first` (default),
    /// `crl-first`, `ocsp-only`, `crl-only`.
    pub revocation_sources: Option<RevocationSources>,
    /// Most intermediate CAs in a path (default 3).
    pub max_path_length: Option<usize>,
    /// Where fetched CRLs and OCSP answers are kept.
    pub crl_cache: Option<PathBuf>,
    /// Smallest RSA modulus accepted, in bits (default 2048; at least 2048 unless
    /// `allow_weak_rsa` — there is none: 1024 is the floor for old archives).
    pub min_rsa_bits: Option<usize>,
    /// Accept SHA-1 signatures (default false).
    pub allow_sha1: Option<bool>,
    /// Accept anyExtendedKeyUsage in place of emailProtection (default false).
    pub allow_any_eku: Option<bool>,
    /// Allowed clock skew for CRL and OCSP times, in seconds (default 300).
    pub clock_skew: Option<u64>,
    /// Certificate policy OIDs a path must be valid for (RFC 5280 user-initial-policy-set;
    /// default: any policy).
    pub policies: Option<Vec<String>>,
    /// The path must be valid for some policy (of `policies`, or any) (default false).
    pub require_explicit_policy: Option<bool>,
    /// Policy mappings of CAs are not followed (default false).
    pub inhibit_policy_mapping: Option<bool>,
    /// anyPolicy in CA certificates does not stand for every policy (default false).
    pub inhibit_any_policy: Option<bool>,
}

impl TrustConfig {
    /// Checks the values; the message names the key and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(n) = self.max_path_length {
            if n > 8 {
                return Err(format!(
                    "[trust] max_path_length = {n}: at most 8 intermediate CAs"
                ));
            }
        }
        if let Some(b) = self.min_rsa_bits {
            if !(1024..=16384).contains(&b) {
                return Err(format!(
                    "[trust] min_rsa_bits = {b}: give a size from 1024 to 16384 (default 2048)"
                ));
            }
        }
        if let Some(s) = self.clock_skew {
            if s > 3600 {
                return Err(format!(
                    "[trust] clock_skew = {s}: at most 3600 seconds (default 300)"
                ));
            }
        }
        self.policy()
            .cert_policies
            .validate()
            .map_err(|e| format!("[trust] policies: {e}"))
    }

    /// Makes relative paths relative to `base` (the configuration file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.anchors.iter_mut().for_each(fix);
        self.intermediates.iter_mut().for_each(fix);
        if let Some(c) = self.crl_cache.as_mut() {
            fix(c);
        }
    }

    /// The path validation policy.
    pub fn policy(&self) -> Policy {
        let d = Policy::default();
        Policy {
            allow_any_eku: self.allow_any_eku.unwrap_or(d.allow_any_eku),
            max_intermediates: self.max_path_length.unwrap_or(DEFAULT_MAX_PATH_LENGTH),
            min_rsa_bits: self.min_rsa_bits.unwrap_or(d.min_rsa_bits),
            allow_sha1: self.allow_sha1.unwrap_or(d.allow_sha1),
            cert_policies: crate::cert_policies::PolicyInputs {
                policies: self.policies.clone().unwrap_or_default(),
                // naming policies means the path must be valid for one of them
                require_explicit_policy: self
                    .require_explicit_policy
                    .unwrap_or(self.policies.as_ref().is_some_and(|p| !p.is_empty())),
                inhibit_policy_mapping: self.inhibit_policy_mapping.unwrap_or_default(),
                inhibit_any_policy: self.inhibit_any_policy.unwrap_or_default(),
            },
        }
    }

    /// The revocation mode (default soft-fail).
    pub fn revocation(&self) -> RevocationMode {
        self.revocation.unwrap_or_default()
    }

    /// The network revocation sources (default OCSP first).
    pub fn revocation_sources(&self) -> RevocationSources {
        self.revocation_sources.unwrap_or_default()
    }

    /// The revocation inputs of this policy at `now`, offline: `crls` from the caller and
    /// `pool` to find CRL signers in. A caller that fetches sets `fetcher`.
    pub fn revocation_inputs<'a>(
        &self,
        crls: &'a [Crl],
        pool: &'a [CertEntry],
        now: std::time::SystemTime,
    ) -> RevocationInputs<'a> {
        RevocationInputs {
            mode: self.revocation(),
            crls,
            now,
            skew: self.clock_skew(),
            fetcher: None,
            sources: self.revocation_sources(),
            pool,
            anchor: None,
            max_intermediates: self.policy().max_intermediates,
            depth: 0,
            signer_budget: None,
        }
    }

    /// The clock skew.
    pub fn clock_skew(&self) -> Duration {
        Duration::from_secs(self.clock_skew.unwrap_or(DEFAULT_CLOCK_SKEW_SECS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validation_and_policy() {
        let t = TrustConfig::default();
        assert_eq!(t.policy(), Policy::default());
        assert_eq!(t.revocation(), RevocationMode::SoftFail);
        assert_eq!(t.clock_skew(), Duration::from_secs(300));
        let bad = TrustConfig {
            max_path_length: Some(20),
            ..Default::default()
        };
        assert!(bad
            .validate()
            .expect_err("too long")
            .contains("max_path_length"));
        let t: TrustConfig = serde_json::from_str(
            r#"{"revocation":"hard-fail","max_path_length":2,"anchors":["root.pem"]}"#,
        )
        .expect("parses");
        assert_eq!(t.revocation(), RevocationMode::HardFail);
        assert_eq!(t.policy().max_intermediates, 2);
        let mut t = t;
        t.resolve_paths(Path::new("/etc/tokenmail"));
        assert_eq!(t.anchors, vec![PathBuf::from("/etc/tokenmail/root.pem")]);
        let t: TrustConfig = serde_json::from_str(
            r#"{"policies":["2.16.840.1.101.3.2.1.48.1"],"require_explicit_policy":true}"#,
        )
        .expect("parses");
        assert!(t.validate().is_ok());
        assert!(t.policy().cert_policies.require_explicit_policy);
        let bad: TrustConfig = serde_json::from_str(r#"{"policies":["2.16.x"]}"#).expect("parses");
        assert!(bad
            .validate()
            .expect_err("bad oid")
            .contains("[trust] policies"));
        let e = serde_json::from_str::<TrustConfig>(r#"{"revocaton":"off"}"#).expect_err("typo");
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = serde_json::from_str::<TrustConfig>(r#"{"revocation":"maybe"}"#).expect_err("bad");
        assert!(e.to_string().contains("unknown variant"), "{e}");
    }
}
