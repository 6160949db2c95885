// The protocol's fixture cases, shared by the round-trip test and the generator
// (`cargo run -p tokenmail-proto --example gen-fixtures`). Included with `include!`.
use tokenmail_proto::v1::*;

/// (file stem, request)
pub fn requests() -> Vec<(&'static str, Request)> {
    vec![
        ("req-hello", Request::Hello { client: "tokenmail/0.1.0".into(), pin_prompt: false }),
        ("req-status", Request::Status),
        ("req-list-keys", Request::ListKeys),
        (
            "req-sign-digest",
            Request::SignDigest {
                key: "alice@example.com".into(),
                algorithm: SignAlgorithm::RsaPssSha256,
                digest: Bytes((0u8..32).collect()),
            },
        ),
        (
            "req-decrypt-key",
            Request::DecryptKey {
                key: "01".into(),
                algorithm: DecryptAlgorithm::RsaOaepSha256,
                wrapped: Bytes(vec![0xA5; 256]),
            },
        ),
        (
            "req-derive",
            Request::Derive {
                key: "bob-p256".into(),
                peer_point: Bytes([vec![4u8], vec![0x11; 64]].concat()),
            },
        ),
        ("req-login", Request::Login { token: Some("work".into()), pin: Some(Pin::new("123456".into())) }),
        ("req-login-source", Request::Login { token: None, pin: None }),
        ("req-lock", Request::Lock),
        (
            "req-sign",
            Request::Sign {
                key: "alice@example.com".into(),
                form: SignForm::Multipart,
                digest: Some(HashAlgorithm::Sha256),
                pss: Some(false),
                crlf: None,
                receipt_request: None,
                security_label: None,
            },
        ),
        (
            "req-verify",
            Request::Verify {
                trust: vec!["-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n".into()],
                signature: None,
            },
        ),
        (
            "req-encrypt",
            Request::Encrypt {
                recipients: vec!["-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n".into()],
                cipher: Some("aes256-gcm".into()),
            },
        ),
        ("req-decrypt", Request::Decrypt),
        ("req-hello-prompt", Request::Hello { client: "tokenmail/0.1.0".into(), pin_prompt: true }),
        ("req-wait-token", Request::WaitToken { token: Some("piv-12345678".into()), timeout_secs: 30 }),
        ("req-piv-status", Request::PivStatus { token: None }),
        (
            "req-piv-keygen",
            Request::PivKeygen {
                token: Some("12345678".into()),
                slot: "9c".into(),
                algorithm: "p256".into(),
                pin_policy: Some("always".into()),
                touch_policy: Some("cached".into()),
                management_key: Some(SecretBytes(zeroize::Zeroizing::new((1u8..=8).cycle().take(24).collect()))),
            },
        ),
        (
            "req-piv-import-cert",
            Request::PivImportCert {
                token: None,
                slot: "9c".into(),
                certificate: Bytes(vec![0x30, 0x03, 0x02, 0x01, 0x01]),
                management_key: None,
            },
        ),
        (
            "req-keygen",
            Request::Keygen {
                token: Some("work".into()),
                label: "alice-2027".into(),
                algorithm: "p256".into(),
                id: Some(Bytes(vec![0x0a, 0x01])),
                pin_policy: None,
                touch_policy: None,
                management_key: None,
            },
        ),
        (
            "req-import-cert",
            Request::ImportCert {
                key: "alice-2027".into(),
                certificate: Bytes(vec![0x30, 0x03, 0x02, 0x01, 0x01]),
                chain: vec![Bytes(vec![0x30, 0x00])],
                management_key: None,
            },
        ),
        (
            "req-import-key",
            Request::ImportKey {
                token: None,
                label: "alice-enc-2026".into(),
                id: None,
                private_key: SecretBytes(zeroize::Zeroizing::new(vec![0x30, 0x00])),
                certificate: Bytes(vec![0x30, 0x03, 0x02, 0x01, 0x01]),
                chain: vec![],
                management_key: None,
            },
        ),
    ]
}

/// (file stem, response)
pub fn responses() -> Vec<(&'static str, Response)> {
    let cert = CertSummary {
        subject: "EMAIL=alice@example.com,CN=Alice Example".into(),
        issuer: "CN=tokenmail Test Intermediate CA".into(),
        serial: "1183c1f7".into(),
        not_before: "2026-11-23T13:21:33Z".into(),
        not_after: "2028-11-22T13:21:33Z".into(),
        emails: vec!["alice@example.com".into()],
        sha256: "00".repeat(32),
        der: Bytes(vec![0x30, 0x03, 0x02, 0x01, 0x01]),
    };
    let key = KeyInfo {
        label: "alice-rsa".into(),
        id: "01".into(),
        token: "tokenmail-demo".into(),
        algorithm: "rsa-2048".into(),
        usage: vec!["sign".into(), "decrypt".into()],
        certificate: Some(cert.clone()),
        chain: vec![Bytes(vec![0x30, 0x00])],
        touch: None,
        pin_policy: None,
        exportable: false,
        public_key: None,
    };
    vec![
        (
            "resp-hello",
            Response::Hello {
                // The 1.0 list, as docs/protocol.md §13.2 shows it (kept byte-identical).
                operations: ["hello", "status", "list-keys", "sign-digest", "decrypt-key", "derive", "login", "lock"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                agent: "tokenmail-agent/0.1.0".into(),
                protocol: "1.0".into(),
            },
        ),
        (
            "resp-status",
            Response::Status(AgentStatus {
                agent_version: "tokenmail-agent/0.1.0".into(),
                protocol: "1.0".into(),
                tokens: vec![TokenStatus {
                    name: String::new(),
                    label: "tokenmail-demo".into(),
                    serial: "cc5d622cae24df6c".into(),
                    model: "SoftHSM project SoftHSM v2".into(),
                    backend: "pkcs11:/usr/lib/softhsm/libsofthsm2.so".into(),
                    present: true,
                    logged_in: true,
                    pin_source: "file".into(),
                    locked: false,
                    pin_warnings: vec![],
                }],
                keys: vec![key.clone()],
                emails: vec![EmailSelection {
                    email: "alice@example.com".into(),
                    token: "tokenmail-demo".into(),
                    key: "alice-rsa".into(),
                    id: "01".into(),
                    reason: "only".into(),
                }],
            }),
        ),
        ("resp-keys", Response::Keys { keys: vec![key] }),
        ("resp-signature", Response::Signature { key: "alice-rsa".into(), signature: Bytes(vec![0x5A; 256]) }),
        ("resp-secret", Response::Secret { secret: SecretBytes(zeroize::Zeroizing::new(vec![0x42; 32])) }),
        ("resp-ok", Response::Ok),
        ("resp-error-pin-required", Response::error(ErrorCode::PinRequired, "token \"tokenmail-demo\" needs its PIN: run `tokenmail login`")),
        ("resp-error-decrypt-failed", Response::error(ErrorCode::DecryptFailed, "decryption failed")),
        (
            "resp-hello-streams",
            Response::Hello {
                operations: OPERATIONS.iter().map(|s| s.to_string()).collect(),
                agent: "tokenmail-agent/0.1.0".into(),
                protocol: "1.0".into(),
            },
        ),
        ("resp-signed", Response::Signed { key: "alice-rsa".into(), bytes: 4242 }),
        (
            "resp-verified",
            Response::Verified {
                valid: true,
                report: serde_json::json!({
                    "valid": true,
                    "form": "multipart/signed",
                    "sender": "alice@example.com",
                    "signers": [],
                }),
            },
        ),
        ("resp-encrypted", Response::Encrypted { bytes: 5120 }),
        ("resp-decrypted", Response::Decrypted { key: "bob-p256".into(), authenticated: true, bytes: 1234, cipher: None }),
        (
            "resp-piv-status",
            Response::PivStatus(Box::new(PivStatus {
                token: "piv-12345678".into(),
                serial: "12345678".into(),
                version: "5.4.3".into(),
                reader: "Virtual PCD 00 00".into(),
                pin_tries_left: Some(3),
                puk_tries_left: Some(3),
                default_pin: Some(false),
                default_puk: Some(false),
                default_management_key: Some(true),
                slots: vec![PivSlotInfo {
                    slot: "9c".into(),
                    name: "Digital Signature".into(),
                    algorithm: "ec-p256".into(),
                    pin_policy: "always".into(),
                    touch_policy: "cached".into(),
                    origin: "generated".into(),
                    certificate: Some(cert),
                }],
            })),
        ),
        (
            "resp-piv-key",
            Response::PivKey {
                public_key: Bytes(vec![0x30, 0x59]),
                warnings: vec!["card 12345678 uses the factory default management key".into()],
            },
        ),
        ("resp-done", Response::Done { warnings: vec![] }),
        (
            "resp-generated",
            Response::Generated {
                key: Box::new(KeyInfo {
                    label: "alice-2027".into(),
                    id: "0a01".into(),
                    token: "work".into(),
                    algorithm: "ec-p256".into(),
                    usage: vec!["sign".into(), "derive".into()],
                    certificate: None,
                    chain: vec![],
                    touch: None,
                    pin_policy: None,
                    exportable: false,
                    public_key: Some(Bytes(vec![0x30, 0x59])),
                }),
                public_key: Bytes(vec![0x30, 0x59]),
                warnings: vec![],
            },
        ),
        ("resp-error-read-only", Response::error(ErrorCode::TokenReadOnly, "token \"work\" is read-only: keys and certificates cannot be stored on it")),
        ("resp-error-card-absent", Response::error(ErrorCode::TokenNotPresent, "insert card 12345678: it is not in any reader")),
    ]
}
