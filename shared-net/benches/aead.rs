//! ChaCha20-Poly1305 backends on netcode-sized packets: the RustCrypto crate renetcode uses
//! (`chacha20poly1305` 0.10, runtime-detected SIMD) against `ring` 0.17 (assembly), sealing
//! and opening one packet at a time with a key set up per packet, as the netcode server does.
//!
//!   cargo bench -p shared-net --bench aead -- [PACKETS]   (default 200,000 per size)
//!
//! Prints nanoseconds per packet (seal + open) for each size and backend, and the ratio.
//! Exits non-zero if a backend fails to open what it sealed or the two disagree on a tag.

use std::hint::black_box;
use std::time::Instant;

use chacha20poly1305::{AeadInPlace, ChaCha20Poly1305, Key, KeyInit, Nonce};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce as RingNonce, UnboundKey};

const KEY: [u8; 32] = [7; 32];
const AAD: [u8; 22] = [1; 22];

fn nonce(seq: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_le_bytes());
    n
}

fn rustcrypto(buf: &mut [u8], seq: u64) -> [u8; 16] {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&KEY));
    let n = nonce(seq);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&n), &AAD, buf)
        .expect("seal");
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&KEY));
    cipher
        .decrypt_in_place_detached(Nonce::from_slice(&n), &AAD, buf, &tag)
        .expect("rustcrypto opens what it sealed");
    tag.into()
}

fn ring(buf: &mut [u8], seq: u64) -> [u8; 16] {
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &KEY).expect("key"));
    let tag = key
        .seal_in_place_separate_tag(
            RingNonce::assume_unique_for_key(nonce(seq)),
            Aad::from(&AAD),
            buf,
        )
        .expect("seal");
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &KEY).expect("key"));
    key.open_in_place_separate_tag(
        RingNonce::assume_unique_for_key(nonce(seq)),
        Aad::from(&AAD),
        tag,
        buf,
        0..,
    )
    .expect("ring opens what it sealed");
    let mut out = [0u8; 16];
    out.copy_from_slice(tag.as_ref());
    out
}

fn time(packets: u64, size: usize, f: fn(&mut [u8], u64) -> [u8; 16]) -> f64 {
    let mut buf = vec![0x5Au8; size];
    let start = Instant::now();
    for seq in 0..packets {
        black_box(f(black_box(&mut buf), seq));
    }
    start.elapsed().as_nanos() as f64 / packets as f64
}

fn main() {
    let packets: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(|a| a.parse().expect("PACKETS is a number"))
        .unwrap_or(200_000);
    // Same key, nonce, data: the same tag, or one of them is not ChaCha20-Poly1305.
    for size in [0usize, 1, 15, 16, 17, 64, 1300] {
        let mut a = vec![3u8; size];
        let mut b = vec![3u8; size];
        assert_eq!(
            rustcrypto(&mut a, 9),
            ring(&mut b, 9),
            "tags differ at {size} bytes"
        );
    }
    println!("ChaCha20-Poly1305, seal + open per packet, {packets} packets per size");
    println!("| payload bytes | chacha20poly1305 0.10 | ring 0.17 | ring / rustcrypto |");
    println!("|---|---|---|---|");
    for size in [8usize, 40, 120, 400, 1200] {
        // Alternate and keep each side's best of three, against the VM's drift.
        let mut rc = f64::MAX;
        let mut rg = f64::MAX;
        for _ in 0..3 {
            rc = rc.min(time(packets, size, rustcrypto));
            rg = rg.min(time(packets, size, ring));
        }
        println!("| {size} | {rc:.0} ns | {rg:.0} ns | {:.2} |", rg / rc);
    }
}
