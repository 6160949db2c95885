//! A 64 MiB round trip through the streaming encryptor and decryptor, checking
//! that neither holds more than a bounded buffer, and that plaintext comes out
//! progressively (as unverified chunks) while the input streams in.

mod envelope_common;

use envelope_common::{fixture, Who};
use sha2::{Digest, Sha256};
use tokenmail_smime::envelope::{ContentCipher, Encryptor, EnvelopeParser};

const TOTAL: usize = 64 << 20;
const CHUNK: usize = 64 << 10;
const BOUND: usize = 4 * CHUNK;

fn round_trip(cipher: ContentCipher, who: Who, total: usize) {
    let f = fixture();
    let key = f.software_key(who);
    let (mut enc, header) = Encryptor::new(&[f.recipient(who)], cipher).expect("encryptor");
    let mut parser = EnvelopeParser::new();
    let parsed = parser
        .push(&header)
        .expect("header")
        .expect("header complete");
    let mut dec = parsed.decryptor(&key).expect("decryptor");
    assert_eq!(dec.authenticated(), cipher.is_authenticated());

    let mut h_in = Sha256::new();
    let mut h_out = Sha256::new();
    let mut out_total = 0usize;
    let mut block = vec![0u8; CHUNK];
    let mut produced = 0usize;
    let mut counter: u64 = 0;
    while produced < total {
        for b in block.chunks_mut(8) {
            counter = counter
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            b.copy_from_slice(&counter.to_le_bytes()[..b.len()]);
        }
        h_in.update(&block);
        let ct = enc.update(&block).expect("update");
        assert!(ct.len() <= CHUNK + 64);
        // feed the decryptor in odd-sized pieces
        for piece in ct.chunks(CHUNK / 3 + 5) {
            let pt = dec.update(piece).expect("decrypt update");
            out_total += pt.len();
            h_out.update(pt.as_unverified_bytes());
        }
        assert!(enc.buffered_capacity() <= BOUND, "encryptor buffer grew");
        assert!(
            dec.buffered_capacity() <= BOUND,
            "decryptor buffer grew: {}",
            dec.buffered_capacity()
        );
        produced += CHUNK;
        // plaintext is released progressively (minus at most one block)
        assert!(out_total + 16 >= produced, "decryptor holds back content");
    }
    let trailer = enc.finish().expect("finish");
    let pt = dec.update(&trailer).expect("trailer");
    h_out.update(pt.as_unverified_bytes());
    out_total += pt.len();
    let outcome = dec.finish().expect("verified");
    h_out.update(&outcome.final_plaintext);
    out_total += outcome.final_plaintext.len();
    assert_eq!(out_total, total);
    assert_eq!(outcome.authenticated, cipher.is_authenticated());
    assert_eq!(h_in.finalize(), h_out.finalize());
}

#[test]
fn stream_64_mib_gcm_bounded() {
    round_trip(ContentCipher::Aes256Gcm, Who::P256, TOTAL);
}

#[test]
fn stream_16_mib_cbc_bounded() {
    // smaller: debug-build AES is slow, and the bound is the same
    round_trip(ContentCipher::Aes128Cbc, Who::Rsa, TOTAL / 4);
}
