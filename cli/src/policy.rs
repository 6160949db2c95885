//! `tokenmail policy show`: the effective trust and decrypt policy, and where each value
//! comes from (a flag is per command; here: the environment, the configuration file, or
//! the default).

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;
use tokenmail_smime::pipeline::CipherPolicy;
use tokenmail_smime::trust::{DEFAULT_CLOCK_SKEW_SECS, DEFAULT_MAX_PATH_LENGTH};

/// Arguments of `tokenmail policy`.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

/// `tokenmail policy` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PolicyCommand {
    /// Print the effective trust policy (anchors, revocation, path length, algorithms) and
    /// the decrypt policy, each with where it comes from.
    ///
    /// Example: `tokenmail policy show`, `tokenmail policy show --json | jq .trust.revocation`
    Show {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Also say what [policy] would do with this message (its From, To, Cc and Bcc):
        /// signed, encrypted, to whom, or refused and why. Exit 1 when it would be refused.
        #[arg(long, value_name = "MESSAGE")]
        dry_run: Option<PathBuf>,
    },
}

/// One value and its origin.
fn entry(value: serde_json::Value, from: &str) -> serde_json::Value {
    json!({ "value": value, "from": from })
}

/// Runs `tokenmail policy`.
pub fn run(args: PolicyArgs, out: &mut dyn std::io::Write) -> Result<i32> {
    let PolicyCommand::Show {
        json: as_json,
        dry_run,
    } = args.command;
    let (org, _) = crate::store::org_policy()?;
    let decision = match &dry_run {
        Some(msg) => Some(crate::sendmail::dry_run(&org, msg, None)?),
        None => None,
    };
    let (trust, cfg) = crate::store::trust_config()?;
    let file = cfg
        .as_ref()
        .map(|p| format!("{}", p.display()))
        .unwrap_or_else(|| "none".into());
    let in_file = |set: bool| {
        if set {
            format!("[trust] in {file}")
        } else {
            "default".to_string()
        }
    };
    let (anchor_paths, anchor_from) = crate::store::default_anchor_paths()?;
    let anchors = crate::store::load_certs(&anchor_paths, "trust anchor")?;
    let intermediates =
        crate::store::load_certs(&trust.intermediates, "[trust] intermediate certificate")?;
    let cache: Option<PathBuf> = trust
        .crl_cache
        .clone()
        .or_else(crate::netfetch::default_cache_dir);
    let policy = trust.policy();
    let accept = crate::store::config_value("decrypt", "accept")?;
    let accept_policy = match &accept {
        Some((v, _)) => CipherPolicy::from_name(v)
            .map(|p| p.name())
            .unwrap_or("invalid"),
        None => CipherPolicy::default().name(),
    };
    let report = json!({
        "configuration": cfg,
        "trust": {
            "anchors": entry(
                json!(anchors.iter().map(|c| c.subject()).collect::<Vec<_>>()),
                anchor_from.as_deref().unwrap_or("none: verify needs --trust"),
            ),
            "anchor_files": anchor_paths,
            "intermediates": entry(
                json!(intermediates.iter().map(|c| c.subject()).collect::<Vec<_>>()),
                &in_file(!trust.intermediates.is_empty()),
            ),
            "revocation": entry(json!(trust.revocation().name()), &in_file(trust.revocation.is_some())),
            "revocation_sources": entry(
                json!(trust.revocation_sources().name()),
                &in_file(trust.revocation_sources.is_some()),
            ),
            "max_path_length": entry(
                json!(trust.max_path_length.unwrap_or(DEFAULT_MAX_PATH_LENGTH)),
                &in_file(trust.max_path_length.is_some()),
            ),
            "crl_cache": entry(json!(cache), &in_file(trust.crl_cache.is_some())),
            "min_rsa_bits": entry(json!(policy.min_rsa_bits), &in_file(trust.min_rsa_bits.is_some())),
            "allow_sha1": entry(json!(policy.allow_sha1), &in_file(trust.allow_sha1.is_some())),
            "allow_any_eku": entry(json!(policy.allow_any_eku), &in_file(trust.allow_any_eku.is_some())),
            "clock_skew_seconds": entry(
                json!(trust.clock_skew.unwrap_or(DEFAULT_CLOCK_SKEW_SECS)),
                &in_file(trust.clock_skew.is_some()),
            ),
            "policies": entry(
                if policy.cert_policies.policies.is_empty() {
                    json!(["any"])
                } else {
                    json!(policy.cert_policies.policies)
                },
                &in_file(trust.policies.is_some()),
            ),
            "require_explicit_policy": entry(
                json!(policy.cert_policies.require_explicit_policy),
                &in_file(trust.require_explicit_policy.is_some()),
            ),
            "inhibit_policy_mapping": entry(
                json!(policy.cert_policies.inhibit_policy_mapping),
                &in_file(trust.inhibit_policy_mapping.is_some()),
            ),
            "inhibit_any_policy": entry(
                json!(policy.cert_policies.inhibit_any_policy),
                &in_file(trust.inhibit_any_policy.is_some()),
            ),
        },
        "send": org,
        "message": match &decision {
            None => serde_json::Value::Null,
            Some(Ok(plan)) => json!(plan),
            Some(Err(refusal)) => json!({ "refused": refusal.to_string() }),
        },
        "decrypt": {
            "accept": entry(
                json!(accept_policy),
                &accept
                    .as_ref()
                    .map(|(_, p)| format!("[decrypt] in {}", p.display()))
                    .unwrap_or_else(|| "default".into()),
            ),
        },
    });
    let refused = matches!(decision, Some(Err(_)));
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(i32::from(refused));
    }
    writeln!(out, "configuration: {file}")?;
    writeln!(out, "trust:")?;
    let t = &report["trust"];
    for key in [
        "anchors",
        "intermediates",
        "revocation",
        "revocation_sources",
        "max_path_length",
        "crl_cache",
        "min_rsa_bits",
        "allow_sha1",
        "allow_any_eku",
        "clock_skew_seconds",
        "policies",
        "require_explicit_policy",
        "inhibit_policy_mapping",
        "inhibit_any_policy",
    ] {
        let v = &t[key]["value"];
        let shown = match v {
            serde_json::Value::Array(a) if a.is_empty() => "none".to_string(),
            serde_json::Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
                .join("; "),
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "none".to_string(),
            other => other.to_string(),
        };
        writeln!(
            out,
            "  {key:<23} {shown}  ({})",
            t[key]["from"].as_str().unwrap_or("")
        )?;
    }
    writeln!(out, "decrypt:")?;
    writeln!(
        out,
        "  {:<23} {}  ({})",
        "accept",
        accept_policy,
        report["decrypt"]["accept"]["from"].as_str().unwrap_or("")
    )?;
    writeln!(out, "send ([policy], tokenmail-sendmail):")?;
    writeln!(
        out,
        "  sign {:?}, encrypt {:?}, must_encrypt_domains [{}], triple_wrap {}, archive_recipient {}",
        org.sign,
        org.encrypt,
        org.must_encrypt_domains.join(", "),
        org.triple_wrap,
        org.archive_recipient
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none".into())
    )?;
    match &decision {
        None => {}
        Some(Ok(plan)) => {
            writeln!(out, "this message:")?;
            for r in &plan.reasons {
                writeln!(out, "  {r}")?;
            }
            for r in &plan.recipients {
                writeln!(
                    out,
                    "  {}: sign {:?}, encrypt {:?}, certificate {}",
                    r.address,
                    r.sign,
                    r.encrypt,
                    if r.certificate { "found" } else { "none" }
                )?;
            }
        }
        Some(Err(e)) => writeln!(out, "this message: not sent: {e}")?,
    }
    Ok(i32::from(refused))
}
