//! What the NOC sees: Prometheus metrics that parse and move, the status page, and overdue
//! alerts raised from the receipt ledger (overdue files, a broken chain).

mod support;

use std::process::Command;

use handoff::events::FileEvent;
use handoff::events::Hop;
use support::{Daemon, TestConfig, sftp_batch};

fn get(port: u16, path: &str) -> String {
    let out = support::output_ok(
        Command::new("curl").args(["-sS", &format!("http://127.0.0.1:{port}{path}")]),
    );
    String::from_utf8(out.stdout).unwrap()
}

fn value_of(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn metrics_parse_with_promtool_and_counters_move() {
    let tc = TestConfig::new();
    let _d = Daemon::start(&tc);
    let before = get(tc.metrics_port, "/metrics");
    // A failed login moves the auth failure counter.
    let out = sftp_batch(
        tc.sftp_port,
        "clinic-1312345679",
        "insurer-06130017",
        "ls\n",
    );
    assert!(!out.status.success());
    let after = get(tc.metrics_port, "/metrics");
    let series =
        "handoff_auth_failures_total{transport=\"sftp\",reason=\"unknown-account-or-key\"}";
    assert_eq!(value_of(&before, series), 0.0);
    assert!(value_of(&after, series) >= 1.0, "{after}");

    let file = tc.dir.path().join("metrics.txt");
    std::fs::write(&file, &after).unwrap();
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool is installed by scripts/install-deps (package prometheus)");
    // promtool 2.42 lints in the classic text format, where a counter's HELP names the `_total`
    // series; OpenMetrics names the family without `_total`. Any other finding, and any parse
    // error ("error while linting"), fails the test.
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let unexpected: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            let Some(series) = l.strip_suffix(" no help text") else {
                return true;
            };
            let Some(family) = series.strip_suffix("_total") else {
                return true;
            };
            !after.contains(&format!("# HELP {family} "))
        })
        .collect();
    assert!(unexpected.is_empty(), "promtool: {report}");

    let page = get(tc.metrics_port, "/status");
    assert!(
        page.contains("<h1>handoff status</h1>")
            && page.contains("clinic-1312345679")
            && !page.contains("<script")
    );
}

#[test]
fn overdue_files_raise_alerts_and_show_on_the_status_page() {
    let tc = TestConfig::with(|t| t.replace("accept_overdue = \"15m\"", "accept_overdue = \"1m\""));
    let loaded = handoff::config::load(&tc.path).unwrap();
    let layout = handoff::state::StateLayout::new(tc.state_dir());
    layout.create(&loaded.config).unwrap();
    let event = |file: &str, hop, minutes_ago: i64| FileEvent {
        file_id: file.into(),
        hop,
        at: time::OffsetDateTime::now_utc() - time::Duration::minutes(minutes_ago),
        sender: support::counterpart("clinic-1312345679"),
        recipient: Some(support::counterpart("insurer-06130017")),
        original_name: "a.zip".into(),
        size: 1,
        sha256: handoff::ids::Sha256::from([0; 32]),
        sealed_sha256: None,
        reasons: vec![],
        parent: None,
        children: Vec::new(),
        actor: None,
        channel: None,
    };
    // STUCK was accepted 10 minutes ago and never went further; DONE was delivered.
    let log = support::MemoryLog::new(vec![
        event("STUCK", Hop::Accepted, 10),
        event("DONE", Hop::Accepted, 10),
        event("DONE", Hop::Delivered, 9),
        event("NEW", Hop::Accepted, 0),
    ]);
    let key = handoff::keys::load_receipt_key(&loaded.config.gateway.receipt_key).unwrap();
    let ledger = handoff::receipts::ledger::Ledger::open(&layout.receipt_ledger()).unwrap();
    handoff::receipts::issuer::Issuer::new(
        ledger,
        key,
        std::sync::Arc::new(handoff::boxes::LocalBoxes::new(&layout, None)),
    )
    .catch_up(&log)
    .unwrap();

    let d = Daemon::start(&tc);
    assert!(
        support::wait_for(15, || !d.audit_lines("alert.accept_overdue").is_empty()),
        "no overdue alert:\n{}",
        d.log_text()
    );
    let alerts = d.audit_lines("alert.accept_overdue");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(alerts[0].contains("STUCK"));
    // The chain check ran in the same round and found the untouched ledger intact.
    assert!(d.audit_lines("alert.receipt_chain_broken").is_empty());
    let metrics = get(tc.metrics_port, "/metrics");
    assert_eq!(
        value_of(&metrics, "handoff_overdue_files{kind=\"accept\"}"),
        1.0,
        "{metrics}"
    );
    let page = get(tc.metrics_port, "/status");
    assert!(
        page.contains("STUCK") && page.contains("accepted, not delivered"),
        "{page}"
    );
}

#[test]
fn a_modified_receipt_in_the_ledger_raises_the_chain_alert() {
    let tc = TestConfig::new();
    let loaded = handoff::config::load(&tc.path).unwrap();
    let layout = handoff::state::StateLayout::new(tc.state_dir());
    layout.create(&loaded.config).unwrap();
    let event = |file: &str, hop| FileEvent {
        file_id: file.into(),
        hop,
        at: time::OffsetDateTime::now_utc(),
        sender: support::counterpart("clinic-1312345679"),
        recipient: Some(support::counterpart("insurer-06130017")),
        original_name: "a.zip".into(),
        size: 1,
        sha256: handoff::ids::Sha256::from([0; 32]),
        sealed_sha256: None,
        reasons: vec![],
        parent: None,
        children: Vec::new(),
        actor: None,
        channel: None,
    };
    let log = support::MemoryLog::new(vec![
        event("F1", Hop::Accepted),
        event("F1", Hop::Delivered),
        event("F2", Hop::Accepted),
    ]);
    let db = layout.receipt_ledger();
    let key = handoff::keys::load_receipt_key(&loaded.config.gateway.receipt_key).unwrap();
    let ledger = handoff::receipts::ledger::Ledger::open(&db).unwrap();
    handoff::receipts::issuer::Issuer::new(
        ledger,
        key,
        std::sync::Arc::new(handoff::boxes::LocalBoxes::new(&layout, None)),
    )
    .catch_up(&log)
    .unwrap();
    // Someone edits the stored delivered receipt of F1: its size no longer matches the signature.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let changed = conn
        .execute(
            "UPDATE receipts SET json = replace(json, '\"size\":1', '\"size\":2') WHERE id = 'F1.delivered'",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);

    let d = Daemon::start(&tc);
    assert!(
        support::wait_for(15, || !d
            .audit_lines("alert.receipt_chain_broken")
            .is_empty()),
        "no chain alert:\n{}",
        d.log_text()
    );
    let alerts = d.audit_lines("alert.receipt_chain_broken");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(alerts[0].contains("F1.delivered"), "{alerts:?}");
    let metrics = get(tc.metrics_port, "/metrics");
    assert_eq!(
        value_of(
            &metrics,
            "handoff_alerts_total{kind=\"receipt_chain_broken\"}"
        ),
        1.0,
        "{metrics}"
    );
}

#[test]
fn a_break_glass_login_raises_an_alert_and_counts() {
    let tc = TestConfig::with(|t| {
        let edited = t.replace(
            "enabled = false\nscope = [\"clinic-1312345679\"",
            "enabled = true\nscope = [\"clinic-1312345679\"",
        );
        assert_ne!(
            edited, t,
            "break-glass block not found in the example config"
        );
        edited
    });
    let d = Daemon::start(&tc);
    let out = sftp_batch(tc.sftp_port, "emergency", "emergency", "ls\n");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log_text()
    );
    let alerts = d.audit_lines("alert.break_glass");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(alerts[0].contains("emergency"), "{alerts:?}");
    let metrics = get(tc.metrics_port, "/metrics");
    assert_eq!(
        value_of(&metrics, "handoff_alerts_total{kind=\"break_glass\"}"),
        1.0,
        "{metrics}"
    );
}
