//! Sorting (振分) end to end: a clinic sends one 300-person archive addressed to the agency,
//! with persons of five insurers, one of them not configured. Each configured insurer
//! downloads its own archive with `curl`, opens it with `openssl cms`, and finds exactly its
//! persons (DATA file names and SHA-256 equal to the upload's), with an index and summary that
//! pass `xmllint --schema` against the official MHLW schemas. The unknown insurer's persons come
//! back to the clinic: in a `rejected` receipt of the archive (policy "deliver-routable"), or as
//! the refusal of the whole archive (the default). Every DATA file is counted.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::process::Command;

use handoff::validate::format::Folder;
use handoff::validate::testdata::{self, Spec};
use sha2::{Digest, Sha256};
use support::{
    ClamdInstance, Daemon, TestConfig, curl_as, hand_off, outbox_names, repo_root, wait_for,
};

const CLINIC: &str = "clinic-1312345679";
const AGENCY: &str = "80130012";
/// Four configured insurers and one the gateway does not know.
const INSURERS: [&str; 5] = ["06130017", "06270029", "06140016", "06270037", "39999990"];
const UNKNOWN: &str = "39999990";

fn receipts(tc: &TestConfig, account: &str) -> Vec<serde_json::Value> {
    let dir = tc.state_dir().join("boxes").join(account).join("receipts");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// DATA (or CLAIMS) files of an archive: path inside the top folder → SHA-256.
fn records(zip_bytes: &[u8], folder: Folder) -> BTreeMap<String, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).expect("a zip");
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).expect("entry");
        let name = f.name().expect("a name").to_string();
        let Some((_, inside)) = name.split_once('/') else {
            continue;
        };
        if inside.starts_with(folder.dir()) && !f.is_dir() {
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).expect("read entry");
            out.insert(inside.to_owned(), sha256(&bytes));
        }
    }
    out
}

/// The archive the tests send, and which DATA file belongs to which insurer.
fn parent() -> (Spec, Vec<u8>, BTreeMap<String, String>) {
    let today = handoff::validate::today(time::UtcOffset::from_hms(9, 0, 0).expect("offset"));
    let spec = Spec::to_agency(
        300,
        today.previous_day().expect("a date"),
        AGENCY,
        &INSURERS,
    );
    let bytes = testdata::write_valid(&spec, Vec::new()).expect("generate");
    let owner = (0..spec.persons)
        .map(|i| {
            (
                spec.record_name(Folder::Data, i).path(),
                spec.insurer_of(i).to_owned(),
            )
        })
        .collect();
    (spec, bytes, owner)
}

fn xmllint(schema: &str, file: &Path) {
    let xsd = repo_root().join("../shared/formats/mhlw-v08").join(schema);
    let out = Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(&xsd)
        .arg(file)
        .output()
        .expect("run xmllint");
    assert!(
        out.status.success(),
        "xmllint {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_agency_archive_is_sorted_to_each_insurer_and_the_unknown_persons_come_back() {
    let tc = TestConfig::with(|t| {
        t.replace(
            "unroutable = \"reject-archive\"",
            "unroutable = \"deliver-routable\"",
        )
    });
    let _clamd = ClamdInstance::start(tc.dir.path());
    let _daemon = Daemon::start(&tc);
    let (spec, bytes, owner) = parent();
    let name = spec.archive_name().file_name();
    hand_off(&tc, CLINIC, &name, &bytes);

    let known: Vec<&str> = INSURERS.iter().copied().filter(|i| *i != UNKNOWN).collect();
    let account = |n: &str| format!("insurer-{n}");
    assert!(
        wait_for(120, || known.iter().all(|n| !outbox_names(
            &tc,
            &account(n)
        )
        .is_empty())),
        "not every insurer got its archive"
    );
    let parent_data = records(&bytes, Folder::Data);
    let parent_claims = records(&bytes, Folder::Claims);
    let mut delivered = BTreeSet::new();
    for n in &known {
        let acct = account(n);
        let names = outbox_names(&tc, &acct);
        assert_eq!(names.len(), 1, "{acct}: {names:?}");
        let sealed = tc.dir.path().join(format!("{acct}.p7m"));
        curl_as(&tc, &acct, &format!("/outbox/{}", names[0]), Some(&sealed));
        let child = support::openssl_decrypt(&sealed, &acct);

        // Named by the agency for this insurer, first send of the day.
        let stem = format!("{AGENCY}_{n}_");
        assert!(names[0].contains(&stem), "{}", names[0]);
        assert!(names[0].ends_with("0_1.zip.p7m"), "{}", names[0]);

        // Exactly this insurer's persons, byte for byte, each with its claim.
        let data = records(&child, Folder::Data);
        let expected: BTreeMap<String, String> = parent_data
            .iter()
            .filter(|(p, _)| owner.get(*p).map(String::as_str) == Some(*n))
            .map(|(p, h)| (p.clone(), h.clone()))
            .collect();
        assert_eq!(data, expected, "{acct}: DATA files differ");
        let claims = records(&child, Folder::Claims);
        assert_eq!(claims.len(), data.len());
        for (c, h) in &claims {
            assert_eq!(parent_claims.get(c), Some(h), "{acct}: {c} differs");
        }
        for p in data.keys() {
            assert!(delivered.insert(p.clone()), "{p} delivered twice");
        }

        // The index and summary pass the official schemas; the whole child too.
        let dir = tc.dir.path().join(format!("unzipped-{acct}"));
        let zip_path = tc.dir.path().join(format!("{acct}.zip"));
        std::fs::write(&zip_path, &child).expect("write");
        let out = Command::new("unzip")
            .arg("-q")
            .arg(&zip_path)
            .arg("-d")
            .arg(&dir)
            .output()
            .expect("unzip");
        assert!(out.status.success(), "{out:?}");
        let top = std::fs::read_dir(&dir)
            .expect("unzipped")
            .flatten()
            .next()
            .expect("a top folder")
            .path();
        xmllint("ix08_V08.xsd", &top.join("ix08_V08.xml"));
        xmllint("su08_V08.xsd", &top.join("su08_V08.xml"));
        let index = std::fs::read_to_string(top.join("ix08_V08.xml")).expect("index");
        assert!(index.contains("<interactionType code=\"3\"/>"), "{index}");
        assert!(
            index.contains(&format!("<totalRecordCount value=\"{}\"/>", 2 * data.len())),
            "{index}"
        );
        assert!(top.join("XSD/ix08_V08.xsd").is_file());
        let summary = std::fs::read_to_string(top.join("su08_V08.xml")).expect("summary");
        assert!(
            summary.contains(&format!("<totalSubjectCount value=\"{}\"/>", data.len())),
            "{summary}"
        );
        for f in std::fs::read_dir(top.join("DATA")).expect("DATA").flatten() {
            xmllint("hc08_V08.xsd", &f.path());
        }
        for f in std::fs::read_dir(top.join("CLAIMS"))
            .expect("CLAIMS")
            .flatten()
        {
            xmllint("cc08_V08.xsd", &f.path());
        }
    }

    // The clinic: a `split` receipt listing the four children, and a `rejected` receipt of
    // the same archive listing the unknown insurer's persons. Nothing is dropped.
    let mut split = None;
    let mut rejected = None;
    assert!(
        wait_for(30, || {
            let rs = receipts(&tc, CLINIC);
            split = rs.iter().find(|r| r["hop"] == "split").cloned();
            rejected = rs.iter().find(|r| r["hop"] == "rejected").cloned();
            split.is_some() && rejected.is_some()
        }),
        "no split and rejected receipts for the clinic"
    );
    let (split, rejected) = (split.expect("split"), rejected.expect("rejected"));
    assert_eq!(split["file_id"], rejected["file_id"]);
    let children = split["children"].as_array().expect("children");
    assert_eq!(children.len(), known.len());
    let in_children: u64 = children
        .iter()
        .map(|c| c["persons"].as_u64().expect("persons"))
        .sum();
    let returned: BTreeSet<String> = rejected["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| {
            assert_eq!(r["rule"], "split.unroutable-insurer");
            r["file"].as_str().expect("file").to_owned()
        })
        .collect();
    let unknown: BTreeSet<String> = owner
        .iter()
        .filter(|(_, i)| *i == UNKNOWN)
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(returned, unknown);
    assert_eq!(in_children as usize, delivered.len());
    assert_eq!(delivered.len() + returned.len(), spec.persons);
    assert!(delivered.is_disjoint(&returned));

    // Each child's receipts carry the parent's id; the trace shows the tree.
    let parent_id = split["file_id"].as_str().expect("id").to_owned();
    for c in children {
        let acct = c["recipient"].as_str().expect("recipient");
        assert!(
            receipts(&tc, acct)
                .iter()
                .any(|r| r["hop"] == "delivered" && r["parent"] == parent_id.as_str()),
            "{acct}: no delivered receipt naming the parent"
        );
    }
    let trace = support::output_ok(
        Command::new(support::handoff_bin())
            .args(["receipts", "trace", &parent_id, "--config"])
            .arg(&tc.path),
    );
    let text = String::from_utf8_lossy(&trace.stdout);
    println!("{text}");
    assert!(text.contains(" split "), "{text}");
    for c in children {
        assert!(text.contains(c["file_id"].as_str().expect("id")), "{text}");
    }
}

#[test]
fn by_default_an_agency_archive_with_an_unknown_insurer_is_returned_whole() {
    let tc = TestConfig::new();
    let _clamd = ClamdInstance::start(tc.dir.path());
    let _daemon = Daemon::start(&tc);
    let (spec, bytes, owner) = parent();
    hand_off(&tc, CLINIC, &spec.archive_name().file_name(), &bytes);
    let mut rejected = None;
    assert!(
        wait_for(120, || {
            rejected = receipts(&tc, CLINIC)
                .into_iter()
                .find(|r| r["hop"] == "rejected");
            rejected.is_some()
        }),
        "not rejected"
    );
    let rejected = rejected.expect("rejected");
    let files: BTreeSet<&str> = rejected["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .filter_map(|r| r["file"].as_str())
        .collect();
    let unknown: BTreeSet<&str> = owner
        .iter()
        .filter(|(_, i)| *i == UNKNOWN)
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(files, unknown);
    assert!(!receipts(&tc, CLINIC).iter().any(|r| r["hop"] == "split"));
    for n in INSURERS.iter().filter(|i| **i != UNKNOWN) {
        assert!(
            outbox_names(&tc, &format!("insurer-{n}")).is_empty(),
            "{n} got a file"
        );
    }
}

/// N (0–9) counts the agency's sends to an insurer in a day; with all ten used, the next
/// archive for that insurer is refused whole (`split.send-count`), and nothing is sent to any
/// of its insurers.
#[test]
fn an_eleventh_split_to_an_insurer_on_one_day_is_refused() {
    let tc = TestConfig::new();
    let config = handoff::config::load(&tc.path).expect("config").config;
    handoff::state::StateLayout::new(tc.state_dir())
        .create(&config)
        .expect("state dir");
    // Ten earlier splits today, each with a child for 06130017.
    let day = handoff::validate::format::date_digits(handoff::validate::today(
        config.gateway.utc_offset(),
    ));
    {
        use handoff::pipeline::jobs::{JobStore, SqliteStore};
        let store = SqliteStore::open(&tc.state_dir().join("store")).expect("store");
        for k in 0..10 {
            store
                .plan_split(&format!("earlier-{k}"), &day, &["06130017"])
                .expect("store")
                .expect("within the day's sends");
        }
    }
    let _clamd = ClamdInstance::start(tc.dir.path());
    let _daemon = Daemon::start(&tc);
    let known: Vec<&str> = INSURERS.iter().copied().filter(|i| *i != UNKNOWN).collect();
    let today = handoff::validate::today(config.gateway.utc_offset());
    let spec = Spec::to_agency(20, today.previous_day().expect("a date"), AGENCY, &known);
    let bytes = testdata::write_valid(&spec, Vec::new()).expect("generate");
    hand_off(&tc, CLINIC, &spec.archive_name().file_name(), &bytes);

    let mut rejected = None;
    assert!(
        wait_for(120, || {
            rejected = receipts(&tc, CLINIC)
                .into_iter()
                .find(|r| r["hop"] == "rejected");
            rejected.is_some()
        }),
        "not rejected"
    );
    let rejected = rejected.expect("rejected");
    let rules: Vec<&str> = rejected["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .filter_map(|r| r["rule"].as_str())
        .collect();
    assert_eq!(rules, ["split.send-count"], "{rejected}");
    let message = rejected["reasons"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("06130017"), "{message}");
    assert!(!receipts(&tc, CLINIC).iter().any(|r| r["hop"] == "split"));
    for n in &known {
        assert!(
            outbox_names(&tc, &format!("insurer-{n}")).is_empty(),
            "{n} got a file"
        );
    }
}
