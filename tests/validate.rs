//! The schema check against generated archives in the official MHLW V08 format (validated
//! with the official schema sets beside the repository): one archive per rule, each breaking
//! only that rule and named with file and line in both languages; editions and severities as
//! configured; a large valid archive; bombs and hostile XML refused in bounded memory;
//! arbitrary and damaged bytes never panic.

mod support;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

use handoff::config::{ArchiveLimits, Config, Lang, RuleSeverity};
use handoff::events::Finding;
use handoff::validate::archive::Limits;
use handoff::validate::finding::Rule;
use handoff::validate::format::DocKind;
use handoff::validate::testdata::{self, Edition, Editions, Spec, Violation};
use handoff::validate::{self, Checked, Expect};
use proptest::prelude::*;
use support::{TestConfig, handoff_bin};

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

/// Checks `bytes` uploaded by the example clinic as `name`.
fn check(config: &Config, name: &str, bytes: Vec<u8>, limits: Limits, lang: Lang) -> Checked {
    check_in(
        config,
        name,
        bytes,
        limits,
        lang,
        &config.gateway.schema_dir,
    )
}

fn check_in(
    config: &Config,
    name: &str,
    bytes: Vec<u8>,
    limits: Limits,
    lang: Lang,
    schemas: &Path,
) -> Checked {
    let sender = config.counterpart(CLINIC).expect("example clinic");
    let expect = Expect {
        sender,
        config,
        today: validate::today(config.gateway.utc_offset()),
        file_name: name,
    };
    validate::check_archive(Cursor::new(bytes), limits, schemas, &expect, lang)
        .expect("the schema set loads")
}

/// Every finding, and whether the file was refused.
fn findings(checked: Checked) -> (bool, Vec<Finding>) {
    match checked {
        Checked::Invalid(f) => (true, f),
        Checked::Valid { warnings, .. } => (false, warnings),
    }
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

fn valid_spec(config: &Config, persons: usize) -> Spec {
    Spec::example(persons, yesterday(config))
}

#[test]
fn each_rule_is_broken_alone_and_named_with_file_and_line_in_both_languages() {
    let (_tc, mut config) = config();
    let spec = valid_spec(&config, 4);
    let mut seen = std::collections::BTreeSet::new();
    for v in Violation::ALL {
        let (bytes, expected) =
            testdata::write_violation(&spec, v, &small_limits(), Vec::new()).expect("generate");
        let name = v.file_name(&spec);
        if v == Violation::EditionNotAccepted {
            config.gateway.validation.editions = vec!["current".into()];
        }
        let rule = Rule::from_id(v.rule()).expect("a rule of the check");
        let mut texts = Vec::new();
        for lang in [Lang::Ja, Lang::En] {
            let (refused, got) =
                findings(check(&config, &name, bytes.clone(), small_limits(), lang));
            assert!(!got.is_empty(), "{v:?}: no finding");
            assert!(
                got.iter().all(|f| f.rule == v.rule()),
                "{v:?}: expected only {} but got {got:#?}",
                v.rule()
            );
            let warns = rule.default_severity() == handoff::validate::finding::Severity::Warn;
            assert_eq!(
                refused, !warns,
                "{v:?}: refused {refused}, findings {got:#?}"
            );
            assert!(got.iter().all(|f| f.warning == warns), "{v:?}: {got:#?}");
            let first = &got[0];
            assert_eq!(first.file, expected.file, "{v:?}: file of {first:?}");
            assert_eq!(first.line, expected.line, "{v:?}: line of {first:?}");
            texts.push(first.message.clone());
        }
        config.gateway.validation.editions =
            vec!["current".into(), "intermediate".into(), "2007".into()];
        let (ja, en) = (&texts[0], &texts[1]);
        assert_ne!(ja, en, "{v:?}: one text for both languages");
        assert!(
            ja.chars().any(|c| c as u32 > 0x3000),
            "{v:?}: the Japanese text has no Japanese: {ja}"
        );
        assert!(en.is_ascii() || en.contains('"'), "{v:?}: {en}");
        seen.insert(v.rule());
    }
    println!("{} rules each found alone: {seen:?}", seen.len());
}

#[test]
fn a_valid_archive_of_1000_persons_passes_and_yields_its_route() {
    let (_tc, config) = config();
    let spec = valid_spec(&config, 1000);
    let bytes = testdata::write_valid(&spec, Vec::new()).expect("generate");
    let name = spec.archive_name().file_name();
    let size = bytes.len();
    let started = std::time::Instant::now();
    match check(
        &config,
        &name,
        bytes,
        Limits::from(&ArchiveLimits::default()),
        Lang::Ja,
    ) {
        Checked::Valid { header, warnings } => {
            assert!(warnings.is_empty(), "{warnings:#?}");
            assert_eq!(
                header.sender.as_ref().map(|n| n.as_str()),
                Some("1312345679")
            );
            assert_eq!(
                header.receiver.as_ref().map(|(_, n)| n.as_str()),
                Some("06130017")
            );
            assert_eq!(header.record_count, Some(2000));
            assert_eq!(header.service_event, Some(1));
        }
        Checked::Invalid(f) => panic!("refused: {f:#?}"),
    }
    println!(
        "1000 persons with claims, {size} bytes, checked in {:?}",
        started.elapsed()
    );
}

#[test]
fn guidance_archives_and_archives_without_claims_pass() {
    let (_tc, config) = config();
    for (kind, claims) in [
        (DocKind::Guidance, true),
        (DocKind::Guidance, false),
        (DocKind::Checkup, false),
    ] {
        let mut spec = valid_spec(&config, 3);
        spec.kind = kind;
        spec.claims = claims;
        let bytes = testdata::write_valid(&spec, Vec::new()).expect("generate");
        let got = check(
            &config,
            &spec.archive_name().file_name(),
            bytes,
            Limits::from(&ArchiveLimits::default()),
            Lang::Ja,
        );
        assert!(
            matches!(&got, Checked::Valid { warnings, .. } if warnings.is_empty()),
            "{kind:?} claims {claims}: {got:?}"
        );
    }
}

/// A current index and summary with claims of an older edition: delivered with one warning
/// naming the edition when the edition is accepted, refused naming it when it is not.
#[test]
fn older_editions_are_warned_about_or_refused_as_configured() {
    let (_tc, mut config) = config();
    for (edition, id) in [
        (Edition::V2007, "2007"),
        (Edition::Intermediate, "intermediate"),
    ] {
        let mut spec = valid_spec(&config, 3);
        spec.editions = Editions {
            claims: edition,
            ..Editions::CURRENT
        };
        let bytes = testdata::write_valid(&spec, Vec::new()).expect("generate");
        let name = spec.archive_name().file_name();
        let limits = Limits::from(&ArchiveLimits::default());

        config.gateway.validation.editions =
            vec!["current".into(), "intermediate".into(), "2007".into()];
        let got = check(&config, &name, bytes.clone(), limits, Lang::En);
        let Checked::Valid { warnings, .. } = got else {
            panic!("{id}: refused: {got:?}");
        };
        assert_eq!(warnings.len(), 1, "{id}: {warnings:#?}");
        let w = &warnings[0];
        assert_eq!(w.rule, "edition.non-current");
        assert!(w.warning);
        assert!(w.message.contains(&format!("({id})")), "{}", w.message);
        assert!(w.message.contains("and 2 more files"), "{}", w.message);

        config.gateway.validation.editions = vec!["current".into()];
        let (refused, got) = findings(check(&config, &name, bytes, limits, Lang::Ja));
        assert!(refused, "{id}: accepted");
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(got[0].rule, "edition.not-accepted");
        assert!(
            got[0].message.contains(&format!("（{id}）")),
            "{}",
            got[0].message
        );
    }
}

#[test]
fn severities_are_set_per_gateway_and_per_counterpart() {
    let (_tc, mut config) = config();
    let spec = valid_spec(&config, 3);
    let limits = small_limits();
    let (bytes, _) = testdata::write_violation(&spec, Violation::NameSerial, &limits, Vec::new())
        .expect("generate");
    let name = Violation::NameSerial.file_name(&spec);
    let run = |config: &Config| findings(check(config, &name, bytes.clone(), limits, Lang::En));

    // Default: a warning, delivered.
    let (refused, got) = run(&config);
    assert!(!refused && got.len() == 1 && got[0].warning, "{got:#?}");
    // The gateway makes it reject.
    config
        .gateway
        .validation
        .rules
        .insert("name.serial".into(), RuleSeverity::Reject);
    let (refused, got) = run(&config);
    assert!(refused && !got[0].warning, "{got:#?}");
    // The counterpart turns it off, over the gateway.
    let clinic = config
        .counterparts
        .iter_mut()
        .find(|c| c.id == CLINIC)
        .expect("clinic");
    clinic.rules.insert("name.serial".into(), RuleSeverity::Off);
    let (refused, got) = run(&config);
    assert!(!refused && got.is_empty(), "{got:#?}");
}

#[test]
fn locked_rules_cannot_be_lowered_in_the_config() {
    let tc = TestConfig::new();
    let text = std::fs::read_to_string(&tc.path).expect("config");
    let text = text.replace(
        "\"name.serial\" = \"warn\"",
        "\"name.serial\" = \"warn\"\n\"data.insurer\" = \"warn\"",
    );
    std::fs::write(&tc.path, text).expect("write");
    let err = handoff::config::load(&tc.path).expect_err("a locked rule lowered");
    let message = err.to_string();
    assert!(
        message.contains("data.insurer always rejects") && message.contains("handoff.toml:"),
        "{message}"
    );
}

#[test]
fn line_numbers_past_65535_are_exact() {
    let (_tc, config) = config();
    let mut spec = valid_spec(&config, 1);
    spec.padding_lines = 70_000;
    let limits = Limits::from(&ArchiveLimits::default());
    let (bytes, expected) =
        testdata::write_violation(&spec, Violation::XsdInvalid, &limits, Vec::new())
            .expect("generate");
    let line = expected.line.expect("a line");
    assert!(line > 65_535, "the test must reach past 65535, got {line}");
    let name = Violation::XsdInvalid.file_name(&spec);
    let (refused, f) = findings(check(&config, &name, bytes, limits, Lang::Ja));
    assert!(refused);
    assert_eq!(f[0].rule, "xsd.invalid", "{:?}", f[0]);
    assert_eq!(f[0].line, Some(line), "{:?}", f[0]);
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
    let peak = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage")
        .max_rss();
    (String::from_utf8_lossy(&out.stdout).into_owned(), peak)
}

#[test]
fn bombs_and_hostile_xml_are_refused_in_bounded_memory() {
    let (tc, config) = config();
    let spec = valid_spec(&config, 3);
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
        let dir = tc.dir.path().join(v.slug());
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path: PathBuf = dir.join(v.file_name(&spec));
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
        assert!(
            stdout.starts_with(&format!("reject {rule} ")),
            "{v:?}: {stdout}"
        );
        // Unpacked, the bombs are 10 GiB; refusing them must not come near that.
        assert!(peak_kib < 256 * 1024, "{v:?}: peak RSS {peak_kib} KiB");
    }
}

#[test]
fn the_cli_generates_official_archives_and_checks_them_in_either_language() {
    let (tc, _config) = config();
    let out_dir = tc.dir.path().join("out");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let out = Command::new(handoff_bin())
        .args(["testdata", "--persons", "5", "--out"])
        .arg(&out_dir)
        .output()
        .expect("run testdata");
    assert!(out.status.success(), "{out:?}");
    let written: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .expect("read out")
        .flatten()
        .map(|e| e.path())
        .collect();
    let [path] = written.as_slice() else {
        panic!("expected one archive, got {written:?}");
    };
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    assert!(
        handoff::validate::format::ArchiveName::parse(file_name)
            .is_some_and(|n| n.sender == "1312345679" && n.receiver == "06130017"),
        "{file_name}"
    );
    let run = |account: &str, lang: &str| {
        Command::new(handoff_bin())
            .args(["validate", "--config"])
            .arg(&tc.path)
            .args(["--as", account, "--lang", lang])
            .arg(path)
            .output()
            .expect("run validate")
    };
    let ok = run(CLINIC, "ja");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{ok:?}");
    assert!(
        stdout.contains("receiver 06130017") && stdout.contains("10 files"),
        "{stdout}"
    );
    // The same archive is refused for an account that did not send it, in its language.
    for (lang, words) in [("ja", "一致しません"), ("en", "uploaded by")] {
        let refused = run("clinic-2717654327", lang);
        let stdout = String::from_utf8_lossy(&refused.stdout);
        assert_eq!(refused.status.code(), Some(1), "{refused:?}");
        assert!(
            stdout.starts_with("reject index.sender-mismatch ix08_V08.xml:")
                && stdout.contains(words),
            "{stdout}"
        );
    }
}

#[test]
fn an_unusable_schema_set_is_an_error_not_a_verdict() {
    let (tc, config) = config();
    let empty = tc.dir.path().join("no-schemas");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let sender = config.counterpart(CLINIC).expect("clinic");
    let spec = valid_spec(&config, 1);
    let name = spec.archive_name().file_name();
    let expect = Expect {
        sender,
        config: &config,
        today: validate::today(config.gateway.utc_offset()),
        file_name: &name,
    };
    let bytes = testdata::write_valid(&spec, Vec::new()).expect("generate");
    let got = validate::check_archive(
        Cursor::new(bytes),
        Limits::from(&ArchiveLimits::default()),
        &empty,
        &expect,
        Lang::Ja,
    );
    let err = got.expect_err("no schemas, no verdict");
    assert!(err.to_string().contains("mhlw-v08"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        CONFIG.with(|(_, config)| {
            let sender = config.counterpart(CLINIC).expect("clinic");
            let _ = validate::check_upload(Cursor::new(bytes), NAME, sender, config);
        });
    }

    #[test]
    fn damaged_valid_archives_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = VALID.with(|v| v.clone());
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= value | 1;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        CONFIG.with(|(_, config)| {
            let sender = config.counterpart(CLINIC).expect("clinic");
            let _ = validate::check_upload(Cursor::new(bytes), NAME, sender, config);
        });
    }
}

/// The name the property tests upload under: an official one, so that every layer runs.
const NAME: &str = "1312345679_06130017_202612050_1.zip";

thread_local! {
    static CONFIG: (std::rc::Rc<TestConfig>, Config) = {
        let (tc, config) = config();
        (std::rc::Rc::new(tc), config)
    };
    static VALID: Vec<u8> = CONFIG.with(|(_, config)| {
        testdata::write_valid(&Spec::example(3, yesterday(config)), Vec::new()).expect("generate")
    });
}
