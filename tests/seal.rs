//! Sealing: the at-rest format round-trips, detects every kind of tampering and streams; the CMS
//! output for recipients opens with `openssl cms -decrypt`.

mod support;

use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use handoff::keys::MasterKey;
use handoff::seal::at_rest::{self, AtRestReader, AtRestWriter, HEADER, SEGMENT};
use handoff::seal::{Recipient, SealError, seal_for};
use proptest::prelude::*;

fn master(b: u8) -> MasterKey {
    MasterKey::from_bytes([b; 32])
}

fn sealed(data: &[u8], file_id: &str) -> Vec<u8> {
    let mut out = Vec::new();
    at_rest::seal(&master(1), file_id, data, &mut out).unwrap();
    out
}

fn open(data: Vec<u8>, file_id: &str, key: &MasterKey) -> Result<Vec<u8>, SealError> {
    let mut out = Vec::new();
    at_rest::open(key, file_id, Cursor::new(data), &mut out)?;
    Ok(out)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

const SEG_CT: usize = SEGMENT + 16;

#[test]
fn round_trips_at_every_boundary() {
    for len in [
        0,
        1,
        SEGMENT - 1,
        SEGMENT,
        SEGMENT + 1,
        2 * SEGMENT - 1,
        2 * SEGMENT,
        2 * SEGMENT + 1,
        3 * SEGMENT + 7,
    ] {
        let data = pattern(len);
        let s = sealed(&data, "F1");
        let expected_segments = if len == 0 { 1 } else { len.div_ceil(SEGMENT) };
        assert_eq!(s.len(), HEADER + len + 16 * expected_segments, "len {len}");
        assert_eq!(open(s, "F1", &master(1)).unwrap(), data, "len {len}");
    }
}

#[test]
fn hundred_mebibytes_stream_through_without_being_held() {
    // A reader that produces 100 MiB, and a writer that only counts and keeps the tail.
    struct Gen(u64);
    impl Read for Gen {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = (self.0 as usize).min(buf.len());
            buf[..n]
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = (i % 253) as u8);
            self.0 -= n as u64;
            Ok(n)
        }
    }
    let path = tempfile::NamedTempFile::new().unwrap();
    let file = std::fs::File::create(path.path()).unwrap();
    let n = at_rest::seal(
        &master(1),
        "BIG",
        Gen(100 << 20),
        std::io::BufWriter::new(file),
    )
    .unwrap();
    assert_eq!(n, 100 << 20);
    let mut reader =
        AtRestReader::new(&master(1), "BIG", std::fs::File::open(path.path()).unwrap()).unwrap();
    assert_eq!(reader.len(), 100 << 20);
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = reader.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        total += k as u64;
    }
    assert_eq!(total, 100 << 20);
}

#[test]
fn tampering_truncation_swaps_and_wrong_keys_are_detected() {
    let data = pattern(3 * SEGMENT + 100);
    let good = sealed(&data, "F1");
    // Any flipped byte in a segment, or in the header's salt/prefix.
    for at in [
        HEADER + 5,
        HEADER + SEG_CT + 7,
        good.len() - 1,
        HEADER - 1,
        25,
    ] {
        let mut bad = good.clone();
        bad[at] ^= 1;
        assert!(
            matches!(open(bad, "F1", &master(1)), Err(SealError::Tampered)),
            "byte {at}"
        );
    }
    // Cut at a segment boundary: detected as truncation.
    for segments in [1, 2, 3] {
        let cut = good[..HEADER + segments * SEG_CT].to_vec();
        assert!(
            matches!(open(cut, "F1", &master(1)), Err(SealError::Truncated)),
            "{segments} segments"
        );
    }
    // Cut inside a segment, and below the header.
    assert!(open(good[..good.len() - 5].to_vec(), "F1", &master(1)).is_err());
    assert!(matches!(
        open(good[..10].to_vec(), "F1", &master(1)),
        Err(SealError::Truncated)
    ));
    // Two middle segments swapped.
    let mut swapped = good.clone();
    let (a, b) = (HEADER, HEADER + SEG_CT);
    let first = good[a..a + SEG_CT].to_vec();
    swapped.copy_within(b..b + SEG_CT, a);
    swapped[b..b + SEG_CT].copy_from_slice(&first);
    assert!(matches!(
        open(swapped, "F1", &master(1)),
        Err(SealError::Tampered)
    ));
    // A segment from another file with the same key and the same length.
    let other = sealed(&pattern(3 * SEGMENT + 100), "F2");
    let mut mixed = good.clone();
    mixed[HEADER..HEADER + SEG_CT].copy_from_slice(&other[HEADER..HEADER + SEG_CT]);
    assert!(matches!(
        open(mixed, "F1", &master(1)),
        Err(SealError::Tampered)
    ));
    // The right bytes opened as another file id, or with another master key.
    assert!(matches!(
        open(good.clone(), "F2", &master(1)),
        Err(SealError::Tampered)
    ));
    assert!(matches!(
        open(good, "F1", &master(2)),
        Err(SealError::WrongKey)
    ));
}

#[test]
fn reader_seeks_to_any_position() {
    let data = pattern(2 * SEGMENT + 500);
    let mut r = AtRestReader::new(&master(1), "F1", Cursor::new(sealed(&data, "F1"))).unwrap();
    for pos in [
        0u64,
        1,
        SEGMENT as u64 - 1,
        SEGMENT as u64,
        2 * SEGMENT as u64 + 499,
    ] {
        r.seek(SeekFrom::Start(pos)).unwrap();
        let mut b = [0u8; 1];
        r.read_exact(&mut b).unwrap();
        assert_eq!(b[0], data[pos as usize], "pos {pos}");
    }
    r.seek(SeekFrom::End(-3)).unwrap();
    let mut tail = Vec::new();
    r.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, data[data.len() - 3..]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_data_round_trips_and_any_flip_is_caught(data in proptest::collection::vec(any::<u8>(), 0..(3 * SEGMENT)), flip in any::<prop::sample::Index>(), chunk in 1usize..100_000) {
        let mut out = Vec::new();
        let mut w = AtRestWriter::new(&master(3), "P", &mut out).unwrap();
        for piece in data.chunks(chunk) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap();
        prop_assert_eq!(open(out.clone(), "P", &master(3)).unwrap(), data);
        let i = flip.index(out.len());
        if i >= 12 {
            out[i] ^= 0x80;
            prop_assert!(open(out, "P", &master(3)).is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_reader(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = open(bytes, "X", &master(1));
    }
}

fn certs() -> std::path::PathBuf {
    support::repo_root().join("certs-example")
}

#[test]
fn openssl_opens_what_handoff_seals_for_one_and_for_two_recipients() {
    support::fix_example_key_modes();
    let dir = tempfile::tempdir().unwrap();
    for len in [0usize, 1, 15, 16, 17, 1 << 20] {
        let data = pattern(len);
        let rsa = Recipient::from_file(&certs().join("insurer-06130017-enc.pem")).unwrap();
        let clinic = Recipient::from_file(&certs().join("clinic-1312345676-enc.pem")).unwrap();
        let path = dir.path().join(format!("f{len}.p7m"));
        let file = std::fs::File::create(&path).unwrap();
        let info = seal_for(&[rsa, clinic], len as u64, &data[..], file).unwrap();
        assert_eq!(info.len, std::fs::metadata(&path).unwrap().len());
        assert_eq!(info.sha256, support::sha256_file(&path));
        assert_eq!(
            support::openssl_decrypt(&path, "insurer-06130017"),
            data,
            "len {len}"
        );
        assert_eq!(
            support::openssl_decrypt(&path, "clinic-1312345676"),
            data,
            "len {len}, second recipient"
        );
    }
}

#[test]
fn wrong_length_and_unsupported_keys_are_clear_errors() {
    let rsa = Recipient::from_file(&certs().join("insurer-06130017-enc.pem")).unwrap();
    let mut sink = Vec::new();
    assert!(matches!(
        seal_for(std::slice::from_ref(&rsa), 10, &b"short"[..], &mut sink),
        Err(SealError::Truncated)
    ));
    assert!(matches!(
        seal_for(&[rsa], 2, &b"longer"[..], &mut Vec::new()),
        Err(SealError::Malformed(_))
    ));
    // A certificate whose key is for signing on another curve: P-384 from an ad hoc certificate.
    let dir = tempfile::tempdir().unwrap();
    let p384 = dir.path().join("p384.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
        ])
        .args(["-nodes", "-subj", "/CN=p384", "-days", "1", "-keyout"])
        .arg(dir.path().join("p384.key"))
        .arg("-out")
        .arg(&p384)
        .output()
        .unwrap();
    assert!(made.status.success());
    assert!(matches!(
        Recipient::from_file(&p384),
        Err(SealError::Unsupported(_))
    ));
    assert!(matches!(
        Recipient::from_certificate(b"not a certificate"),
        Err(SealError::Malformed(_))
    ));
}

#[test]
fn seal_command_output_opens_with_openssl() {
    support::fix_example_key_modes();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    std::fs::write(&input, pattern(70_000)).unwrap();
    let out_path = dir.path().join("out.p7m");
    let status = Command::new(support::handoff_bin())
        .args(["seal", "--to"])
        .arg(certs().join("insurer-06130017-enc.pem"))
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        support::openssl_decrypt(&out_path, "insurer-06130017"),
        pattern(70_000)
    );
}

/// Seals `data` for the example encryption certificates of `counterparts` into `path`.
fn seal_file(path: &Path, counterparts: &[&str], data: &[u8]) {
    let recipients: Vec<Recipient> = counterparts
        .iter()
        .map(|c| Recipient::from_file(&certs().join(format!("{c}-enc.pem"))).unwrap())
        .collect();
    let file = std::fs::File::create(path).unwrap();
    let info = seal_for(&recipients, data.len() as u64, data, file).unwrap();
    assert_eq!(info.len, std::fs::metadata(path).unwrap().len());
}

#[test]
fn openssl_opens_what_handoff_seals_for_an_ec_p256_recipient() {
    support::fix_example_key_modes();
    let dir = tempfile::tempdir().unwrap();
    for len in [0usize, 1, 17, 1000, 3 << 20] {
        let data = pattern(len);
        let path = dir.path().join(format!("ec{len}.p7m"));
        seal_file(&path, &["insurer-06270029"], &data);
        assert!(
            support::openssl_decrypt(&path, "insurer-06270029") == data,
            "len {len}"
        );
    }
}

#[test]
fn a_file_sealed_for_an_rsa_and_an_ec_recipient_opens_for_each() {
    support::fix_example_key_modes();
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(200_003);
    let path = dir.path().join("both.p7m");
    seal_file(&path, &["insurer-06130017", "insurer-06270029"], &data);
    assert!(support::openssl_decrypt(&path, "insurer-06130017") == data);
    assert!(support::openssl_decrypt(&path, "insurer-06270029") == data);
}
