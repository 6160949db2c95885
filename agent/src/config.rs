//! The agent's configuration: command-line flags and the optional TOML file
//! (documented in docs/configuration.md).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::pin::PinSource;
use crate::token::pkcs11::Pkcs11Config;

/// Default seconds a client-supplied PIN stays cached.
pub const DEFAULT_PIN_TTL: u64 = 3600;
/// Default most sessions per token.
pub const DEFAULT_MAX_SESSIONS: usize = 8;

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Socket path.
    pub socket: Option<PathBuf>,
    /// Whether `tokenmail` and `tokenmail-gpgsm` start this agent when none runs
    /// (default true). Read by the clients; the agent only accepts the key.
    pub auto_start: Option<bool>,
    /// Log file when detached.
    pub log_file: Option<PathBuf>,
    /// Most sessions per token.
    pub max_sessions: Option<usize>,
    /// Largest message a stream operation may spool (`"8G"`, `"512M"` or bytes).
    pub max_spool: Option<SizeValue>,
    /// PIN policy.
    #[serde(default)]
    pub pin: PinConfig,
    /// Tokens.
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenConfig>,
    /// Key selection.
    #[serde(default)]
    pub keys: KeysConfig,
    /// Decryption policy.
    #[serde(default)]
    pub decrypt: DecryptConfig,
    /// Trust policy: the agent's `verify` operation uses its anchors when a request sends
    /// none; `tokenmail verify`, `decrypt` and tokenmail-gpgsm read the same table.
    #[serde(default)]
    pub trust: tokenmail_smime::trust::TrustConfig,
    /// Organisation policy at send time: read by `tokenmail-sendmail` and `tokenmail
    /// policy show`; the agent validates it so that a bad one is found at start.
    #[serde(default)]
    pub policy: tokenmail_smime::policy::OrgPolicy,
    /// The audit log of private-key operations.
    #[serde(default)]
    pub audit: AuditConfig,
    /// LDAP directories (`[[directory]]`): read and checked by the CLI (`certs fetch`,
    /// `encrypt --to`, `expiry --ldap`); the agent only accepts the tables.
    #[serde(default, rename = "directory")]
    pub directories: Vec<toml::Table>,
    /// `[certs]` (the certificate store, `harvest`): read and checked by the CLI.
    #[serde(default)]
    pub certs: Option<toml::Table>,
    /// `[sign]`: read by the `tokenmail` command line (`tsa`, the default time-stamping
    /// authority); accepted here so that one file serves both. The agent's streamed `sign`
    /// does not timestamp (docs/protocol.md).
    #[serde(default)]
    pub sign: SignConfig,
}

/// `[audit]`: the log of private-key operations (JSON lines, append-only, rotated).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `false` turns the log off (default on).
    pub enabled: Option<bool>,
    /// The file (default `$XDG_STATE_HOME/tokenmail/audit.log`, else
    /// `~/.local/state/tokenmail/audit.log`).
    pub file: Option<PathBuf>,
    /// Size at which the file is rotated (default `"10M"`).
    pub max_size: Option<SizeValue>,
    /// Rotated files kept (`audit.log.1` …; default 5).
    pub keep: Option<u32>,
}

/// `[sign]` of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignConfig {
    /// The default time-stamping authority of `tokenmail sign` (http://...).
    pub tsa: Option<String>,
}

/// A size in the file: bytes as an integer, or a string with a K/M/G suffix.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    /// Bytes.
    Bytes(u64),
    /// `"512M"`, `"8G"`, `"1048576"`.
    Text(String),
}

impl SizeValue {
    /// The size in bytes.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            SizeValue::Bytes(n) => Ok(*n),
            SizeValue::Text(t) => parse_size(t),
        }
    }
}

/// Smallest spool limit accepted: a limit below one chunk would refuse every message.
pub const MIN_SPOOL: u64 = 1 << 20;

/// Parses `"512M"`, `"8G"`, `"64K"`, `"1048576"` (binary units; an optional `B`/`iB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let bad =
        || format!("size {text:?}: write bytes or a number with K, M or G (e.g. \"512M\", \"8G\")");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// A size for people: `8 GiB`, `512 MiB`, `1536 KiB`, `100 bytes`.
pub fn format_size(n: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n % (1 << shift) == 0 {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

/// `[decrypt]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecryptConfig {
    /// The content-encryption algorithms accepted: `any` (default; CBC and 3DES decrypt
    /// with a warning), `aes` (3DES refused) or `authenticated` (AES-GCM only).
    pub accept: Option<String>,
}

impl DecryptConfig {
    /// The policy, or why the setting is wrong.
    pub fn policy(&self) -> Result<tokenmail_smime::pipeline::CipherPolicy, String> {
        match &self.accept {
            None => Ok(Default::default()),
            Some(a) => tokenmail_smime::pipeline::CipherPolicy::from_name(a).ok_or_else(|| {
                format!("[decrypt] accept = {a:?}: use \"any\", \"aes\" or \"authenticated\"")
            }),
        }
    }
}

/// `[pin]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinConfig {
    /// Seconds a PIN typed by the user is cached; 0 = until `tokenmail lock` (or, for
    /// a smart card, until it is removed).
    pub cache_ttl: Option<u64>,
    /// The pinentry program used when a client without a terminal needs a PIN:
    /// a path, `auto` (default: search $PATH) or `none`.
    pub pinentry: Option<String>,
    /// Seconds to wait for the user in pinentry (default 60).
    pub pinentry_timeout: Option<u64>,
}

/// `[[token]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// `pkcs11` (default) or `piv`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The name the agent shows for a PIV card (default `piv-<serial>`).
    pub name: Option<String>,
    /// PKCS#11 module path (type `pkcs11`).
    pub module: Option<PathBuf>,
    /// Token label (type `pkcs11`).
    pub label: Option<String>,
    /// Token serial (PIV: the card's serial number).
    pub serial: Option<String>,
    /// PIN file.
    pub pin_file: Option<PathBuf>,
    /// PIN environment variable.
    pub pin_env: Option<String>,
    /// PEM file of CA certificates to send with signatures (PIV cards hold none).
    pub chain: Option<PathBuf>,
}

/// `[keys]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// email → key label or hex id.
    #[serde(default)]
    pub prefer: HashMap<String, String>,
}

impl FileConfig {
    /// Reads and parses the file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        let mut f: FileConfig =
            toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))?;
        if let Some(dir) = path.parent() {
            f.trust.resolve_paths(&absolute(dir));
            f.policy.resolve_paths(&absolute(dir));
            if let Some(p) = f.audit.file.as_mut() {
                if p.is_relative() {
                    *p = absolute(dir).join(&*p);
                }
            }
        }
        f.policy
            .validate()
            .map_err(|e| format!("config {}: {e}", path.display()))?;
        if let Some(v) = &f.audit.max_size {
            v.bytes()
                .map_err(|e| format!("config {}: [audit] max_size: {e}", path.display()))?;
        }
        f.decrypt
            .policy()
            .map_err(|e| format!("config {}: {e}", path.display()))?;
        f.trust
            .validate()
            .map_err(|e| format!("config {}: {e}", path.display()))?;
        if let Some(v) = &f.max_spool {
            v.bytes()
                .map_err(|e| format!("config {}: max_spool: {e}", path.display()))?;
        }
        Ok(f)
    }
}

/// Makes a path absolute against the current directory (the agent may chdir when detached).
pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// The unattended PIN source from a file or a variable (read and removed now).
pub fn pin_source(pin_file: Option<&Path>, pin_env: Option<&str>) -> Result<PinSource, String> {
    match (pin_file, pin_env) {
        (Some(_), Some(_)) => Err("give either a PIN file or a PIN variable, not both".into()),
        (Some(f), None) => {
            let f = absolute(f);
            if !f.is_file() {
                return Err(format!("PIN file {} does not exist", f.display()));
            }
            Ok(PinSource::File(f))
        }
        (None, Some(v)) => PinSource::from_env(v),
        (None, None) => Ok(PinSource::None),
    }
}

/// Every certificate (DER) in a PEM file.
pub fn pem_certificates(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let block = &rest[start..];
        let end_marker = "-----END CERTIFICATE-----";
        let Some(end) = block.find(end_marker) else {
            break;
        };
        let (label, der) = der::pem::decode_vec(&block.as_bytes()[..end + end_marker.len()])
            .map_err(|e| format!("{}: bad PEM certificate: {e}", path.display()))?;
        if label == "CERTIFICATE" {
            out.push(der);
        }
        rest = &block[end + end_marker.len()..];
    }
    if out.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(out)
}

/// Builds a PIV card's configuration.
#[cfg(feature = "piv")]
pub fn piv_token(
    name: Option<String>,
    serial: Option<&str>,
    pin_file: Option<&Path>,
    pin_env: Option<&str>,
    ttl: u64,
    chain: Option<&Path>,
) -> Result<crate::token::piv::PivConfig, String> {
    let serial = serial
        .map(|s| {
            s.trim().parse::<u32>().map_err(|_| {
                format!("PIV serial {s:?} is not a number (see `ykman list --serials`)")
            })
        })
        .transpose()?;
    let name = name.unwrap_or_else(|| match serial {
        Some(s) => format!("piv-{s}"),
        None => "piv".into(),
    });
    let chain_pool = match chain {
        Some(p) => pem_certificates(&absolute(p))?,
        None => Vec::new(),
    };
    Ok(crate::token::piv::PivConfig {
        name,
        serial,
        pin_source: pin_source(pin_file, pin_env)?,
        pin_ttl: if ttl == 0 {
            None
        } else {
            Some(Duration::from_secs(ttl))
        },
        chain_pool,
    })
}

/// Builds one token's configuration, reading (and removing) a PIN environment variable.
pub fn token(
    module: &Path,
    label: Option<String>,
    serial: Option<String>,
    pin_file: Option<&Path>,
    pin_env: Option<&str>,
    ttl: u64,
    max_sessions: usize,
) -> Result<Pkcs11Config, String> {
    if label.is_none() && serial.is_none() {
        return Err(format!(
            "token with module {} needs a label or a serial",
            module.display()
        ));
    }
    let pin_source = pin_source(pin_file, pin_env)?;
    Ok(Pkcs11Config {
        module: absolute(module),
        label,
        serial,
        pin_source,
        pin_ttl: if ttl == 0 {
            None
        } else {
            Some(Duration::from_secs(ttl))
        },
        max_sessions,
    })
}

/// Opens the agent's log file for appending: created 0600, an existing one tightened to
/// 0600 (it may hold key labels and token names), and never through a symbolic link
/// (`O_NOFOLLOW`: a link planted at the path cannot redirect the log).
pub fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units_and_print_back() {
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        for bad in ["", "lots", "8X", "-1G", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_size(8 << 30), "8 GiB");
        assert_eq!(format_size(1536 << 10), "1536 KiB");
        assert_eq!(format_size(1000), "1000 bytes");
        let f: FileConfig = toml::from_str("max_spool = \"512M\"").expect("string size");
        assert_eq!(f.max_spool.expect("set").bytes(), Ok(512 << 20));
        let f: FileConfig = toml::from_str("max_spool = 2097152").expect("integer size");
        assert_eq!(f.max_spool.expect("set").bytes(), Ok(2 << 20));
    }

    #[test]
    fn the_log_is_private_and_never_opened_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("agent.log");
        super::open_log(&log).expect("created");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&log), 0o600);
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        super::open_log(&log).expect("reopened");
        assert_eq!(mode(&log), 0o600, "tightened");
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"").expect("write");
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(super::open_log(&link).is_err(), "not through a symlink");
    }

    #[test]
    fn parses_a_full_file() {
        let cfg: FileConfig = toml::from_str(
            r#"
            socket = "/run/user/1000/tokenmail/agent.sock"
            max_sessions = 4
            [pin]
            cache_ttl = 0
            [[token]]
            module = "/usr/lib/softhsm/libsofthsm2.so"
            label = "work"
            pin_file = "/home/u/.config/tokenmail/pin"
            [[token]]
            module = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
            serial = "1234"
            [[token]]
            type = "piv"
            serial = "12345678"
            name = "yubikey"
            [keys.prefer]
            "alice@example.com" = "alice-rsa"
            [trust]
            anchors = ["/etc/tokenmail/root.pem"]
            "#,
        )
        .expect("valid config");
        assert_eq!(cfg.tokens.len(), 3);
        assert_eq!(cfg.tokens[2].kind.as_deref(), Some("piv"));
        assert_eq!(cfg.pin.cache_ttl, Some(0));
        assert_eq!(cfg.keys.prefer["alice@example.com"], "alice-rsa");
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
    }

    /// `[[directory]]` and `[certs]` are the CLI's: the agent starts with them.
    #[test]
    fn accepts_the_clis_directory_and_certs_tables() {
        let cfg: FileConfig = toml::from_str(
            r#"
            [[directory]]
            url = "ldaps://ldap.example.com"
            base = "dc=example,dc=com"
            [certs]
            harvest = true
            "#,
        )
        .expect("parses");
        assert_eq!(cfg.directories.len(), 1);
        assert!(cfg.certs.is_some());
    }

    /// `[sign] tsa` is the CLI's; one file serves both, so the agent accepts it (and
    /// nothing else under `[sign]`).
    #[test]
    fn the_cli_sign_table_is_accepted() {
        let cfg: FileConfig =
            toml::from_str("[sign]\ntsa = \"http://tsa.example/\"\n").expect("[sign] tsa");
        assert_eq!(cfg.sign.tsa.as_deref(), Some("http://tsa.example/"));
        assert!(toml::from_str::<FileConfig>("[sign]\ntsaa = \"x\"\n").is_err());
    }
}
