//! Plaintext is never left behind: `tokenmail decrypt -o` writes into an unnamed file until
//! the plaintext is authentic, so Ctrl-C in the middle of a 200 MiB decryption leaves
//! nothing in the output's directory; a completed one leaves exactly the output.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tokenmail_e2e::process::{self, Running};
use tokenmail_e2e::{stderr, Agent};

fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn interrupted_decrypt_leaves_no_plaintext() {
    let agent = Agent::start();
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    // a 200 MiB message, encrypted by openssl (fast) to the token's RSA key; a smaller one
    // for the run to the end (a debug build decrypts a few MB/s)
    let big = encrypted(&agent, w, "big", 200 << 20);
    let small = encrypted(&agent, w, "small", 4 << 20);
    let enc = big;

    let out_dir = w.join("out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    let out = out_dir.join("plain.eml");
    let mut child = Running::spawn(&mut agent.cli_cmd(&[
        "decrypt",
        enc.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
    ]));
    // while it decrypts, the output's directory shows nothing: the spool has no name
    let started = Instant::now();
    let mut looked = 0;
    while started.elapsed() < Duration::from_millis(250) && child.try_wait().is_none() {
        assert_eq!(names(&out_dir), Vec::<String>::new(), "nothing named yet");
        looked += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        looked > 0,
        "the decryption finished before it could be looked at"
    );
    if child.try_wait().is_none() {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("SIGINT");
    }
    let _ = child.wait(process::limit());
    let left = names(&out_dir);
    assert!(
        left.is_empty() || left == ["plain.eml"],
        "after Ctrl-C: {left:?}"
    );
    let _ = std::fs::remove_file(&out);

    // run to the end: exactly the output, nothing else
    let o = process::run_with_timeout(
        &mut agent.cli_cmd(&[
            "decrypt",
            small.to_str().expect("utf-8"),
            "-o",
            out.to_str().expect("utf-8"),
        ]),
        None,
        process::long_limit(),
    );
    assert!(o.status.success(), "decrypt: {}", stderr(&o));
    assert_eq!(names(&out_dir), ["plain.eml"]);
    let len = std::fs::metadata(&out).expect("plain").len();
    assert!(len > (4 << 20) - 1024, "{len}");
}

/// A text message of about `size` bytes, encrypted with `openssl cms` (AES-256-GCM) to the
/// token's RSA key; the plaintext is removed.
fn encrypted(agent: &Agent, w: &std::path::Path, name: &str, size: usize) -> std::path::PathBuf {
    let msg = w.join(format!("{name}.eml"));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&msg).expect("create"));
        f.write_all(b"From: alice@example.com\r\nContent-Type: text/plain\r\n\r\n")
            .expect("write");
        let line = [b'p'; 78];
        for _ in 0..size / 80 {
            f.write_all(&line).expect("write");
            f.write_all(b"\r\n").expect("write");
        }
    }
    let enc = w.join(format!("{name}.p7m"));
    let o = process::run_with_timeout(
        Command::new("openssl")
            .args(["cms", "-encrypt", "-binary", "-aes-256-gcm", "-in"])
            .arg(&msg)
            .arg("-out")
            .arg(&enc)
            .arg(agent.fixture.pki("alice-rsa.pem")),
        None,
        process::long_limit(),
    );
    assert!(o.status.success(), "openssl cms -encrypt: {}", stderr(&o));
    std::fs::remove_file(&msg).expect("rm");
    enc
}
