//! `tokenmail-sendmail`: a sendmail-compatible wrapper that applies the organisation policy
//! (`[policy]`: sign, encrypt, both, triple wrap, archive recipient) to a message through
//! the agent and hands the result to the configured MTA.
//!
//! Never loses a message: when the policy cannot be met, the agent cannot sign, or the MTA
//! fails, the message as it was given is kept in the queue directory, the error names it,
//! and the exit code is a sysexits.h code. Nothing is sent then.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use tokenmail_smime::policy::{OrgPolicy, Plan, PolicyRefusal};

/// sysexits.h codes.
pub mod exit {
    /// Command line usage error.
    pub const USAGE: i32 = 64;
    /// The message is malformed (no recipients, a bad address field).
    pub const DATAERR: i32 = 65;
    /// The policy cannot be met (a must-encrypt recipient without a certificate).
    pub const UNAVAILABLE: i32 = 69;
    /// The MTA could not be started.
    pub const OSERR: i32 = 71;
    /// The message could not be kept or written.
    pub const CANTCREAT: i32 = 73;
    /// Signing or encryption failed (agent, token, PIN): try again later.
    pub const TEMPFAIL: i32 = 75;
    /// The configuration is wrong.
    pub const CONFIG: i32 = 78;
}

const USAGE: &str = "\
usage: tokenmail-sendmail [-t] [-i] [-oi] [-f FROM] [-F NAME] [RECIPIENT...]

Reads a message on standard input, applies [policy] of the tokenmail configuration
(sign, encrypt, both, triple wrap, archive recipient) through tokenmail-agent, and hands
the result to [policy] mta (default /usr/sbin/sendmail -i) with the recipients appended.

  -t        take the recipients from To, Cc and Bcc as well (Bcc is removed)
  -i, -oi   a line with a single dot does not end the message
  -f FROM   envelope sender, passed on to the MTA
  --dry-run print what the policy would do and send nothing

Examples (NeoMutt, git send-email, cron):
  set sendmail = \"tokenmail-sendmail -oi\"
  git config sendemail.sendmailcmd 'tokenmail-sendmail -i'
  tokenmail-sendmail -t < message.eml

Exit codes (sysexits.h): 0 sent; 64 usage; 65 malformed message; 69 policy cannot be met
(nothing sent, the recipients named); 71 MTA not started; 73 message not kept; 75 signing
or encryption failed (try again); 78 configuration error; else the MTA's own code. Every
failure keeps the message and prints where.";

/// The command line.
#[derive(Debug, Default)]
struct Args {
    header_recipients: bool,
    dot_ends: bool,
    from: Option<String>,
    dry_run: bool,
    recipients: Vec<String>,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        dot_ends: true,
        ..Args::default()
    };
    let mut i = 0;
    let mut rest = false;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if rest || !arg.starts_with('-') || arg == "-" {
            a.recipients.push(arg.clone());
            continue;
        }
        match arg.as_str() {
            "--" => rest = true,
            "-t" => a.header_recipients = true,
            "-i" | "-oi" => a.dot_ends = false,
            "--dry-run" => a.dry_run = true,
            "-h" | "--help" => return Err(String::new()),
            "-f" | "-r" | "-F" | "-N" | "-R" | "-V" | "-X" | "-B" | "-L" | "-O" | "-p" | "-q" => {
                let v = args
                    .get(i)
                    .ok_or_else(|| format!("{arg} needs a value"))?
                    .clone();
                i += 1;
                if arg == "-f" || arg == "-r" {
                    a.from = Some(v);
                }
            }
            "-bm" | "-v" | "-m" | "-U" | "-G" | "-Am" | "-Ac" => {}
            s if s.starts_with("-f") || s.starts_with("-r") => a.from = Some(s[2..].to_string()),
            // -oem, -odb, -oXvalue, -Fname, -Ndsn, -Rhdrs, -Vid…: accepted, not needed
            s if s.starts_with("-o")
                || s.starts_with("-F")
                || s.starts_with("-N")
                || s.starts_with("-R")
                || s.starts_with("-V")
                || s.starts_with("-B") => {}
            s if s.starts_with("-b") => {
                return Err(format!(
                    "{s}: only message submission is supported (-bm, the default)"
                ))
            }
            s => return Err(format!("unknown option {s}")),
        }
    }
    Ok(a)
}

/// Where undeliverable messages are kept.
fn queue_dir(policy: &OrgPolicy) -> Option<PathBuf> {
    policy
        .queue_dir
        .clone()
        .or_else(|| tokenmail_proto::state_dir().map(|d| d.join("queue")))
}

/// Keeps `message` in the queue directory; returns where.
fn keep(policy: &OrgPolicy, message: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir =
        queue_dir(policy).ok_or_else(|| anyhow!("no queue directory: set [policy] queue_dir"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    for n in 0..1000u32 {
        let path = dir.join(format!("{stamp}-{}-{n}.eml", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match f {
            Ok(mut f) => {
                let mut src = std::fs::File::open(message)?;
                std::io::copy(&mut src, &mut f)?;
                f.sync_all()?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot write {}", path.display())),
        }
    }
    Err(anyhow!("cannot name a file in {}", dir.display()))
}

/// Reads the message from `input` into `path`: to the end, or (without -i) to a line
/// holding a single dot, which is not part of the message.
fn read_message(input: &mut dyn Read, path: &Path, dot_ends: bool) -> Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    let mut r = BufReader::new(input);
    let mut line = Vec::new();
    // at most 64 KiB held at a time: a longer line is written in pieces (and is no dot line)
    let mut at_line_start = true;
    loop {
        line.clear();
        if (&mut r).take(64 << 10).read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let whole = line.ends_with(b"\n");
        if dot_ends && at_line_start && (line == b".\n" || line == b".\r\n") {
            break;
        }
        out.write_all(&line)?;
        at_line_start = whole;
    }
    out.flush()?;
    Ok(())
}

/// The header fields and where the body starts.
fn header_of(path: &Path) -> Result<(Vec<tokenmail_smime::mime::HeaderField>, usize)> {
    let mut head = Vec::new();
    std::fs::File::open(path)?
        .take(1 << 20)
        .read_to_end(&mut head)?;
    match tokenmail_smime::mime::parse_header(&head) {
        Ok(Some(h)) => Ok(h),
        _ => Err(anyhow!("the message has no header (or one over 1 MiB)")),
    }
}

fn addresses(fields: &[tokenmail_smime::mime::HeaderField], name: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in fields.iter().filter(|f| f.is(name)) {
        out.extend(
            tokenmail_smime::address::address_list(&f.value())
                .map_err(|e| anyhow!("{name}: {e}"))?,
        );
    }
    Ok(out)
}

/// Writes the message without its Bcc fields to `out`: the header line by line, the body
/// copied through (bounded memory whatever the message's size).
fn strip_bcc(src: &Path, out: &Path) -> Result<()> {
    let mut r = BufReader::new(std::fs::File::open(src)?);
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut line = Vec::new();
    let mut skipping = false;
    loop {
        line.clear();
        // a header line longer than 1 MiB is not a header: stop looking for Bcc there
        if (&mut r).take(1 << 20).read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line == b"\r\n" || line == b"\n" || !line.ends_with(b"\n") {
            w.write_all(&line)?;
            break;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            skipping = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"bcc:");
        }
        if !skipping {
            w.write_all(&line)?;
        }
    }
    std::io::copy(&mut r, &mut w)?;
    w.flush()?;
    Ok(())
}

fn dedup(list: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    list.into_iter()
        .filter(|a| seen.insert(a.to_ascii_lowercase()))
        .collect()
}

/// Runs the MTA with `message` on its standard input; its exit code.
fn deliver(
    mta: &[String],
    from: Option<&str>,
    recipients: &[String],
    message: &Path,
) -> Result<i32, String> {
    let (prog, fixed) = mta.split_first().ok_or("no MTA command")?;
    let mut cmd = Command::new(prog);
    cmd.args(fixed);
    if let Some(f) = from {
        cmd.arg("-f").arg(f);
    }
    cmd.args(recipients)
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run the MTA {prog}: {e}"))?;
    let file = std::fs::File::open(message).map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        let mut f = file;
        if let Err(e) = std::io::copy(&mut f, &mut stdin) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("cannot hand the message to {prog}: {e}"));
            }
        }
    }
    // an MTA gets five minutes, then it is stopped (the message is kept)
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Ok(st.code().unwrap_or(exit::OSERR)),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the MTA {prog} did not finish within 300 s: stopped"
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Why an SMTP submission failed, and whether trying later may help.
struct SmtpFailure {
    why: String,
    permanent: bool,
}

/// The SMTP password: the first line of `path`, refused when others may read it.
fn smtp_password(path: &Path) -> Result<zeroize::Zeroizing<String>, SmtpFailure> {
    use crate::store::SecretFileError;
    crate::store::read_secret_line(path, 0o077).map_err(|e| SmtpFailure {
        permanent: true,
        why: match e {
            SecretFileError::Io(e) => {
                format!("[policy.smtp] password_file {}: {e}", path.display())
            }
            SecretFileError::Exposed(_) => format!(
                "[policy.smtp] password_file {} may be read by others: chmod 600 it",
                path.display()
            ),
        },
    })
}

/// Submits `message` to the `[policy.smtp]` server for `recipients`.
fn deliver_smtp(
    cfg: &tokenmail_smime::policy::SmtpConfig,
    from: Option<&str>,
    recipients: &[String],
    message: &Path,
) -> Result<(), SmtpFailure> {
    use lettre::address::{Address, Envelope};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{SmtpTransport, Transport};
    use tokenmail_smime::policy::SmtpTls;
    let perm = |why: String| SmtpFailure {
        why,
        permanent: true,
    };
    let (host, port) = cfg.host_port().map_err(perm)?;
    let parse = |a: &str| -> Result<Address, SmtpFailure> {
        a.parse::<Address>()
            .map_err(|e| perm(format!("{a:?} is not an address SMTP takes: {e}")))
    };
    let sender = from.map(parse).transpose()?;
    let to = recipients
        .iter()
        .map(|r| parse(r))
        .collect::<Result<Vec<_>, _>>()?;
    let envelope = Envelope::new(sender, to).map_err(|e| perm(format!("envelope: {e}")))?;
    let mut b = match cfg.tls {
        SmtpTls::Starttls => SmtpTransport::starttls_relay(&host)
            .map_err(|e| perm(format!("[policy.smtp] {host}: {e}")))?,
        SmtpTls::Implicit => {
            SmtpTransport::relay(&host).map_err(|e| perm(format!("[policy.smtp] {host}: {e}")))?
        }
        SmtpTls::None => SmtpTransport::builder_dangerous(&host),
    };
    b = b.port(port).timeout(Some(Duration::from_secs(
        cfg.timeout.unwrap_or(30).clamp(1, 600),
    )));
    if let (Some(user), Some(pw)) = (&cfg.username, &cfg.password_file) {
        let password = smtp_password(pw)?;
        b = b.credentials(Credentials::new(user.clone(), password.to_string()));
    }
    let data = std::fs::read(message).map_err(|e| perm(e.to_string()))?;
    b.build()
        .send_raw(&envelope, &data)
        .map(|_| ())
        .map_err(|e| SmtpFailure {
            permanent: e.is_permanent(),
            why: format!("SMTP submission to {host}:{port} failed: {e}"),
        })
}

/// What the policy makes of one message.
struct Prepared {
    plan: Plan,
    /// Certificate files of the recipients (when encrypting).
    certs: Vec<PathBuf>,
}

fn prepare(
    policy: &OrgPolicy,
    recipients: &[String],
    socket: Option<&Path>,
    dir: &Path,
) -> Result<Result<Prepared, PolicyRefusal>> {
    let mut found: std::collections::HashMap<String, PathBuf> = Default::default();
    let mut n = 0;
    let mut has = |addr: &str| -> bool {
        if found.contains_key(addr) {
            return true;
        }
        n += 1;
        let sub = dir.join(format!("r{n}"));
        if std::fs::create_dir_all(&sub).is_err() {
            return false;
        }
        match crate::store::recipients_for(&[addr.to_string()], socket, &sub) {
            Ok(mut v) if !v.is_empty() => {
                found.insert(addr.to_string(), v.remove(0));
                true
            }
            _ => false,
        }
    };
    let plan = match policy.plan(recipients, &mut has) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let certs = if plan.encrypt {
        recipients
            .iter()
            .filter_map(|r| found.get(r).cloned())
            .collect()
    } else {
        Vec::new()
    };
    Ok(Ok(Prepared { plan, certs }))
}

/// Signs and/or encrypts `input` into `output` as `plan` says.
fn apply(
    policy: &OrgPolicy,
    p: &Prepared,
    signer: Option<String>,
    input: &Path,
    output: &Path,
    socket: Option<&Path>,
    dir: &Path,
) -> Result<()> {
    let plan = &p.plan;
    if plan.encrypt {
        let mut certs = p.certs.clone();
        if let Some(a) = policy.archive_recipient.clone().filter(|_| plan.archive) {
            certs.push(a);
        }
        // the sender can read what they sent (when the agent knows their certificate)
        if let Some(note) = crate::selfcert::add_self(input, &mut certs, socket, dir)? {
            eprintln!("tokenmail-sendmail: note: {note}");
        }
        let args = crate::encrypt::EncryptArgs {
            recipient_cert: certs,
            to: Vec::new(),
            cipher: None,
            input: Some(input.to_path_buf()),
            output: Some(output.to_path_buf()),
            rsa_padding: None,
            outform: crate::encrypt::OutForm::Smime,
            sign: plan.sign && !plan.triple_wrap,
            triple_wrap: plan.triple_wrap,
            signer,
            trust: Vec::new(),
            allow_untrusted_recipient: false,
            security_label: None,
        };
        crate::encrypt::run_with_agent(args, socket)
    } else if plan.sign {
        let signer =
            signer.ok_or_else(|| anyhow!("no signer: set [policy] signer or a From address"))?;
        crate::sign::run(
            crate::sign::SignArgs {
                signer,
                opaque: false,
                detached_der: false,
                detached_pem: false,
                crlf: false,
                digest: None,
                pss: false,
                chain: Vec::new(),
                input: Some(input.to_path_buf()),
                output: Some(output.to_path_buf()),
                // [sign] tsa, when configured, timestamps these signatures too
                timestamp: None,
                receipt_request: false,
                security_label: None,
            },
            socket,
        )
        .map(|_| ())
    } else {
        std::fs::copy(input, output)?;
        Ok(())
    }
}

/// What `policy` would make of the message in `path` (recipients from To, Cc and Bcc).
pub fn dry_run(
    policy: &OrgPolicy,
    path: &Path,
    socket: Option<&Path>,
) -> Result<Result<Plan, PolicyRefusal>> {
    let (fields, _) = header_of(path)?;
    let mut recipients = Vec::new();
    for name in ["To", "Cc", "Bcc"] {
        recipients.extend(addresses(&fields, name)?);
    }
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    Ok(prepare(policy, &dedup(recipients), socket, dir.path())?.map(|p| p.plan))
}

/// `tokenmail-sendmail ARGS` with `stdin`; the exit code.
pub fn main_with(args: &[String], stdin: &mut dyn Read) -> i32 {
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return 0;
        }
        Err(e) => {
            eprintln!("tokenmail-sendmail: {e} (tokenmail-sendmail --help)");
            return exit::USAGE;
        }
    };
    let (policy, _) = match crate::store::org_policy() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tokenmail-sendmail: {e:#}");
            return exit::CONFIG;
        }
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("tokenmail-sendmail: cannot create a temporary directory: {e}");
            return exit::CANTCREAT;
        }
    };
    let original = dir.path().join("original.eml");
    if let Err(e) = read_message(stdin, &original, a.dot_ends) {
        eprintln!("tokenmail-sendmail: cannot read the message: {e:#}");
        return exit::CANTCREAT;
    }
    // from here on every failure keeps the message (a dry run sends nothing anyway)
    let dry = a.dry_run;
    let fail = |code: i32, why: String| -> i32 {
        if dry {
            eprintln!("tokenmail-sendmail: would not send: {why}");
            return code;
        }
        match keep(&policy, &original) {
            Ok(p) => eprintln!(
                "tokenmail-sendmail: not sent: {why}; the message is kept in {}",
                p.display()
            ),
            Err(e) => {
                eprintln!(
                    "tokenmail-sendmail: not sent: {why}; and the message could not be kept: {e:#}"
                );
                return exit::CANTCREAT;
            }
        }
        code
    };
    let (fields, _) = match header_of(&original) {
        Ok(h) => h,
        Err(e) => return fail(exit::DATAERR, e.to_string()),
    };
    let mut recipients = Vec::new();
    for r in &a.recipients {
        match tokenmail_smime::address::address_list(r) {
            Ok(v) => recipients.extend(v),
            Err(e) => return fail(exit::DATAERR, format!("recipient {r:?}: {e}")),
        }
    }
    let mut message = original.clone();
    if a.header_recipients {
        for name in ["To", "Cc", "Bcc"] {
            match addresses(&fields, name) {
                Ok(v) => recipients.extend(v),
                Err(e) => return fail(exit::DATAERR, e.to_string()),
            }
        }
        let stripped = dir.path().join("nobcc.eml");
        if let Err(e) = strip_bcc(&original, &stripped) {
            return fail(exit::CANTCREAT, format!("{e:#}"));
        }
        message = stripped;
    }
    let recipients = dedup(recipients);
    if let Some(bad) = recipients.iter().find(|r| r.starts_with('-')) {
        return fail(
            exit::DATAERR,
            format!("recipient {bad:?} is not an address"),
        );
    }
    let socket = None;
    let prepared = match prepare(&policy, &recipients, socket, dir.path()) {
        Ok(Ok(p)) => p,
        Ok(Err(PolicyRefusal::NoRecipients)) => {
            return fail(
                exit::DATAERR,
                "no recipients: give them as arguments or use -t".into(),
            )
        }
        Ok(Err(e)) => return fail(exit::UNAVAILABLE, e.to_string()),
        Err(e) => return fail(exit::TEMPFAIL, format!("{e:#}")),
    };
    if a.dry_run {
        println!(
            "{}",
            serde_json::to_string_pretty(&prepared.plan).unwrap_or_default()
        );
        return 0;
    }
    let from_header = tokenmail_smime::address::sender_address(&fields)
        .ok()
        .flatten();
    let signer = policy.signer.clone().or(from_header);
    let out = dir.path().join("out.eml");
    if policy.is_active() {
        if let Err(e) = apply(
            &policy,
            &prepared,
            signer,
            &message,
            &out,
            socket,
            dir.path(),
        ) {
            return fail(exit::TEMPFAIL, format!("{e:#}"));
        }
    } else if let Err(e) = std::fs::copy(&message, &out) {
        return fail(exit::CANTCREAT, e.to_string());
    }
    if let Some(smtp) = &policy.smtp {
        // the envelope sender: -f, else the From address
        let sender = a.from.clone().or_else(|| {
            tokenmail_smime::address::sender_address(&fields)
                .ok()
                .flatten()
        });
        return match deliver_smtp(smtp, sender.as_deref(), &recipients, &out) {
            Ok(()) => 0,
            Err(f) if f.permanent => fail(exit::UNAVAILABLE, f.why),
            Err(f) => fail(exit::TEMPFAIL, f.why),
        };
    }
    let mta = policy
        .mta
        .clone()
        .unwrap_or_else(|| vec!["/usr/sbin/sendmail".into(), "-i".into()]);
    match deliver(&mta, a.from.as_deref(), &recipients, &out) {
        Ok(0) => 0,
        Ok(code) => fail(code, format!("the MTA {} exited with {code}", mta[0])),
        Err(e) => fail(exit::OSERR, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn sendmail_options_as_mail_programs_give_them() {
        let a = parse_args(&args(&["-oi", "-t", "-f", "me@x.org", "-oem", "a@b.org"])).expect("ok");
        assert!(a.header_recipients && !a.dot_ends);
        assert_eq!(a.from.as_deref(), Some("me@x.org"));
        assert_eq!(a.recipients, vec!["a@b.org"]);
        let a = parse_args(&args(&["-fme@x.org", "-Fname", "--", "-odd@x.org"])).expect("ok");
        assert_eq!(a.from.as_deref(), Some("me@x.org"));
        assert_eq!(a.recipients, vec!["-odd@x.org"]);
        assert!(parse_args(&args(&["-bs"])).is_err());
        assert!(parse_args(&args(&["-Z"])).is_err());
    }

    #[test]
    fn a_lone_dot_ends_the_message_unless_i() {
        let d = tempfile::tempdir().expect("dir");
        let p = d.path().join("m");
        read_message(&mut &b"a\r\n.\r\nb\r\n"[..], &p, true).expect("read");
        assert_eq!(std::fs::read(&p).expect("r"), b"a\r\n");
        read_message(&mut &b"a\r\n.\r\nb\r\n"[..], &p, false).expect("read");
        assert_eq!(std::fs::read(&p).expect("r"), b"a\r\n.\r\nb\r\n");
    }

    #[test]
    fn bcc_is_removed_with_its_continuation_lines() {
        let d = tempfile::tempdir().expect("dir");
        let (src, out) = (d.path().join("s"), d.path().join("o"));
        std::fs::write(
            &src,
            b"From: a@x\r\nBcc: hidden@y,\r\n more@z\r\nTo: b@y\r\n\r\nBcc: body stays\r\n",
        )
        .expect("w");
        strip_bcc(&src, &out).expect("strip");
        assert_eq!(
            std::fs::read(&out).expect("r"),
            b"From: a@x\r\nTo: b@y\r\n\r\nBcc: body stays\r\n"
        );
    }
}
