//! Protocol v1 messages. Each is one JSON object in a `Message` frame.
//! Binary values are standard base64 (RFC 4648, with padding). See docs/protocol.md.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// Bytes carried as base64 in JSON.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine;
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Bytes)
            .map_err(serde::de::Error::custom)
    }
}

/// Secret bytes (content keys, ECDH secrets) carried as base64; zeroized on drop.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(pub Zeroizing<Vec<u8>>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBytes(..)")
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        let enc = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*self.0));
        s.serialize_str(&enc)
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine;
        let s = Zeroizing::new(String::deserialize(d)?);
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(|v| SecretBytes(Zeroizing::new(v)))
            .map_err(serde::de::Error::custom)
    }
}

/// A PIN in transit; zeroized on drop and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(pub Zeroizing<String>);

impl Pin {
    /// Wraps a PIN.
    pub fn new(s: String) -> Self {
        Pin(Zeroizing::new(s))
    }
    /// The PIN's characters.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(..)")
    }
}

impl Serialize for Pin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Pin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Pin(Zeroizing::new(String::deserialize(d)?)))
    }
}

/// Signature algorithms for `sign-digest`. The digest is computed by the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SignAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    #[serde(rename = "rsa-pkcs1-sha256")]
    RsaPkcs1Sha256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    #[serde(rename = "rsa-pkcs1-sha384")]
    RsaPkcs1Sha384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    #[serde(rename = "rsa-pkcs1-sha512")]
    RsaPkcs1Sha512,
    /// RSASSA-PSS, MGF1 with the same hash, salt = hash length.
    #[serde(rename = "rsa-pss-sha256")]
    RsaPssSha256,
    /// RSASSA-PSS with SHA-384.
    #[serde(rename = "rsa-pss-sha384")]
    RsaPssSha384,
    /// RSASSA-PSS with SHA-512.
    #[serde(rename = "rsa-pss-sha512")]
    RsaPssSha512,
    /// ECDSA over a SHA-256 digest; the signature is DER (Ecdsa-Sig-Value).
    #[serde(rename = "ecdsa-sha256")]
    EcdsaSha256,
    /// ECDSA over a SHA-384 digest.
    #[serde(rename = "ecdsa-sha384")]
    EcdsaSha384,
    /// ECDSA over a SHA-512 digest.
    #[serde(rename = "ecdsa-sha512")]
    EcdsaSha512,
}

/// Digest algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashAlgorithm {
    /// SHA-1 (only for OAEP decryption of legacy messages).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashAlgorithm {
    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlgorithm::Sha1 => 20,
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha384 => 48,
            HashAlgorithm::Sha512 => 64,
        }
    }
}

/// The key family a signature algorithm needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignFamily {
    /// RSASSA-PKCS1-v1_5.
    RsaPkcs1,
    /// RSASSA-PSS.
    RsaPss,
    /// ECDSA.
    Ecdsa,
}

impl SignAlgorithm {
    /// The digest algorithm this signature algorithm signs.
    pub fn hash(self) -> HashAlgorithm {
        use SignAlgorithm::*;
        match self {
            RsaPkcs1Sha256 | RsaPssSha256 | EcdsaSha256 => HashAlgorithm::Sha256,
            RsaPkcs1Sha384 | RsaPssSha384 | EcdsaSha384 => HashAlgorithm::Sha384,
            RsaPkcs1Sha512 | RsaPssSha512 | EcdsaSha512 => HashAlgorithm::Sha512,
        }
    }

    /// The key family.
    pub fn family(self) -> SignFamily {
        use SignAlgorithm::*;
        match self {
            RsaPkcs1Sha256 | RsaPkcs1Sha384 | RsaPkcs1Sha512 => SignFamily::RsaPkcs1,
            RsaPssSha256 | RsaPssSha384 | RsaPssSha512 => SignFamily::RsaPss,
            EcdsaSha256 | EcdsaSha384 | EcdsaSha512 => SignFamily::Ecdsa,
        }
    }

    /// The wire name, e.g. `rsa-pkcs1-sha256`.
    pub fn name(self) -> &'static str {
        use SignAlgorithm::*;
        match self {
            RsaPkcs1Sha256 => "rsa-pkcs1-sha256",
            RsaPkcs1Sha384 => "rsa-pkcs1-sha384",
            RsaPkcs1Sha512 => "rsa-pkcs1-sha512",
            RsaPssSha256 => "rsa-pss-sha256",
            RsaPssSha384 => "rsa-pss-sha384",
            RsaPssSha512 => "rsa-pss-sha512",
            EcdsaSha256 => "ecdsa-sha256",
            EcdsaSha384 => "ecdsa-sha384",
            EcdsaSha512 => "ecdsa-sha512",
        }
    }

    /// All algorithms, for help texts and parsing.
    pub const ALL: [SignAlgorithm; 9] = [
        SignAlgorithm::RsaPkcs1Sha256,
        SignAlgorithm::RsaPkcs1Sha384,
        SignAlgorithm::RsaPkcs1Sha512,
        SignAlgorithm::RsaPssSha256,
        SignAlgorithm::RsaPssSha384,
        SignAlgorithm::RsaPssSha512,
        SignAlgorithm::EcdsaSha256,
        SignAlgorithm::EcdsaSha384,
        SignAlgorithm::EcdsaSha512,
    ];
}

impl std::str::FromStr for SignAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SignAlgorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = SignAlgorithm::ALL.iter().map(|a| a.name()).collect();
                format!("unknown algorithm {s:?}; use one of {}", names.join(", "))
            })
    }
}

/// Key-transport algorithms for `decrypt-key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DecryptAlgorithm {
    /// RSAES-PKCS1-v1_5.
    #[serde(rename = "rsa-pkcs1")]
    RsaPkcs1,
    /// RSAES-OAEP with SHA-1 and MGF1-SHA-1, empty label.
    #[serde(rename = "rsa-oaep-sha1")]
    RsaOaepSha1,
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256, empty label.
    #[serde(rename = "rsa-oaep-sha256")]
    RsaOaepSha256,
    /// RSAES-OAEP with SHA-384 and MGF1-SHA-384, empty label.
    #[serde(rename = "rsa-oaep-sha384")]
    RsaOaepSha384,
    /// RSAES-OAEP with SHA-512 and MGF1-SHA-512, empty label.
    #[serde(rename = "rsa-oaep-sha512")]
    RsaOaepSha512,
}

/// The `op` values of this protocol version that the agent serves.
pub const OPERATIONS: &[&str] = &[
    "hello",
    "status",
    "list-keys",
    "sign-digest",
    "sign-digest-cert",
    "decrypt-key",
    "derive",
    "login",
    "lock",
    "sign",
    "verify",
    "encrypt",
    "decrypt",
    "wait-token",
    "piv-status",
    "piv-keygen",
    "piv-import-cert",
    "keygen",
    "import-cert",
    "import-key",
];

/// The `op` values that are streams (docs/protocol.md §12): the request Message frame
/// is followed by the client's Data frames and one End frame.
pub const STREAM_OPERATIONS: &[&str] = &["sign", "verify", "encrypt", "decrypt"];

/// The output form of a streamed `sign`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SignForm {
    /// `multipart/signed` (RFC 8551 §3.5.3), the default.
    #[default]
    Multipart,
    /// `application/pkcs7-mime; smime-type=signed-data` (base64).
    Opaque,
    /// Only the detached CMS SignedData over the exact input bytes, DER.
    DetachedDer,
    /// Only the detached CMS SignedData over the exact input bytes, PEM (`-----BEGIN CMS-----`).
    DetachedPem,
}

/// A request from a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Request {
    /// First frame of every connection.
    Hello {
        /// Free-form client name and version.
        client: String,
        /// The client asks its user for PINs itself (it has a terminal) and answers
        /// `pin-required` with `login`. When false (git, mail clients, scripts) the agent
        /// may ask through a pinentry program before answering `pin-required`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pin_prompt: bool,
    },
    /// Agent, tokens and keys.
    Status,
    /// Keys only.
    ListKeys,
    /// Sign a digest with a key on a token.
    SignDigest {
        /// CKA_LABEL, hex CKA_ID, or an email in the key's certificate.
        key: String,
        /// Signature algorithm.
        algorithm: SignAlgorithm,
        /// The digest (length must match the algorithm's hash).
        digest: Bytes,
    },
    /// Since tokenmail-agent 0.1 with this op in `hello.operations` (docs/protocol.md
    /// §6.4.1): `sign-digest`, but only if the key's certificate is the one the client
    /// built its signed attributes with. A client that caches the signer's certificate
    /// signs a message with this one request (no `status` first). Answers `signature`,
    /// or `certificate-changed` without signing.
    SignDigestCert {
        /// Key name, as for `sign-digest` (label, hex id, `sha256:`, email).
        key: String,
        /// SHA-256 of the DER of the certificate the client expects the key to have, hex.
        certificate: String,
        /// Signature algorithm.
        algorithm: SignAlgorithm,
        /// The digest (length must match the algorithm's hash).
        digest: Bytes,
    },
    /// Unwrap a content-encryption key with an RSA key on a token.
    DecryptKey {
        /// Key name, as for `sign-digest`.
        key: String,
        /// Key-transport algorithm.
        algorithm: DecryptAlgorithm,
        /// The encrypted key (RSA ciphertext).
        wrapped: Bytes,
    },
    /// ECDH with an EC key on a token; returns the raw shared secret (x coordinate).
    Derive {
        /// Key name, as for `sign-digest`.
        key: String,
        /// The peer's public point, SEC1 uncompressed.
        peer_point: Bytes,
    },
    /// Log in to a token with a PIN (or with its configured unattended PIN source when `pin` is absent).
    Login {
        /// Token label or serial; optional when the agent has one token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// The PIN.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin: Option<Pin>,
    },
    /// Log out of every token and forget cached PINs.
    Lock,
    /// Stream (§12): S/MIME-sign the input message with a key on a token. Output: the
    /// signed message; result: `signed`.
    Sign {
        /// Key name, as for `sign-digest`.
        key: String,
        /// Output form (default `multipart`).
        #[serde(default)]
        form: SignForm,
        /// Digest algorithm (`sha256`, `sha384`, `sha512`; default matched to the key:
        /// P-384 → sha384, else sha256).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<HashAlgorithm>,
        /// RSA keys: RSASSA-PSS instead of PKCS#1 v1.5.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pss: Option<bool>,
        /// Detached forms: sign the input with its line endings made CRLF (as it travels in
        /// a message), like `tokenmail sign --crlf`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        crlf: Option<bool>,
        /// Ask every recipient for an ESS signed receipt (RFC 2634), sent back to the
        /// signing certificate's first address, like `tokenmail sign --receipt-request`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        receipt_request: Option<bool>,
        /// An ESS security label, `POLICY-OID:CLASSIFICATION[:CATEGORY-OID=TEXT]...`, like
        /// `tokenmail sign --security-label`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        security_label: Option<String>,
    },
    /// Stream (§12): verify a signed message (or, with `signature`, detached content).
    /// Output: the verified content, only when valid; result: `verified`.
    Verify {
        /// Trust anchors, PEM certificates (each string may hold several). Required in
        /// practice: the agent has no trust store of its own.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        trust: Vec<String>,
        /// A detached signature (CMS SignedData, DER or PEM); the input is then the
        /// signed content, byte for byte.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<Bytes>,
    },
    /// Stream (§12): S/MIME-encrypt the input message to certificates. Output: the
    /// enveloped message; result: `encrypted`.
    Encrypt {
        /// Recipient certificates, PEM (one certificate per string).
        recipients: Vec<String>,
        /// Content cipher: `aes256-gcm` (default), `aes128-gcm`, `aes256-cbc`, `aes128-cbc`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cipher: Option<String>,
    },
    /// Stream (§12): decrypt an S/MIME message with whichever key on the tokens is a
    /// recipient. Output: the plaintext, only after decryption completed (AEAD tag
    /// verified); result: `decrypted`.
    Decrypt,
    /// Wait until a token is present (smart card inserted), at most `timeout_secs`
    /// (capped at 600). Answer: `ok`, or `token-not-present` when the time ran out.
    WaitToken {
        /// Token label or serial; absent = until any token that is absent now is
        /// present (`ok` at once when none is absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// Seconds to wait.
        timeout_secs: u64,
    },
    /// PIV card facts: serial, firmware, reader, PIN/PUK tries left, default
    /// credentials, slots with algorithm, policies and certificate. Answer: `piv-status`.
    PivStatus {
        /// Token label or serial; optional with one PIV card.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Generate a key pair on a PIV card (the private key never leaves it). Answer:
    /// `piv-key` with the SubjectPublicKeyInfo.
    PivKeygen {
        /// Token label or serial; optional with one PIV card.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// Slot: `9a`, `9c`, `9d`, `9e`, `82`..`95`.
        slot: String,
        /// `rsa2048`, `p256`, `p384`.
        algorithm: String,
        /// `default`, `never`, `once`, `always`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin_policy: Option<String>,
        /// `default`, `never`, `always`, `cached`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        touch_policy: Option<String>,
        /// The card's management key; absent = the PIN-protected key, else the
        /// factory default (with a warning).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        management_key: Option<SecretBytes>,
    },
    /// Write a certificate into a PIV slot (it must match the slot's key). Answer: `done`.
    PivImportCert {
        /// Token label or serial; optional with one PIV card.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// Slot: `9a`, `9c`, `9d`, `9e`, `82`..`95`.
        slot: String,
        /// The certificate, DER.
        certificate: Bytes,
        /// As for `piv-keygen`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        management_key: Option<SecretBytes>,
    },
    /// Generate a key pair on a token: PKCS#11 (sensitive, never extractable, private;
    /// both halves share one fresh CKA_ID) or a PIV card (`label` names the slot, e.g.
    /// `9c`). Refuses a label or id already in use. Answer: `generated`.
    Keygen {
        /// Token label or serial; optional with one token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// CKA_LABEL of both halves (PIV: the slot).
        label: String,
        /// `rsa2048`, `rsa3072`, `rsa4096`, `p256`, `p384`.
        algorithm: String,
        /// CKA_ID; absent = a fresh random one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Bytes>,
        /// PIV only: as for `piv-keygen`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin_policy: Option<String>,
        /// PIV only: as for `piv-keygen`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        touch_policy: Option<String>,
        /// PIV only: as for `piv-keygen`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        management_key: Option<SecretBytes>,
    },
    /// Store a certificate beside its key (same CKA_ID; its public key must be the key's)
    /// and the CA certificates of `chain` as CA certificate objects. Answer: `done`.
    ImportCert {
        /// The key, named as for `sign-digest`.
        key: String,
        /// The certificate, DER.
        certificate: Bytes,
        /// CA certificates, DER.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        chain: Vec<Bytes>,
        /// PIV only: as for `piv-keygen`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        management_key: Option<SecretBytes>,
    },
    /// Create a private key (an escrowed encryption key) on a token with its certificate:
    /// sensitive and not extractable once there. Answer: `generated`.
    ImportKey {
        /// Token label or serial; optional with one token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// CKA_LABEL (PIV: a retired slot `82`..`95`).
        label: String,
        /// CKA_ID; absent = a fresh random one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Bytes>,
        /// The private key, PKCS#8 DER.
        private_key: SecretBytes,
        /// Its certificate, DER.
        certificate: Bytes,
        /// CA certificates, DER.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        chain: Vec<Bytes>,
        /// PIV only: as for `piv-keygen`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        management_key: Option<SecretBytes>,
    },
}

impl Request {
    /// Whether this request is a stream (followed by Data frames and End).
    pub fn is_stream(&self) -> bool {
        matches!(
            self,
            Request::Sign { .. }
                | Request::Verify { .. }
                | Request::Encrypt { .. }
                | Request::Decrypt
        )
    }
}

/// Error codes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Malformed or unexpected request.
    BadRequest,
    /// The peer speaks an unsupported protocol version.
    UnsupportedVersion,
    /// No key has that name.
    NoSuchKey,
    /// The key cannot do that (e.g. ECDSA with an RSA key, decrypt without CKA_DECRYPT).
    KeyMismatch,
    /// The token needs a PIN: send `login`.
    PinRequired,
    /// The PIN was wrong.
    PinIncorrect,
    /// The PIN is blocked.
    PinLocked,
    /// The token is absent.
    TokenNotPresent,
    /// The token lacks the mechanism.
    MechanismUnsupported,
    /// Decryption failed (one uniform error: wrong key, bad padding, failed unwrap).
    DecryptFailed,
    /// The token refused the operation.
    TokenError,
    /// `sign-digest-cert`: the key the name selects has another certificate (or none)
    /// than the one the client expected; nothing was signed. Refresh (`status`), retry.
    CertificateChanged,
    /// `keygen`, `import-cert`, `import-key`: the token is write-protected; nothing was
    /// stored. Keep the certificate elsewhere (the CLI falls back to its local store).
    TokenReadOnly,
    /// Anything else.
    Internal,
}

/// Error details.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable message saying what to do.
    pub message: String,
    /// The token the error is about (PIN, presence), when there is one. Clients read this,
    /// never the message text. (Added 2026-12-06; optional.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// PIN tries left, when the token says (`0`: blocked). (Added 2026-12-06; optional.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tries_left: Option<u32>,
    /// What to do, in a few words, for clients that show a hint of their own.
    /// (Added 2026-12-06; optional.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// A token as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenStatus {
    /// Token label (configured or read).
    pub label: String,
    /// The name the agent's key listings use for this token (`KeyInfo::token`): the
    /// configured name, which may differ from the token's own label. Omitted when it is
    /// the label, and by agents before 2026-12.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Serial number, when known.
    #[serde(default)]
    pub serial: String,
    /// Manufacturer and model, when known.
    #[serde(default)]
    pub model: String,
    /// Backend, e.g. `pkcs11:/usr/lib/softhsm/libsofthsm2.so`.
    pub backend: String,
    /// Whether the token is present now.
    pub present: bool,
    /// Whether the agent holds a logged-in session.
    pub logged_in: bool,
    /// Where the PIN comes from: `file`, `env`, `client` or `none`.
    pub pin_source: String,
    /// Whether `lock` was called and no login since.
    #[serde(default)]
    pub locked: bool,
    /// The token's PIN warnings, if any: PKCS#11 counter flags (`count-low`,
    /// `final-try`, `locked`); PIV cards give sentences ("2 PIN tries left", "the PIN
    /// is blocked", "the PIN is the factory default: change it").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pin_warnings: Vec<String>,
}

/// A certificate summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertSummary {
    /// Subject DN (RFC 4514).
    pub subject: String,
    /// Issuer DN (RFC 4514).
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// notBefore, RFC 3339.
    pub not_before: String,
    /// notAfter, RFC 3339.
    pub not_after: String,
    /// Email addresses (rfc822Name SANs and subject emailAddress).
    pub emails: Vec<String>,
    /// SHA-256 of the DER, hex.
    pub sha256: String,
    /// The certificate, DER.
    pub der: Bytes,
}

/// A key as `list-keys` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// CKA_LABEL (or slot name for PIV).
    pub label: String,
    /// CKA_ID, hex.
    pub id: String,
    /// Label of the token that holds it.
    pub token: String,
    /// `rsa-2048`, `ec-p256`, `ec-p384`, …
    pub algorithm: String,
    /// What the key may do: `sign`, `decrypt`, `derive`.
    pub usage: Vec<String>,
    /// The certificate with the same CKA_ID, if the token has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertSummary>,
    /// CA certificates on the token above that certificate (issuer first), DER.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<Bytes>,
    /// Touch policy of the key (`never`, `always`, `cached`), where the token has one
    /// (PIV): clients tell the user to touch the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub touch: Option<String>,
    /// PIN policy of the key (`never`, `once`, `always`), where the token has one (PIV).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_policy: Option<String>,
    /// Set when the token reports the private key as extractable or not sensitive: its
    /// value could be read off the token (e.g. a key imported with pkcs11-tool defaults).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exportable: bool,
    /// The key's SubjectPublicKeyInfo, DER, when the agent knows it (for a CSR of a key
    /// that has no certificate yet). Absent from agents before 2026-12.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<Bytes>,
}

/// One key slot of a PIV card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PivSlotInfo {
    /// `9a`, `9c`, …
    pub slot: String,
    /// SP 800-73-4 name (`Digital Signature`, …).
    pub name: String,
    /// `rsa-2048`, `ec-p256`, `ec-p384`.
    pub algorithm: String,
    /// `never`, `once`, `always`.
    pub pin_policy: String,
    /// `never`, `always`, `cached`.
    pub touch_policy: String,
    /// `generated` (on the card), `imported`, or empty when the card does not say.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    /// The slot's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertSummary>,
}

/// Answer to `piv-status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PivStatus {
    /// The token's name in the agent.
    pub token: String,
    /// Card serial number.
    pub serial: String,
    /// Firmware version.
    pub version: String,
    /// PC/SC reader name.
    pub reader: String,
    /// PIN tries left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_tries_left: Option<u8>,
    /// PUK tries left (cards with metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub puk_tries_left: Option<u8>,
    /// The PIN is the factory default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_pin: Option<bool>,
    /// The PUK is the factory default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_puk: Option<bool>,
    /// The management key is the factory default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_management_key: Option<bool>,
    /// Slots that hold a key.
    pub slots: Vec<PivSlotInfo>,
}

/// Which key an email selects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailSelection {
    /// The email (lower-case).
    pub email: String,
    /// Token holding the selected key.
    pub token: String,
    /// Label of the selected key.
    pub key: String,
    /// Id of the selected key, hex.
    pub id: String,
    /// Why: `preference`, `only`, or `latest-expiry`.
    pub reason: String,
}

/// The agent's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Agent version.
    pub agent_version: String,
    /// Protocol version, `MAJOR.MINOR`.
    pub protocol: String,
    /// Tokens.
    pub tokens: Vec<TokenStatus>,
    /// Keys on present tokens.
    pub keys: Vec<KeyInfo>,
    /// Which key each email selects.
    pub emails: Vec<EmailSelection>,
}

/// A response from the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Response {
    /// Answer to `hello`.
    Hello {
        /// The operations (`op` values) this agent serves.
        #[serde(default)]
        operations: Vec<String>,
        /// Agent name and version.
        agent: String,
        /// Protocol version, `MAJOR.MINOR`.
        protocol: String,
    },
    /// Answer to `status`.
    Status(AgentStatus),
    /// Answer to `list-keys`.
    Keys {
        /// The keys.
        keys: Vec<KeyInfo>,
    },
    /// Answer to `sign-digest`.
    Signature {
        /// The key that signed (label).
        key: String,
        /// RSA: the raw signature; ECDSA: DER Ecdsa-Sig-Value.
        signature: Bytes,
    },
    /// Answer to `decrypt-key` and `derive`.
    Secret {
        /// The unwrapped key or shared secret.
        secret: SecretBytes,
    },
    /// Answer to `login` and `lock`.
    Ok,
    /// Result of the `sign` stream.
    Signed {
        /// The key that signed (label).
        key: String,
        /// Bytes of output sent.
        bytes: u64,
    },
    /// Result of the `verify` stream (also when the signature is not valid).
    Verified {
        /// Whether every signature is valid (then the output is the content).
        valid: bool,
        /// The verification report: `valid`, `form`, `sender`, `signers` (as
        /// `tokenmail verify --json` prints it).
        report: serde_json::Value,
    },
    /// Result of the `encrypt` stream.
    Encrypted {
        /// Bytes of output sent.
        bytes: u64,
    },
    /// Result of the `decrypt` stream.
    Decrypted {
        /// The key that decrypted (label).
        key: String,
        /// Whether the content was integrity-protected (AuthEnvelopedData, AES-GCM).
        authenticated: bool,
        /// Bytes of output sent.
        bytes: u64,
        /// The content-encryption algorithm (`AES-256-GCM`, `AES-128-CBC`, `3DES-CBC`),
        /// for clients that warn about weak ones. Absent from agents before 2026-12.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cipher: Option<String>,
    },
    /// Answer to `piv-status`.
    PivStatus(Box<PivStatus>),
    /// Answer to `piv-keygen`.
    PivKey {
        /// The new key's SubjectPublicKeyInfo, DER.
        public_key: Bytes,
        /// Things the user should know (default management key, old certificate).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    },
    /// Answer to `keygen` and `import-key`.
    Generated {
        /// The new key as `list-keys` shows it.
        key: Box<KeyInfo>,
        /// Its SubjectPublicKeyInfo, DER.
        public_key: Bytes,
        /// Things the user should know.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    },
    /// Answer to administrative requests that change a token (`piv-import-cert`,
    /// `import-cert`).
    Done {
        /// Things the user should know.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    },
    /// Any failure.
    Error(ErrorInfo),
}

impl Response {
    /// An error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error(ErrorInfo {
            code,
            message: message.into(),
            token: None,
            tries_left: None,
            hint: None,
        })
    }
}
