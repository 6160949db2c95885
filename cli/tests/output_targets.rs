//! `-o` respects what it names: a device node and a FIFO survive and receive the output, a
//! symbolic link's file is written and the link stays, a regular file keeps its permissions,
//! and a directory or a dangling link is refused with a one-line error. Made in a temp dir,
//! never on the real /dev/null.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Running external programs with a deadline (shared with the other test crates).
#[path = "../../pkcs11-tests/src/process.rs"]
mod process;

const ENTITY: &[u8] = b"Content-Type: text/plain; charset=utf-8\n\nHello Bob.\n";

/// Every external program runs with a deadline (killed and reported on expiry).
fn run(cmd: &mut Command, _what: &str) -> Output {
    process::output(cmd.stdin(Stdio::null()))
}

fn tokenmail(dir: &Path, args: &[&str]) -> Output {
    run(
        Command::new(env!("CARGO_BIN_EXE_tokenmail"))
            .args(args)
            .current_dir(dir)
            .env("TOKENMAIL_SOCK", dir.join("no-agent.sock")),
        &format!("tokenmail {}", args.join(" ")),
    )
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=output test",
                "-newkey",
                "rsa:2048",
                "-keyout",
                "r.key",
                "-out",
                "r.pem",
            ])
            .current_dir(dir.path()),
        "openssl req",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(dir.path().join("entity.txt"), ENTITY).expect("write");
    dir
}

fn encrypt_to(dir: &Path, out: &str) -> Output {
    tokenmail(
        dir,
        &[
            "encrypt",
            "--no-self",
            "--recipient-cert",
            "r.pem",
            "entity.txt",
            "-o",
            out,
        ],
    )
}

/// openssl decrypts `data` (an S/MIME message) with the test key.
fn decrypts(dir: &Path, data: &[u8]) -> bool {
    std::fs::write(dir.join("got.eml"), data).expect("write");
    let o = run(
        Command::new("openssl")
            .args(["cms", "-decrypt", "-inkey", "r.key", "-in", "got.eml"])
            .current_dir(dir),
        "openssl cms -decrypt",
    );
    o.status.success() && o.stdout.ends_with(b"Hello Bob.\r\n")
}

#[test]
fn a_fifo_survives_and_receives_the_output() {
    let dir = setup();
    let d = dir.path();
    let fifo = d.join("pipe");
    let o = run(Command::new("mkfifo").arg(&fifo), "mkfifo");
    assert!(o.status.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).expect("read the FIFO"))
    };
    let o = encrypt_to(d, "pipe");
    if !o.status.success() {
        // never leave the reader waiting on a FIFO nobody opened
        drop(std::fs::OpenOptions::new().write(true).open(&fifo));
    }
    let got = reader.join().expect("reader");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(decrypts(d, &got), "the reader got the message");
    let meta = std::fs::symlink_metadata(&fifo).expect("still there");
    assert!(meta.file_type().is_fifo(), "still a FIFO");
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tokenmail-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary file left: {leftovers:?}"
    );
}

#[test]
fn a_device_node_survives() {
    let dir = setup();
    let d = dir.path();
    let null = d.join("null");
    // a character device made here (root only; CI runs as root): the real /dev/null's
    // numbers, so writes vanish as they should
    let o = run(
        Command::new("mknod").arg(&null).args(["c", "1", "3"]),
        "mknod",
    );
    assert!(
        o.status.success(),
        "mknod needs root: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::set_permissions(&null, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    for _ in 0..2 {
        let o = encrypt_to(d, "null");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let meta = std::fs::symlink_metadata(&null).expect("still there");
        assert!(meta.file_type().is_char_device(), "still a device node");
        assert_eq!(meta.permissions().mode() & 0o777, 0o666);
    }
}

#[test]
fn a_symlink_writes_its_file_and_a_regular_file_keeps_its_mode() {
    let dir = setup();
    let d = dir.path();
    std::fs::write(d.join("real.eml"), b"old").expect("write");
    std::fs::set_permissions(d.join("real.eml"), std::fs::Permissions::from_mode(0o640))
        .expect("chmod");
    std::os::unix::fs::symlink("real.eml", d.join("link.eml")).expect("symlink");
    let o = encrypt_to(d, "link.eml");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let link = std::fs::symlink_metadata(d.join("link.eml")).expect("link");
    assert!(link.file_type().is_symlink(), "the link stays a link");
    let real = std::fs::read(d.join("real.eml")).expect("read");
    assert!(decrypts(d, &real));
    let mode = std::fs::metadata(d.join("real.eml"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o640,
        "the replaced file keeps its permissions"
    );
    // a new file is private
    let o = encrypt_to(d, "new.eml");
    assert!(o.status.success());
    let mode = std::fs::metadata(d.join("new.eml"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_directory_or_a_dangling_link_is_refused_plainly() {
    let dir = setup();
    let d = dir.path();
    std::fs::create_dir(d.join("sub")).expect("mkdir");
    std::os::unix::fs::symlink("missing/nowhere.eml", d.join("dangling")).expect("symlink");
    for (out, says) in [("sub", "is a directory"), ("dangling", "symbolic link")] {
        let o = encrypt_to(d, out);
        assert!(!o.status.success(), "{out}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{out}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    assert!(std::fs::symlink_metadata(d.join("dangling"))
        .expect("link")
        .file_type()
        .is_symlink());
}
