//! The generator writes the official format: every XML file of every valid archive (checkup and
//! guidance, with and without claims, several insurers, each edition) passes `xmllint --schema`
//! against the official schema set of its namespace; names pair, totals add up, counts match.
//! The violations that are not about the XML stay schema-valid, and the one that is fails.
//!
//! The official sets are read from `../shared/formats` beside the checkout; the test fails when
//! they or xmllint are missing.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use handoff::validate::archive::Limits;
use handoff::validate::format::{self, DocKind, Folder, RecordName};
use handoff::validate::testdata::{self, Edition, Editions, Spec, Violation};
use time::Date;

const CURRENT: &str = "mhlw-v08";
const OLD: &str = "mhlw-v08-2007ns";
const INTERMEDIATE: &str = "intermediate";

fn formats() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/formats");
    for set in [CURRENT, OLD] {
        assert!(
            dir.join(set).join("ix08_V08.xsd").is_file(),
            "the official schema set {set} is missing under {}: the test needs it",
            dir.display()
        );
    }
    dir
}

/// The schema sets by name: the two official ones, and the intermediate edition derived from
/// the current set by replacing its namespace (as the contract describes).
struct Schemas {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Schemas {
    fn new() -> Schemas {
        let formats = formats();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        for set in [CURRENT, OLD] {
            copy_dir(&formats.join(set), &root.join(set), None);
        }
        copy_dir(
            &formats.join(CURRENT),
            &root.join(INTERMEDIATE),
            Some((format::NS_CURRENT, format::NS_2007)),
        );
        Schemas { _tmp: tmp, root }
    }

    fn xsd(&self, set: &str, file: &str) -> PathBuf {
        self.root.join(set).join(file)
    }
}

fn copy_dir(from: &Path, to: &Path, replace: Option<(&str, &str)>) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target, replace);
        } else {
            let mut text = std::fs::read_to_string(e.path()).unwrap();
            if let Some((a, b)) = replace {
                text = text.replace(a, b);
            }
            std::fs::write(target, text).unwrap();
        }
    }
}

/// Runs `xmllint --noout --schema xsd` on `files`; returns the files that fail.
fn xmllint(xsd: &Path, files: &[PathBuf]) -> Vec<PathBuf> {
    if files.is_empty() {
        return Vec::new();
    }
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(xsd)
        .args(files)
        .output()
        .expect("xmllint must be installed (package libxml2-utils)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("failed to compile") && !stderr.contains("WXS schema"),
        "{}: {stderr}",
        xsd.display()
    );
    let failed: Vec<PathBuf> = files
        .iter()
        .filter(|f| !stderr.contains(&format!("{} validates", f.display())))
        .cloned()
        .collect();
    assert_eq!(
        out.status.success(),
        failed.is_empty(),
        "xmllint's status and its report disagree: {stderr}"
    );
    if !failed.is_empty() {
        eprintln!("{stderr}");
    }
    failed
}

/// An unpacked archive: the top folder's name and its files by path inside it.
struct Unpacked {
    dir: tempfile::TempDir,
    top: String,
    files: BTreeMap<String, Vec<u8>>,
}

impl Unpacked {
    fn new(bytes: &[u8]) -> Unpacked {
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).expect("a readable zip");
        let dir = tempfile::tempdir().unwrap();
        let mut names = Vec::new();
        let mut files = BTreeMap::new();
        for i in 0..zip.len() {
            let mut f = zip.by_index(i).unwrap();
            let name = f.name().expect("a name").into_owned();
            names.push(name.clone());
            if f.is_dir() {
                continue;
            }
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            let path = dir.path().join(&name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &data).unwrap();
            files.insert(name, data);
        }
        let top = names[0].split('/').next().unwrap().to_owned();
        assert!(
            names.iter().all(|n| n.starts_with(&format!("{top}/"))),
            "one top folder: {names:?}"
        );
        let files = files
            .into_iter()
            .map(|(n, d)| (n[top.len() + 1..].to_owned(), d))
            .collect();
        Unpacked { dir, top, files }
    }

    fn path(&self, inside: &str) -> PathBuf {
        self.dir.path().join(&self.top).join(inside)
    }

    fn text(&self, inside: &str) -> &str {
        std::str::from_utf8(&self.files[inside]).expect("UTF-8")
    }

    fn under(&self, folder: &str) -> Vec<&str> {
        self.files
            .keys()
            .filter(|k| k.starts_with(folder))
            .map(String::as_str)
            .collect()
    }
}

/// The namespace of a document's root element.
fn root_namespace(text: &str) -> &str {
    let start = text.find("xmlns=\"").expect("a default namespace") + 7;
    let end = start + text[start..].find('"').unwrap();
    &text[start..end]
}

/// The schema of a non-CDA file's root element, in each set.
fn schema_file(text: &str) -> &'static str {
    let after_decl = &text[text.find("?>").unwrap() + 2..];
    let root = after_decl.trim_start().trim_start_matches('<');
    match root.split([' ', '>']).next().unwrap() {
        "index" => "ix08_V08.xsd",
        "summary" => "su08_V08.xsd",
        "checkupClaim" => "cc08_V08.xsd",
        "healthGuidanceClaim" => "gc08_V08.xsd",
        other => panic!("unknown root {other}"),
    }
}

/// Validates every XML file of `u` against the set of its namespace (a 2007-namespace file
/// against the 2007 set, or else the intermediate edition); returns the edition of each
/// non-CDA file and the files that fail.
fn check_all(s: &Schemas, u: &Unpacked) -> (BTreeMap<String, &'static str>, Vec<String>) {
    let mut groups: BTreeMap<PathBuf, Vec<(String, PathBuf)>> = BTreeMap::new();
    let mut old: Vec<(String, &'static str)> = Vec::new();
    for (name, data) in &u.files {
        if !name.ends_with(".xml") {
            continue;
        }
        let text = std::str::from_utf8(data).expect("UTF-8");
        let xsd = match root_namespace(text) {
            format::CDA_NS => {
                let base = name.rsplit('/').next().unwrap();
                match RecordName::parse(base).map(|r| r.kind) {
                    Some(DocKind::Guidance) => s.xsd(CURRENT, "hg08_V08.xsd"),
                    _ => s.xsd(CURRENT, "hc08_V08.xsd"),
                }
            }
            format::NS_CURRENT => s.xsd(CURRENT, schema_file(text)),
            format::NS_2007 => {
                old.push((name.clone(), schema_file(text)));
                continue;
            }
            other => panic!("{name}: namespace {other}"),
        };
        groups
            .entry(xsd)
            .or_default()
            .push((name.clone(), u.path(name)));
    }
    let mut editions = BTreeMap::new();
    let mut failed = Vec::new();
    for (xsd, files) in &groups {
        let paths: Vec<PathBuf> = files.iter().map(|(_, p)| p.clone()).collect();
        let bad = xmllint(xsd, &paths);
        for (name, path) in files {
            if bad.contains(path) {
                failed.push(name.clone());
            } else if !name.starts_with(format::DATA_DIR) {
                editions.insert(name.clone(), "current");
            }
        }
    }
    for (name, file) in old {
        let path = u.path(&name);
        let old_xsd = s.xsd(OLD, file);
        // The 2007 set has no guidance schemas.
        let edition =
            if old_xsd.is_file() && xmllint(&old_xsd, std::slice::from_ref(&path)).is_empty() {
                "2007"
            } else if xmllint(&s.xsd(INTERMEDIATE, file), std::slice::from_ref(&path)).is_empty() {
                "intermediate"
            } else {
                failed.push(name);
                continue;
            };
        editions.insert(name, edition);
    }
    (editions, failed)
}

fn day() -> Date {
    Date::from_calendar_date(2026, time::Month::November, 20).unwrap()
}

/// The `value` attribute of the first `<element ` in `text`.
fn value_of(text: &str, element: &str) -> Option<String> {
    let at = text.find(&format!("<{element} "))?;
    let rest = &text[at..];
    let rest = &rest[..rest.find('>')?];
    let v = rest.find(" value=\"")? + 8;
    Some(rest[v..v + rest[v..].find('"')?].to_owned())
}

/// The `extension` of the id with `root` in `text`, every occurrence.
fn extensions(text: &str, element: &str, root: &str) -> Vec<String> {
    let needle = format!(r#"<{element} root="{root}" extension=""#);
    text.match_indices(&needle)
        .map(|(i, _)| {
            let v = &text[i + needle.len()..];
            v[..v.find('"').unwrap()].to_owned()
        })
        .collect()
}

/// The `value` of the element at `path` under `settlement` in a claim.
fn settlement_value(claim: &str, path: &[&str]) -> Option<String> {
    let (last, parents) = path.split_last()?;
    let mut rest = &claim[claim.find("<settlement>")?..];
    for p in parents {
        rest = &rest[rest.find(&format!("<{p}>"))?..];
    }
    value_of(rest, last)
}

/// Sums the amounts at `path` under `settlement` over the claims (`None` if no claim has it).
fn sum_claims(u: &Unpacked, path: &[&str]) -> Option<u64> {
    u.under(format::CLAIMS_DIR)
        .iter()
        .filter_map(|c| settlement_value(u.text(c), path))
        .map(|v| v.parse::<u64>().unwrap())
        .reduce(|a, b| a + b)
}

/// Writes, unpacks and checks a valid archive: layout, names, pairing, counts, totals, and
/// every XML file valid. Returns it, with the edition each non-CDA file validated as.
fn valid(s: &Schemas, spec: &Spec) -> (Unpacked, BTreeMap<String, &'static str>) {
    let bytes = testdata::write_valid(spec, Vec::new()).expect("generate");
    let u = Unpacked::new(&bytes);
    let name = spec.archive_name();
    assert_eq!(u.top, name.to_string());
    assert!(u.files.contains_key(format::INDEX));
    assert_eq!(u.files.contains_key(format::SUMMARY), spec.claims);

    let data = u.under(format::DATA_DIR);
    let claims = u.under(format::CLAIMS_DIR);
    assert_eq!(data.len(), spec.persons);
    assert_eq!(claims.len(), if spec.claims { spec.persons } else { 0 });
    for (i, d) in data.iter().enumerate() {
        let r = RecordName::parse(&d[format::DATA_DIR.len()..]).expect("a record name");
        assert_eq!((r.kind, r.folder), (spec.kind, Folder::Data));
        assert_eq!(
            r.serial,
            spec.serial_start + i as u32,
            "consecutive serials"
        );
        assert_eq!(
            (r.sender.as_str(), r.date.as_str()),
            (spec.sender.as_str(), name.date.as_str())
        );
        assert_eq!(
            (r.send_count, r.service_event),
            (spec.send_count, spec.kind.service_event())
        );
        if spec.claims {
            assert!(
                claims.contains(&r.partner().path().as_str()),
                "{d} unpaired"
            );
        }
        // The person's insurer, in the document and the claim, round-robin.
        let cda = u.text(d);
        let insurer = spec.insurer_of(i);
        assert_eq!(
            extensions(cda, "id", format::oid::INSURER),
            [insurer],
            "{d}"
        );
        assert_eq!(
            extensions(cda, "id", format::oid::INSTITUTION),
            [spec.sender.as_str(), spec.sender.as_str()],
            "{d}: author and custodian"
        );
        if spec.claims {
            let claim = u.text(&r.partner().path());
            assert_eq!(
                extensions(claim, "insurerNumber", format::oid::INSURER),
                [insurer]
            );
        }
    }

    let index = u.text(format::INDEX);
    assert_eq!(
        value_of(index, "totalRecordCount"),
        Some((data.len() + claims.len()).to_string())
    );
    assert_eq!(
        value_of(index, "creationTime").as_deref(),
        Some(name.date.as_str())
    );
    assert!(index.contains(&format!(
        r#"<interactionType code="{}"/>"#,
        spec.interaction_type
    )));
    assert!(index.contains(&format!(
        r#"<sender><id root="{}" extension="{}"/></sender>"#,
        spec.sender_party().oid(),
        spec.sender
    )));
    assert!(index.contains(&format!(
        r#"<receiver><id root="{}" extension="{}"/></receiver>"#,
        spec.receiver_party.oid(),
        spec.receiver
    )));
    assert!(index.contains(&format!(
        r#"<serviceEventType code="{}"/>"#,
        spec.kind.service_event()
    )));

    if spec.claims {
        let summary = u.text(format::SUMMARY);
        assert_eq!(
            value_of(summary, "totalSubjectCount"),
            Some(claims.len().to_string())
        );
        for (total, checkup, guidance) in format::SUMMARY_TOTALS {
            let path = match spec.kind {
                DocKind::Checkup => *checkup,
                DocKind::Guidance => *guidance,
            };
            let want = sum_claims(&u, path).map(|v| v.to_string());
            assert_eq!(value_of(summary, total), want, "{total}");
        }
    }

    let (editions, failed) = check_all(s, &u);
    assert!(failed.is_empty(), "not schema-valid: {failed:?}");
    (u, editions)
}

fn editions_of(editions: &BTreeMap<String, &'static str>, folder: &str) -> Vec<&'static str> {
    let mut e: Vec<_> = editions
        .iter()
        .filter(|(k, _)| k.starts_with(folder))
        .map(|(_, v)| *v)
        .collect();
    e.dedup();
    e
}

#[test]
fn checkup_archives_with_and_without_claims_are_valid() {
    let s = Schemas::new();
    let spec = Spec::example(6, day());
    let (u, editions) = valid(&s, &spec);
    assert_eq!(u.top, "1312345679_06130017_202611200_1");
    assert!(u.files.contains_key("DATA/h13123456792026112001000001.xml"));
    assert!(
        u.files
            .contains_key("CLAIMS/c13123456792026112001000006.xml")
    );
    assert_eq!(editions_of(&editions, ""), ["current"]);
    // The content of a document: the profile's parts are all there.
    let cda = u.text("DATA/h13123456792026112001000001.xml");
    for part in [
        "<typeId ",
        "<templateId ",
        r#"<code code="10" codeSystem="1.2.392.200119.6.1001"/>"#,
        "<confidentialityCode ",
        "<languageCode ",
        "<patientRole>",
        r#"root="1.2.392.200119.6.204""#,
        r#"root="1.2.392.200119.6.205""#,
        r#"root="1.2.392.200119.6.211""#,
        r#"codeSystem="1.2.392.200119.6.1104""#,
        "<birthTime ",
        "<representedOrganization>",
        "<custodian>",
        r#"<id root="1.2.392.200119.6.209.106130017" extension=""#,
        "<serviceEvent>",
        r#"codeSystem="1.2.392.200119.6.1010""#,
        r#"<code code="9N001000000000001" codeSystem="1.2.392.200119.6.1005""#,
        r#"<code code="3D046000001906202" codeSystem="1.2.392.200119.6.1005""#,
    ] {
        assert!(cda.contains(part), "no {part} in\n{cda}");
    }

    let mut spec = Spec::example(3, day());
    spec.claims = false;
    spec.send_count = 2;
    spec.serial_start = 0;
    spec.seed = 9;
    let (u, _) = valid(&s, &spec);
    assert_eq!(u.top, "1312345679_06130017_202611202_1");
    assert!(u.files.contains_key("DATA/h13123456792026112021000000.xml"));
}

#[test]
fn guidance_archives_are_valid() {
    let s = Schemas::new();
    let mut spec = Spec::example(4, day());
    spec.kind = DocKind::Guidance;
    let (u, editions) = valid(&s, &spec);
    assert_eq!(u.top, "1312345679_06130017_202611200_2");
    assert!(u.files.contains_key("DATA/g13123456792026112002000001.xml"));
    assert!(
        u.files
            .contains_key("CLAIMS/p13123456792026112002000004.xml")
    );
    assert_eq!(editions_of(&editions, ""), ["current"]);
    assert!(
        u.text("DATA/g13123456792026112002000001.xml")
            .contains("1.2.392.200119.6.210.106130017")
    );

    spec.claims = false;
    valid(&s, &spec);

    spec.claims = true;
    spec.editions = Editions::all(Edition::Intermediate);
    let (u, editions) = valid(&s, &spec);
    // The index and the summary hold nothing the 2007 set lacks: valid in both editions.
    assert_eq!(editions_of(&editions, format::CLAIMS_DIR), ["intermediate"]);
    assert_eq!(root_namespace(u.text(format::INDEX)), format::NS_2007);
    assert_eq!(root_namespace(u.text(format::SUMMARY)), format::NS_2007);
}

#[test]
fn an_archive_for_an_agency_mixes_insurers() {
    let s = Schemas::new();
    let insurers = ["06130017", "06130025", "39999990"];
    let mut spec = Spec::to_agency(7, day(), "91300010", &insurers);
    spec.seed = 3;
    let (u, _) = valid(&s, &spec);
    assert_eq!(u.top, "1312345679_91300010_202611200_1");
    let index = u.text(format::INDEX);
    assert!(index.contains(r#"<interactionType code="1"/>"#));
    assert!(index.contains(r#"<receiver><id root="1.2.392.200119.6.103" extension="91300010"/>"#));
    // `valid` checked each person's insurer; all three occur.
    let all: String = u
        .under(format::DATA_DIR)
        .iter()
        .map(|d| u.text(d))
        .collect();
    for i in insurers {
        assert!(all.contains(&format!(r#"extension="{i}""#)), "{i}");
    }
}

#[test]
fn each_edition_validates_as_itself() {
    let s = Schemas::new();
    // The two fixtures: a current index and summary with claims of the older editions.
    for (claims, want) in [
        (Edition::V2007, "2007"),
        (Edition::Intermediate, "intermediate"),
    ] {
        let spec = Spec::mixed_editions(4, day(), claims);
        let (u, editions) = valid(&s, &spec);
        assert_eq!(editions[format::INDEX], "current");
        assert_eq!(editions[format::SUMMARY], "current");
        assert_eq!(editions_of(&editions, format::CLAIMS_DIR), [want]);
        let claim = u.under(format::CLAIMS_DIR)[0];
        assert_eq!(root_namespace(u.text(claim)), format::NS_2007);
    }
    // An archive wholly of the 2007 edition.
    let mut spec = Spec::example(3, day());
    spec.editions = Editions::all(Edition::V2007);
    let (_, editions) = valid(&s, &spec);
    assert_eq!(editions_of(&editions, ""), ["2007"]);
    // The 2007 edition has no guidance claims.
    spec.kind = DocKind::Guidance;
    assert!(testdata::write_valid(&spec, Vec::new()).is_err());
}

#[test]
fn the_xsd_folder_is_copied_as_found() {
    let s = Schemas::new();
    let mut spec = Spec::example(2, day());
    spec.xsd_from = Some(formats().join(CURRENT));
    let (u, _) = valid(&s, &spec);
    let xsd = u.under(format::XSD_DIR);
    assert!(xsd.contains(&"XSD/ix08_V08.xsd"), "{xsd:?}");
    assert!(xsd.contains(&"XSD/coreschemas/voc_hcgv08.xsd"), "{xsd:?}");
    for f in xsd {
        let original = std::fs::read(formats().join(CURRENT).join(&f[4..])).unwrap();
        assert_eq!(u.files[f], original, "{f}");
    }
    spec.xsd_from = Some(formats().join("no-such-set"));
    assert!(testdata::write_valid(&spec, Vec::new()).is_err());
}

/// Violations that are not about the XML or the container: every file stays schema-valid, and
/// the finding points at a file that is there.
#[test]
fn violations_of_the_content_stay_schema_valid() {
    use Violation::*;
    let s = Schemas::new();
    let limits = Limits::from(&handoff::config::ArchiveLimits::default());
    let spec = Spec::example(3, day());
    let skipped = [
        Unreadable,
        Traversal,
        BadName,
        Duplicate,
        TooManyEntries,
        EntryTooLarge,
        TotalTooLarge,
        Ratio,
        Nested,
        Encrypted,
        Method,
        HeaderMismatch,
        Corrupt,
        LyingSize,
        TopFolder,
        Encoding,
        Dtd,
        BillionLaughs,
        Malformed,
        XsdInvalid,
        EditionUnknown,
    ];
    for v in Violation::ALL.into_iter().filter(|v| !skipped.contains(v)) {
        let (bytes, expected) =
            testdata::write_violation(&spec, v, &limits, Vec::new()).expect("generate");
        assert_eq!(expected.rule, v.rule());
        let u = Unpacked::new(&bytes);
        let (_, failed) = check_all(&s, &u);
        assert!(failed.is_empty(), "{v:?}: not schema-valid: {failed:?}");
        if let Some(file) = expected.file.as_ref().filter(|_| v != Missing) {
            let text = u.text(file);
            if let Some(line) = expected.line {
                let line = text.lines().nth(line as usize - 1);
                assert!(
                    line.is_some(),
                    "{v:?}: no line {:?} in {file}",
                    expected.line
                );
            }
        }
        let upload = v.file_name(&spec);
        match v {
            ArchiveName => assert_eq!(upload, "results.zip"),
            FolderName => assert_eq!(u.top, "results"),
            _ => assert_eq!(upload, format!("{}.zip", u.top), "{v:?}"),
        }
    }
    // A few findings point at the very element.
    for (v, holds) in [
        (DateInvalid, "19650231"),
        (DataInsurer, "06130025"),
        (DataSender, "2717654327"),
        (SummaryTotals, "totalClaimAmount"),
        (CheckDigit, "<receiver>"),
        (IndexCount, "totalRecordCount"),
    ] {
        let (bytes, e) = testdata::write_violation(&spec, v, &limits, Vec::new()).unwrap();
        let u = Unpacked::new(&bytes);
        let file = e.file.expect("a file");
        let line = u
            .text(&file)
            .lines()
            .nth(e.line.expect("a line") as usize - 1);
        assert!(line.unwrap().contains(holds), "{v:?}: {line:?}");
    }
}

#[test]
fn the_schema_check_catches_the_invalid_document() {
    let s = Schemas::new();
    let limits = Limits::from(&handoff::config::ArchiveLimits::default());
    let spec = Spec::example(3, day());
    let (bytes, e) =
        testdata::write_violation(&spec, Violation::XsdInvalid, &limits, Vec::new()).unwrap();
    let u = Unpacked::new(&bytes);
    let (_, failed) = check_all(&s, &u);
    assert_eq!(failed, [e.file.clone().unwrap()]);
    let line = u
        .text(e.file.as_deref().unwrap())
        .lines()
        .nth(e.line.unwrap() as usize - 1);
    assert!(line.unwrap().contains("<remark>"));
}

#[test]
fn the_command_writes_under_the_official_name() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_handoff"))
            .arg("testdata")
            .args(["--date", "20261120", "--persons", "2", "--out"])
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    };
    let path = run(&[]);
    assert_eq!(path, dir.path().join("1312345679_06130017_202611200_1.zip"));
    let u = Unpacked::new(&std::fs::read(&path).unwrap());
    assert_eq!(u.under(format::CLAIMS_DIR).len(), 2);
    let path = run(&["--guidance", "--no-claims", "--send-count", "3"]);
    assert_eq!(path, dir.path().join("1312345679_06130017_202611203_2.zip"));
    let path = run(&["--violate", "archive-name"]);
    assert_eq!(path, dir.path().join("results.zip"));
    let path = run(&[
        "--receiver",
        "91300010",
        "--interaction-type",
        "1",
        "--insurers",
        "06130017,06130025",
        "--edition",
        "intermediate",
    ]);
    let u = Unpacked::new(&std::fs::read(&path).unwrap());
    assert!(
        u.text(format::INDEX)
            .contains(r#"<receiver><id root="1.2.392.200119.6.103" extension="91300010"/>"#)
    );
    assert_eq!(root_namespace(u.text(format::SUMMARY)), format::NS_2007);
}
