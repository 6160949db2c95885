//! Decryption: an incremental header parser, then a streaming content
//! decryptor whose output is [`Unverified`] until [`Decryptor::finish`].

use cms::enveloped_data::{KeyAgreeRecipientIdentifier, RecipientIdentifier, RecipientInfo};
use der::asn1::{ObjectIdentifier, OctetString};
use der::Decode;
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

use super::ber::{self, BerError, Reader};
use super::content::{ContentAlg, ContentDecryptor};
use super::oids;
use super::recipients::{find_recipient, recover_cek};
use super::{DecryptError, RecipientKey};

/// Which CMS content type the envelope is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeKind {
    /// EnvelopedData (RFC 5652): confidentiality only.
    Enveloped,
    /// AuthEnvelopedData (RFC 5083): authenticated encryption.
    AuthEnveloped,
}

/// How a RecipientInfo names its recipient (for messages such as "encrypted
/// to …, not to your key").
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecipientId {
    /// issuerAndSerialNumber.
    IssuerSerial {
        /// The issuer's distinguished name (RFC 4514 string).
        issuer: String,
        /// The serial number, hex.
        serial: String,
    },
    /// subjectKeyIdentifier / rKeyId.
    SubjectKeyId(Vec<u8>),
    /// A recipient kind we do not read (KEK, password, other).
    Other,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ias_id(ias: &cms::cert::IssuerAndSerialNumber) -> RecipientId {
    RecipientId::IssuerSerial {
        issuer: ias.issuer.to_string(),
        serial: hex(ias.serial_number.as_bytes()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeaderStep {
    ContentInfo,
    ContentType,
    Explicit,
    Envelope,
    Version,
    OriginatorInfo,
    RecipientInfos,
    EncryptedContentInfo,
    InnerContentType,
    Algorithm,
    EncryptedContent,
}

/// Reads the header of a CMS EnvelopedData / AuthEnvelopedData (DER or BER)
/// incrementally, up to the start of the encrypted content.
#[derive(Debug)]
pub struct EnvelopeParser {
    reader: Reader,
    step: HeaderStep,
    kind: Option<EnvelopeKind>,
    recipients: Vec<RecipientInfo>,
    content_type: Option<ObjectIdentifier>,
    alg: Option<AlgorithmIdentifierOwned>,
}

impl Default for EnvelopeParser {
    fn default() -> Self {
        Self::new()
    }
}

impl EnvelopeParser {
    /// A parser waiting for the first byte.
    pub fn new() -> Self {
        Self {
            reader: Reader::default(),
            step: HeaderStep::ContentInfo,
            kind: None,
            recipients: Vec::new(),
            content_type: None,
            alg: None,
        }
    }

    /// Feeds input. Returns `Ok(None)` while the header is incomplete, and the
    /// parsed header once complete (bytes after the header are kept in it).
    /// After `Some`, the parser is spent.
    pub fn push(&mut self, data: &[u8]) -> Result<Option<ParsedEnvelope>, DecryptError> {
        self.reader.feed(data);
        match self.run() {
            Ok(()) => {}
            Err(BerError::NeedMore) => {
                if self.reader.buffered_len() > 2 * ber::MAX_ELEMENT {
                    return Err(DecryptError::Malformed("envelope header too large"));
                }
                return Ok(None);
            }
            Err(BerError::Malformed(m)) => return Err(DecryptError::Malformed(m)),
        }
        let kind = self
            .kind
            .ok_or(DecryptError::Malformed("no content type"))?;
        let alg = self
            .alg
            .take()
            .ok_or(DecryptError::Malformed("no content algorithm"))?;
        let content_alg = ContentAlg::parse(&alg)?;
        if kind == EnvelopeKind::AuthEnveloped && !content_alg.is_authenticated() {
            return Err(DecryptError::Unsupported(
                "AuthEnvelopedData with a non-AEAD cipher".into(),
            ));
        }
        if kind == EnvelopeKind::Enveloped && content_alg.is_authenticated() {
            return Err(DecryptError::Unsupported(
                "EnvelopedData with an AEAD cipher".into(),
            ));
        }
        Ok(Some(ParsedEnvelope {
            kind,
            recipients: std::mem::take(&mut self.recipients),
            alg: content_alg,
            content_type: self.content_type.unwrap_or(oids::ID_DATA),
            reader: std::mem::take(&mut self.reader),
        }))
    }

    fn run(&mut self) -> Result<(), BerError> {
        use HeaderStep::*;
        let r = &mut self.reader;
        loop {
            match self.step {
                ContentInfo => {
                    r.enter(0x30)?;
                    self.step = ContentType;
                }
                ContentType => {
                    let oid = take_oid(r)?;
                    self.kind = Some(match oid {
                        oids::ID_ENVELOPED_DATA => EnvelopeKind::Enveloped,
                        oids::ID_AUTH_ENVELOPED_DATA => EnvelopeKind::AuthEnveloped,
                        _ => {
                            return Err(BerError::Malformed(
                                "not an EnvelopedData or AuthEnvelopedData",
                            ));
                        }
                    });
                    self.step = Explicit;
                }
                Explicit => {
                    r.enter(0xa0)?;
                    self.step = Envelope;
                }
                Envelope => {
                    r.enter(0x30)?;
                    self.step = Version;
                }
                Version => {
                    let v = r.peek()?;
                    if v.tag != 0x02 {
                        return Err(BerError::Malformed("missing version"));
                    }
                    r.take_element()?;
                    self.step = OriginatorInfo;
                }
                OriginatorInfo => {
                    if r.peek()?.tag == 0xa0 {
                        r.take_element()?;
                    }
                    self.step = RecipientInfos;
                }
                RecipientInfos => {
                    if r.peek()?.tag != 0x31 {
                        return Err(BerError::Malformed("missing RecipientInfos"));
                    }
                    let el = r.take_element()?;
                    let der = ber::to_der(&el)?;
                    let infos = cms::enveloped_data::RecipientInfos::from_der(&der)
                        .map_err(|_| BerError::Malformed("RecipientInfos"))?;
                    self.recipients = infos.0.into_vec();
                    self.step = EncryptedContentInfo;
                }
                EncryptedContentInfo => {
                    r.enter(0x30)?;
                    self.step = InnerContentType;
                }
                InnerContentType => {
                    self.content_type = Some(take_oid(r)?);
                    self.step = Algorithm;
                }
                Algorithm => {
                    if r.peek()?.tag != 0x30 {
                        return Err(BerError::Malformed("missing content algorithm"));
                    }
                    let el = r.take_element()?;
                    let der = ber::to_der(&el)?;
                    self.alg = Some(
                        AlgorithmIdentifierOwned::from_der(&der)
                            .map_err(|_| BerError::Malformed("content algorithm"))?,
                    );
                    self.step = EncryptedContent;
                }
                EncryptedContent => {
                    if r.at_end()? {
                        return Err(BerError::Malformed(
                            "no encrypted content (detached content is not supported)",
                        ));
                    }
                    let h = r.peek()?;
                    if h.tag != 0x80 && h.tag != 0xa0 {
                        return Err(BerError::Malformed(
                            "unexpected field in EncryptedContentInfo",
                        ));
                    }
                    return Ok(());
                }
            }
        }
    }
}

fn take_oid(r: &mut Reader) -> Result<ObjectIdentifier, BerError> {
    if r.peek()?.tag != 0x06 {
        return Err(BerError::Malformed("expected an OBJECT IDENTIFIER"));
    }
    let el = r.take_element()?;
    ObjectIdentifier::from_der(&el).map_err(|_| BerError::Malformed("bad OBJECT IDENTIFIER"))
}

/// A parsed envelope header: who it is for and how it is encrypted.
#[derive(Clone, Debug)]
pub struct ParsedEnvelope {
    kind: EnvelopeKind,
    recipients: Vec<RecipientInfo>,
    alg: ContentAlg,
    content_type: ObjectIdentifier,
    reader: Reader,
}

impl ParsedEnvelope {
    /// EnvelopedData or AuthEnvelopedData.
    pub fn kind(&self) -> EnvelopeKind {
        self.kind
    }

    /// Whether the content will be authenticated (AES-GCM).
    pub fn authenticated(&self) -> bool {
        self.alg.is_authenticated()
    }

    /// The content-encryption algorithm's name: `AES-256-GCM`, `AES-128-CBC`, `3DES-CBC`.
    pub fn cipher_name(&self) -> &'static str {
        self.alg.name()
    }

    /// Whether the content is encrypted with a legacy 64-bit-block cipher (3DES).
    pub fn legacy_cipher(&self) -> bool {
        self.alg.is_legacy()
    }

    /// The identifiers of all recipients.
    pub fn recipient_ids(&self) -> Vec<RecipientId> {
        let mut v = Vec::new();
        for ri in &self.recipients {
            match ri {
                RecipientInfo::Ktri(k) => v.push(match &k.rid {
                    RecipientIdentifier::IssuerAndSerialNumber(ias) => ias_id(ias),
                    RecipientIdentifier::SubjectKeyIdentifier(s) => {
                        RecipientId::SubjectKeyId(s.0.as_bytes().to_vec())
                    }
                }),
                RecipientInfo::Kari(k) => {
                    for rek in &k.recipient_enc_keys {
                        v.push(match &rek.rid {
                            KeyAgreeRecipientIdentifier::IssuerAndSerialNumber(ias) => ias_id(ias),
                            KeyAgreeRecipientIdentifier::RKeyId(r) => RecipientId::SubjectKeyId(
                                r.subject_key_identifier.0.as_bytes().to_vec(),
                            ),
                        });
                    }
                }
                _ => v.push(RecipientId::Other),
            }
        }
        v
    }

    /// Whether one of the recipients is this certificate.
    pub fn is_recipient(&self, cert: &Certificate) -> bool {
        find_recipient(&self.recipients, cert).is_some()
    }

    /// Recovers the content key with `key` (one private-key operation) and
    /// returns the content decryptor.
    ///
    /// Errors: [`DecryptError::NotARecipient`] when no RecipientInfo names the
    /// key's certificate; [`DecryptError::Unsupported`] for algorithms we do
    /// not implement; [`DecryptError::KeyUnavailable`]; otherwise
    /// [`DecryptError::Failed`] (possibly only later, at
    /// [`Decryptor::finish`]).
    pub fn decryptor(self, key: &dyn RecipientKey) -> Result<Decryptor, DecryptError> {
        let (ri, idx) = find_recipient(&self.recipients, key.certificate())
            .ok_or(DecryptError::NotARecipient)?;
        let cek = recover_cek(ri, idx, key, self.alg.key_len())?;
        let content = ContentDecryptor::new(&self.alg, &cek)?;
        let state = match self.reader.peek() {
            Ok(h) if h.tag == 0x80 => ContentState::Primitive(h.len.unwrap_or(0) as u64),
            Ok(_) => ContentState::Constructed,
            Err(_) => return Err(DecryptError::Failed),
        };
        let mut reader = self.reader;
        let h = reader.take_header().map_err(|_| DecryptError::Failed)?;
        let content_depth = reader.depth();
        let _ = h;
        Ok(Decryptor {
            kind: self.kind,
            authenticated: self.alg.is_authenticated(),
            content_type: self.content_type,
            content: Some(content),
            reader,
            state,
            content_depth,
            mac: None,
            poisoned: false,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ContentState {
    /// Primitive [0]: this many ciphertext bytes left.
    Primitive(u64),
    /// Constructed [0]: between segments.
    Constructed,
    /// Inside a primitive segment with this many bytes left.
    Segment(u64),
    /// Content done; reading the rest of EncryptedContentInfo and after.
    Trailer(TrailerStep),
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TrailerStep {
    LeaveEci,
    Attrs,
    Mac,
    UnauthAttrs,
    LeaveEnvelope,
    LeaveExplicit,
    LeaveContentInfo,
}

/// Plaintext that has **not** been verified yet.
///
/// For AES-GCM it is authentic only once [`Decryptor::finish`] returned `Ok`;
/// for CBC, once `finish` checked the padding (and never authenticated). Do
/// not release it before.
#[derive(Debug, Default)]
#[must_use = "unverified plaintext must be held until Decryptor::finish succeeds"]
pub struct Unverified(Vec<u8>);

impl Unverified {
    /// The bytes, to be held back until [`Decryptor::finish`] succeeds.
    pub fn into_unverified_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The bytes, to be held back until [`Decryptor::finish`] succeeds.
    pub fn as_unverified_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// The result of a successful [`Decryptor::finish`].
#[derive(Debug)]
#[non_exhaustive]
pub struct DecryptOutcome {
    /// The last plaintext bytes (the final CBC block); append them after
    /// everything [`Decryptor::update`] returned.
    pub final_plaintext: Vec<u8>,
    /// `true` for AuthEnvelopedData whose tag verified; `false` for CBC.
    pub authenticated: bool,
    /// The envelope kind.
    pub kind: EnvelopeKind,
}

/// Streaming content decryptor. See the module documentation: everything
/// [`Decryptor::update`] returns is unverified until [`Decryptor::finish`]
/// returns `Ok`.
pub struct Decryptor {
    kind: EnvelopeKind,
    authenticated: bool,
    content_type: ObjectIdentifier,
    content: Option<ContentDecryptor>,
    reader: Reader,
    state: ContentState,
    content_depth: usize,
    mac: Option<Vec<u8>>,
    poisoned: bool,
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryptor")
            .field("kind", &self.kind)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Decryptor {
    /// Whether the content will be authenticated (GCM) when `finish` succeeds.
    pub fn authenticated(&self) -> bool {
        self.authenticated
    }

    /// The inner content type (normally id-data).
    pub fn content_type(&self) -> ObjectIdentifier {
        self.content_type
    }

    /// Bytes of input held internally (bounded; for memory checks).
    pub fn buffered_capacity(&self) -> usize {
        self.reader.capacity()
    }

    /// Feeds more of the envelope (and first, whatever followed the header in
    /// the parser's input); returns **unverified** plaintext.
    pub fn update(&mut self, data: &[u8]) -> Result<Unverified, DecryptError> {
        let mut out = Vec::with_capacity(data.len() + 16);
        self.update_unverified_into(data, &mut out)?;
        Ok(Unverified(out))
    }

    /// Like [`Decryptor::update`], appending the plaintext to `out` (a reused buffer). It is
    /// just as **unverified**: nothing appended is authentic until [`Decryptor::finish`]
    /// returned `Ok`.
    pub fn update_unverified_into(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), DecryptError> {
        if self.poisoned {
            return Err(DecryptError::Failed);
        }
        self.reader.feed(data);
        match self.run(out) {
            Ok(()) | Err(BerError::NeedMore) => Ok(()),
            Err(BerError::Malformed(_)) => {
                self.poisoned = true;
                Err(DecryptError::Failed)
            }
        }
    }

    fn run(&mut self, out: &mut Vec<u8>) -> Result<(), BerError> {
        loop {
            match self.state {
                ContentState::Primitive(left) | ContentState::Segment(left) => {
                    let avail = self.reader.available();
                    let n = (avail.len() as u64).min(left) as usize;
                    if n > 0 {
                        let content = self
                            .content
                            .as_mut()
                            .ok_or(BerError::Malformed("finished"))?;
                        content
                            .update(&avail[..n], out)
                            .map_err(|_| BerError::Malformed("content"))?;
                        self.reader.consume(n);
                    }
                    let left = left - n as u64;
                    self.state = match (self.state, left) {
                        (ContentState::Primitive(_), 0) => {
                            ContentState::Trailer(TrailerStep::LeaveEci)
                        }
                        (ContentState::Primitive(_), l) => ContentState::Primitive(l),
                        (_, 0) => ContentState::Constructed,
                        (_, l) => ContentState::Segment(l),
                    };
                    if left > 0 {
                        return Err(BerError::NeedMore);
                    }
                }
                ContentState::Constructed => {
                    if self.reader.at_end()? {
                        self.reader.leave()?;
                        if self.reader.depth() < self.content_depth {
                            self.state = ContentState::Trailer(TrailerStep::LeaveEci);
                        }
                        continue;
                    }
                    let h = self.reader.peek()?;
                    match h.tag {
                        0x04 => {
                            self.reader.take_header()?;
                            self.state = ContentState::Segment(h.len.unwrap_or(0) as u64);
                        }
                        0x24 => {
                            if self.reader.depth() > self.content_depth + 8 {
                                return Err(BerError::Malformed("nesting too deep"));
                            }
                            self.reader.take_header()?;
                        }
                        _ => return Err(BerError::Malformed("bad encryptedContent segment")),
                    }
                }
                ContentState::Trailer(step) => {
                    self.trailer(step)?;
                }
                ContentState::Done => {
                    // allow trailing whitespace (files ending in a newline)
                    let a = self.reader.available();
                    if a.iter().all(|b| b.is_ascii_whitespace()) {
                        let n = a.len();
                        self.reader.consume(n);
                        return Ok(());
                    }
                    return Err(BerError::Malformed("data after the envelope"));
                }
            }
        }
    }

    fn trailer(&mut self, step: TrailerStep) -> Result<(), BerError> {
        use TrailerStep::*;
        let r = &mut self.reader;
        let auth = self.kind == EnvelopeKind::AuthEnveloped;
        let next = match step {
            LeaveEci => {
                r.leave()?;
                Attrs
            }
            Attrs => {
                if !r.at_end()? && r.peek()?.tag == 0xa1 {
                    if auth {
                        // authAttrs would have to be hashed before the content.
                        return Err(BerError::Malformed("authenticated attributes"));
                    }
                    r.take_element()?;
                }
                if auth {
                    Mac
                } else {
                    LeaveEnvelope
                }
            }
            Mac => {
                if r.peek()?.tag != 0x04 {
                    return Err(BerError::Malformed("missing mac"));
                }
                let el = r.take_element()?;
                let mac = OctetString::from_der(&el).map_err(|_| BerError::Malformed("mac"))?;
                self.mac = Some(mac.as_bytes().to_vec());
                UnauthAttrs
            }
            UnauthAttrs => {
                if !r.at_end()? && r.peek()?.tag == 0xa2 {
                    r.take_element()?;
                }
                LeaveEnvelope
            }
            LeaveEnvelope => {
                r.leave()?;
                LeaveExplicit
            }
            LeaveExplicit => {
                r.leave()?;
                LeaveContentInfo
            }
            LeaveContentInfo => {
                r.leave()?;
                self.state = ContentState::Done;
                return Ok(());
            }
        };
        self.state = ContentState::Trailer(next);
        Ok(())
    }

    /// Ends the input. `Ok` only when the whole envelope was read and the
    /// content verified (GCM tag, or CBC padding); then everything `update`
    /// returned, followed by [`DecryptOutcome::final_plaintext`], is the
    /// plaintext. Any error means: discard all of it.
    pub fn finish(mut self) -> Result<DecryptOutcome, DecryptError> {
        if self.poisoned {
            return Err(DecryptError::Failed);
        }
        let mut tail = Vec::new();
        // process anything left in the buffer
        match self.run(&mut tail) {
            Ok(()) => {}
            Err(_) => return Err(DecryptError::Failed),
        }
        if self.state != ContentState::Done {
            return Err(DecryptError::Failed);
        }
        if !tail.is_empty() {
            // cannot happen: content bytes all come before Done
            return Err(DecryptError::Failed);
        }
        let content = self.content.take().ok_or(DecryptError::Failed)?;
        let mut final_plaintext = Vec::new();
        content.finish(self.mac.as_deref(), &mut final_plaintext)?;
        Ok(DecryptOutcome {
            final_plaintext,
            authenticated: self.authenticated,
            kind: self.kind,
        })
    }
}

/// A whole decrypted message.
#[derive(Debug)]
#[non_exhaustive]
pub struct Decrypted {
    /// The plaintext (for S/MIME, a MIME entity).
    pub content: zeroize::Zeroizing<Vec<u8>>,
    /// `true` when the content was authenticated (AES-GCM AuthEnvelopedData).
    pub authenticated: bool,
    /// The envelope kind.
    pub kind: EnvelopeKind,
}

/// Decrypts a whole message: a MIME message or entity with an
/// `application/pkcs7-mime` body, PEM, or bare DER/BER CMS.
pub fn decrypt(input: &[u8], key: &dyn RecipientKey) -> Result<Decrypted, DecryptError> {
    let mut dec = super::mime::CmsInputDecoder::new();
    let mut der = dec.push(input)?;
    der.extend_from_slice(&dec.finish()?);
    let mut parser = EnvelopeParser::new();
    let parsed = parser
        .push(&der)?
        .ok_or(DecryptError::Malformed("truncated input"))?;
    let mut d = parsed.decryptor(key)?;
    let mut content = zeroize::Zeroizing::new(d.update(&[])?.into_unverified_bytes());
    let outcome = d.finish()?;
    content.extend_from_slice(&outcome.final_plaintext);
    Ok(Decrypted {
        content,
        authenticated: outcome.authenticated,
        kind: outcome.kind,
    })
}

/// The whole decryption pipeline for any input form (MIME, PEM, DER/BER),
/// push-style: feed input with [`MessageDecryptor::push`] until the header is
/// known, choose a key ([`MessageDecryptor::envelope`],
/// [`ParsedEnvelope::is_recipient`]), [`MessageDecryptor::unlock`] it, keep
/// pushing, then [`MessageDecryptor::finish`].
///
/// As with [`Decryptor`], every plaintext byte is [`Unverified`] until
/// `finish` returns `Ok`.
///
/// Call `unlock` as soon as [`MessageDecryptor::envelope`] is `Some`: until
/// then input is held in memory, and more than 2 MiB of it is an error.
/// [`DecryptError::NotARecipient`] and [`DecryptError::KeyUnavailable`] from
/// `unlock` leave the decryptor usable for another attempt.
#[derive(Debug, Default)]
pub struct MessageDecryptor {
    form: super::mime::CmsInputDecoder,
    parser: EnvelopeParser,
    parsed: Option<ParsedEnvelope>,
    held: Vec<u8>,
    dec: Option<Decryptor>,
    /// decoded CMS bytes of the current push (reused)
    scratch: Vec<u8>,
}

impl MessageDecryptor {
    /// A decryptor waiting for input.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds input. Before [`MessageDecryptor::unlock`], input is parsed (and
    /// buffered, bounded) and nothing is returned; after it, returns
    /// unverified plaintext.
    pub fn push(&mut self, data: &[u8]) -> Result<Unverified, DecryptError> {
        let bytes = self.form.push(data)?;
        self.route(bytes)
    }

    /// Like [`MessageDecryptor::push`], appending the plaintext to `out` (a reused buffer).
    /// Just as **unverified**: nothing appended is authentic until
    /// [`MessageDecryptor::finish`] returned `Ok`.
    pub fn push_unverified_into(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), DecryptError> {
        let mut cms = std::mem::take(&mut self.scratch);
        cms.clear();
        let r = self
            .form
            .push_into(data, &mut cms)
            .and_then(|()| match self.dec.as_mut() {
                Some(d) => d.update_unverified_into(&cms, out),
                None => {
                    let u = self.route(std::mem::take(&mut cms))?;
                    out.extend_from_slice(u.as_unverified_bytes());
                    Ok(())
                }
            });
        self.scratch = cms;
        r
    }

    fn route(&mut self, bytes: Vec<u8>) -> Result<Unverified, DecryptError> {
        if let Some(d) = self.dec.as_mut() {
            return d.update(&bytes);
        }
        if self.parsed.is_some() {
            if self.held.len() + bytes.len() > 2 * ber::MAX_ELEMENT {
                return Err(DecryptError::Malformed(
                    "too much input before a key was chosen",
                ));
            }
            self.held.extend_from_slice(&bytes);
            return Ok(Unverified::default());
        }
        if let Some(p) = self.parser.push(&bytes)? {
            self.parsed = Some(p);
        }
        Ok(Unverified::default())
    }

    /// The envelope header, once enough input was pushed.
    pub fn envelope(&self) -> Option<&ParsedEnvelope> {
        self.parsed.as_ref()
    }

    /// Recovers the content key with `key` and returns the plaintext of what
    /// was already pushed. [`DecryptError::NotARecipient`] leaves the
    /// decryptor as it was, so that another key can be tried.
    pub fn unlock(&mut self, key: &dyn RecipientKey) -> Result<Unverified, DecryptError> {
        if self.dec.is_some() {
            return Ok(Unverified::default());
        }
        let parsed = self
            .parsed
            .as_ref()
            .ok_or(DecryptError::Malformed("truncated input"))?;
        if !parsed.is_recipient(key.certificate()) {
            return Err(DecryptError::NotARecipient);
        }
        // a clone (bounded: the header's remainder), so that a key that is
        // unavailable right now can be retried
        let mut d = parsed.clone().decryptor(key)?;
        self.parsed = None;
        let held = std::mem::take(&mut self.held);
        let out = d.update(&held)?;
        self.dec = Some(d);
        Ok(out)
    }

    /// Ends the input. See [`Decryptor::finish`].
    pub fn finish(mut self) -> Result<DecryptOutcome, DecryptError> {
        let tail = std::mem::take(&mut self.form).finish()?;
        if self.dec.is_none() {
            // still before unlock: parse what is left, to report the right error
            let _nothing_before_unlock = self.route(tail)?;
            return Err(match self.parsed {
                Some(_) => DecryptError::Malformed("no key was chosen"),
                None => DecryptError::Malformed("truncated input"),
            });
        }
        let extra = self.route(tail)?;
        let d = self.dec.take().ok_or(DecryptError::Failed)?;
        let mut outcome = d.finish()?;
        if !extra.is_empty() {
            let mut all = extra.into_unverified_bytes();
            all.extend_from_slice(&outcome.final_plaintext);
            outcome.final_plaintext = all;
        }
        Ok(outcome)
    }
}
