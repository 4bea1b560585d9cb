//! Sealing: the at-rest format round-trips, detects every kind of tampering and streams; the CMS
//! output for recipients opens with `openssl cms -decrypt`.

mod support;

use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use handoff::keys::MasterKey;
use handoff::seal::at_rest::{self, AtRestReader, AtRestWriter, HEADER, SEGMENT};
use handoff::seal::{
    OpenOptions, Opened, OpeningKey, Recipient, SealError, open_verified, seal_for,
};
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
        let clinic = Recipient::from_file(&certs().join("clinic-1312345679-enc.pem")).unwrap();
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
            support::openssl_decrypt(&path, "clinic-1312345679"),
            data,
            "len {len}, second recipient"
        );
    }
}

#[test]
fn cms_is_told_from_an_archive_by_its_first_bytes() {
    let rsa = Recipient::from_file(&certs().join("insurer-06130017-enc.pem")).unwrap();
    let mut sealed = Vec::new();
    seal_for(&[rsa], 3, &b"abc"[..], &mut sealed).unwrap();
    let sniff = handoff::seal::open::SNIFF_LEN;
    assert!(handoff::seal::looks_like_cms(&sealed[..sniff]));
    // openssl's EnvelopedData (AES-CBC) too: the opener decides whether it may open it.
    let dir = tempfile::tempdir().unwrap();
    let (plain, out) = (dir.path().join("p"), dir.path().join("p.p7m"));
    std::fs::write(&plain, b"abc").unwrap();
    let status = std::process::Command::new("openssl")
        .args([
            "cms",
            "-encrypt",
            "-aes-256-cbc",
            "-binary",
            "-outform",
            "DER",
            "-in",
        ])
        .arg(&plain)
        .arg("-out")
        .arg(&out)
        .arg(certs().join("insurer-06130017-enc.pem"))
        .status()
        .unwrap();
    assert!(status.success());
    assert!(handoff::seal::looks_like_cms(&std::fs::read(&out).unwrap()));
    // Not CMS: a zip, a signed message, nothing, a cut header.
    assert!(!handoff::seal::looks_like_cms(b"PK\x03\x04\x14\x00"));
    let signed_data = [
        0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
    ];
    assert!(!handoff::seal::looks_like_cms(&signed_data));
    assert!(!handoff::seal::looks_like_cms(b""));
    assert!(!handoff::seal::looks_like_cms(&sealed[..5]));
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
    let p384 = support::p384_certificate(dir.path());
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

/// `openssl cms -encrypt` of `data` for the example certificates `certs` (file names without
/// `.pem`), DER, with extra options (a cipher, `-stream`, `-keyopt …` after the recipients).
fn openssl_encrypt(data: &[u8], certs_for: &[&str], options: &[&str], after: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    let output = dir.path().join("out.der");
    std::fs::write(&input, data).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.args(["cms", "-encrypt", "-binary", "-outform", "DER", "-in"])
        .arg(&input)
        .arg("-out")
        .arg(&output)
        .args(options);
    for c in certs_for {
        cmd.arg("-recip").arg(certs().join(format!("{c}.pem")));
    }
    let out = cmd.args(after).output().unwrap();
    assert!(
        out.status.success(),
        "openssl cms -encrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(output).unwrap()
}

/// The example private key `name` (file name without `.key`), with its certificate or not.
fn opening_key(name: &str, with_cert: bool) -> OpeningKey {
    support::fix_example_key_modes();
    let cert = certs().join(format!("{name}.pem"));
    OpeningKey::from_files(
        &certs().join(format!("{name}.key")),
        with_cert.then_some(cert.as_path()),
    )
    .unwrap()
}

/// Opens `message` both ways: streaming, and verified before writing (which must then write
/// nothing on error). Both must agree.
fn open_both(
    key: &OpeningKey,
    options: OpenOptions,
    message: &[u8],
) -> Result<(Vec<u8>, Opened), SealError> {
    let mut streamed = Vec::new();
    let first = handoff::seal::open(key, options, message, &mut streamed);
    let mut verified = Vec::new();
    let second = open_verified(key, options, Cursor::new(message), &mut verified);
    match (first, second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            assert_eq!(streamed, verified);
            Ok((verified, a))
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string());
            assert!(verified.is_empty(), "verified opening wrote before failing");
            Err(b)
        }
        (a, b) => panic!("streaming {a:?} and verified {b:?} opening disagree"),
    }
}

const AUTH: OpenOptions = OpenOptions {
    allow_unauthenticated: false,
    allow_rsa_pkcs1v15: true,
};

/// As for files from strangers: authenticated content, RSA-OAEP or ECDH key transport only.
const STRICT: OpenOptions = OpenOptions {
    allow_unauthenticated: false,
    allow_rsa_pkcs1v15: false,
};

#[test]
fn handoff_opens_what_openssl_encrypts_for_the_gateway() {
    let data = pattern(300_007);
    let gateway = opening_key("gateway-enc", true);
    let gateway_alone = opening_key("gateway-enc", false);
    for (options, after) in [
        (&["-aes-256-gcm"][..], &[][..]),
        (&["-aes-128-gcm"], &[]),
        (&["-aes-256-gcm", "-stream"], &[]), // BER, indefinite lengths, content in pieces
        (&["-aes-256-gcm"], &["-keyopt", "rsa_padding_mode:oaep"]),
        (
            &["-aes-192-gcm"],
            &[
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
            ],
        ),
    ] {
        let message = openssl_encrypt(&data, &["gateway-enc"], options, after);
        for key in [&gateway, &gateway_alone] {
            let (plain, opened) = open_both(key, AUTH, &message).unwrap();
            assert!(plain == data, "{options:?} {after:?}");
            assert_eq!(opened.len, data.len() as u64);
            assert!(opened.authenticated);
        }
    }
    // An EC recipient (OpenSSL's defaults: SHA-1 X9.63 KDF, AES-128 wrap for AES-128-GCM), and
    // a message for an RSA and an EC recipient at once.
    let ec = opening_key("insurer-06270029-enc", true);
    for cipher in ["-aes-128-gcm", "-aes-256-gcm"] {
        let message = openssl_encrypt(&data, &["insurer-06270029-enc"], &[cipher], &[]);
        assert!(
            open_both(&ec, AUTH, &message).unwrap().0 == data,
            "{cipher}"
        );
    }
    let both = openssl_encrypt(
        &data,
        &["gateway-enc", "insurer-06270029-enc"],
        &["-aes-256-gcm"],
        &[],
    );
    assert!(open_both(&ec, AUTH, &both).unwrap().0 == data);
    assert!(open_both(&gateway, AUTH, &both).unwrap().0 == data);
}

#[test]
fn enveloped_data_opens_only_when_unauthenticated_content_is_allowed() {
    let data = pattern(70_001);
    let gateway = opening_key("gateway-enc", true);
    let message = openssl_encrypt(&data, &["gateway-enc"], &["-aes-256-cbc"], &[]);
    assert!(matches!(
        open_both(&gateway, AUTH, &message),
        Err(SealError::Unsupported(_))
    ));
    let allow = OpenOptions {
        allow_unauthenticated: true,
        ..AUTH
    };
    let (plain, opened) = open_both(&gateway, allow, &message).unwrap();
    assert!(plain == data);
    assert!(!opened.authenticated);
    // OpenSSL's default cipher (triple DES) is refused with a reason.
    let legacy = openssl_encrypt(&data, &["gateway-enc"], &[], &[]);
    assert!(matches!(
        open_both(&gateway, allow, &legacy),
        Err(SealError::Unsupported(_))
    ));
}

#[test]
fn what_handoff_seals_handoff_opens() {
    let rsa = opening_key("insurer-06130017-enc", true);
    let ec = opening_key("insurer-06270029-enc", true);
    let ec_alone = opening_key("insurer-06270029-enc", false);
    for len in [0usize, 1, 16, 100_000, 1 << 20] {
        let data = pattern(len);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.p7m");
        seal_file(&path, &["insurer-06130017", "insurer-06270029"], &data);
        let message = std::fs::read(&path).unwrap();
        for key in [&rsa, &ec, &ec_alone] {
            assert!(
                open_both(key, AUTH, &message).unwrap().0 == data,
                "len {len}"
            );
        }
    }
}

#[test]
fn tampering_truncation_and_wrong_keys_are_typed_errors() {
    let data = pattern(50_000);
    let rsa = opening_key("insurer-06130017-enc", true);
    let ec = opening_key("insurer-06270029-enc", true);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.p7m");
    seal_file(&path, &["insurer-06130017", "insurer-06270029"], &data);
    let good = std::fs::read(&path).unwrap();
    // A byte of the content, and of the tag at the very end.
    for at in [good.len() - 30_000, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        for key in [&rsa, &ec] {
            assert!(
                matches!(open_both(key, AUTH, &bad), Err(SealError::Tampered)),
                "byte {at}"
            );
        }
    }
    // Cut anywhere: truncated (or, cut inside the tag, a MAC that no longer parses).
    for cut in [10, 500, good.len() - 20_000, good.len() - 5] {
        let r = open_both(&rsa, AUTH, &good[..cut]);
        assert!(
            matches!(r, Err(SealError::Truncated | SealError::Malformed(_))),
            "cut at {cut}: {r:?}"
        );
    }
    // Data after the message.
    let mut longer = good.clone();
    longer.push(0);
    assert!(matches!(
        open_both(&rsa, AUTH, &longer),
        Err(SealError::Malformed(_))
    ));
    // Keys the file was not sealed for, with and without their certificate.
    for key in [
        opening_key("gateway-enc", true),
        opening_key("gateway-enc", false),
        opening_key("clinic-1312345679-enc", false),
    ] {
        assert!(matches!(
            open_both(&key, AUTH, &good),
            Err(SealError::WrongKey)
        ));
    }
    // A certificate that is not the key's.
    assert!(matches!(
        OpeningKey::from_files(
            &certs().join("gateway-enc.key"),
            Some(&certs().join("insurer-06130017-enc.pem"))
        ),
        Err(SealError::CertificateMismatch)
    ));
    // Not CMS at all, and an at-rest file.
    for junk in [&b""[..], b"not a message", &sealed(&data, "F1")[..]] {
        assert!(open_both(&rsa, AUTH, junk).is_err());
    }
}

/// RSA PKCS#1 v1.5 key transport is refused where the caller forbids it, before anything is
/// decrypted, while OAEP and ECDH open; where it is allowed, a wrapped key that does not unwrap
/// and a tag that does not verify are one and the same refusal, with or without the certificate
/// that names the recipient (no padding oracle).
#[test]
fn rsa_pkcs1v15_is_refused_when_off_and_its_padding_is_no_oracle() {
    let data = pattern(10_000);
    let v15 = openssl_encrypt(&data, &["gateway-enc"], &["-aes-256-gcm"], &[]);
    let oaep = openssl_encrypt(
        &data,
        &["gateway-enc"],
        &["-aes-256-gcm"],
        &["-keyopt", "rsa_padding_mode:oaep"],
    );
    let keys = [
        opening_key("gateway-enc", true),
        opening_key("gateway-enc", false),
    ];
    for key in &keys {
        let refused = open_both(key, STRICT, &v15);
        assert!(
            matches!(&refused, Err(SealError::Unsupported(m)) if m.contains("PKCS#1 v1.5")),
            "{refused:?}"
        );
        assert!(open_both(key, STRICT, &oaep).unwrap().0 == data);
    }
    let ec = openssl_encrypt(&data, &["insurer-06270029-enc"], &["-aes-256-gcm"], &[]);
    assert!(
        open_both(&opening_key("insurer-06270029-enc", true), STRICT, &ec)
            .unwrap()
            .0
            == data
    );

    // The 256-byte RSA-2048 wrapped key: an OCTET STRING of length 0x100.
    let wrapped = v15
        .windows(4)
        .position(|w| w == [0x04, 0x82, 0x01, 0x00])
        .expect("the wrapped key")
        + 4;
    let mut bad_key = v15.clone();
    bad_key[wrapped + 100] ^= 0x01;
    let mut bad_tag = v15.clone();
    let n = bad_tag.len();
    bad_tag[n - 1] ^= 0x01;
    for key in &keys {
        assert!(open_both(key, AUTH, &v15).unwrap().0 == data);
        let padding = open_both(key, AUTH, &bad_key).unwrap_err();
        let tag = open_both(key, AUTH, &bad_tag).unwrap_err();
        assert!(matches!(padding, SealError::Tampered), "{padding:?}");
        assert!(matches!(tag, SealError::Tampered), "{tag:?}");
        assert_eq!(padding.to_string(), tag.to_string());
    }
}

#[test]
fn open_command_checks_files_first_and_flags_pipes() {
    support::fix_example_key_modes();
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(100_000);
    let path = dir.path().join("in.p7m");
    std::fs::write(
        &path,
        openssl_encrypt(&data, &["gateway-enc"], &["-aes-256-gcm"], &[]),
    )
    .unwrap();
    let open_cmd = || {
        let mut c = Command::new(support::handoff_bin());
        c.args(["open", "--key"])
            .arg(certs().join("gateway-enc.key"))
            .arg("--cert")
            .arg(certs().join("gateway-enc.pem"));
        c
    };
    let out = open_cmd()
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout == data);

    let mut bad = std::fs::read(&path).unwrap();
    let n = bad.len();
    bad[n - 1] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let out = open_cmd()
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "a file is checked before writing");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was written"));

    // From a pipe the plaintext streams and the failure says to discard it.
    let mut child = open_cmd()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&bad));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DISCARD"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn arbitrary_bytes_never_panic_the_cms_parser(bytes in proptest::collection::vec(any::<u8>(), 0..4000)) {
        let key = opening_key("gateway-enc", false);
        let allow = OpenOptions { allow_unauthenticated: true, ..AUTH };
        prop_assert!(open_both(&key, allow, &bytes).is_err());
    }

    #[test]
    fn changed_bytes_of_a_real_message_never_panic_or_open_to_other_bytes(
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        use std::sync::OnceLock;
        static MESSAGE: OnceLock<Vec<u8>> = OnceLock::new();
        let good = MESSAGE.get_or_init(|| {
            openssl_encrypt(&pattern(3000), &["gateway-enc", "insurer-06270029-enc"], &["-aes-256-gcm", "-stream"], &[])
        });
        let mut bad = good.clone();
        for (at, value) in &changes {
            let i = at.index(bad.len());
            bad[i] = *value;
        }
        if truncate {
            bad.truncate(cut.index(bad.len()));
        }
        for key in [opening_key("gateway-enc", false), opening_key("insurer-06270029-enc", true)] {
            // Bytes outside what the tag covers (another recipient's info, say) may change
            // harmlessly; what opens is always the original.
            if let Ok((plain, _)) = open_both(&key, AUTH, &bad) {
                prop_assert!(plain == pattern(3000));
            }
        }
    }
}

/// The at-rest format as documented, opened with another AES-GCM implementation (the aes-gcm
/// crate) and the key derived by hand: the format is plain GCM, not one library's output.
#[test]
fn the_at_rest_format_opens_with_an_independent_implementation() {
    use aes_gcm::aead::AeadInOut;
    use aes_gcm::{Aes256Gcm, KeyInit};
    let plain = pattern(SEGMENT * 2 + 1000);
    let file = sealed(&plain, "F-42");
    let header = &file[..HEADER];
    let mut info = b"handoff at-rest v1".to_vec();
    info.extend_from_slice(b"F-42");
    let mut key = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(&header[20..36]), &[1u8; 32])
        .expand(&info, &mut key)
        .unwrap();
    let gcm = Aes256Gcm::new_from_slice(&key).unwrap();
    let segments: Vec<&[u8]> = file[HEADER..].chunks(SEG_CT).collect();
    let mut opened = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let mut nonce = [0u8; 12];
        nonce[..7].copy_from_slice(&header[36..HEADER]);
        nonce[7..11].copy_from_slice(&(i as u32).to_be_bytes());
        nonce[11] = u8::from(i + 1 == segments.len());
        let (ct, tag) = seg.split_at(seg.len() - 16);
        let mut buf = ct.to_vec();
        let tag: [u8; 16] = tag.try_into().unwrap();
        gcm.decrypt_inout_detached(
            &nonce.into(),
            header,
            buf.as_mut_slice().into(),
            &tag.into(),
        )
        .unwrap_or_else(|_| panic!("segment {i} does not open"));
        opened.extend_from_slice(&buf);
    }
    assert_eq!(opened, plain);
}
