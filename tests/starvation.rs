//! No starvation (issue 11 defect 4): clients that open stream operations and send nothing
//! hold at most MAX_STREAMS (16) slots; the agent keeps answering everything else, a further
//! stream is answered `busy` instead of hanging, and once the idle clients leave, streams
//! work again.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use tokenmail_e2e::{stderr, Agent};
use tokenmail_proto::frame::{encode_frame, read_frame, FrameKind};
use tokenmail_proto::v1::{Request, Response, SignForm};
use tokenmail_proto::{decode_message, encode_message, Client};

const MESSAGE: &[u8] = b"From: alice@example.com\r\nContent-Type: text/plain\r\n\r\nhi\r\n";

fn send_message(stream: &mut UnixStream, req: &Request) {
    let payload = encode_message(req).expect("encode");
    stream
        .write_all(&encode_frame(FrameKind::Message, &payload).expect("frame"))
        .expect("write");
}

fn sign_req() -> Request {
    Request::Sign {
        key: "alice-rsa".into(),
        form: SignForm::Multipart,
        digest: None,
        pss: None,
        crlf: None,
        receipt_request: None,
        security_label: None,
    }
}

/// A connection that said hello as `client` and sent a sign request.
fn sign_started(agent: &Agent, client: &str) -> UnixStream {
    let mut s = UnixStream::connect(&agent.socket).expect("connect");
    send_message(
        &mut s,
        &Request::Hello {
            client: client.into(),
            pin_prompt: false,
        },
    );
    let (_, payload) = read_frame(&mut s).expect("read").expect("hello answer");
    assert!(matches!(
        decode_message::<Response>(&payload).expect("decode"),
        Response::Hello { .. }
    ));
    send_message(&mut s, &sign_req());
    s
}

/// A client that says hello, starts a sign stream and then sends nothing.
fn idle_stream(agent: &Agent) -> UnixStream {
    sign_started(agent, "idle")
}

/// A whole sign stream from a fresh client, on a thread with a deadline (a hang fails the
/// test instead of stopping it).
fn sign_within(agent: &Agent, limit: Duration) -> Result<Response, String> {
    let socket = agent.socket.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = Client::connect(&socket, "starvation")
            .map_err(|e| e.to_string())
            .and_then(|mut c| {
                c.call_stream(&sign_req(), MESSAGE, &mut Vec::new())
                    .map_err(|e| e.to_string())
            });
        let _ = tx.send(r);
    });
    rx.recv_timeout(limit)
        .map_err(|_| format!("no answer within {limit:?}: starved"))?
}

#[test]
fn idle_streams_cannot_starve_the_agent() {
    let agent = Agent::start();
    let idle: Vec<UnixStream> = (0..20).map(|_| idle_stream(&agent)).collect();
    std::thread::sleep(Duration::from_millis(300));

    // everything else is still served at once
    let started = Instant::now();
    let o = agent.cli(&["status", "--json"]);
    assert!(o.status.success(), "status: {}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(20));

    // a further stream is told the agent is busy, it does not hang
    match sign_within(&agent, Duration::from_secs(30)) {
        Err(e) if e.contains("busy") => {}
        other => panic!("expected a busy answer, got {other:?}"),
    }

    // the idle clients leave: streams work again
    drop(idle);
    let mut last = Err(String::new());
    for _ in 0..50 {
        last = sign_within(&agent, Duration::from_secs(30));
        if matches!(last, Ok(Response::Signed { .. })) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        matches!(last, Ok(Response::Signed { .. })),
        "after the idle clients left: {last:?}"
    );
}

/// Waits (up to `limit`) until a fresh sign stream is served, not answered busy.
fn served_within(agent: &Agent, limit: Duration) -> Result<Response, String> {
    let started = Instant::now();
    loop {
        let r = sign_within(agent, Duration::from_secs(30));
        if matches!(r, Ok(Response::Signed { .. })) || started.elapsed() > limit {
            return r;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn idle_streams_are_dropped_at_their_deadline() {
    let agent = Agent::start_with(&["--stream-idle-timeout", "2"], true);
    let mut idle: Vec<UnixStream> = (0..20).map(|_| idle_stream(&agent)).collect();
    match sign_within(&agent, Duration::from_secs(30)) {
        Err(e) if e.contains("busy") => {}
        other => {
            panic!("expected a busy answer while 16 idle streams hold the slots, got {other:?}")
        }
    }
    // the idle clients stay connected, yet their slots come back after the deadline
    let t = Instant::now();
    let r = served_within(&agent, Duration::from_secs(20));
    assert!(
        matches!(r, Ok(Response::Signed { .. })),
        "slots not freed by the idle deadline: {r:?}"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "freed before the deadline?"
    );
    // and an idle client hears why (or sees the connection closed), without hanging
    let s = &mut idle[0];
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    match read_frame(s) {
        Ok(None) | Err(_) => {}
        Ok(Some((_, p))) => assert!(
            matches!(decode_message::<Response>(&p), Ok(Response::Error(_))),
            "an idle stream got something other than an error"
        ),
    }
}

/// A client that sends a whole sign stream of `size` bytes and never reads the answer.
fn never_reading(agent: &Agent, size: usize) -> UnixStream {
    let mut s = sign_started(agent, "never-reads");
    let mut body = MESSAGE.to_vec();
    body.truncate(MESSAGE.len() - 4);
    let line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abc\r\n";
    while body.len() < size {
        body.extend_from_slice(line);
    }
    for chunk in body.chunks(60_000) {
        s.write_all(&encode_frame(FrameKind::Data, chunk).expect("frame"))
            .expect("write");
    }
    s.write_all(&encode_frame(FrameKind::End, &[]).expect("frame"))
        .expect("write");
    s
}

#[test]
fn clients_that_never_read_are_dropped_at_the_write_deadline() {
    let agent = Agent::start_with(&["--write-timeout", "2"], true);
    // a 4 MiB signature whose output nobody reads (far more than a socket buffer holds)
    let mut stuck = never_reading(&agent, 4 << 20);
    std::thread::sleep(Duration::from_secs(5));
    // by now the agent has closed the connection (and dropped its spool): reading gets what
    // was buffered, then the end of the connection, never the whole answer
    stuck
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answered = false;
    loop {
        match read_frame(&mut stuck) {
            Ok(Some((h, p))) if h.kind == FrameKind::Message => {
                answered |= matches!(decode_message::<Response>(&p), Ok(Response::Signed { .. }));
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                assert!(
                    !matches!(&e, tokenmail_proto::ProtoError::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock),
                    "the agent still holds the connection after its write deadline"
                );
                break;
            }
        }
    }
    assert!(
        !answered,
        "the answer was delivered: no write deadline applied"
    );
    // the agent serves everyone else as before
    let r = served_within(&agent, Duration::from_secs(30));
    assert!(matches!(r, Ok(Response::Signed { .. })), "{r:?}");
}
