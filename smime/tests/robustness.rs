//! Arbitrary input never panics: every parser on pseudo-random and spliced bytes.

use tokenmail_smime::ber::ber_to_der;
use tokenmail_smime::mime::{parse_smime, split_message, Base64Decoder, SignedPartScanner};
use tokenmail_smime::path::CertEntry;
use tokenmail_smime::stream::EncapsulatedSplitter;
use tokenmail_smime::verify::ParsedSignedData;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn bytes(&mut self, n: usize, alphabet: &[u8]) -> Vec<u8> {
        (0..n)
            .map(|_| alphabet[(self.next() as usize) % alphabet.len()])
            .collect()
    }
}

const FRAGMENTS: &[&[u8]] = &[
    b"Content-Type: multipart/signed; boundary=b; micalg=sha-256\r\n",
    b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"\r\n",
    b"\n",
    b"--b\r\n",
    b"--b--\r\n",
    b"Content-Type: application/pkcs7-signature\r\n\r\n",
    b"MIIB",
    b"=",
    b"\x30\x80",
    b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02",
    b"\xa0\x80",
    b"\x24\x80\x04\x02ab\x00\x00",
    b"\x30\x82\xff\xff",
    b"\x00\x00",
    b"\x31\x00",
    b"-----BEGIN CMS-----\n",
    b"-----END CMS-----\n",
];

fn inputs() -> Vec<Vec<u8>> {
    let mut rng = Lcg(0x5eed);
    let mut v = Vec::new();
    let all: Vec<u8> = (0..=255).collect();
    for i in 0..400 {
        let n = (rng.next() % 300) as usize;
        if i % 2 == 0 {
            v.push(rng.bytes(n, &all));
        } else {
            let mut s = Vec::new();
            for _ in 0..(n % 20) {
                s.extend_from_slice(FRAGMENTS[(rng.next() as usize) % FRAGMENTS.len()]);
                if rng.next() % 3 == 0 {
                    let k = (rng.next() % 8) as usize;
                    s.extend(rng.bytes(k, &all));
                }
            }
            v.push(s);
        }
    }
    v
}

#[test]
fn no_panics_on_arbitrary_input() {
    for input in inputs() {
        let _ = ber_to_der(&input);
        let _ = ParsedSignedData::parse(&input);
        let _ = parse_smime(&input);
        let _ = split_message(&input);
        let _ = CertEntry::from_pem_or_der(&input);
        let mut sc = SignedPartScanner::new("b");
        let _ = sc.update(&input).and_then(|_| sc.finish());
        for size in [1, 5, 64] {
            let mut sp = EncapsulatedSplitter::new();
            let mut ok = true;
            for c in input.chunks(size) {
                if sp.update(c).is_err() {
                    ok = false;
                    break;
                }
            }
            if ok {
                let _ = sp.finish();
            }
        }
        let mut d = Base64Decoder::default();
        let _ = d.update(&input).and_then(|_| d.finish());
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let mut deep = Vec::new();
    for _ in 0..10_000 {
        deep.extend_from_slice(&[0x30, 0x80]);
    }
    assert!(ber_to_der(&deep).is_err());
    assert!(ParsedSignedData::parse(&deep).is_err());
    let mut sp = EncapsulatedSplitter::new();
    assert!(sp.update(&deep).and_then(|_| sp.finish()).is_err());
}
