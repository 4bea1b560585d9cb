//! Receipts: one per file and hop, in the right boxes, chained and signed; the chain check
//! catches changes, removals and reordering; a receipt verifies independently with Python.

mod support;

use std::fs;
use std::process::Command;

use handoff::events::FileEvent;
use handoff::events::{Finding, Hop};
use handoff::ids::Sha256;
use handoff::receipts::issuer::Issuer;
use handoff::receipts::ledger::Ledger;
use handoff::receipts::{Receipt, ReceiptError, verify_chain};
use handoff::state::StateLayout;
use support::{MemoryLog, TestConfig};

const CLINIC: &str = "clinic-1312345679";
const INSURER: &str = "insurer-06130017";

fn event(file: &str, hop: Hop) -> FileEvent {
    FileEvent {
        file_id: file.to_owned(),
        hop,
        at: time::OffsetDateTime::now_utc(),
        sender: support::counterpart(CLINIC),
        recipient: Some(support::counterpart(INSURER)),
        original_name: "checkup.zip".to_owned(),
        size: 1234,
        sha256: Sha256::from([0xab; 32]),
        sealed_sha256: (hop == Hop::Delivered).then(|| Sha256::from([0xcd; 32])),
        reasons: if hop == Hop::Rejected {
            vec![
                Finding::new("xsd.invalid", "element 'code' is not expected")
                    .in_file("DATA/h1.xml")
                    .at(12, Some(5)),
            ]
        } else {
            Vec::new()
        },
        parent: None,
        children: Vec::new(),
        actor: None,
        channel: None,
    }
}

struct Fixture {
    tc: TestConfig,
    layout: StateLayout,
    key: ed25519_dalek::SigningKey,
}

fn fixture() -> Fixture {
    let tc = TestConfig::new();
    let loaded = handoff::config::load(&tc.path).unwrap();
    let layout = StateLayout::new(tc.state_dir());
    layout.create(&loaded.config).unwrap();
    let key = handoff::keys::load_receipt_key(&loaded.config.gateway.receipt_key).unwrap();
    Fixture { tc, layout, key }
}

impl Fixture {
    fn issuer(&self) -> Issuer {
        Issuer::new(
            Ledger::open(&self.layout.receipt_ledger()).unwrap(),
            self.key.clone(),
            std::sync::Arc::new(handoff::boxes::LocalBoxes::new(&self.layout, None)),
        )
    }

    fn box_receipts(&self, who: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.layout.receipts(&support::counterpart(who)))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
}

#[test]
fn each_hop_gets_exactly_one_receipt_in_the_right_boxes() {
    let f = fixture();
    let log = MemoryLog::new(Vec::new());
    for hop in [Hop::Accepted, Hop::Delivered, Hop::Retrieved] {
        log.push(event("F1", hop));
    }
    log.push(event("F2", Hop::Accepted));
    log.push(event("F2", Hop::Rejected));
    // A duplicate event (e.g. replayed after a crash) issues nothing.
    log.push(event("F1", Hop::Retrieved));
    let mut issuer = f.issuer();
    assert_eq!(issuer.catch_up(&log).unwrap(), 5);
    // A restart on the same ledger issues nothing again.
    drop(issuer);
    let mut again = f.issuer();
    assert_eq!(again.catch_up(&log).unwrap(), 0);

    assert_eq!(
        f.box_receipts(CLINIC),
        [
            "F1.accepted.json",
            "F1.delivered.json",
            "F1.retrieved.json",
            "F2.accepted.json",
            "F2.rejected.json"
        ]
    );
    assert_eq!(
        f.box_receipts(INSURER),
        ["F1.delivered.json", "F1.retrieved.json"]
    );
    let all = again.ledger().all().unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(verify_chain(&all, &f.key.verifying_key()), Ok(5));
    let rejected = again.ledger().by_id("F2.rejected").unwrap().unwrap();
    assert_eq!(rejected.reasons[0].rule, "xsd.invalid");
    assert_eq!(rejected.reasons[0].line, Some(12));
    assert!(
        rejected
            .summary
            .as_deref()
            .unwrap()
            .contains("DATA/h1.xml:12:5")
    );
    let trace = again.ledger().trace("F1").unwrap();
    assert_eq!(
        trace.iter().map(|r| r.hop).collect::<Vec<_>>(),
        [Hop::Accepted, Hop::Delivered, Hop::Retrieved]
    );
    assert_eq!(
        trace[1].file_previous.as_deref(),
        Some(trace[0].hash().as_str())
    );
}

#[test]
fn chain_verification_detects_changes_removals_and_reordering() {
    let f = fixture();
    let log = MemoryLog::new(Vec::new());
    for i in 0..5 {
        log.push(event(&format!("F{i}"), Hop::Accepted));
    }
    let mut issuer = f.issuer();
    issuer.catch_up(&log).unwrap();
    let good = issuer.ledger().all().unwrap();
    let key = f.key.verifying_key();
    assert_eq!(verify_chain(&good, &key), Ok(5));

    let mut changed = good.clone();
    changed[2].size += 1;
    assert!(
        matches!(verify_chain(&changed, &key), Err(ReceiptError::BadSignature(id)) if id == "F2.accepted")
    );

    let mut removed = good.clone();
    removed.remove(2);
    assert!(matches!(
        verify_chain(&removed, &key),
        Err(ReceiptError::Sequence { .. } | ReceiptError::ChainBroken { .. })
    ));

    let mut reordered = good.clone();
    reordered.swap(1, 3);
    assert!(verify_chain(&reordered, &key).is_err());

    let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    assert!(matches!(
        verify_chain(&good, &other.verifying_key()),
        Err(ReceiptError::BadSignature(_))
    ));
}

#[test]
fn a_receipt_file_verifies_with_the_documented_python_procedure() {
    let f = fixture();
    let log = MemoryLog::new(Vec::new());
    log.push(event("F9", Hop::Accepted));
    log.push(event("F9", Hop::Rejected));
    f.issuer().catch_up(&log).unwrap();
    let script = support::repo_root().join("docs/verify-receipt.py");
    let public = support::repo_root().join("certs-example/receipt.pub");
    let file = f
        .layout
        .receipts(&support::counterpart(CLINIC))
        .join("F9.rejected.json");
    let out = support::output_ok(
        Command::new(support::python())
            .arg(&script)
            .arg(&public)
            .arg(&file),
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("OK: F9.rejected"));

    // The same procedure refuses a tampered copy.
    let mut r: Receipt = serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
    r.original_name = "other.zip".into();
    let tampered = f.tc.dir.path().join("tampered.json");
    fs::write(&tampered, r.to_canonical_json()).unwrap();
    let out = Command::new(support::python())
        .arg(&script)
        .arg(&public)
        .arg(&tampered)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn cli_trace_verify_and_export() {
    let f = fixture();
    let log = MemoryLog::new(Vec::new());
    for hop in [Hop::Accepted, Hop::Delivered, Hop::Retrieved] {
        log.push(event("F1", hop));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    f.issuer().catch_up(&log).unwrap();
    let run = |args: &[&str]| {
        Command::new(support::handoff_bin())
            .arg("receipts")
            .args(args)
            .arg("--config")
            .arg(&f.tc.path)
            .output()
            .unwrap()
    };
    let out = run(&["trace", "F1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let order: Vec<usize> = ["accepted", "delivered", "retrieved"]
        .iter()
        .map(|h| text.find(h).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    let out = run(&["verify"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK: 3 receipts"));

    let out = run(&["export", "--since", "2000-01-01T00:00:00Z"]);
    let export = f.tc.dir.path().join("export.jsonl");
    fs::write(&export, &out.stdout).unwrap();
    let public = support::repo_root().join("certs-example/receipt.pub");
    let out = run(&[
        "verify",
        "--from",
        export.to_str().unwrap(),
        "--public-key",
        public.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Drop the middle line: the chain check names the break and exits 1.
    let exported = fs::read_to_string(&export).unwrap();
    let lines: Vec<&str> = exported.lines().collect();
    fs::write(&export, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
    let out = run(&[
        "verify",
        "--from",
        export.to_str().unwrap(),
        "--public-key",
        public.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BROKEN"));
}

#[test]
fn receipt_times_have_one_form_and_export_since_is_an_instant() {
    let f = fixture();
    let log = MemoryLog::new(Vec::new());
    let at = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    };
    let mut early = event("F1", Hop::Accepted);
    early.at = at("2026-11-25T00:00:00.5Z");
    let mut late = event("F2", Hop::Accepted);
    late.at = at("2026-11-25T01:00:00Z");
    log.push(early);
    log.push(late);
    f.issuer().catch_up(&log).unwrap();
    let export = |since: &str| {
        let out = support::output_ok(
            Command::new(support::handoff_bin())
                .args(["receipts", "export", "--since", since, "--config"])
                .arg(&f.tc.path),
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Receipt>(l).unwrap())
            .map(|r| (r.file_id, r.time))
            .collect::<Vec<_>>()
    };
    // UTC, six fractional digits, whatever the instant's own precision.
    assert_eq!(
        export("2000-01-01T00:00:00Z"),
        [
            ("F1".to_owned(), "2026-11-25T00:00:00.500000Z".to_owned()),
            ("F2".to_owned(), "2026-11-25T01:00:00.000000Z".to_owned()),
        ]
    );
    // 09:30 in Japan is 00:30 UTC: only F2 is later; 09:00 is 00:00 UTC, before both.
    let after = export("2026-11-25T09:30:00+09:00");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].0, "F2");
    assert_eq!(export("2026-11-25T09:00:00+09:00").len(), 2);
}
