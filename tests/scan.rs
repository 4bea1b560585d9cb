//! The clamd client against a real clamd (scripts/clamd-test-instance): verdicts, and the
//! size-limit pitfalls, which must never come back as clean.

mod support;

use handoff::config::ClamdAddress;
use handoff::scan::{Clamd, Verdict};
use support::ClamdInstance;

fn client(clamd: &ClamdInstance) -> Clamd {
    Clamd::new(ClamdAddress::Unix(clamd.socket()))
}

#[test]
fn clean_infected_and_embedded_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let clamd = ClamdInstance::start(dir.path());
    let c = client(&clamd);
    c.ping().expect("ping");
    let clean: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(c.scan(&clean[..]).unwrap(), Verdict::Clean);
    match c.scan(&support::eicar()[..]).unwrap() {
        Verdict::Found(name) => {
            assert!(name.starts_with("Handoff-Test-EICAR") && name.ends_with(".UNOFFICIAL"))
        }
        Verdict::Clean => panic!("EICAR reported clean"),
    }
    // Embedded in a larger file: only the body signature catches it.
    let mut embedded = vec![b'z'; 100_000];
    embedded.extend_from_slice(&support::eicar());
    embedded.extend_from_slice(&[b'q'; 100_000]);
    match c.scan(&embedded[..]).unwrap() {
        Verdict::Found(name) => assert!(name.starts_with("Handoff-Test-EICAR"), "{name}"),
        Verdict::Clean => panic!("embedded EICAR reported clean"),
    }
}

#[test]
fn over_stream_max_length_is_an_error_not_clean() {
    let dir = tempfile::tempdir().unwrap();
    let clamd = ClamdInstance::start_with_env(dir.path(), &[("CLAMD_STREAM_MAX_LENGTH", "1M")]);
    let big = vec![b'a'; 3 << 20];
    let r = client(&clamd).scan(&big[..]);
    assert!(r.is_err(), "over StreamMaxLength gave {r:?}");
}

#[test]
fn over_max_file_size_is_a_finding_not_clean() {
    let dir = tempfile::tempdir().unwrap();
    let clamd = ClamdInstance::start_with_env(
        dir.path(),
        &[("CLAMD_MAX_FILE_SIZE", "1M"), ("CLAMD_MAX_SCAN_SIZE", "1M")],
    );
    let big = vec![b'a'; 2 << 20];
    match client(&clamd).scan(&big[..]) {
        Ok(Verdict::Found(name)) => {
            assert!(name.starts_with("Heuristics.Limits.Exceeded"), "{name}")
        }
        other => panic!("over MaxFileSize gave {other:?}"),
    }
}

#[test]
fn unreachable_clamd_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = Clamd::new(ClamdAddress::Unix(dir.path().join("absent.sock")));
    assert!(c.ping().is_err());
    assert!(c.scan(&b"anything"[..]).is_err());
}
