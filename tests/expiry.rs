//! `tokenmail expiry` (issue 13): the tokens' certificates (through the agent) and the
//! certificate directories; exit 0 nothing due, 1 due within the window, 2 expired; JSON.

use std::path::Path;
use std::process::Command;

use tokenmail_e2e::{process, stdout, Agent};

/// A self-signed certificate for NAME@example.com (openssl req options `days`), in `dir/name.pem`.
fn cert(dir: &Path, name: &str, days: &str) {
    let o = process::output(
        Command::new("bash")
            .arg("-c")
            .arg(format!(
                "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                 -keyout /dev/null -subj '/CN={name}' -addext 'subjectAltName=email:{name}@example.com' \
                 {days} -out {name}.pem"
            ))
            .current_dir(dir),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn expiry_reports_due_and_expired_certificates_with_exit_codes() {
    let agent = Agent::start();
    let d = tempfile::tempdir().expect("tempdir");
    let (ok, due, expired) = (
        d.path().join("ok"),
        d.path().join("due"),
        d.path().join("expired"),
    );
    for p in [&ok, &due, &expired] {
        std::fs::create_dir(p).expect("mkdir");
    }
    cert(&ok, "fresh", "-days 400");
    cert(&due, "soon", "-days 10");
    // (openssl 3.0's req cannot back-date: openssl ca -selfsign can)
    let o = process::output(
        Command::new("bash")
            .arg("-c")
            .arg(
                "set -e; openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                 -keyout k.key -subj /CN=old -out r.csr 2>/dev/null; mkdir db; : > db/index.txt; \
                 echo 01 > db/serial; printf '[ca]\\ndefault_ca=c\\n[c]\\ndatabase=db/index.txt\\n\
                 serial=db/serial\\nnew_certs_dir=db\\ndefault_md=sha256\\npolicy=p\\n[p]\\n\
                 commonName=supplied\\n[e]\\nsubjectAltName=email:old@example.com\\n' > ca.cnf; \
                 openssl ca -batch -selfsign -config ca.cnf -keyfile k.key -in r.csr -notext \
                 -startdate 20200101000000Z -enddate 20210101000000Z -extensions e -out old.pem 2>/dev/null; \
                 rm -rf db k.key r.csr ca.cnf",
            )
            .current_dir(&expired),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = |p: &Path| p.display().to_string();

    // the tokens' certificates and a fresh one: nothing due
    let o = agent.cli(&["expiry", "--certs", &s(&ok), "--all"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let text = stdout(&o);
    assert!(
        text.contains("ok, ") && text.contains("'CN=fresh'"),
        "{text}"
    );
    assert!(
        text.contains("token \""),
        "the tokens' certificates are listed: {text}"
    );

    let o = agent.cli(&["expiry", "--certs", &s(&ok), "--certs", &s(&due)]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("expires in 9 days: 'CN=soon' <soon@example.com>"),
        "{}",
        stdout(&o)
    );

    let o = agent.cli(&[
        "expiry",
        "--json",
        "--certs",
        &s(&due),
        "--certs",
        &s(&expired),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(j["expired"], 1);
    assert_eq!(j["due"], 1);
    assert_eq!(j["agent"], true);
    assert_eq!(j["certificates"][0]["status"], "expired");
    assert_eq!(j["certificates"][0]["subject"], "CN=old");
    assert!(j["certificates"][0]["days_left"]
        .as_i64()
        .is_some_and(|d| d < -365));

    // a wider window makes the fresh one due; --ldap without a [[directory]] says what to add
    let o = agent.cli(&["expiry", "--days", "500", "--certs", &s(&ok)]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let o = agent.cli(&["expiry", "--ldap"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        tokenmail_e2e::stderr(&o).contains("no [[directory]]"),
        "{}",
        tokenmail_e2e::stderr(&o)
    );
    let o = agent.cli(&["expiry", "--certs", &s(&d.path().join("missing"))]);
    assert!(!o.status.success());
}
