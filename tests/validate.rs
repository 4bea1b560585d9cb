//! The schema check against generated archives: one archive per rule, each breaking only that
//! rule; a large valid archive; bombs and hostile XML refused in bounded memory; arbitrary
//! bytes never panic; and the official schema set when one is provided.

mod support;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

use handoff::config::{ArchiveLimits, Config};
use handoff::validate::archive::Limits;
use handoff::validate::testdata::{self, Spec, Violation};
use handoff::validate::{self, Checked, Expect};
use proptest::prelude::*;
use support::{TestConfig, handoff_bin, repo_root};

const CLINIC: &str = "clinic-1312345679";

fn config() -> (TestConfig, Config) {
    let tc = TestConfig::new();
    let loaded = handoff::config::load(&tc.path).expect("example config loads");
    (tc, loaded.config)
}

fn yesterday(config: &Config) -> time::Date {
    validate::today(config.gateway.utc_offset())
        .previous_day()
        .expect("a date")
}

fn check(config: &Config, bytes: Vec<u8>, limits: Limits) -> Checked {
    check_with_schemas(config, bytes, limits, &config.gateway.schema_dir)
}

fn check_with_schemas(config: &Config, bytes: Vec<u8>, limits: Limits, schemas: &Path) -> Checked {
    let sender = config.counterpart(CLINIC).expect("example clinic");
    let expect = Expect {
        sender,
        config,
        today: validate::today(config.gateway.utc_offset()),
    };
    validate::check_archive(Cursor::new(bytes), limits, schemas, &expect)
        .expect("the schema set loads")
}

/// Small limits, so that the size rules are broken by small archives.
fn small_limits() -> Limits {
    Limits {
        max_entries: 500,
        max_entry_size: 2 << 20,
        max_total_size: 8 << 20,
        max_ratio: 100,
    }
}

#[test]
fn each_rule_is_broken_alone_and_named_with_file_and_line() {
    let (_tc, config) = config();
    let spec = Spec::example(4, yesterday(&config));
    let mut seen = std::collections::BTreeSet::new();
    for v in Violation::ALL {
        let (bytes, expected) =
            testdata::write_violation(&spec, v, &small_limits(), Vec::new()).expect("generate");
        let findings = match check(&config, bytes, small_limits()) {
            Checked::Invalid(f) => f,
            Checked::Valid(_) => panic!("{v:?}: accepted"),
        };
        assert!(
            findings.iter().all(|f| f.rule == v.rule()),
            "{v:?}: expected only {} but got {findings:#?}",
            v.rule()
        );
        let first = &findings[0];
        assert_eq!(first.file, expected.file, "{v:?}: file of {first:?}");
        assert_eq!(first.line, expected.line, "{v:?}: line of {first:?}");
        assert!(!first.message.is_empty());
        seen.insert(v.rule());
    }
    println!("{} rules each refused alone: {seen:?}", seen.len());
}

#[test]
fn a_valid_archive_of_1000_persons_passes_and_yields_its_route() {
    let (_tc, config) = config();
    let spec = Spec::example(1000, yesterday(&config));
    let bytes = testdata::write_valid(&spec, Vec::new()).expect("generate");
    let size = bytes.len();
    let started = std::time::Instant::now();
    match check(&config, bytes, Limits::from(&ArchiveLimits::default())) {
        Checked::Valid(h) => {
            assert_eq!(h.sender_number.as_deref(), Some("1312345679"));
            assert_eq!(h.receiver_number.as_deref(), Some("06130017"));
            assert_eq!(h.record_count, Some(1000));
            assert_eq!(h.service_event.as_deref(), Some("1"));
        }
        Checked::Invalid(f) => panic!("refused: {f:#?}"),
    }
    println!(
        "1000 persons, {size} bytes, checked in {:?}",
        started.elapsed()
    );
}

#[test]
fn guidance_archives_and_settlement_files_pass() {
    let (_tc, config) = config();
    let mut spec = Spec::example(3, yesterday(&config));
    spec.kind = handoff::validate::format::DocKind::Guidance;
    spec.claims = true;
    let bytes = testdata::write_valid(&spec, Vec::new()).expect("generate");
    let got = check(&config, bytes, Limits::from(&ArchiveLimits::default()));
    assert!(matches!(got, Checked::Valid(_)), "{got:?}");
}

#[test]
fn line_numbers_past_65535_are_exact() {
    let (_tc, config) = config();
    let mut spec = Spec::example(1, yesterday(&config));
    spec.padding_lines = 70_000;
    let limits = Limits::from(&ArchiveLimits::default());
    let (bytes, expected) =
        testdata::write_violation(&spec, Violation::XsdInvalid, &limits, Vec::new())
            .expect("generate");
    let line = expected.line.expect("a line");
    assert!(line > 65_535, "the test must reach past 65535, got {line}");
    match check(&config, bytes, limits) {
        Checked::Invalid(f) => {
            assert_eq!(f[0].rule, "xsd.invalid");
            assert_eq!(f[0].line, Some(line), "{:?}", f[0]);
        }
        Checked::Valid(_) => panic!("accepted"),
    }
}

/// Runs `handoff validate` on `archive` in a child and returns its output and the child's
/// peak resident memory in KiB.
fn validate_in_child(tc: &TestConfig, archive: &Path) -> (String, i64) {
    let out = Command::new(handoff_bin())
        .args(["validate", "--config"])
        .arg(&tc.path)
        .args(["--as", CLINIC])
        .arg(archive)
        .output()
        .expect("run handoff validate");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // SAFETY: getrusage writes into the struct it is given.
    let peak = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss
    };
    (String::from_utf8_lossy(&out.stdout).into_owned(), peak)
}

#[test]
fn bombs_and_hostile_xml_are_refused_in_bounded_memory() {
    let (tc, config) = config();
    let spec = Spec::example(3, yesterday(&config));
    let limits = Limits::from(&ArchiveLimits::default());
    let cases = [
        // 10 GiB of zeros in about 10 MiB, declared honestly, and the same declared as 4 KiB.
        (Violation::EntryTooLarge, "zip.entry-too-large"),
        (Violation::LyingSize, "zip.corrupt"),
        (Violation::Ratio, "zip.ratio"),
        (Violation::Traversal, "zip.traversal"),
        (Violation::Dtd, "xml.dtd"),
        (Violation::BillionLaughs, "xml.dtd"),
    ];
    for (v, rule) in cases {
        let path: PathBuf = tc.dir.path().join(format!("{}.zip", v.slug()));
        let file = std::fs::File::create(&path).expect("create");
        testdata::write_violation(&spec, v, &limits, file).expect("generate");
        let started = std::time::Instant::now();
        let (stdout, peak_kib) = validate_in_child(&tc, &path);
        let archive_size = std::fs::metadata(&path).expect("archive").len();
        println!(
            "{v:?}: {archive_size} byte archive refused in {:?}, peak RSS of any child so far \
             {peak_kib} KiB: {}",
            started.elapsed(),
            stdout.lines().next().unwrap_or("")
        );
        assert!(stdout.starts_with(rule), "{v:?}: {stdout}");
        // Unpacked, the bombs are 10 GiB; refusing them must not come near that.
        assert!(peak_kib < 256 * 1024, "{v:?}: peak RSS {peak_kib} KiB");
    }
}

#[test]
fn the_cli_generates_and_checks_archives() {
    let (tc, _config) = config();
    let path = tc.dir.path().join("ok.zip");
    let status = Command::new(handoff_bin())
        .args(["testdata", "--persons", "5", "--out"])
        .arg(&path)
        .status()
        .expect("run testdata");
    assert!(status.success());
    let out = Command::new(handoff_bin())
        .args(["validate", "--config"])
        .arg(&tc.path)
        .args(["--as", CLINIC])
        .arg(&path)
        .output()
        .expect("run validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("receiver 06130017") && stdout.contains("5 records"),
        "{stdout}"
    );
    // The same archive is refused for an account that did not send it.
    let out = Command::new(handoff_bin())
        .args(["validate", "--config"])
        .arg(&tc.path)
        .args(["--as", "clinic-2717654327"])
        .arg(&path)
        .output()
        .expect("run validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.starts_with("index.sender-mismatch index.xml:5:"),
        "{stdout}"
    );
}

#[test]
fn an_unusable_schema_set_is_an_error_not_a_verdict() {
    let (tc, config) = config();
    let empty = tc.dir.path().join("no-schemas");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let sender = config.counterpart(CLINIC).expect("clinic");
    let expect = Expect {
        sender,
        config: &config,
        today: validate::today(config.gateway.utc_offset()),
    };
    let bytes =
        testdata::write_valid(&Spec::example(1, yesterday(&config)), Vec::new()).expect("generate");
    let got = validate::check_archive(
        Cursor::new(bytes),
        Limits::from(&ArchiveLimits::default()),
        &empty,
        &expect,
    );
    let err = got.expect_err("no schemas, no verdict");
    assert!(err.to_string().contains("index.xsd"), "{err}");
}

/// An official schema set and official samples, if the project is given them, must work
/// with the validator. Without them this test says so and checks nothing.
#[test]
fn official_schemas_and_samples_under_shared_when_present() {
    let shared = repo_root().join("../shared");
    let schemas = shared.join("schemas");
    let samples = shared.join("samples");
    if !schemas.is_dir() && !samples.is_dir() {
        println!(
            "NOT CHECKED: no official schema set or samples under shared/schemas or \
             shared/samples; only the project's own schemas were tested"
        );
        return;
    }
    let (_tc, config) = config();
    let schema_dir = if schemas.is_dir() {
        let set = handoff::validate::xml::SchemaSet::load(&schemas);
        assert!(
            set.is_ok(),
            "the official schema set does not load: {:?}",
            set.err()
        );
        println!("official schema set at {} loads", schemas.display());
        schemas
    } else {
        config.gateway.schema_dir.clone()
    };
    let mut checked = 0;
    for entry in std::fs::read_dir(&samples).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("zip") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("sample");
        let got = check_with_schemas(
            &config,
            bytes,
            Limits::from(&ArchiveLimits::default()),
            &schema_dir,
        );
        println!("{}: {got:?}", path.display());
        checked += 1;
    }
    println!("{checked} official samples checked");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let (_tc, config) = CONFIG.with(|c| c.clone());
        let _ = check(&config, bytes, small_limits());
    }

    #[test]
    fn damaged_valid_archives_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let (_tc, config) = CONFIG.with(|c| c.clone());
        let mut bytes = VALID.with(|v| v.clone());
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= value | 1;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let _ = check(&config, bytes, small_limits());
    }
}

thread_local! {
    static CONFIG: (std::rc::Rc<TestConfig>, Config) = {
        let (tc, config) = config();
        (std::rc::Rc::new(tc), config)
    };
    static VALID: Vec<u8> = CONFIG.with(|(_, config)| {
        testdata::write_valid(&Spec::example(3, yesterday(config)), Vec::new()).expect("generate")
    });
}
