//! The stable pass of the fuzz targets (run by `cargo test --workspace`, so by CI): every
//! file of the committed corpus (`fuzz/corpus/<target>/`) through its target, then a
//! bounded number of seeded mutations of it. Deterministic: the same inputs on every run.
//! The real fuzzing (libFuzzer, nightly) is `scripts/fuzz.sh`; see docs/reliability.md.

use std::path::PathBuf;

use fuzz_targets::TARGETS;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir().join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&p).expect("read a corpus file"))
        })
        .collect()
}

/// xorshift64*: a small deterministic generator (no dependency, same sequence everywhere).
struct Rng(u64);

impl Rng {
    fn new(seed: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Bytes a mutation likes to put in: structure of the formats under test.
const INTERESTING: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b"--",
    b"\x00",
    b"\xff",
    b"\x80",
    b"\x30\x80",
    b"\x00\x00",
    b"\x84\xff\xff\xff\xff",
    b"\x81\x80",
    b"=\r\n",
    b"=?utf-8?q?",
    b"(",
    b")",
    b"<",
    b">",
    b"\"",
    b",",
    b"@",
    b":",
    b"From: ",
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"-----BEGIN CMS-----\n",
    b"-----END CMS-----\n",
    b"TKML\x01\x00\x02\x00",
];

fn mutate(rng: &mut Rng, seeds: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].1.clone();
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                let ins = INTERESTING[rng.below(INTERESTING.len())];
                data.splice(i..i, ins.iter().copied());
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                data.drain(a..b);
            }
            4 if len > 0 => {
                // duplicate a range (repetition: nesting, many fields, many certificates)
                let a = rng.below(len);
                let b = (a + 1 + rng.below(256)).min(len);
                let piece = data[a..b].to_vec();
                for _ in 0..1 + rng.below(8) {
                    data.splice(a..a, piece.iter().copied());
                }
            }
            5 => data.truncate(rng.below(len + 1)),
            6 => {
                // splice in a piece of another seed
                let other = &seeds[rng.below(seeds.len())].1;
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = (a + 1 + rng.below(512)).min(other.len());
                    let at = rng.below(len + 1);
                    data.splice(at..at, other[a..b].iter().copied());
                }
            }
            7 if len >= 2 => {
                // a length-like byte pair: big-endian u16 somewhere
                let i = rng.below(len - 1);
                let v = rng.next() as u16;
                data[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
            _ => {
                let i = rng.below(len + 1);
                let n = rng.below(16);
                let noise: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(i..i, noise);
            }
        }
    }
    data
}

/// Runs one input; on a panic, saves the input where the message says (a reproducer for
/// `cargo fuzz run <target> <file>` and for the corpus) and fails.
fn run_one(target: &str, what: &str, data: &[u8]) {
    let r = std::panic::catch_unwind(|| fuzz_targets::run(target, data));
    match r {
        Ok(known) => assert!(known, "unknown target {target}"),
        Err(_) => {
            let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("{target}-{}.bin", what.replace(['/', ' '], "_")));
            std::fs::write(&path, data).expect("save the failing input");
            panic!("{target}: {what} fails; the input is in {}", path.display());
        }
    }
}

/// Every corpus file, then `mutations` seeded mutations, through `target`.
fn pass(target: &str, mutations: usize) {
    let seeds = corpus(target);
    assert!(!seeds.is_empty(), "fuzz/corpus/{target} is empty");
    for (name, data) in &seeds {
        run_one(target, name, data);
    }
    let mut rng = Rng::new(target);
    for i in 0..mutations {
        let data = mutate(&mut rng, &seeds);
        run_one(target, &format!("mutation {i}"), &data);
    }
}

#[test]
fn every_target_has_a_corpus() {
    for t in TARGETS {
        assert!(
            corpus_dir().join(t).is_dir(),
            "fuzz/corpus/{t} is missing (fuzz/make-corpus.sh)"
        );
    }
}

// Mutation counts: about 20-30 s for all of them in a debug build on 2 cores. The
// expensive targets (RSA decryption and signature checks in debug builds) get fewer.

#[test]
fn frame() {
    pass("frame", 20000);
}

#[test]
fn request() {
    pass("request", 20000);
}

#[test]
fn signed_data() {
    pass("signed_data", 3000);
}

#[test]
fn enveloped() {
    pass("enveloped", 4000);
}

#[test]
fn decrypt_stream() {
    pass("decrypt_stream", 300);
}

#[test]
fn mime() {
    pass("mime", 1000);
}

#[test]
fn pem() {
    pass("pem", 3000);
}

#[test]
fn from_header() {
    pass("from_header", 20000);
}

#[test]
fn crl() {
    pass("crl", 3000);
}

#[test]
fn ocsp() {
    pass("ocsp", 3000);
}

#[test]
fn path_checks() {
    pass("path_checks", 1500);
}

#[test]
fn verify() {
    pass("verify", 150);
}

/// Writes the seeds made by our own code into fuzz/corpus (run by hand, once, after
/// fuzz/make-corpus.sh: `cargo test -p fuzz-targets --test corpus -- --ignored`).
#[test]
#[ignore = "writes into fuzz/corpus; run by hand"]
fn write_own_seeds() {
    use fuzz_targets::fixture;
    use tokenmail_proto::frame::{encode_frame, FrameKind};
    use tokenmail_smime::envelope::{mime::encrypt_message, ContentCipher, EncryptRecipient};
    use tokenmail_smime::mime::{sign_multipart, sign_opaque, split_message};
    use tokenmail_smime::path::CertEntry;
    use tokenmail_smime::signed::{sign_encapsulated, SignOptions, SoftwareSigner};

    let dir = corpus_dir();
    let put = |target: &str, name: &str, data: &[u8]| {
        std::fs::write(dir.join(target).join(name), data).expect("write a seed");
    };
    let cert = |pem: &str| {
        CertEntry::from_pem_bundle(pem.as_bytes())
            .expect("fixture")
            .remove(0)
            .cert
    };
    let int = cert(fixture::INT_PEM);
    let message = std::fs::read(dir.join("mime/mixed-8bit.eml")).expect("make-corpus.sh first");
    let opts = SignOptions {
        signing_time: Some(fuzz_targets::verify_time() - std::time::Duration::from_secs(86_400)),
        ..SignOptions::default()
    };
    for (k, key, pem) in [
        ("rsa", fixture::EE_RSA_KEY, fixture::EE_RSA_PEM),
        ("p256", fixture::EE_P256_KEY, fixture::EE_P256_PEM),
    ] {
        let signer = SoftwareSigner::from_pkcs8_pem(key).expect("fixture key");
        let ee = cert(pem);
        let chain = [int.clone()];
        let ms =
            sign_multipart(&message, &signer, &ee, &chain, &opts, "tokenmail-fuzz").expect("sign");
        put("verify", &format!("own-{k}-multipart.eml"), &ms);
        put("mime", &format!("own-{k}-multipart.eml"), &ms);
        let op = sign_opaque(&message, &signer, &ee, &chain, &opts).expect("sign");
        put("verify", &format!("own-{k}-opaque.eml"), &op);
        let (_, body) = split_message(&message).expect("message");
        let cms = sign_encapsulated(&signer, &ee, &chain, body, &opts).expect("sign");
        put("signed_data", &format!("own-{k}-attached.der"), &cms);
        let recipient = EncryptRecipient::from_pem_or_der(pem.as_bytes()).expect("recipient");
        for (c, cipher) in [
            ("gcm", ContentCipher::Aes256Gcm),
            ("cbc", ContentCipher::Aes128Cbc),
        ] {
            let enc = encrypt_message(&message, std::slice::from_ref(&recipient), cipher)
                .expect("encrypt");
            put("decrypt_stream", &format!("own-{k}-{c}.eml"), &enc);
            let (_, b64) = split_message(&enc).expect("encrypted message");
            let der = tokenmail_smime::mime::Base64Decoder::default()
                .update(b64)
                .expect("base64");
            put("enveloped", &format!("own-{k}-{c}.ber"), &der);
        }
    }
    let req = std::fs::read(dir.join("request/sign-digest.json")).expect("make-corpus.sh first");
    let mut f = encode_frame(FrameKind::Message, &req).expect("frame");
    f.extend_from_slice(&encode_frame(FrameKind::Data, &message).expect("frame"));
    f.extend_from_slice(&encode_frame(FrameKind::End, &[]).expect("frame"));
    put("frame", "own-stream.bin", &f);
}
