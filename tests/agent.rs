//! The agent binary end to end: serving, socket rules, hostile peers, signals, detach,
//! the CLI, and the Python standard-library client, against a real SoftHSM token.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokenmail_e2e::{bin, process, stderr, stdout, Agent, Running};
use tokenmail_proto::frame::{encode_frame, read_frame, FrameKind};
use tokenmail_proto::v1::{ErrorCode, Request, Response};
use tokenmail_proto::{decode_message, encode_message, Client};

fn hello(stream: &mut UnixStream) {
    let req = encode_message(&Request::Hello {
        client: "e2e".into(),
        pin_prompt: false,
    })
    .expect("encode");
    stream
        .write_all(&encode_frame(FrameKind::Message, &req).expect("frame"))
        .expect("write");
    let (_, payload) = read_frame(stream).expect("read").expect("a response");
    assert!(matches!(
        decode_message::<Response>(&payload).expect("decode"),
        Response::Hello { .. }
    ));
}

/// Reads until the agent closes; returns the error response it sent first, if any.
fn closing_error(stream: &mut UnixStream) -> Option<Response> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let first = match read_frame(stream) {
        Ok(Some((_, p))) => decode_message::<Response>(&p).ok(),
        _ => None,
    };
    let mut rest = [0u8; 1];
    match stream.read(&mut rest) {
        Ok(0) => {}
        Ok(_) => panic!("the agent sent more after its error"),
        // The agent drained what we sent; a reset after its answer is still a close.
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    first
}

fn status_ok(agent: &Agent) {
    let o = agent.cli(&["status", "--json"]);
    assert!(o.status.success(), "status still served: {}", stderr(&o));
}

#[test]
fn serves_status_json_with_keys_and_emails() {
    let agent = Agent::start();
    let o = agent.cli(&["status", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(v["agent_version"]
        .as_str()
        .expect("version")
        .starts_with("tokenmail-agent/"));
    let t = &v["tokens"][0];
    assert_eq!(t["label"], "tokenmail-e2e");
    assert_eq!(t["present"], true);
    assert_eq!(t["logged_in"], true);
    assert!(!t["serial"].as_str().expect("serial").is_empty());
    let keys = v["keys"].as_array().expect("keys");
    let got: Vec<(String, String, String, String)> = keys
        .iter()
        .map(|k| {
            (
                k["label"].as_str().expect("label").to_string(),
                k["id"].as_str().expect("id").to_string(),
                k["algorithm"].as_str().expect("alg").to_string(),
                k["certificate"]["emails"][0]
                    .as_str()
                    .expect("email")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "alice-rsa".into(),
                "01".into(),
                "rsa-2048".into(),
                "alice@example.com".into()
            ),
            (
                "bob-p256".into(),
                "02".into(),
                "ec-p256".into(),
                "bob@example.com".into()
            ),
            (
                "carol-p384".into(),
                "03".into(),
                "ec-p384".into(),
                "carol@example.com".into()
            ),
        ]
    );
    for k in keys {
        assert!(k["certificate"]["not_after"]
            .as_str()
            .expect("expiry")
            .ends_with('Z'));
        assert!(k["certificate"]["subject"]
            .as_str()
            .expect("subject")
            .contains("CN="));
    }
    assert_eq!(v["emails"][0]["email"], "alice@example.com");
    assert_eq!(v["emails"][0]["key"], "alice-rsa");
    // Human form too.
    let o = agent.cli(&["status"]);
    let text = stdout(&o);
    assert!(text.contains("tokenmail-e2e"), "{text}");
    assert!(
        text.contains("-> alice-rsa (id 01 on tokenmail-e2e, only)"),
        "{text}"
    );
}

#[test]
fn socket_directory_0700_socket_0600() {
    let agent = Agent::start();
    let dir_mode = std::fs::metadata(agent.socket.parent().expect("dir"))
        .expect("dir")
        .permissions()
        .mode()
        & 0o777;
    let sock_mode = std::fs::metadata(&agent.socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    assert_eq!(sock_mode, 0o600);
}

#[test]
fn existing_socket_directory_is_left_alone_default_one_is_private() {
    // --socket in an existing shared directory (like /tmp): its mode is not touched.
    let fixture = tokenmail_e2e::provision("tokenmail-dirs");
    let shared = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod");
    let socket = shared.path().join("agent.sock");
    let xdg = tempfile::tempdir().expect("tempdir");
    let spawn = |socket: Option<&std::path::Path>| {
        let mut c = Command::new(bin("tokenmail-agent"));
        c.arg("--foreground");
        if let Some(s) = socket {
            c.arg("--socket").arg(s);
        }
        c.arg("--pkcs11-module")
            .arg(&fixture.module)
            .args(["--token-label", &fixture.label])
            .env("SOFTHSM2_CONF", fixture.dir.join("softhsm2.conf"))
            .env_remove("TOKENMAIL_SOCK")
            .env("XDG_RUNTIME_DIR", xdg.path())
            .stderr(Stdio::null());
        Running::spawn(&mut c)
    };
    let wait = |p: &std::path::Path| {
        for _ in 0..400 {
            if UnixStream::connect(p).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("no socket at {}", p.display());
    };
    let a = spawn(Some(&socket));
    wait(&socket);
    let mode = std::fs::metadata(shared.path())
        .expect("dir")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(
        mode, 0o1777,
        "a directory named by --socket is never modified"
    );
    assert_eq!(
        std::fs::metadata(&socket)
            .expect("sock")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    a.kill();
    // The default path under $XDG_RUNTIME_DIR: created private.
    let b = spawn(None);
    let default = xdg.path().join("tokenmail").join("agent.sock");
    wait(&default);
    let mode = std::fs::metadata(default.parent().expect("dir"))
        .expect("dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    b.kill();
}

#[test]
fn signed_digest_verifies_with_openssl_for_each_key() {
    let agent = Agent::start();
    let work = tempfile::tempdir().expect("tempdir");
    let msg = work.path().join("msg.txt");
    std::fs::write(&msg, b"a message whose digest the token signs\n").expect("write");
    for (key, md, pem) in [
        ("alice@example.com", "-sha256", "alice-rsa.pem"),
        ("02", "-sha256", "bob-p256.pem"),
        ("carol-p384", "-sha384", "carol-p384.pem"),
    ] {
        let sig = work.path().join("sig");
        let o = agent.cli(&[
            "sign-digest",
            "--key",
            key,
            msg.to_str().expect("utf8"),
            "-o",
            sig.to_str().expect("utf8"),
        ]);
        assert!(o.status.success(), "{key}: {}", stderr(&o));
        let pubkey = work.path().join("pub.pem");
        let out = process::output(
            Command::new("openssl")
                .args(["x509", "-pubkey", "-noout", "-in"])
                .arg(agent.fixture.pki(pem)),
        );
        std::fs::write(&pubkey, out.stdout).expect("write");
        let v = process::output(
            Command::new("openssl")
                .args(["dgst", md, "-verify"])
                .arg(&pubkey)
                .arg("-signature")
                .arg(&sig)
                .arg(&msg),
        );
        assert_eq!(stdout(&v).trim(), "Verified OK", "{key}");
    }
}

#[test]
fn garbage_oversize_and_truncated_frames_close_only_that_connection() {
    let agent = Agent::start();
    // 1. Garbage: not our magic.
    let mut s = UnixStream::connect(&agent.socket).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let r = closing_error(&mut s);
    assert!(
        matches!(&r, Some(Response::Error(e)) if e.code == ErrorCode::BadRequest && e.message.contains("magic")),
        "{r:?}"
    );
    // 2. A frame over the cap (header only).
    let mut s = UnixStream::connect(&agent.socket).expect("connect");
    let mut h = encode_frame(FrameKind::Message, b"").expect("frame");
    h[8..12].copy_from_slice(&(64u32 << 20).to_be_bytes());
    s.write_all(&h).expect("write");
    let r = closing_error(&mut s);
    assert!(
        matches!(&r, Some(Response::Error(e)) if e.message.contains("exceeds")),
        "{r:?}"
    );
    // 3. Another major version.
    let mut s = UnixStream::connect(&agent.socket).expect("connect");
    let mut h = encode_frame(FrameKind::Message, b"{}").expect("frame");
    h[4] = 9;
    s.write_all(&h).expect("write");
    let r = closing_error(&mut s);
    assert!(
        matches!(&r, Some(Response::Error(e)) if e.code == ErrorCode::UnsupportedVersion),
        "{r:?}"
    );
    // 4a. A well-formed request for an unknown operation: answered, connection kept.
    let mut s = UnixStream::connect(&agent.socket).expect("connect");
    hello(&mut s);
    s.write_all(&encode_frame(FrameKind::Message, br#"{"op":"teleport"}"#).expect("frame"))
        .expect("write");
    let (_, p) = read_frame(&mut s).expect("read").expect("answer");
    let r = decode_message::<Response>(&p).expect("decode");
    assert!(
        matches!(&r, Response::Error(e) if e.code == ErrorCode::BadRequest && e.message.contains("sign-digest")),
        "{r:?}"
    );
    let req = encode_message(&Request::ListKeys).expect("enc");
    s.write_all(&encode_frame(FrameKind::Message, &req).expect("frame"))
        .expect("write");
    let (_, p) = read_frame(&mut s).expect("read").expect("answer");
    assert!(matches!(
        decode_message::<Response>(&p).expect("decode"),
        Response::Keys { .. }
    ));
    // 4. Valid frame, invalid JSON, after a handshake.
    let mut s = UnixStream::connect(&agent.socket).expect("connect");
    hello(&mut s);
    s.write_all(&encode_frame(FrameKind::Message, b"{\"op\":\"nope\"").expect("frame"))
        .expect("write");
    let r = closing_error(&mut s);
    assert!(
        matches!(&r, Some(Response::Error(e)) if e.code == ErrorCode::BadRequest),
        "{r:?}"
    );
    // 5. A request before hello.
    let mut s = UnixStream::connect(&agent.socket).expect("connect");
    s.write_all(
        &encode_frame(
            FrameKind::Message,
            &encode_message(&Request::Status).expect("enc"),
        )
        .expect("frame"),
    )
    .expect("write");
    let r = closing_error(&mut s);
    assert!(
        matches!(&r, Some(Response::Error(e)) if e.message.contains("hello")),
        "{r:?}"
    );
    // 6. Truncated frame, then the client vanishes.
    let mut s = UnixStream::connect(&agent.socket).expect("connect");
    let f = encode_frame(FrameKind::Message, br#"{"op":"hello","client":"x"}"#).expect("frame");
    s.write_all(&f[..f.len() / 2]).expect("write");
    drop(s);
    // 7. Many connections opened and dropped at once.
    let many: Vec<_> = (0..50)
        .map(|_| UnixStream::connect(&agent.socket).expect("connect"))
        .collect();
    drop(many);
    // The agent still serves everyone else.
    status_ok(&agent);
    let mut c = Client::connect(&agent.socket, "e2e").expect("handshake");
    assert!(
        matches!(c.call(&Request::ListKeys).expect("keys"), Response::Keys { keys } if keys.len() == 3)
    );
}

#[test]
fn killed_client_mid_request_does_not_hurt_the_agent() {
    let mut agent = Agent::start();
    for _ in 0..5 {
        // A client that is killed while it waits for (or streams) its request.
        let child = Running::spawn(
            agent
                .cli_cmd(&["sign-digest", "--key", "alice-rsa"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        std::thread::sleep(Duration::from_millis(30));
        child.kill();
    }
    // A client that sends a request and closes without reading the answer.
    let mut s = UnixStream::connect(&agent.socket).expect("connect");
    hello(&mut s);
    let req = encode_message(&Request::Status).expect("enc");
    s.write_all(&encode_frame(FrameKind::Message, &req).expect("frame"))
        .expect("write");
    drop(s);
    assert!(agent.alive());
    status_ok(&agent);
}

#[test]
fn second_agent_refuses_and_stale_socket_is_replaced() {
    let mut agent = Agent::start();
    let o = process::output(
        Command::new(bin("tokenmail-agent"))
            .arg("--foreground")
            .arg("--socket")
            .arg(&agent.socket)
            .arg("--pkcs11-module")
            .arg(&agent.fixture.module)
            .args(["--token-label", &agent.fixture.label])
            .env("SOFTHSM2_CONF", agent.fixture.dir.join("softhsm2.conf")),
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("already running"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(agent.alive());
    status_ok(&agent);

    // Stale: a socket file nobody listens on (an agent that was SIGKILLed).
    let stale_dir = tempfile::tempdir().expect("tempdir");
    let stale = stale_dir.path().join("agent.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    assert!(stale.exists());
    let child = Running::spawn(
        Command::new(bin("tokenmail-agent"))
            .arg("--foreground")
            .arg("--socket")
            .arg(&stale)
            .arg("--pkcs11-module")
            .arg(&agent.fixture.module)
            .args(["--token-label", &agent.fixture.label])
            .env("SOFTHSM2_CONF", agent.fixture.dir.join("softhsm2.conf"))
            .stderr(Stdio::null()),
    );
    let mut ok = false;
    for _ in 0..200 {
        if let Ok(mut c) = Client::connect(&stale, "e2e") {
            ok = matches!(c.call(&Request::Status), Ok(Response::Status(_)));
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    child.kill();
    assert!(ok, "agent replaced the stale socket and serves");
    // A non-socket file is never removed.
    let file = stale_dir.path().join("plain");
    std::fs::write(&file, b"keep me").expect("write");
    let o = process::output(
        Command::new(bin("tokenmail-agent"))
            .arg("--foreground")
            .arg("--socket")
            .arg(&file)
            .arg("--pkcs11-module")
            .arg(&agent.fixture.module)
            .args(["--token-label", &agent.fixture.label]),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a socket"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&file).expect("kept"), b"keep me");
    let (status, _) = agent.stop();
    assert!(status.success());
}

#[test]
fn sigterm_and_sigint_exit_zero_and_remove_the_socket() {
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let mut agent = Agent::start();
        let child = agent.child.take().expect("child");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).expect("signal");
        let status = child.wait(Duration::from_secs(10)).status;
        assert!(status.success(), "{sig:?}: {status:?}");
        assert!(!agent.socket.exists(), "{sig:?}: socket removed");
    }
}

#[test]
fn peer_with_another_uid_is_refused_even_with_open_modes() {
    if !nix::unistd::getuid().is_root() {
        // Switching uid needs root; CI runs as root, where this test runs for real.
        eprintln!("peer_with_another_uid_is_refused: not root, cannot switch uid");
        return;
    }
    let agent = Agent::start();
    // Loosen the modes on purpose: only the peer-credential check stands.
    let all = std::fs::Permissions::from_mode(0o777);
    let tmp_root = agent.dir.path();
    std::fs::set_permissions(tmp_root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(
        agent.socket.parent().expect("dir"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::set_permissions(&agent.socket, all).expect("chmod");
    let script = r#"
import socket, struct, sys, json
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
body = json.dumps({"op": "hello", "client": "intruder"}).encode()
s.sendall(b"TKML" + bytes([1, 0, 1, 0]) + struct.pack(">I", len(body)) + body)
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(data[12:].decode() if len(data) > 12 else "closed")
"#;
    let o = process::output(
        Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
                script,
            ])
            .arg(&agent.socket),
    );
    assert!(
        o.status.success(),
        "intruder could connect at the file level: {}",
        stderr(&o)
    );
    let answer = stdout(&o);
    assert!(answer.contains("refused"), "{answer}");
    assert!(
        !answer.contains("\"hello\""),
        "no handshake for another uid: {answer}"
    );
    status_ok(&agent);
}

/// A detached agent (not a child of the test), killed when dropped.
struct Detached(i32);

impl Drop for Detached {
    fn drop(&mut self) {
        // Gone already when the test stopped it itself.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn detached_agent_prints_the_export_line_and_serves() {
    let fixture = tokenmail_e2e::provision("tokenmail-detach");
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let o = process::output(
        Command::new(bin("tokenmail-agent"))
            .arg("--socket")
            .arg(&socket)
            .arg("--pkcs11-module")
            .arg(&fixture.module)
            .args(["--token-label", &fixture.label])
            .arg("--pin-file")
            .arg(fixture.pin_file())
            .env("SOFTHSM2_CONF", fixture.dir.join("softhsm2.conf")),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let first = out.lines().next().expect("export line");
    assert_eq!(
        first,
        format!(
            "TOKENMAIL_SOCK='{}'; export TOKENMAIL_SOCK;",
            socket.display()
        )
    );
    let pid: i32 = out
        .split("Agent pid ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("pid printed");
    // The detached agent is not our child: killed by this guard if the test fails first.
    let _detached = Detached(pid);
    // `eval` form: a shell that evals the output finds the agent through TOKENMAIL_SOCK.
    let res = process::output_with_input(
        Command::new("sh").arg("-c").arg(format!(
            "eval \"$(cat)\" >/dev/null && exec {} status --json",
            bin("tokenmail").display()
        )),
        out.as_bytes(),
    );
    assert!(res.status.success(), "{}", stderr(&res));
    assert!(stdout(&res).contains("tokenmail-detach"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    for _ in 0..200 {
        if !socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(
        !socket.exists(),
        "detached agent removed its socket on SIGTERM"
    );
    // Start-up failure is reported by the parent, with a non-zero exit.
    let o = process::output(
        Command::new(bin("tokenmail-agent"))
            .arg("--socket")
            .arg(dir.path().join("b.sock"))
            .args([
                "--pkcs11-module",
                "/nonexistent/module.so",
                "--token-label",
                "x",
            ]),
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot load PKCS#11 module"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn cli_without_agent_says_how_to_start_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = process::output(
        Command::new(bin("tokenmail"))
            .arg("--socket")
            .arg(dir.path().join("none.sock"))
            .arg("status"),
    );
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("no tokenmail agent") && err.contains("tokenmail-agent"),
        "{err}"
    );
}

#[test]
fn lock_then_login_from_stdin_through_the_cli() {
    let agent = Agent::start();
    let o = agent.cli(&["lock"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = agent.cli(&[
        "sign-digest",
        "--key",
        "alice-rsa",
        "--digest",
        &"ab".repeat(32),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("needs its PIN"), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&agent.cli(&["status", "--json"]).stdout).expect("json");
    assert_eq!(v["tokens"][0]["locked"], true);
    assert_eq!(v["tokens"][0]["logged_in"], false);
    // Wrong PIN: clear error, nothing retried.
    let o =
        process::output_with_input(&mut agent.cli_cmd(&["login", "--pin-stdin"]), b"99999999\n");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("wrong PIN"), "{}", stderr(&o));
    // Right PIN.
    let o = process::output_with_input(
        &mut agent.cli_cmd(&["login", "--pin-stdin"]),
        format!("{}\n", agent.fixture.pin()).as_bytes(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = agent.cli(&[
        "sign-digest",
        "--key",
        "alice-rsa",
        "--digest",
        &"ab".repeat(32),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout.len(), 256);
    let v: serde_json::Value =
        serde_json::from_slice(&agent.cli(&["status", "--json"]).stdout).expect("json");
    assert_eq!(v["tokens"][0]["pin_source"], "client");
}

#[test]
fn pin_from_environment_variable() {
    let fixture = tokenmail_e2e::provision("tokenmail-pinenv");
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let child = Running::spawn(
        Command::new(bin("tokenmail-agent"))
            .arg("--foreground")
            .arg("--socket")
            .arg(&socket)
            .arg("--pkcs11-module")
            .arg(&fixture.module)
            .args([
                "--token-label",
                &fixture.label,
                "--pin-env",
                "E2E_TOKEN_PIN",
            ])
            .env("SOFTHSM2_CONF", fixture.dir.join("softhsm2.conf"))
            .env("E2E_TOKEN_PIN", fixture.pin())
            .stderr(Stdio::piped()),
    );
    let mut signed = false;
    for _ in 0..200 {
        if let Ok(mut c) = Client::connect(&socket, "e2e") {
            let r = c.call(&Request::SignDigest {
                key: "bob@example.com".into(),
                algorithm: tokenmail_proto::v1::SignAlgorithm::EcdsaSha256,
                digest: tokenmail_proto::v1::Bytes(vec![7u8; 32]),
            });
            signed = matches!(r, Ok(Response::Signature { .. }));
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let o = child.kill();
    assert!(signed, "signed with the PIN from the environment");
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        !log.contains(&fixture.pin()),
        "the PIN never appears in the log"
    );
}

#[test]
fn python_standard_library_client_works() {
    let agent = Agent::start();
    let client = tokenmail_e2e::workspace().join("docs/examples/tokenmail_client.py");
    let work = tempfile::tempdir().expect("tempdir");
    let msg = work.path().join("msg.txt");
    std::fs::write(&msg, b"signed through the python client\n").expect("write");
    let o = process::output(
        Command::new("python3")
            .arg(&client)
            .arg("--socket")
            .arg(&agent.socket)
            .arg("status"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json status");
    assert_eq!(v["keys"].as_array().expect("keys").len(), 3);
    let sig = work.path().join("sig");
    let o = process::output(
        Command::new("python3")
            .arg(&client)
            .arg("--socket")
            .arg(&agent.socket)
            .args(["sign", "--key", "alice-rsa", "--out"])
            .arg(&sig)
            .arg(&msg),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let pubkey = work.path().join("pub.pem");
    let p = process::output(
        Command::new("openssl")
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(agent.fixture.pki("alice-rsa.pem")),
    );
    std::fs::write(&pubkey, p.stdout).expect("write");
    let v = process::output(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&pubkey)
            .arg("-signature")
            .arg(&sig)
            .arg(&msg),
    );
    assert_eq!(stdout(&v).trim(), "Verified OK");
}

#[test]
fn config_file_with_two_tokens_offers_keys_of_both_and_selects_by_email() {
    // Two tokens in one SoftHSM directory: provision a second one and move its token
    // directory beside the first's.
    let a = tokenmail_e2e::provision("tokenmail-one");
    std::thread::sleep(Duration::from_millis(1100)); // the second token's certificates expire later
    let b = tokenmail_e2e::provision("tokenmail-two");
    for entry in std::fs::read_dir(b.dir.join("tokens")).expect("tokens") {
        let entry = entry.expect("entry");
        let o = process::output(
            Command::new("cp")
                .arg("-a")
                .arg(entry.path())
                .arg(a.dir.join("tokens")),
        );
        assert!(o.status.success(), "cp: {}", stderr(&o));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
max_sessions = 2
[pin]
cache_ttl = 0
[[token]]
module = "{module}"
label = "tokenmail-one"
pin_file = "{pin_a}"
[[token]]
module = "{module}"
label = "tokenmail-two"
pin_file = "{pin_b}"
[keys.prefer]
"carol@example.com" = "carol-p384"
"#,
            module = a.module.display(),
            pin_a = a.pin_file().display(),
            pin_b = b.pin_file().display(),
        ),
    )
    .expect("write config");
    let child = Running::spawn(
        Command::new(bin("tokenmail-agent"))
            .arg("--foreground")
            .arg("--socket")
            .arg(&socket)
            .arg("--config")
            .arg(&cfg)
            .env("SOFTHSM2_CONF", a.dir.join("softhsm2.conf"))
            .stderr(Stdio::null()),
    );
    let mut status = None;
    for _ in 0..200 {
        if let Ok(mut c) = Client::connect(&socket, "e2e") {
            status = Some(c.call(&Request::Status).expect("status"));
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let Some(Response::Status(st)) = status else {
        panic!("no status")
    };
    assert_eq!(st.tokens.len(), 2);
    assert!(
        st.tokens.iter().all(|t| t.present && t.logged_in),
        "{:?}",
        st.tokens
    );
    assert_eq!(st.keys.len(), 6, "keys of both tokens are offered");
    let bob = st
        .emails
        .iter()
        .find(|e| e.email == "bob@example.com")
        .expect("bob");
    assert_eq!(
        (bob.token.as_str(), bob.reason.as_str()),
        ("tokenmail-two", "latest-expiry")
    );
    let carol = st
        .emails
        .iter()
        .find(|e| e.email == "carol@example.com")
        .expect("carol");
    assert_eq!(carol.reason, "preference");
    // Signing by email uses the selected key; the signature verifies with that token's certificate.
    let mut c = Client::connect(&socket, "e2e").expect("connect");
    let digest = vec![9u8; 32];
    let Response::Signature { signature, .. } = c
        .call(&Request::SignDigest {
            key: "bob@example.com".into(),
            algorithm: tokenmail_proto::v1::SignAlgorithm::EcdsaSha256,
            digest: tokenmail_proto::v1::Bytes(digest.clone()),
        })
        .expect("sign by email")
    else {
        panic!("no signature")
    };
    let work = tempfile::tempdir().expect("tempdir");
    std::fs::write(work.path().join("sig"), &signature.0).expect("write");
    std::fs::write(work.path().join("dgst"), &digest).expect("write");
    let pubkey = process::output(
        Command::new("openssl")
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(b.pki("bob-p256.pem")),
    );
    std::fs::write(work.path().join("pub.pem"), pubkey.stdout).expect("write");
    let v = process::output(
        Command::new("openssl")
            .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
            .arg(work.path().join("pub.pem"))
            .arg("-in")
            .arg(work.path().join("dgst"))
            .arg("-sigfile")
            .arg(work.path().join("sig")),
    );
    assert!(
        stdout(&v).contains("Signature Verified Successfully"),
        "{}",
        stdout(&v)
    );
    // A bare label present on both tokens is ambiguous, and the error says so.
    let e = c
        .call(&Request::SignDigest {
            key: "alice-rsa".into(),
            algorithm: tokenmail_proto::v1::SignAlgorithm::RsaPkcs1Sha256,
            digest: tokenmail_proto::v1::Bytes(digest),
        })
        .expect_err("ambiguous");
    assert!(e.to_string().contains("names 2 keys"), "{e}");
    child.kill();
}

/// A client never talks to a socket served by another user (issue 11 defect 7): a PIN sent
/// there would go to that user. (Root only: the listener runs as `nobody`.)
#[test]
fn clients_refuse_a_socket_served_by_another_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let sock = dir.path().join("agent.sock");
    let script = format!(
        "import socket,time\ns=socket.socket(socket.AF_UNIX)\ns.bind({:?})\ns.listen(4)\ntime.sleep(30)\n",
        sock.to_str().expect("utf-8")
    );
    let mut listener = Running::spawn(
        Command::new("runuser")
            .args(["-u", "nobody", "--", "python3", "-c", &script])
            .stdin(Stdio::null()),
    );
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        sock.exists(),
        "the foreign listener did not start (runuser needs root)"
    );
    match Client::connect(&sock, "e2e") {
        Err(tokenmail_proto::ClientError::ForeignAgent { uid, .. }) => assert_ne!(uid, 0),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let o = process::output(
        Command::new(bin("tokenmail"))
            .args(["--socket", sock.to_str().expect("utf-8"), "status"])
            .stdin(Stdio::null()),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not by you"), "{}", stderr(&o));
    let _ = listener.try_wait();
}

/// The running agent can write no core file (docs/security.md): its core size limit is 0,
/// soft and hard, so a crash cannot leave PINs or session state on disk.
#[test]
fn the_running_agent_cannot_dump_core() {
    let agent = Agent::start();
    status_ok(&agent);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.pid())).expect("limits");
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("a core size line");
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], &["0", "0"], "{core}");
}

/// The CLI finds the agent of the user who runs it, even where /proc is missing: the real
/// uid, never an assumed 0 (root's socket). Run as nobody in a mount namespace whose /proc
/// is an empty tmpfs.
#[test]
fn the_cli_uses_the_real_uid_without_proc() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cli = dir.path().join("tokenmail");
    std::fs::copy(bin("tokenmail"), &cli).expect("copy the CLI");
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let script = format!(
        "mount -t tmpfs none /proc && exec setpriv --reuid 65534 --regid 65534 --clear-groups {} status",
        cli.display()
    );
    let o = process::output(
        Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/nonexistent"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "no agent runs for nobody: {err}");
    assert!(err.contains("/tmp/tokenmail-65534/agent.sock"), "{err}");
    assert!(!err.contains("tokenmail-0/"), "{err}");
}
