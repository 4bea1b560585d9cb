//! The official schema catalogue on the official sets beside the checkout (`../shared/formats`):
//! pins, editions by namespace, the derived intermediate edition, and `handoff schemas install`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use handoff::validate::schemas::{
    Catalog, Edition, FileStatus, NS_2007, NS_CURRENT, Report, Role, SET_2007, SET_CURRENT,
    Validated,
};

mod support;

/// The official sets. Never skipped: without them nothing here would be tested.
fn formats() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/formats");
    assert!(
        dir.join(SET_CURRENT.folder).is_dir(),
        "the official schema sets are missing: expected {}/{}",
        dir.display(),
        SET_CURRENT.folder
    );
    dir
}

fn handoff_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_handoff"))
}

const INDEX: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<index xmlns="NS">
  <interactionType code="1"/>
  <creationTime value="20261204"/>
  <sender>
    <id root="1.2.392.200119.6.102" extension="1312345679"/>
  </sender>
  <receiver>
    <id root="1.2.392.200119.6.101" extension="06130017"/>
  </receiver>
  <serviceEventType code="1"/>
  <totalRecordCount value="2"/>
</index>
"#;

/// A checkup claim with a branch code (被保険者証枝番), which only the current code lists have.
const CLAIM: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<checkupClaim xmlns="NS">
  <encounter>
    <serviceEventType code="1"/>
  </encounter>
  <subjectPerson>
    <performerOrganization>
      <id root="1.2.392.200119.6.102" extension="1312345679"/>
    </performerOrganization>
    <insuranceCard>
      <insurerNumber root="1.2.392.200119.6.101" extension="06130017"/>
      <number root="1.2.392.200119.6.205" extension="1234"/>
      <branchCode root="1.2.392.200119.6.211" extension="01"/>
    </insuranceCard>
    <name>ケンシン タロウ</name>
    <addr>東京都千代田区<postalCode>100-0001</postalCode></addr>
    <birthTime value="19650215"/>
    <administrativeGender code="1"/>
  </subjectPerson>
  <checkupCard/>
  <settlement>
    <claimType code="1"/>
    <commissionType code="1"/>
    <unitAmount value="8000"/>
    <paymentAmount value="1000"/>
    <claimAmount value="7000"/>
  </settlement>
</checkupClaim>
"#;

fn check(catalog: &mut Catalog, role: Role, text: &str) -> Validated {
    catalog
        .validate(role, "f.xml", text.as_bytes())
        .expect("well-formed")
        .1
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn the_official_sets_load_as_pinned() {
    let catalog = Catalog::load(&formats()).expect("the official sets load");
    assert_eq!(
        catalog.editions(),
        [Edition::Current, Edition::Intermediate, Edition::V2007]
    );
    let report = catalog.report();
    assert!(report.sets.iter().all(|s| s.all_pinned()), "{report}");
    assert_eq!(report.differing().count(), 0);
    assert!(report.warnings().is_empty(), "{:?}", report.warnings());
    let text = report.to_string();
    assert!(
        text.contains("mhlw-v08         current edition (現行版): 11 files, all as pinned"),
        "{text}"
    );
    assert!(
        text.contains("mhlw-v08-2007ns  2007 edition (2007年版): 9 files, all as pinned"),
        "{text}"
    );
}

#[test]
fn each_namespace_selects_its_edition() {
    let mut catalog = Catalog::load(&formats()).unwrap();

    let current = check(&mut catalog, Role::Index, &INDEX.replace("NS", NS_CURRENT));
    assert_eq!(
        current,
        Validated {
            edition: Some(Edition::Current),
            findings: vec![]
        }
    );

    let old = check(&mut catalog, Role::Index, &INDEX.replace("NS", NS_2007));
    assert_eq!(
        old,
        Validated {
            edition: Some(Edition::V2007),
            findings: vec![]
        }
    );

    // The 2007 namespace with a code of the current lists: the intermediate edition.
    let claim = check(
        &mut catalog,
        Role::CheckupClaim,
        &CLAIM.replace("NS", NS_2007),
    );
    assert_eq!(
        claim,
        Validated {
            edition: Some(Edition::Intermediate),
            findings: vec![]
        }
    );
    let claim = check(
        &mut catalog,
        Role::CheckupClaim,
        &CLAIM.replace("NS", NS_CURRENT),
    );
    assert_eq!(claim.edition, Some(Edition::Current));
    assert!(claim.is_valid(), "{claim:?}");
    let plain = CLAIM.replace("NS", NS_2007).replace(
        "      <branchCode root=\"1.2.392.200119.6.211\" extension=\"01\"/>\n",
        "",
    );
    assert_eq!(
        check(&mut catalog, Role::CheckupClaim, &plain).edition,
        Some(Edition::V2007)
    );
}

#[test]
fn an_unknown_namespace_is_edition_unknown() {
    let mut catalog = Catalog::load(&formats()).unwrap();
    let got = check(
        &mut catalog,
        Role::Index,
        &INDEX.replace("NS", "http://tokuteikenshin.jp/checkup/2013"),
    );
    assert_eq!(got.edition, None);
    assert_eq!(got.findings.len(), 1);
    let f = &got.findings[0];
    assert_eq!(
        (f.rule.as_str(), f.file.as_deref(), f.line),
        ("edition.unknown", Some("f.xml"), Some(2))
    );
    assert!(
        f.message.contains("http://tokuteikenshin.jp/checkup/2013"),
        "{}",
        f.message
    );

    let none = check(&mut catalog, Role::Index, "<index/>");
    assert_eq!(none.findings[0].rule, "edition.unknown");
}

#[test]
fn an_invalid_file_names_line_and_edition() {
    let mut catalog = Catalog::load(&formats()).unwrap();
    let bad = INDEX.replace("NS", NS_CURRENT).replace(
        "code=\"1\"/>\n  <creationTime",
        "code=\"99\"/>\n  <creationTime",
    );
    let got = check(&mut catalog, Role::Index, &bad);
    assert_eq!(got.edition, Some(Edition::Current));
    assert!(!got.findings.is_empty());
    assert!(got.findings.iter().all(|f| f.rule == "xsd.invalid"));
    assert_eq!(got.findings[0].line, Some(3), "{:?}", got.findings);
    assert_eq!(got.findings[0].file.as_deref(), Some("f.xml"));

    // Invalid in both 2007-namespace editions: the findings of the one with fewer errors.
    let bad = INDEX
        .replace("NS", NS_2007)
        .replace("<totalRecordCount value=\"2\"/>", "");
    let got = check(&mut catalog, Role::Index, &bad);
    assert!(matches!(
        got.edition,
        Some(Edition::V2007 | Edition::Intermediate)
    ));
    assert!(
        got.findings.iter().all(|f| f.rule == "xsd.invalid"),
        "{got:?}"
    );
}

#[test]
fn without_the_2007_set_the_old_namespace_is_intermediate_only() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(
        &formats().join(SET_CURRENT.folder),
        &tmp.path().join(SET_CURRENT.folder),
    );
    let mut catalog = Catalog::load(tmp.path()).unwrap();
    assert_eq!(
        catalog.editions(),
        [Edition::Current, Edition::Intermediate]
    );
    let old = check(&mut catalog, Role::Index, &INDEX.replace("NS", NS_2007));
    assert_eq!(old.edition, Some(Edition::Intermediate));
    assert!(old.is_valid());
    assert!(
        catalog
            .report()
            .to_string()
            .contains("not installed; that edition is unavailable")
    );
}

#[test]
fn the_current_set_is_required() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(
        &formats().join(SET_2007.folder),
        &tmp.path().join(SET_2007.folder),
    );
    let e = Catalog::load(tmp.path()).unwrap_err();
    assert!(e.to_string().contains("not installed"), "{e}");
    assert!(e.file.ends_with(SET_CURRENT.folder));
}

#[test]
fn a_changed_file_is_loaded_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&formats(), tmp.path());
    let file = tmp.path().join("mhlw-v08/co08_V08.xsd");
    let mut bytes = std::fs::read(&file).unwrap();
    // One byte of a comment: the schema still compiles, as a newer release would.
    let at = bytes.windows(4).position(|w| w == b"<!--").unwrap() + 5;
    bytes[at] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();

    let catalog = Catalog::load(tmp.path()).expect("a differing set still loads");
    let report = catalog.report();
    let differing: Vec<_> = report
        .differing()
        .map(|(s, f)| (s.set.folder, f.path.as_str()))
        .collect();
    assert_eq!(differing, [("mhlw-v08", "co08_V08.xsd")]);
    let (_, f) = report.differing().next().unwrap();
    let FileStatus::Differs {
        pinned,
        found,
        line_ends_only,
    } = &f.status
    else {
        unreachable!()
    };
    assert_eq!(*pinned, SET_CURRENT.pin("co08_V08.xsd").unwrap().sha256);
    assert_ne!(found, pinned);
    assert!(!line_ends_only);
    let warnings = report.warnings();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("co08_V08.xsd")
            && warnings[0].contains(pinned)
            && warnings[0].contains(found.as_str()),
        "{warnings:?}"
    );
    assert!(report.to_string().contains("DIFFERING"));
    // The same, read again without the process cache.
    assert_eq!(Report::of(tmp.path()).differing().count(), 1);
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(handoff_bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_installed_as_pinned(dir: &Path, folder: &str) {
    let report = Report::of(dir);
    let set = report.sets.iter().find(|s| s.set.folder == folder).unwrap();
    assert!(set.all_pinned(), "{report}");
    for pin in set.set.files {
        let mode = std::fs::metadata(dir.join(folder).join(pin.path))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "{}", pin.path);
    }
    // No temporary folder is left beside the set.
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(!name.starts_with('.'), "{name} left in {}", dir.display());
    }
}

#[test]
fn install_from_a_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("schemas");
    let from = formats().join(SET_CURRENT.folder);
    let (ok, out, err) = run(&[
        "schemas",
        "install",
        "--from",
        from.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("installed mhlw-v08 (current edition, 11 files"),
        "{out}"
    );
    assert_installed_as_pinned(&to, SET_CURRENT.folder);
    assert!(!to.join(SET_2007.folder).exists());

    // The folder holding both sets installs both, replacing the first installation.
    let (ok, out, err) = run(&[
        "schemas",
        "install",
        "--from",
        formats().to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("replaced") && out.contains("mhlw-v08-2007ns"),
        "{out}"
    );
    assert_installed_as_pinned(&to, SET_CURRENT.folder);
    assert_installed_as_pinned(&to, SET_2007.folder);
    assert!(Catalog::load(&to).is_ok());

    let (ok, out, err) = run(&["schemas", "verify", "--dir", to.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("all as pinned"), "{out}");
}

/// A zip like a real archive: the set in `<archive>/XSD/`, beside other files.
fn archive_zip(
    path: &Path,
    set: &Path,
    edit: impl Fn(&str, Vec<u8>) -> Vec<u8>,
    extra: &[(&str, &[u8])],
) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    let top = "1312345679_06130017_202612040_1";
    zip.start_file(format!("{top}/ix08_V08.xml"), options)
        .unwrap();
    zip.write_all(INDEX.replace("NS", NS_CURRENT).as_bytes())
        .unwrap();
    let mut files = Vec::new();
    for pin in SET_CURRENT.files {
        files.push(pin.path);
    }
    for name in files {
        let bytes = edit(name, std::fs::read(set.join(name)).unwrap());
        zip.start_file(format!("{top}/XSD/{name}"), options)
            .unwrap();
        zip.write_all(&bytes).unwrap();
    }
    for (name, bytes) in extra {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn install_from_an_archive_zip() {
    let tmp = tempfile::tempdir().unwrap();
    let zip_path = tmp.path().join("archive.zip");
    let to = tmp.path().join("schemas");
    // CRLF line ends, as a download may have them, are converted back to the pinned bytes.
    archive_zip(
        &zip_path,
        &formats().join(SET_CURRENT.folder),
        |name, bytes| {
            if name == "su08_V08.xsd" {
                String::from_utf8(bytes)
                    .unwrap()
                    .replace('\n', "\r\n")
                    .into_bytes()
            } else {
                bytes
            }
        },
        &[],
    );
    let (ok, out, err) = run(&[
        "schemas",
        "install",
        "--from",
        zip_path.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("mhlw-v08") && out.contains("XSD") && out.contains("su08_V08.xsd"),
        "{out}"
    );
    assert_installed_as_pinned(&to, SET_CURRENT.folder);
}

#[test]
fn install_refuses_a_changed_file() {
    let tmp = tempfile::tempdir().unwrap();
    let from = tmp.path().join("download");
    copy_dir(&formats().join(SET_CURRENT.folder), &from);
    let file = from.join("coreschemas/voc_hcgv08.xsd");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let to = tmp.path().join("schemas");
    let (ok, _, err) = run(&[
        "schemas",
        "install",
        "--from",
        from.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("coreschemas/voc_hcgv08.xsd")
            && err.contains(
                SET_CURRENT
                    .pin("coreschemas/voc_hcgv08.xsd")
                    .unwrap()
                    .sha256
            ),
        "{err}"
    );
    assert!(err.contains("nothing was installed"), "{err}");
    assert!(!to.join(SET_CURRENT.folder).exists());
}

#[test]
fn install_refuses_a_zip_with_unsafe_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let zip_path = tmp.path().join("archive.zip");
    let to = tmp.path().join("schemas");
    archive_zip(
        &zip_path,
        &formats().join(SET_CURRENT.folder),
        |_, b| b,
        &[("../evil.xsd", b"<x/>")],
    );
    let (ok, _, err) = run(&[
        "schemas",
        "install",
        "--from",
        zip_path.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("\"../evil.xsd\" has an unsafe path"), "{err}");
    assert!(!to.exists() || std::fs::read_dir(&to).unwrap().next().is_none());
    assert!(!tmp.path().join("evil.xsd").exists());
}

#[test]
fn schemas_list_prints_the_pins() {
    let (ok, out, err) = run(&["schemas", "list"]);
    assert!(ok, "{err}");
    for set in [&SET_CURRENT, &SET_2007] {
        for pin in set.files {
            assert!(
                out.contains(&format!("{}  {}/{}", pin.sha256, set.folder, pin.path)),
                "{out}"
            );
        }
    }
    assert!(out.contains(NS_CURRENT) && out.contains(NS_2007));
}

/// The example config with `schema_dir` set to `dir`.
fn config_with_schema_dir(dir: &Path) -> support::TestConfig {
    let own = format!("\"{}/../shared/formats\"", support::repo_root().display());
    let dir = format!("\"{}\"", dir.display());
    support::TestConfig::with(|text| {
        assert!(text.contains(&own), "the example config's schema_dir moved");
        text.replace(&own, &dir)
    })
}

#[test]
fn check_config_prints_the_sets_and_editions() {
    let tc = config_with_schema_dir(&formats());
    let (ok, out, err) = run(&["check-config", tc.path.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("current edition (現行版): 11 files, all as pinned"),
        "{out}"
    );
    assert!(
        out.contains(&format!("{NS_2007} -> 2007 (2007年版), else intermediate")),
        "{out}"
    );
    assert!(err.is_empty(), "{err}");
}

#[test]
fn check_config_fails_without_a_usable_current_set() {
    let tmp = tempfile::tempdir().unwrap();
    // No current set: the config itself is refused.
    let tc = config_with_schema_dir(tmp.path());
    let (ok, _, err) = run(&["check-config", tc.path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("has no mhlw-v08/") && err.contains("schemas install"),
        "{err}"
    );

    // A current set that does not compile.
    copy_dir(
        &formats().join(SET_CURRENT.folder),
        &tmp.path().join(SET_CURRENT.folder),
    );
    std::fs::write(tmp.path().join("mhlw-v08/co08_V08.xsd"), "<not-a-schema/>").unwrap();
    let (ok, _, err) = run(&["check-config", tc.path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("schema_dir: the official schemas cannot be used"),
        "{err}"
    );
}

#[test]
fn check_config_warns_of_a_changed_file() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&formats(), tmp.path());
    let file = tmp.path().join("mhlw-v08-2007ns/su08_V08.xsd");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace('\n', "\r\n")).unwrap();
    let tc = config_with_schema_dir(tmp.path());
    let (ok, out, err) = run(&["check-config", tc.path.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("8 files as pinned, 1 DIFFERING from the pins"),
        "{out}"
    );
    assert!(
        err.contains("warning: schema_dir:")
            && err.contains("su08_V08.xsd")
            && err.contains("CRLF"),
        "{err}"
    );
}

#[test]
fn each_thread_compiles_its_own_catalogue() {
    let dir = formats();
    let threads: Vec<_> = (0..2)
        .map(|i| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let ns = if i == 0 { NS_CURRENT } else { NS_2007 };
                let text = INDEX.replace("NS", ns);
                (0..3)
                    .map(|_| {
                        handoff::validate::schemas::with_catalog(&dir, |c| {
                            c.validate(Role::Index, "ix08_V08.xml", text.as_bytes())
                                .expect("well-formed")
                                .1
                                .edition
                        })
                        .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let got: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(got[0], [Some(Edition::Current); 3]);
    assert_eq!(got[1], [Some(Edition::V2007); 3]);
}

#[test]
fn a_cda_is_validated_with_the_current_hc08() {
    let mut catalog = Catalog::load(&formats()).unwrap();
    // Not a CDA document: the current hc08 says so, with no edition.
    let got = check(
        &mut catalog,
        Role::CheckupCda,
        &INDEX.replace("NS", NS_CURRENT),
    );
    assert_eq!(got.edition, None);
    assert!(!got.findings.is_empty());
    assert!(got.findings.iter().all(|f| f.rule == "xsd.invalid"));
    let got = check(
        &mut catalog,
        Role::GuidanceCda,
        "<ClinicalDocument xmlns=\"urn:hl7-org:v3\"/>",
    );
    assert_eq!(got.edition, None);
    assert_eq!(got.findings[0].rule, "xsd.invalid", "{got:?}");
}
