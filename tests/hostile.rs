//! Hostile clients and hostile files against a running `handoff serve`, with real peers
//! (OpenSSH) on loopback. Every loop is bounded in count and time.

mod support;

use std::process::Command;

use support::{Daemon, TestConfig, handoff_bin, sftp_batch, sftp_batch_with};

const CLINIC: &str = "clinic-1312345679";
const INSURER: &str = "insurer-06130017";

/// The client binds this source address: all of 127.0.0.0/8 is local.
const ELSEWHERE: &[&str] = &["-o", "BindAddress=127.0.0.2"];

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn bans(tc: &TestConfig, args: &[&str]) -> std::process::Output {
    Command::new(handoff_bin())
        .arg("bans")
        .args(args)
        .arg("--config")
        .arg(&tc.path)
        .output()
        .expect("run handoff bans")
}

/// An attacker at 127.0.0.1 offers a wrong key as the clinic until 127.0.0.1 is banned; the
/// clinic itself, from 127.0.0.2, still logs in. The NOC sees the ban and lifts it.
#[test]
fn a_banned_attacker_does_not_lock_out_the_victim() {
    let tc = TestConfig::with(|t| {
        t.replace("auth_failures_per_ip = 10", "auth_failures_per_ip = 3")
            .replace(
                "auth_failures_per_account = 5",
                "auth_failures_per_account = 100",
            )
    });
    let d = Daemon::start(&tc);
    for _ in 0..4 {
        let out = sftp_batch(tc.sftp_port, CLINIC, INSURER, "ls\n");
        assert!(!out.status.success(), "a wrong key is refused");
    }
    let from_attacker = sftp_batch(tc.sftp_port, CLINIC, CLINIC, "ls\n");
    assert!(
        !from_attacker.status.success(),
        "the attacker's address is banned, even with the right key"
    );
    let victim = sftp_batch_with(tc.sftp_port, CLINIC, CLINIC, "ls /inbox\n", ELSEWHERE);
    assert!(
        victim.status.success(),
        "the clinic logs in from elsewhere: {}",
        text(&victim)
    );
    let login = d
        .audit_lines("sftp.login")
        .into_iter()
        .find(|l| l.contains("127.0.0.2"));
    assert!(login.is_some(), "the victim's login came from 127.0.0.2");

    let listed = bans(&tc, &[]);
    assert!(listed.status.success(), "{}", text(&listed));
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let rows: Vec<&str> = listed.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "one ban, of the attacker: {listed}");
    assert!(rows[0].starts_with("127.0.0.1 "), "{listed}");
    assert!(!listed.contains("127.0.0.2"), "{listed}");

    let unban = bans(&tc, &["unban", "127.0.0.1"]);
    assert!(unban.status.success(), "{}", text(&unban));
    let listed = bans(&tc, &[]);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).trim(),
        "no bans in force"
    );
    let after = sftp_batch(tc.sftp_port, CLINIC, CLINIC, "ls /inbox\n");
    assert!(after.status.success(), "unbanned: {}", text(&after));
    assert!(!d.audit_lines("auth.unban").is_empty());
    // Nothing left to lift.
    assert!(!bans(&tc, &["unban", "127.0.0.1"]).status.success());
}

/// Failures against one account from one address ban only that pair: the same address still
/// reaches other accounts, and the account is still reachable from elsewhere.
#[test]
fn account_failures_ban_only_the_account_from_that_address() {
    let tc = TestConfig::with(|t| {
        t.replace("auth_failures_per_ip = 10", "auth_failures_per_ip = 100")
            .replace(
                "auth_failures_per_account = 5",
                "auth_failures_per_account = 2",
            )
    });
    let d = Daemon::start(&tc);
    for _ in 0..3 {
        assert!(
            !sftp_batch(tc.sftp_port, CLINIC, INSURER, "ls\n")
                .status
                .success()
        );
    }
    assert!(
        !sftp_batch(tc.sftp_port, CLINIC, CLINIC, "ls\n")
            .status
            .success(),
        "the clinic's account is banned from 127.0.0.1"
    );
    let other = sftp_batch(tc.sftp_port, INSURER, INSURER, "ls /outbox\n");
    assert!(
        other.status.success(),
        "another account from 127.0.0.1: {}",
        text(&other)
    );
    let victim = sftp_batch_with(tc.sftp_port, CLINIC, CLINIC, "ls /inbox\n", ELSEWHERE);
    assert!(
        victim.status.success(),
        "the clinic from 127.0.0.2: {}",
        text(&victim)
    );
    let bans_logged = d.audit_lines("auth.ban");
    assert_eq!(bans_logged.len(), 1, "{bans_logged:?}");
    assert!(bans_logged[0].contains("account clinic-1312345679 from 127.0.0.1"));

    let listed = bans(&tc, &[]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains(CLINIC), "{listed}");
    let unban = bans(&tc, &["unban", "127.0.0.1", "--account", CLINIC]);
    assert!(unban.status.success(), "{}", text(&unban));
    let after = sftp_batch(tc.sftp_port, CLINIC, CLINIC, "ls /inbox\n");
    assert!(after.status.success(), "unbanned: {}", text(&after));
}

/// A ban outlives a restart of the daemon.
#[test]
fn bans_survive_a_restart() {
    let tc =
        TestConfig::with(|t| t.replace("auth_failures_per_ip = 10", "auth_failures_per_ip = 1"));
    let d = Daemon::start(&tc);
    for _ in 0..2 {
        assert!(
            !sftp_batch(tc.sftp_port, CLINIC, INSURER, "ls\n")
                .status
                .success()
        );
    }
    drop(d);
    let _d = Daemon::start(&tc);
    assert!(
        !sftp_batch(tc.sftp_port, CLINIC, CLINIC, "ls\n")
            .status
            .success(),
        "still banned after the restart"
    );
    assert!(
        sftp_batch_with(tc.sftp_port, CLINIC, CLINIC, "ls\n", ELSEWHERE)
            .status
            .success()
    );
}

fn events(tc: &TestConfig) -> Vec<handoff::pipeline::events::FileEvent> {
    use handoff::pipeline::events::EventLog;
    let Ok(store) = handoff::spool::store::SqliteStore::open(&tc.state_dir().join("store")) else {
        return Vec::new();
    };
    store
        .events_after(0, 100_000)
        .unwrap_or_default()
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

/// A stage that panics on a file (failure injected beside the real stage) is retried a bounded
/// number of times; then the file is rejected with `internal.error`, kept in quarantine, and
/// the NOC alerted — and the pipeline goes on with other files.
#[test]
fn a_job_whose_stage_panics_is_rejected_after_bounded_attempts() {
    use handoff::receipts::Hop;
    let tc = TestConfig::new();
    let d = Daemon::start_with_env(
        &tc,
        &[(handoff::pipeline::fault::PANIC_ENV, "validate:boom")],
    );
    support::hand_off(&tc, CLINIC, "boom.zip", b"PK not really an archive");
    support::hand_off(&tc, CLINIC, "plain.zip", b"PK not really an archive");
    assert!(
        support::wait_for(60, || events(&tc)
            .iter()
            .any(|e| e.original_name == "boom.zip" && e.hop == Hop::Rejected)),
        "no rejection: {}",
        d.log_text()
    );
    let all = events(&tc);
    let rejected = all
        .iter()
        .find(|e| e.original_name == "boom.zip" && e.hop == Hop::Rejected)
        .unwrap();
    assert_eq!(rejected.reasons.len(), 1);
    assert_eq!(rejected.reasons[0].rule, "internal.error");
    assert!(
        rejected.reasons[0].message.contains("再送してください")
            && rejected.reasons[0].message.contains("please send it again"),
        "{}",
        rejected.reasons[0].message
    );
    // The other file took the real path: refused by the schema check, not by the injection.
    assert!(support::wait_for(20, || events(&tc).iter().any(|e| e
        .original_name
        == "plain.zip"
        && e.hop == Hop::Rejected
        && e.reasons.iter().all(|r| r.rule != "internal.error"))));

    let panics = d
        .log_text()
        .lines()
        .filter(|l| l.contains("panic (its message is not logged"))
        .count();
    assert_eq!(
        panics,
        handoff::pipeline::MAX_INTERNAL_FAILURES as usize,
        "bounded attempts: {}",
        d.log_text()
    );
    assert!(
        !d.log_text().contains("injected panic"),
        "panic messages stay out of the log"
    );
    let alerts = d.audit_lines("alert.internal_error");
    assert_eq!(alerts.len(), 1, "{}", d.log_text());
    assert!(alerts[0].contains(&rejected.file_id));
    let quarantined = tc.state_dir().join("quarantine").join(&rejected.file_id);
    assert!(quarantined.exists(), "the file stays in quarantine");
    let receipt = tc
        .state_dir()
        .join("boxes")
        .join(CLINIC)
        .join("receipts")
        .join(format!("{}.rejected.json", rejected.file_id));
    assert!(
        support::wait_for(20, || receipt.exists()),
        "the sender gets a receipt"
    );
    // No further attempts once rejected.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let later = d
        .log_text()
        .lines()
        .filter(|l| l.contains("panic (its message is not logged"))
        .count();
    assert_eq!(later, panics);
}
