//! Hostile clients and hostile files against a running `handoff serve`, with real peers
//! (OpenSSH) on loopback. Every loop is bounded in count and time.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

fn events(tc: &TestConfig) -> Vec<handoff::events::FileEvent> {
    use handoff::events::EventLog;
    let Ok(store) = handoff::pipeline::jobs::SqliteStore::open(&tc.state_dir().join("store"))
    else {
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
    use handoff::events::Hop;
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
    // The alert follows the committed rejection.
    assert!(support::wait_for(10, || !d
        .audit_lines("alert.internal_error")
        .is_empty()));
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

/// The `Authentications that can continue` lists an OpenSSH client is given for `account`.
fn offered_methods(tc: &TestConfig, account: &str) -> Vec<String> {
    let key = support::repo_root().join("certs-example/ssh").join(INSURER);
    let out = Command::new("sftp")
        .args(["-v", "-P", &tc.sftp_port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .args(["-o", "PreferredAuthentications=publickey,password"])
        .arg("-i")
        .arg(key)
        .args(["-b", "/dev/null"])
        .arg(format!("{account}@127.0.0.1"))
        .output()
        .expect("run sftp");
    text(&out)
        .lines()
        .filter_map(|l| l.split("Authentications that can continue: ").nth(1))
        .map(|m| m.trim().to_owned())
        .collect()
}

/// Runs `sftp` as `account` with one password (from an askpass program), public keys off.
fn password_login(
    tc: &TestConfig,
    account: &str,
    password: &str,
    extra: &[&str],
) -> std::process::Output {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let askpass = tc
        .dir
        .path()
        .join(format!("askpass-{}", support::free_port()));
    std::fs::write(&askpass, format!("#!/bin/sh\necho '{password}'\n")).unwrap();
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut child = Command::new("sftp")
        .args(["-P", &tc.sftp_port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password",
        ])
        .args(["-o", "NumberOfPasswordPrompts=1"])
        .args(extra)
        .arg(format!("{account}@127.0.0.1"))
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sftp");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"ls /\nbye\n")
        .unwrap();
    child.wait_with_output().unwrap()
}

const PASSWORD_CLINIC: &str = "clinic-2717654327";
const PASSWORD: &str = "example-password-clinic-b";

/// `password` is offered only to accounts that have one; password attempts beyond the per-source
/// rate are refused before any hashing, and do not lock the account from elsewhere.
#[test]
fn passwords_are_offered_only_where_they_exist_and_rate_limited_before_hashing() {
    let tc = TestConfig::with(|t| {
        t.replace(
            "password_attempts_per_minute = 10",
            "password_attempts_per_minute = 2",
        )
    });
    let d = Daemon::start(&tc);
    let key_only = offered_methods(&tc, CLINIC);
    assert!(!key_only.is_empty());
    assert!(key_only.iter().all(|m| m == "publickey"), "{key_only:?}");
    let unknown = offered_methods(&tc, "nobody");
    assert!(unknown.iter().all(|m| m == "publickey"), "{unknown:?}");
    let with_password = offered_methods(&tc, PASSWORD_CLINIC);
    assert!(
        with_password.iter().any(|m| m == "publickey,password"),
        "{with_password:?}"
    );

    // A password sent anyway to a key-only account is refused without a check.
    assert!(!password_login(&tc, CLINIC, "guess", &[]).status.success());
    // Two wrong passwords use up 127.0.0.1's budget; the third attempt, even the right
    // password, is refused before hashing.
    for _ in 0..2 {
        assert!(
            !password_login(&tc, PASSWORD_CLINIC, "guess", &[])
                .status
                .success()
        );
    }
    let throttled = password_login(&tc, PASSWORD_CLINIC, PASSWORD, &[]);
    assert!(!throttled.status.success());
    let reasons: Vec<String> = d.audit_lines("sftp.auth_failure");
    assert!(
        reasons.iter().any(|l| l.contains("password-rate-limited")),
        "{reasons:?}"
    );
    // The clinic, from elsewhere, logs in with its password.
    let ok = password_login(&tc, PASSWORD_CLINIC, PASSWORD, ELSEWHERE);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("outbox"));
}

fn curl_https(tc: &TestConfig, cert: &str, url_path: &str) -> std::process::Output {
    let certs = support::repo_root().join("certs-example");
    Command::new("curl")
        .args(["-sS", "--max-time", "60", "--cacert"])
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join(format!("{cert}.pem")))
        .arg("--key")
        .arg(certs.join(format!("{cert}.key")))
        .arg(format!("https://localhost:{}{url_path}", tc.https_port))
        .output()
        .expect("run curl")
}

/// A box with 5,000 receipts lists completely: SFTP answers `readdir` in pages (OpenSSH's
/// client gives up on a reply over 256 KiB, which one answer of all 5,000 would be), and HTTPS
/// lists them all in one JSON answer.
#[test]
fn a_box_with_5000_receipts_lists_completely() {
    const RECEIPTS: usize = 5_000;
    let tc = TestConfig::new();
    let d = Daemon::start(&tc);
    let dir = tc.state_dir().join("boxes").join(CLINIC).join("receipts");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..RECEIPTS {
        let name = format!("f{i:05}-0123456789abcdef0123456789abcdef.accepted.json");
        std::fs::write(dir.join(name), b"{}").unwrap();
    }
    let out = sftp_batch(tc.sftp_port, CLINIC, CLINIC, "ls -1 /receipts\n");
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let listed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.ends_with(".accepted.json"))
        .collect();
    assert_eq!(listed.len(), RECEIPTS, "{}", text(&out));
    assert!(listed.iter().any(|l| l.contains("f04999-")));
    let lists = d.audit_lines("box.list");
    assert!(lists.iter().any(|l| l.contains("5000")), "{lists:?}");

    let out = curl_https(&tc, CLINIC, "/receipts/");
    assert!(out.status.success(), "{}", text(&out));
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON listing");
    let files = body["files"].as_array().expect("files");
    assert_eq!(files.len(), RECEIPTS);
    assert_eq!(
        files[RECEIPTS - 1]["name"],
        "f04999-0123456789abcdef0123456789abcdef.accepted.json"
    );
}

/// Reads from `s` until the peer closes the connection or `limit` passes: what was read, and
/// whether it was closed.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (got, false);
            }
            Err(_) => return (got, true),
        }
    }
}

/// A raw TCP connection to the SSH port that has read the server's version line.
fn ssh_banner(port: u16) -> TcpStream {
    try_ssh_banner(port).unwrap_or_else(|line| panic!("no version line: {line:?}"))
}

/// As [`ssh_banner`], or what came instead of the version line.
fn try_ssh_banner(port: u16) -> Result<TcpStream, Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") && line.len() < 256 {
        match s.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => return Err(line),
        }
    }
    if line.starts_with(b"SSH-2.0-handoff") {
        Ok(s)
    } else {
        Err(line)
    }
}

/// `n` raw connections that got the version line, taking slots as they come free (a
/// connection that just ended may hold one for a moment).
fn ssh_banners(port: u16, n: usize) -> Vec<TcpStream> {
    let mut got = Vec::new();
    assert!(
        support::wait_for(10, || {
            got.extend(try_ssh_banner(port).ok());
            got.len() == n
        }),
        "only {} of {n} connections admitted",
        got.len()
    );
    got
}

/// Waits (bounded) for `child` to exit; kills it if it does not.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// An OpenSSH `sftp` in batch mode reading its commands from a pipe the test holds.
fn sftp_held(tc: &TestConfig, extra: &[&str]) -> Child {
    let args: Vec<&str> = extra.iter().copied().chain(["-b", "-"]).collect();
    support::sftp_command(tc.sftp_port, CLINIC, CLINIC, &args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sftp")
}

/// A client that connects and says nothing is closed after `ssh_version_timeout`; one that
/// says its version but does not authenticate, after `login_grace_time`.
#[test]
fn ssh_clients_must_say_their_version_and_log_in_in_time() {
    let tc = TestConfig::with(|t| {
        t.replace(
            "ssh_version_timeout = \"10s\"",
            "ssh_version_timeout = \"1s\"",
        )
        .replace("login_grace_time = \"30s\"", "login_grace_time = \"2s\"")
    });
    let d = Daemon::start(&tc);
    let mut silent = ssh_banner(tc.sftp_port);
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(20));
    assert!(closed, "a client that sends no version is closed");
    assert!(support::wait_for(5, || d
        .audit_lines("sftp.timeout")
        .iter()
        .any(|l| l.contains("version"))));

    let mut stalled = ssh_banner(tc.sftp_port);
    stalled.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
    let (got, closed) = read_until_closed(&mut stalled, Duration::from_secs(20));
    assert!(closed, "a client that does not authenticate is closed");
    assert!(!got.is_empty(), "the key exchange had begun");
    assert!(support::wait_for(5, || d
        .audit_lines("sftp.timeout")
        .iter()
        .any(|l| l.contains("authentication"))));
    // A client that logs in is not cut by the grace time.
    let out = sftp_batch(tc.sftp_port, CLINIC, CLINIC, "ls /\n");
    assert!(out.status.success(), "{}", text(&out));
}

/// Connections that have not authenticated are capped (OpenSSH's MaxStartups), and so are all
/// connections: past either cap a connection is closed on arrival, before the version line.
#[test]
fn unauthenticated_and_total_ssh_connections_are_capped() {
    let tc = TestConfig::with(|t| {
        t.replace(
            "max_unauthenticated_connections = 64",
            "max_unauthenticated_connections = 2",
        )
        .replace("max_connections = 1024", "max_connections = 3")
    });
    let d = Daemon::start(&tc);
    // Connections that said their version line keep their slots (silent ones give them up: see
    // silent_connections_give_their_slots_to_new_ones).
    let idle: Vec<TcpStream> = ssh_banners(tc.sftp_port, 2)
        .into_iter()
        .map(|mut s| {
            s.write_all(b"SSH-2.0-stalling\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut third = TcpStream::connect(("127.0.0.1", tc.sftp_port)).unwrap();
    let (got, closed) = read_until_closed(&mut third, Duration::from_secs(10));
    assert!(closed && got.is_empty(), "closed on arrival: {got:?}");
    assert!(support::wait_for(5, || d
        .audit_lines("sftp.connection_refused")
        .iter()
        .any(|l| l.contains("not yet authenticated"))));
    drop(idle);
    // The slots come free when those connections end.
    assert!(
        support::wait_for(10, || sftp_batch(tc.sftp_port, CLINIC, CLINIC, "ls /\n")
            .status
            .success()),
        "{}",
        d.log_text()
    );

    // Two logged-in sessions and one unauthenticated connection fill max_connections = 3.
    let logins = d.audit_lines("sftp.login").len();
    let mut held: Vec<Child> = (0..2).map(|_| sftp_held(&tc, &[])).collect();
    assert!(support::wait_for(20, || d.audit_lines("sftp.login").len() == logins + 2));
    let _third = ssh_banners(tc.sftp_port, 1);
    let mut fourth = TcpStream::connect(("127.0.0.1", tc.sftp_port)).unwrap();
    let (got, closed) = read_until_closed(&mut fourth, Duration::from_secs(10));
    assert!(closed && got.is_empty(), "closed on arrival: {got:?}");
    assert!(support::wait_for(5, || d
        .audit_lines("sftp.connection_refused")
        .iter()
        .any(|l| l.contains("too many connections (at most 3)"))));
    for child in &mut held {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"pwd\nbye\n")
            .unwrap();
        let status = wait_exit(child, Duration::from_secs(20));
        assert!(
            status.is_some_and(|s| s.success()),
            "held sessions still work"
        );
    }
}

/// Connections that have not even sent their version line give their slot up to a newcomer when
/// every unauthenticated slot is held: idle connections cannot keep a client out.
#[test]
fn silent_connections_give_their_slots_to_new_ones() {
    let tc = TestConfig::with(|t| {
        t.replace(
            "max_unauthenticated_connections = 64",
            "max_unauthenticated_connections = 2",
        )
    });
    let d = Daemon::start(&tc);
    let mut silent = ssh_banners(tc.sftp_port, 2);
    let out = sftp_batch(tc.sftp_port, CLINIC, CLINIC, "ls /\n");
    assert!(out.status.success(), "{}", text(&out));
    let (_, closed) = read_until_closed(&mut silent[0], Duration::from_secs(10));
    assert!(closed, "the oldest silent connection gave its slot up");
    assert!(support::wait_for(5, || d
        .audit_lines("sftp.connection_refused")
        .iter()
        .any(|l| l.contains("its slot given to a new connection"))));
}

/// An authenticated session whose channels do not move for `idle_timeout` is closed; one that
/// keeps asking is not.
#[test]
fn idle_ssh_sessions_are_closed_and_busy_ones_are_not() {
    let tc = TestConfig::with(|t| t.replace("idle_timeout = \"15m\"", "idle_timeout = \"3s\""));
    let d = Daemon::start(&tc);
    let mut idle = sftp_held(&tc, &[]);
    assert!(
        support::wait_for(30, || !d.audit_lines("sftp.logout").is_empty()),
        "the idle session is closed: {}",
        d.log_text()
    );
    let closed = d.audit_lines("sftp.idle_timeout");
    assert_eq!(closed.len(), 1, "{}", d.log_text());
    assert!(closed[0].contains(CLINIC));
    // The client learns it at its next command.
    idle.stdin.take().unwrap().write_all(b"ls /\n").unwrap();
    let status = wait_exit(&mut idle, Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| !s.success()),
        "the client was cut off"
    );
    assert!(d.audit_lines("box.list").is_empty());

    let mut busy = sftp_held(&tc, &[]);
    let mut stdin = busy.stdin.take().unwrap();
    // Twice the idle timeout in all, never more than a sixth of it between two requests.
    for _ in 0..12 {
        stdin.write_all(b"ls /\n").unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    stdin.write_all(b"bye\n").unwrap();
    drop(stdin);
    let status = wait_exit(&mut busy, Duration::from_secs(20));
    let mut out = String::new();
    busy.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.is_some_and(|s| s.success()), "{out}");
    assert_eq!(out.matches("receipts").count(), 12, "{out}");
    assert_eq!(d.audit_lines("box.list").len(), 12);
    assert_eq!(d.audit_lines("sftp.idle_timeout").len(), 1);
}

/// One connection may hold at most `max_channels_per_connection` channels: OpenSSH's
/// connection sharing opens one channel per `sftp` on a single connection; the third is
/// refused, and a closed channel makes room again.
#[test]
fn channels_per_ssh_connection_are_capped() {
    let tc = TestConfig::with(|t| {
        t.replace(
            "max_channels_per_connection = 10",
            "max_channels_per_connection = 2",
        )
    });
    let d = Daemon::start(&tc);
    let control = tc.dir.path().join("mux");
    let control_opt = format!("ControlPath={}", control.display());
    let key = support::repo_root().join("certs-example/ssh").join(CLINIC);
    let mut master = Command::new("ssh")
        .args(["-p", &tc.sftp_port.to_string(), "-N", "-M"])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            &control_opt,
        ])
        .arg("-i")
        .arg(&key)
        .arg(format!("{CLINIC}@127.0.0.1"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run ssh");
    assert!(support::wait_for(20, || control.exists()), "no master");
    let shared = ["-o", &control_opt, "-o", "ControlMaster=no"];
    let mut held: Vec<Child> = (0..2).map(|_| sftp_held(&tc, &shared)).collect();
    // Both hold their channel once they have listed something.
    for child in &mut held {
        child.stdin.as_mut().unwrap().write_all(b"ls /\n").unwrap();
    }
    assert!(
        support::wait_for(20, || d.audit_lines("box.list").len() == 2),
        "{}",
        d.log_text()
    );
    // Port 1 has no listener: the client cannot fall back to a connection of its own.
    let third = support::sftp_command(1, CLINIC, CLINIC, &[&shared[..], &["-b", "-"]].concat())
        .stdin(Stdio::piped())
        .output()
        .expect("run sftp");
    assert!(
        !third.status.success() && text(&third).contains("refused by peer"),
        "a third channel is refused: {}",
        text(&third)
    );
    assert!(support::wait_for(5, || d
        .audit_lines("sftp.refused")
        .iter()
        .any(|l| l.contains("max_channels_per_connection"))));
    assert_eq!(
        d.audit_lines("sftp.login").len(),
        1,
        "one connection carried them all"
    );
    for child in &mut held {
        child.stdin.take().unwrap().write_all(b"bye\n").unwrap();
        let status = wait_exit(child, Duration::from_secs(20));
        assert!(status.is_some_and(|s| s.success()));
    }
    // Closed channels make room again.
    let batch = tc.dir.path().join("ls-batch");
    std::fs::write(&batch, "ls /\n").unwrap();
    let batch = batch.display().to_string();
    let again = support::sftp_command(1, CLINIC, CLINIC, &[&shared[..], &["-b", &batch]].concat())
        .output()
        .expect("run sftp");
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(d.audit_lines("box.list").len(), 3);
    let _ = master.kill();
    let _ = master.wait();
}

/// curl, verbose, with an example certificate; `args` after the options.
fn curl_verbose(tc: &TestConfig, cert: &str, args: &[&str]) -> std::process::Output {
    let certs = support::repo_root().join("certs-example");
    let base = format!("https://localhost:{}", tc.https_port);
    Command::new("curl")
        .args(["-sS", "-v", "--max-time", "20", "--cacert"])
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join(format!("{cert}.pem")))
        .arg("--key")
        .arg(certs.join(format!("{cert}.key")))
        .args(args.iter().map(|a| a.replace("{base}", &base)))
        .output()
        .expect("run curl")
}

/// A valid certificate that maps to no account gets its 403 and loses the connection (HTTP/1.1
/// and HTTP/2 alike: the second request needs a new one); each such connection scores for its
/// source, which is banned past `auth_failures_per_ip` while others keep working.
#[test]
fn https_unmapped_certificates_are_closed_after_their_403_and_banned() {
    let tc =
        TestConfig::with(|t| t.replace("auth_failures_per_ip = 10", "auth_failures_per_ip = 3"));
    let d = Daemon::start(&tc);
    assert!(support::wait_for(20, || TcpStream::connect((
        "127.0.0.1",
        tc.https_port
    ))
    .is_ok()));
    let mut connections = 0;
    for version in ["--http1.1", "--http2"] {
        let out = curl_verbose(
            &tc,
            "unmapped-client",
            &[
                version,
                "-w",
                "%{http_code}\n",
                "{base}/inbox/",
                "{base}/outbox/",
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.matches("403").count(), 2, "{}", text(&out));
        assert!(stdout.contains("\"forbidden\""), "{stdout}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        connections += stderr.matches("* Connected to").count();
        if version == "--http1.1" {
            assert_eq!(
                stderr.matches("* Connected to").count(),
                2,
                "one connection per request: {stderr}"
            );
            assert!(!stderr.contains("Re-using existing connection"), "{stderr}");
        } else {
            // HTTP/2's graceful GOAWAY lets a request already on its way be answered (with
            // the same 403) before the connection closes; whether curl sent the second one
            // before the GOAWAY arrived is a race, the GOAWAY is not.
            assert!(
                stderr.contains("GOAWAY"),
                "the connection is closed: {stderr}"
            );
        }
    }
    // One record, and one score towards the ban (3 here), per connection.
    assert_eq!(
        d.audit_lines("https.unmapped_certificate").len(),
        connections
    );
    let bans = d.audit_lines("auth.ban");
    assert_eq!(bans.len(), 1, "{}", d.log_text());
    assert!(bans[0].contains("source 127.0.0.1"), "{}", bans[0]);
    // Banned: even the clinic's own certificate is turned away from 127.0.0.1 ...
    let out = curl_verbose(&tc, CLINIC, &["-w", "%{http_code}", "{base}/inbox/"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!d.audit_lines("https.connection_refused").is_empty());
    // ... and works from elsewhere.
    let out = curl_verbose(
        &tc,
        CLINIC,
        &[
            "--interface",
            "127.0.0.2",
            "-w",
            "%{http_code}",
            "{base}/inbox/",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("200"));
}

/// A CRL of the example CA, made with `openssl ca`, revoking the example certificates
/// `revoke`, due again after `next_seconds`.
fn ca_crl(dir: &std::path::Path, revoke: &[&str], next_seconds: u32) -> Vec<u8> {
    let certs = support::repo_root().join("certs-example");
    let db = dir.join(format!("ca-db-{}", support::free_port()));
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("index.txt"), "").unwrap();
    std::fs::write(db.join("crlnumber"), "1000\n").unwrap();
    let cnf = db.join("openssl.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[ ca ]\ndefault_ca = d\n[ d ]\ndatabase = {db}/index.txt\ncrlnumber = {db}/crlnumber\n\
             certificate = {certs}/ca.pem\nprivate_key = {certs}/ca.key\ndefault_md = sha256\n",
            db = db.display(),
            certs = certs.display()
        ),
    )
    .unwrap();
    for name in revoke {
        support::output_ok(
            Command::new("openssl")
                .args(["ca", "-config"])
                .arg(&cnf)
                .arg("-revoke")
                .arg(certs.join(format!("{name}.pem"))),
        );
    }
    let out = db.join("out.crl");
    support::output_ok(
        Command::new("openssl")
            .args(["ca", "-config"])
            .arg(&cnf)
            .args(["-gencrl", "-crlsec", &next_seconds.to_string(), "-out"])
            .arg(&out),
    );
    std::fs::read(out).unwrap()
}

/// A test config whose CRL is a file of its own (returned), holding `crl`.
fn with_own_crl(
    crl: &[u8],
    edit: impl FnOnce(String) -> String,
) -> (TestConfig, std::path::PathBuf) {
    let example = format!("{}/certs-example/ca.crl", support::repo_root().display());
    let holder = tempfile::tempdir().unwrap();
    let placeholder = holder.path().join("x");
    let tc = TestConfig::with(|t| edit(t.replace(&example, &placeholder.display().to_string())));
    let path = tc.dir.path().join("own.crl");
    std::fs::write(&path, crl).unwrap();
    tc.rewrite(&tc.text().replace(
        &placeholder.display().to_string(),
        &path.display().to_string(),
    ));
    (tc, path)
}

fn https_status(tc: &TestConfig, cert: &str, extra: &[&str]) -> Option<u16> {
    let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    args.extend_from_slice(extra);
    args.push("{base}/inbox/");
    let out = curl_verbose(tc, cert, &args);
    let code: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    (out.status.success() && code != 0).then_some(code)
}

fn hup(d: &Daemon) {
    assert!(
        Command::new("kill")
            .args(["-HUP", &d.pid().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

fn wait_https(tc: &TestConfig) {
    assert!(support::wait_for(20, || TcpStream::connect((
        "127.0.0.1",
        tc.https_port
    ))
    .is_ok()));
}

/// A CRL that does not parse refuses `check-config` and the start; on a reload it refuses the
/// new config, and the CRL in force stays.
#[test]
fn a_crl_that_does_not_parse_refuses_the_start_and_the_reload() {
    let good = std::fs::read(support::repo_root().join("certs-example/ca.crl")).unwrap();
    let (tc, crl) = with_own_crl(b"not a CRL", |t| t);
    let check = Command::new(handoff_bin())
        .arg("check-config")
        .arg(&tc.path)
        .output()
        .unwrap();
    assert!(!check.status.success());
    assert!(
        text(&check).contains("does not parse as a CRL"),
        "{}",
        text(&check)
    );
    let mut serve = Command::new(handoff_bin())
        .args(["serve", "--config"])
        .arg(&tc.path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut serve, Duration::from_secs(20));
    assert!(status.is_some_and(|s| !s.success()), "refused to start");

    std::fs::write(&crl, &good).unwrap();
    let d = Daemon::start(&tc);
    wait_https(&tc);
    assert_eq!(https_status(&tc, CLINIC, &[]), Some(200));
    assert_eq!(https_status(&tc, "revoked-client", &[]), None);
    std::fs::write(
        &crl,
        b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    hup(&d);
    assert!(
        support::wait_for(10, || d
            .audit_lines("config.refused")
            .iter()
            .any(|l| l.contains("CRL"))),
        "{}",
        d.log_text()
    );
    // The CRL in force stays: the revoked certificate is still refused, the clinic still in.
    assert_eq!(https_status(&tc, "revoked-client", &[]), None);
    assert_eq!(https_status(&tc, CLINIC, &[]), Some(200));
}

/// An idle HTTP/1.1 keep-alive connection held by `openssl s_client`, after one request.
fn keep_alive(tc: &TestConfig, cert: &str) -> Child {
    try_keep_alive(tc, cert).unwrap_or_else(|status| panic!("{status}"))
}

/// As [`keep_alive`], or the status line it got instead of a 200 (the client is ended then).
fn try_keep_alive(tc: &TestConfig, cert: &str) -> Result<Child, String> {
    use std::io::BufRead;
    let certs = support::repo_root().join("certs-example");
    let mut client = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{}", tc.https_port),
        ])
        .arg("-CAfile")
        .arg(certs.join("ca.pem"))
        .arg("-cert")
        .arg(certs.join(format!("{cert}.pem")))
        .arg("-key")
        .arg(certs.join(format!("{cert}.key")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    client
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"GET /inbox/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut reader = std::io::BufReader::new(client.stdout.take().unwrap());
    let mut status = String::new();
    let _ = reader.read_line(&mut status);
    if !status.starts_with("HTTP/1.1 200") {
        let _ = client.kill();
        let _ = client.wait();
        return Err(status);
    }
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    Ok(client)
}

/// A reloaded CRL that now revokes a certificate closes its open connections: an idle
/// HTTP/1.1 keep-alive one and an HTTP/2 upload in progress; new ones are refused, and other
/// certificates keep working.
#[test]
fn a_reloaded_crl_closes_open_connections_of_certificates_it_now_revokes() {
    const CLINIC_B: &str = "clinic-2717654327";
    let dir = tempfile::tempdir().unwrap();
    let (tc, crl) = with_own_crl(&ca_crl(dir.path(), &["revoked-client"], 86_400), |t| t);
    let d = Daemon::start(&tc);
    wait_https(&tc);
    let mut idle = keep_alive(&tc, CLINIC);
    let src = tc.dir.path().join("big.bin");
    support::random_file(&src, 40 << 20);
    let src = src.display().to_string();
    let certs = support::repo_root().join("certs-example");
    let mut upload = Command::new("curl")
        .args(["-sS", "--http2", "--limit-rate", "1M", "--cacert"])
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join(format!("{CLINIC}.pem")))
        .arg("--key")
        .arg(certs.join(format!("{CLINIC}.key")))
        .args(["-T", &src])
        .arg(format!("https://localhost:{}/inbox/big.bin", tc.https_port))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let staging = tc.state_dir().join("staging").join(CLINIC);
    assert!(support::wait_for(10, || std::fs::read_dir(&staging)
        .map(|mut r| r.next().is_some())
        .unwrap_or(false)));
    assert!(
        idle.try_wait().unwrap().is_none(),
        "keep-alive connection open"
    );

    std::fs::write(
        &crl,
        ca_crl(dir.path(), &["revoked-client", CLINIC], 86_400),
    )
    .unwrap();
    hup(&d);
    let closed = wait_exit(&mut idle, Duration::from_secs(10));
    assert!(
        closed.is_some(),
        "keep-alive connection closed: {}",
        d.log_text()
    );
    let cut = wait_exit(&mut upload, Duration::from_secs(20));
    assert!(cut.is_some_and(|s| !s.success()), "upload cut");
    let revoked = d.audit_lines("https.revoked");
    assert_eq!(revoked.len(), 2, "{revoked:?}");
    assert!(
        revoked
            .iter()
            .all(|l| l.contains(CLINIC) && l.contains("revoked by the CRL"))
    );
    assert!(d.audit_lines("box.upload").is_empty());
    assert_eq!(https_status(&tc, CLINIC, &[]), None, "refused from now on");
    assert_eq!(https_status(&tc, CLINIC_B, &[]), Some(200));
}

/// A CRL past its nextUpdate raises an alert; once `crl_grace` has passed too, the CA's
/// clients are refused and their open connections closed.
#[test]
fn a_crl_past_its_next_update_alerts_and_after_its_grace_refuses_the_cas_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (tc, _crl) = with_own_crl(&ca_crl(dir.path(), &["revoked-client"], 5), |t| {
        t.replace("crl_grace = \"24h\"", "crl_grace = \"5s\"")
    });
    let d = Daemon::start(&tc);
    wait_https(&tc);
    // Within nextUpdate and the grace: let in.
    let mut idle = keep_alive(&tc, CLINIC);
    assert!(
        support::wait_for(20, || !d.audit_lines("alert.crl_stale").is_empty()),
        "{}",
        d.log_text()
    );
    let closed = wait_exit(&mut idle, Duration::from_secs(30));
    assert!(closed.is_some(), "open connection closed after the grace");
    let revoked = d.audit_lines("https.revoked");
    assert!(
        revoked.iter().any(|l| l.contains("crl_grace")),
        "{revoked:?}"
    );
    assert_eq!(https_status(&tc, CLINIC, &[]), None);
    assert!(
        d.audit_lines("https.refused")
            .iter()
            .any(|l| l.contains("crl_grace"))
    );
    assert_eq!(d.audit_lines("alert.crl_stale").len(), 1);
}

/// HTTPS connections are capped as well: with two held open, a third is closed on arrival.
#[test]
fn https_connections_are_capped() {
    let tc = TestConfig::with(|t| t.replace("max_connections = 1024", "max_connections = 2"));
    let d = Daemon::start(&tc);
    wait_https(&tc);
    // The probe of the port may hold a slot for a moment: take the two slots as they come free.
    let mut held: Vec<Child> = Vec::new();
    assert!(support::wait_for(10, || {
        held.extend(try_keep_alive(&tc, CLINIC).ok());
        held.len() == 2
    }));
    assert_eq!(https_status(&tc, CLINIC, &[]), None);
    assert!(support::wait_for(5, || d
        .audit_lines("https.connection_refused")
        .iter()
        .any(|l| l.contains("too many connections (at most 2)"))));
    for child in &mut held {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        support::wait_for(10, || https_status(&tc, CLINIC, &[]) == Some(200)),
        "a slot comes free when a connection ends"
    );
}

/// The receipts in a box's `receipts/` folder, parsed.
fn box_receipts(tc: &TestConfig, account: &str) -> Vec<serde_json::Value> {
    let dir = tc.state_dir().join("boxes").join(account).join("receipts");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// The receipt of one hop of a file named `name`, if issued.
fn receipt_of(tc: &TestConfig, account: &str, name: &str, hop: &str) -> Option<serde_json::Value> {
    box_receipts(tc, account)
        .into_iter()
        .find(|r| r["original_name"] == name && r["hop"] == hop)
}

/// Official archives from the clinic to the insurer, written under `dir`, one per `send_count`.
fn official_archives(dir: &std::path::Path, counts: &[u8]) -> Vec<std::path::PathBuf> {
    use handoff::validate::testdata::{self, Spec};
    let today = handoff::validate::today(time::UtcOffset::from_hms(9, 0, 0).expect("offset"));
    let mut spec = Spec::example(2, today.previous_day().expect("a date"));
    counts
        .iter()
        .map(|&n| {
            spec.send_count = n;
            let path = dir.join(spec.archive_name().file_name());
            let bytes = testdata::write_valid(&spec, Vec::new()).expect("generate");
            std::fs::write(&path, bytes).expect("write archive");
            path
        })
        .collect()
}

/// ARCHITECTURE.md, *Who acted*: a maintainer uploading into a clinic's box is the `accepted`
/// receipt's actor; a maintainer reading an insurer's outbox to the end is audited as that maintainer's read and is
/// not the insurer's `retrieved`; a maintainer deleting a delivered file gets a `purged` receipt
/// naming the maintainer; the insurer's own read is its `retrieved`.
#[test]
fn receipts_and_audit_lines_name_the_maintainer_who_acted() {
    let tc = TestConfig::with(|t| {
        t.replace(
            "scope = [\"clinic-1312345679\"]\naccess = \"read\"",
            "scope = [\"clinic-1312345679\", \"insurer-06130017\"]\naccess = \"read-write\"",
        )
    });
    assert!(tc.text().contains("access = \"read-write\""));
    let _clamd = support::ClamdInstance::start(tc.dir.path());
    let d = Daemon::start(&tc);
    let up = tc.dir.path().join("up");
    std::fs::create_dir_all(&up).expect("mkdir");
    let files = official_archives(&up, &[0, 1]);
    let names: Vec<String> = files
        .iter()
        .map(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .expect("name")
                .to_owned()
        })
        .collect();
    let batch: String = files
        .iter()
        .map(|p| format!("put {} /{CLINIC}/inbox/\n", p.display()))
        .collect();
    let out = sftp_batch(tc.sftp_port, "m.sato", "m.sato", &batch);
    assert!(out.status.success(), "{}", text(&out));

    for name in &names {
        assert!(
            support::wait_for(90, || receipt_of(&tc, INSURER, name, "delivered").is_some()),
            "{name} not delivered: {}",
            d.log_text()
        );
        let accepted = receipt_of(&tc, CLINIC, name, "accepted").expect("accepted receipt");
        assert_eq!(accepted["actor"], "m.sato", "{accepted}");
        assert_eq!(accepted["sender"], CLINIC);
    }
    let uploads = d.audit_lines("box.upload");
    assert!(
        uploads
            .iter()
            .any(|l| l.contains("m.sato") && l.contains(CLINIC)),
        "{uploads:?}"
    );

    let outbox = |name: &str| -> String {
        std::fs::read_dir(tc.state_dir().join("boxes").join(INSURER).join("outbox"))
            .expect("outbox")
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .find(|n| n.contains(name))
            .expect("delivered file")
    };
    let (first, second) = (outbox(&names[0]), outbox(&names[1]));
    // The maintainer reads the first to its end, then deletes the second.
    let got = tc.dir.path().join("read-by-maintainer");
    let out = sftp_batch(
        tc.sftp_port,
        "m.sato",
        "m.sato",
        &format!(
            "get /{INSURER}/outbox/{first} {}\nrm /{INSURER}/outbox/{second}\n",
            got.display()
        ),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(std::fs::metadata(&got).is_ok_and(|m| m.len() > 0));
    // Box events are handled in order: once the deletion's receipt exists, the read before it
    // has been handled too.
    assert!(
        support::wait_for(30, || receipt_of(&tc, INSURER, &names[1], "purged")
            .is_some()),
        "no purged receipt: {}",
        d.log_text()
    );
    let purged = receipt_of(&tc, INSURER, &names[1], "purged").expect("purged");
    assert_eq!(purged["actor"], "m.sato", "{purged}");
    assert!(receipt_of(&tc, CLINIC, &names[1], "purged").is_some());
    for name in &names {
        assert!(
            receipt_of(&tc, INSURER, name, "retrieved").is_none(),
            "a maintainer's read or deletion is no retrieval"
        );
    }
    let reads = d.audit_lines("box.read");
    assert!(
        reads
            .iter()
            .any(|l| l.contains("m.sato") && l.contains(INSURER) && l.contains(&first)),
        "{reads:?}"
    );
    assert!(
        d.audit_lines("box.retrieved").is_empty(),
        "{:?}",
        d.audit_lines("box.retrieved")
    );
    let removes = d.audit_lines("box.remove");
    assert!(
        removes
            .iter()
            .any(|l| l.contains("m.sato") && l.contains(&second)),
        "{removes:?}"
    );

    // The insurer's own read of the first is its retrieval.
    let mine = tc.dir.path().join("read-by-insurer");
    let out = sftp_batch(
        tc.sftp_port,
        INSURER,
        INSURER,
        &format!("get outbox/{first} {}\n", mine.display()),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        support::wait_for(30, || receipt_of(&tc, INSURER, &names[0], "retrieved")
            .is_some()),
        "{}",
        d.log_text()
    );
    let retrieved = receipt_of(&tc, INSURER, &names[0], "retrieved").expect("retrieved");
    assert_eq!(retrieved["actor"], INSURER);
    let verify = Command::new(handoff_bin())
        .args(["receipts", "verify", "--config"])
        .arg(&tc.path)
        .output()
        .expect("run handoff receipts verify");
    assert!(verify.status.success(), "{}", text(&verify));
}

fn break_glass_ls(tc: &TestConfig) -> bool {
    sftp_batch(tc.sftp_port, "emergency", "emergency", "ls /\n")
        .status
        .success()
}

/// Point 7: one use of the break-glass account disables it — after its session ends, after a
/// restart, and after `max_session` (its open session closed) — until its entry is changed.
#[test]
fn break_glass_is_disabled_after_use_until_its_entry_changes() {
    let tc = TestConfig::with(|t| {
        let edited = t.replace("enabled = false\nscope = [", "enabled = true\nscope = [");
        assert_ne!(edited, t, "break-glass entry not found");
        edited
    });
    let d = Daemon::start(&tc);
    assert!(break_glass_ls(&tc), "{}", d.log_text());
    assert_eq!(d.audit_lines("break_glass.used").len(), 1);
    // Its session has ended: refused from now on (bounded: the server notices the end).
    assert!(
        support::wait_for(15, || !break_glass_ls(&tc)),
        "still enabled after its session ended"
    );
    let refused = d.audit_lines("sftp.auth_failure");
    assert!(
        refused
            .iter()
            .any(|l| l.contains("emergency") && l.contains("account-inactive")),
        "{refused:?}"
    );
    assert!(
        tc.state_dir().join("break-glass/emergency.json").exists(),
        "the use is kept in the state directory"
    );
    drop(d);

    // A restart does not re-enable it.
    let d = Daemon::start(&tc);
    assert!(!break_glass_ls(&tc), "re-enabled by a restart");

    // A changed entry does, for one more use; this one is cut after max_session.
    tc.rewrite(
        &tc.text()
            .replace(
                "reason = \"Recovery when the maintenance vendor cannot be reached\"",
                "reason = \"Second incident\"",
            )
            .replace("max_session = \"1h\"", "max_session = \"3s\""),
    );
    hup(&d);
    assert!(
        support::wait_for(15, || !d.audit_lines("config.reloaded").is_empty()),
        "{}",
        d.log_text()
    );
    let args = ["-b", "-"];
    let mut held = support::sftp_command(tc.sftp_port, "emergency", "emergency", &args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sftp");
    let mut stdin = held.stdin.take().expect("stdin");
    stdin.write_all(b"ls /\n").expect("write");
    stdin.flush().expect("flush");
    assert!(
        support::wait_for(15, || d.audit_lines("break_glass.used").len() == 1),
        "the changed entry was not usable: {}",
        d.log_text()
    );
    // The session is held open (stdin stays open) and is closed by the gateway; the client
    // learns it at its next command.
    assert!(
        support::wait_for(30, || !d.audit_lines("sftp.logout").is_empty()),
        "the session outlived max_session: {}",
        d.log_text()
    );
    assert_eq!(d.audit_lines("break_glass.max_session").len(), 1);
    let _ = stdin.write_all(b"ls /\n");
    drop(stdin);
    let status = wait_exit(&mut held, Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| !s.success()),
        "the client was cut off"
    );
    assert!(!break_glass_ls(&tc), "usable after max_session");
}

fn audit_verify(tc: &TestConfig) -> std::process::Output {
    Command::new(handoff_bin())
        .args(["audit", "verify", "--config"])
        .arg(&tc.path)
        .output()
        .expect("run handoff audit verify")
}

fn audit_log(tc: &TestConfig) -> String {
    std::fs::read_to_string(tc.state_dir().join("audit/audit.log")).unwrap_or_default()
}

/// Point 9: while the audit log cannot be written (failure injected beside the real file, a
/// test-only hook) the gateway refuses new SSH connections and uploads in open sessions, raises
/// `alert.audit_unwritable`, and resumes once it can write, with nothing of the outage missing
/// from the chain; a torn last line left by a crash is cut off at start and recorded.
#[test]
fn the_gateway_fails_closed_while_the_audit_log_cannot_be_written() {
    let tc = TestConfig::new();
    let flag = tc.dir.path().join("audit-fails");
    let flag_env = flag.to_str().expect("utf-8 path").to_owned();
    let d = Daemon::start_with_env(&tc, &[(handoff::audit::FAIL_WHILE_ENV, &flag_env)]);
    let up = tc.dir.path().join("refused.zip");
    std::fs::write(&up, b"PK refused while the audit log is down").expect("write");
    let ls = || {
        sftp_batch(tc.sftp_port, CLINIC, CLINIC, "ls /\n")
            .status
            .success()
    };
    assert!(ls(), "{}", d.log_text());
    // A session opened before the failure.
    let mut held = sftp_held(&tc, &[]);
    let mut stdin = held.stdin.take().expect("stdin");
    stdin.write_all(b"ls /\n").expect("write");
    assert!(support::wait_for(15, || d.audit_lines("box.list").len() >= 2));

    std::fs::write(&flag, b"").expect("flag");
    // The next line the gateway records fails; from then on new connections are closed.
    assert!(
        support::wait_for(20, || !ls()),
        "new sessions still accepted: {}",
        d.log_text()
    );
    assert!(
        support::wait_for(15, || !d.audit_lines("alert.audit_unwritable").is_empty()),
        "{}",
        d.log_text()
    );
    // The open session cannot upload.
    stdin
        .write_all(format!("put {} inbox/\n", up.display()).as_bytes())
        .expect("write");
    drop(stdin);
    let status = wait_exit(&mut held, Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| !s.success()),
        "an upload was taken while the audit log was down"
    );
    let metrics = String::from_utf8_lossy(
        &support::output_ok(Command::new("curl").args([
            "-s",
            &format!("http://127.0.0.1:{}/metrics", tc.metrics_port),
        ]))
        .stdout,
    )
    .into_owned();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("handoff_audit_writable") && l.ends_with(" 0")),
        "{metrics}"
    );
    let before = audit_log(&tc);
    assert!(!before.contains("alert.audit_unwritable"));

    // Writable again: sessions and uploads resume, and the lines of the outage are written.
    std::fs::remove_file(&flag).expect("unflag");
    assert!(support::wait_for(20, ls), "{}", d.log_text());
    let out = sftp_batch(
        tc.sftp_port,
        CLINIC,
        CLINIC,
        &format!("put {} inbox/\n", up.display()),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(support::wait_for(15, || audit_log(&tc).contains("\"file.accepted\"")));
    let log = audit_log(&tc);
    for event in ["alert.audit_unwritable", "audit.resumed", "box.denied"] {
        assert!(
            log.contains(&format!("\"{event}\"")),
            "{event} missing: {log}"
        );
    }
    assert!(log.contains("cannot take files now"), "{log}");
    assert_eq!(log.matches("\"file.accepted\"").count(), 1, "{log}");
    let verified = audit_verify(&tc);
    assert!(verified.status.success(), "{}", text(&verified));
    drop(d);

    // A crash mid-write leaves a torn last line: the start cuts it off and records it.
    let path = tc.state_dir().join("audit/audit.log");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open audit log");
    f.write_all(b"{\"account\":\"clinic-13123").expect("tear");
    drop(f);
    assert!(
        !audit_verify(&tc).status.success(),
        "the torn line breaks the chain"
    );
    let d = Daemon::start(&tc);
    assert!(
        support::wait_for(15, || audit_log(&tc).contains("\"audit.repaired\"")),
        "{}",
        d.log_text()
    );
    let verified = audit_verify(&tc);
    assert!(verified.status.success(), "{}", text(&verified));
    let kept: Vec<_> = std::fs::read_dir(tc.state_dir().join("audit"))
        .expect("audit dir")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("audit.log.torn-")
        })
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        std::fs::read(kept[0].path()).expect("torn bytes"),
        b"{\"account\":\"clinic-13123"
    );
}

/// Point 10: a finding that quotes a personal field (an impossible birth date) reaches the
/// sender's own rejection receipt, and nothing the NOC sees — `/noc/receipts`, `/noc/status`,
/// the status page, the metrics — nor the daemon's log.
#[test]
fn personal_data_in_findings_stays_in_the_senders_receipt() {
    const BIRTH_DATE: &str = "19650231";
    let tc = TestConfig::new();
    let d = Daemon::start(&tc);
    let out_dir = tc.dir.path().join("out");
    let made = Command::new(handoff_bin())
        .args(["testdata", "--violate", "date-invalid", "--out"])
        .arg(format!("{}/", out_dir.display()))
        .output()
        .expect("run handoff testdata");
    assert!(made.status.success(), "{}", text(&made));
    let archive = std::fs::read_dir(&out_dir)
        .expect("out dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "zip"))
        .expect("an archive");
    let out = sftp_batch(
        tc.sftp_port,
        CLINIC,
        CLINIC,
        &format!("put {} inbox/\n", archive.display()),
    );
    assert!(out.status.success(), "{}", text(&out));
    let name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_owned();
    assert!(
        support::wait_for(60, || receipt_of(&tc, CLINIC, &name, "rejected").is_some()),
        "{}",
        d.log_text()
    );
    let rejected = receipt_of(&tc, CLINIC, &name, "rejected").expect("rejected");
    assert!(
        rejected.to_string().contains(BIRTH_DATE),
        "the sender's receipt says which value is wrong: {rejected}"
    );
    let rule = rejected["reasons"][0]["rule"]
        .as_str()
        .expect("a rule")
        .to_owned();

    let noc_receipts = curl_https(&tc, "noc-tokyo", "/noc/receipts");
    assert!(noc_receipts.status.success(), "{}", text(&noc_receipts));
    let noc_receipts = String::from_utf8_lossy(&noc_receipts.stdout).into_owned();
    assert!(
        noc_receipts.contains(&rule) && noc_receipts.contains("\"redacted\":true"),
        "the NOC still sees the rule: {noc_receipts}"
    );
    let noc_status = curl_https(&tc, "noc-tokyo", "/noc/status");
    assert!(noc_status.status.success(), "{}", text(&noc_status));
    let get = |path: &str| -> String {
        let out = support::output_ok(
            Command::new("curl")
                .args(["-s", &format!("http://127.0.0.1:{}{path}", tc.metrics_port)]),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let page = get("/status");
    assert!(
        page.contains(&rule),
        "the status page names the rule: {page}"
    );
    let views = [
        ("/noc/receipts", noc_receipts),
        (
            "/noc/status",
            String::from_utf8_lossy(&noc_status.stdout).into_owned(),
        ),
        ("status page", page),
        ("metrics", get("/metrics")),
        ("daemon log", d.log_text()),
    ];
    for (view, body) in views {
        assert!(
            !body.contains(BIRTH_DATE),
            "{view} shows the birth date: {body}"
        );
    }
}

/// Bytes of one piece of a raw test upload.
const PIECE: usize = 128 << 10;

/// Piece `i` of test upload `file`: a pattern of its own, so a piece in the wrong place shows.
fn piece(file: u8, i: usize) -> Vec<u8> {
    (0..PIECE)
        .map(|j| (j as u8).wrapping_mul(31) ^ file ^ (i as u8).wrapping_mul(7))
        .collect()
}

/// The SHA-256 of test upload `file` made of `pieces` pieces.
fn pieces_sha256(file: u8, pieces: usize) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for i in 0..pieces {
        h.update(piece(file, i));
    }
    hex::encode(h.finalize())
}

/// Writes pieces `1..pieces` of an upload ahead of its gap; the first refusal, if any.
async fn write_ahead(
    client: &support::RawSftp,
    handle: &str,
    file: u8,
    pieces: usize,
) -> Result<(), String> {
    let mut refused = None;
    for i in 1..pieces {
        if let Err(e) = client
            .sftp
            .write(handle, (i * PIECE) as u64, piece(file, i))
            .await
        {
            refused.get_or_insert(e.to_string());
        }
    }
    refused.map_or(Ok(()), Err)
}

/// Writes piece 0 of an upload, filling its gap, and closes it; the first refusal, if any.
async fn fill_and_close(client: &support::RawSftp, handle: &str, file: u8) -> Result<(), String> {
    let written = client.sftp.write(handle, 0, piece(file, 0)).await;
    let closed = client.sftp.close(handle).await;
    written.and(closed).map(drop).map_err(|e| e.to_string())
}

/// An upload written back to front but for its first piece, then completed.
async fn out_of_order_upload(
    client: &support::RawSftp,
    handle: &str,
    file: u8,
    pieces: usize,
) -> Result<(), String> {
    let ahead = write_ahead(client, handle, file, pieces).await;
    let rest = fill_and_close(client, handle, file).await;
    ahead.and(rest)
}

/// Waits for the pipeline to accept `name` and returns the SHA-256 it recorded.
fn accepted(tc: &TestConfig, name: &str) -> Option<String> {
    let mut sha = None;
    support::wait_for(20, || {
        sha = support::accepted_sha256(tc, name);
        sha.is_some()
    });
    sha
}

/// The daemon's `handoff_upload_buffered_bytes`.
fn buffered_bytes(tc: &TestConfig) -> Option<u64> {
    support::metrics_text(tc)
        .lines()
        .find_map(|l| l.strip_prefix("handoff_upload_buffered_bytes "))
        .and_then(|v| v.trim().parse().ok())
}

/// Upload `a` holds 768 KiB ahead of its gap as the first account; then upload `b`, as
/// `second`, writes 512 KiB ahead of its own, past a budget of 1 MiB that both share (`whose`
/// names it): `b` is refused with an error that says so, `a` is accepted whole, the daemon stays
/// up, and the budget is free again afterwards, for an out-of-order upload and for OpenSSH's.
async fn two_uploads_past_a_budget(tc: &TestConfig, second: &str, whose: &str) {
    let mut d = Daemon::start(tc);
    let first = support::RawSftp::connect(tc.sftp_port, CLINIC, CLINIC).await;
    let other = support::RawSftp::connect(tc.sftp_port, second, second).await;
    let a = first.create("/inbox/a.bin").await;
    write_ahead(&first, &a, 1, 7).await.expect("768 KiB fit");
    assert!(
        support::wait_for(20, || buffered_bytes(tc) == Some(6 * PIECE as u64)),
        "a's pieces wait in memory: {:?}",
        buffered_bytes(tc)
    );
    let b = other.create("/inbox/b.bin").await;
    let refused = out_of_order_upload(&other, &b, 2, 5)
        .await
        .expect_err("1.25 MiB ahead of gaps passed a 1 MiB budget");
    assert!(
        refused.contains("written ahead of gaps") && refused.contains(whose),
        "a clear refusal: {refused}"
    );
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon runs");
    let audited = d.audit_lines("box.upload_refused");
    assert!(
        audited.len() == 1 && audited[0].contains("b.bin") && audited[0].contains(second),
        "{audited:?}"
    );
    fill_and_close(&first, &a, 1)
        .await
        .expect("a is taken whole");
    assert_eq!(accepted(tc, "a.bin"), Some(pieces_sha256(1, 7)));
    assert!(support::wait_for(20, || buffered_bytes(tc) == Some(0)));

    // The budget was given back: 768 KiB ahead of a gap fits again, on a new session.
    let third = support::RawSftp::connect(tc.sftp_port, second, second).await;
    let c = third.create("/inbox/c.bin").await;
    out_of_order_upload(&third, &c, 3, 7)
        .await
        .expect("the budget is free again");
    assert_eq!(accepted(tc, "c.bin"), Some(pieces_sha256(3, 7)));
    // And an ordinary client uploads as ever.
    let file = tc.dir.path().join("d.bin");
    support::random_file(&file, 3 << 20);
    let out = sftp_batch(
        tc.sftp_port,
        CLINIC,
        CLINIC,
        &format!("put {} /inbox/d.bin\n", file.display()),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(accepted(tc, "d.bin"), Some(support::sha256_file(&file)));
}

/// Data written ahead of gaps is held in memory against one budget per account, over all its
/// sessions: two sessions of one clinic share its `max_buffered_per_account`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_upload_data_is_bounded_per_account() {
    let tc = TestConfig::with(|t| {
        t.replace(
            "max_buffered_per_account = \"32 MiB\"",
            "max_buffered_per_account = \"1 MiB\"",
        )
    });
    two_uploads_past_a_budget(&tc, CLINIC, "this account's").await;
}

/// And against one budget of the whole gateway: uploads of two accounts, each within its own
/// budget, share `max_buffered_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_upload_data_is_bounded_for_the_gateway() {
    let tc = TestConfig::with(|t| {
        t.replace(
            "max_buffered_per_account = \"32 MiB\"",
            "max_buffered_per_account = \"1 MiB\"",
        )
        .replace(
            "max_buffered_total = \"64 MiB\"",
            "max_buffered_total = \"1 MiB\"",
        )
    });
    two_uploads_past_a_budget(&tc, INSURER, "the gateway's").await;
}

/// Threads of the daemon whose name starts with `prefix`.
fn threads_named(pid: u32, prefix: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with(prefix))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Uploads are written by `upload_writer_threads` threads however many are open: six uploads
/// open at once on two connections share two writer threads, and all six arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_writer_threads_are_capped() {
    let tc =
        TestConfig::with(|t| t.replace("upload_writer_threads = 8", "upload_writer_threads = 2"));
    let d = Daemon::start(&tc);
    let clients = [
        support::RawSftp::connect(tc.sftp_port, CLINIC, CLINIC).await,
        support::RawSftp::connect(tc.sftp_port, CLINIC, CLINIC).await,
    ];
    let mut open = Vec::new();
    for n in 0..6u8 {
        let client = &clients[usize::from(n % 2)];
        let handle = client.create(&format!("/inbox/w{n}.bin")).await;
        client
            .sftp
            .write(&handle, 0, piece(n, 0))
            .await
            .expect("first piece");
        open.push((client, handle, n));
    }
    assert_eq!(
        threads_named(d.pid(), "upload"),
        2,
        "six open uploads, two writer threads"
    );
    for (client, handle, n) in &open {
        for i in 1..4 {
            client
                .sftp
                .write(handle, (i * PIECE) as u64, piece(*n, i))
                .await
                .expect("piece");
        }
        client.sftp.close(handle).await.expect("close");
    }
    for n in 0..6u8 {
        assert_eq!(
            accepted(&tc, &format!("w{n}.bin")),
            Some(pieces_sha256(n, 4)),
            "w{n}.bin is whole"
        );
    }
}

/// A client's stream of one request of each kind the server answers, encoded by russh-sftp.
fn sample_requests() -> Vec<u8> {
    use russh_sftp::protocol::*;
    let attrs = FileAttributes {
        size: Some(7),
        permissions: Some(0o600),
        ..FileAttributes::default()
    };
    let h = || "1".to_owned();
    let requests: Vec<Packet> = vec![
        Init {
            version: 3,
            extensions: Default::default(),
        }
        .into(),
        Open {
            id: 1,
            filename: "/inbox/a.zip".into(),
            pflags: OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
            attrs: attrs.clone(),
        }
        .into(),
        Write {
            id: 2,
            handle: h(),
            offset: 4096,
            data: vec![0x5a; 300],
        }
        .into(),
        Read {
            id: 3,
            handle: h(),
            offset: 0,
            len: 32768,
        }
        .into(),
        Close { id: 4, handle: h() }.into(),
        Stat {
            id: 5,
            path: "/outbox/../x".into(),
        }
        .into(),
        OpenDir {
            id: 6,
            path: "/receipts".into(),
        }
        .into(),
        ReadDir { id: 7, handle: h() }.into(),
        Remove {
            id: 8,
            filename: "/outbox/b.p7m".into(),
        }
        .into(),
        Rename {
            id: 9,
            oldpath: "/inbox/a.part".into(),
            newpath: "/inbox/a.zip".into(),
        }
        .into(),
        SetStat {
            id: 10,
            path: "/inbox/a.zip".into(),
            attrs,
        }
        .into(),
        RealPath {
            id: 11,
            path: ".".into(),
        }
        .into(),
        Extended {
            id: 12,
            request: "limits@openssh.com".into(),
            data: vec![],
        }
        .into(),
    ];
    requests
        .into_iter()
        .flat_map(|p| handoff::transport::sftp::packets::encode(p).expect("encodes"))
        .collect()
}

/// The decoded packets of `input`, each encoded again and decoded alone: one packet, not
/// refused (the property the fuzz target `sftp_packet` checks).
fn decode_and_reencode(input: &[u8]) {
    use handoff::transport::sftp::packets::{decode_stream, encode};
    for packet in decode_stream(input).packets {
        let alone = decode_stream(&encode(packet).expect("a decoded packet encodes"));
        assert_eq!((alone.refused, alone.packets.len()), (0, 1));
    }
}

#[test]
fn the_sftp_decoder_reads_a_clients_requests() {
    let decoded = handoff::transport::sftp::packets::decode_stream(&sample_requests());
    assert_eq!(decoded.packets.len(), 13);
    assert_eq!(decoded.refused, 0);
    // `/outbox/../x` climbs; `.` is the root; the rest name box paths.
    assert_eq!(decoded.bad_paths, 1);
    // The fuzz target's seed is a whole session too.
    let seed = std::fs::read(support::repo_root().join("fuzz/seeds/sftp_packet/session.bin"))
        .expect("the seed");
    let decoded = handoff::transport::sftp::packets::decode_stream(&seed);
    assert_eq!((decoded.packets.len(), decoded.refused), (9, 0));
    decode_and_reencode(&seed);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// The server's SFTP decoding, run on a valid client stream with bytes changed and cut
    /// short, and on random bytes, neither panics nor decodes what it cannot encode again.
    #[test]
    fn the_sftp_decoder_survives_mutated_and_random_streams(
        flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 0..12),
        cut in proptest::prelude::any::<usize>(),
        random in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
    ) {
        let mut stream = sample_requests();
        for (at, byte) in flips {
            let at = at % stream.len();
            stream[at] = byte;
        }
        stream.truncate(cut % (stream.len() + 1));
        decode_and_reencode(&stream);
        decode_and_reencode(&random);
        // Every frame of the mutated stream (a write among them) reads as russh-sftp reads it.
        let mut rest = &stream[..];
        while rest.len() >= 4 {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let frame = &rest[4..(4 + len).min(rest.len())];
            reads_as_russh_sftp(frame);
            rest = &rest[(4 + len).min(rest.len())..];
        }
        reads_as_russh_sftp(&random);
    }
}

/// The server's decoding of one frame (a write cut from its frame) against russh-sftp's own.
fn reads_as_russh_sftp(frame: &[u8]) {
    use handoff::transport::sftp::packets::decode;
    use russh_sftp::protocol::Packet;
    let mut theirs_in = bytes::Bytes::copy_from_slice(frame);
    let theirs = Packet::try_from(&mut theirs_in).ok();
    let ours = decode(bytes::Bytes::copy_from_slice(frame)).map(|r| r.into_packet());
    // Writes are compared whole (what else decodes went through russh-sftp's own decoder, and
    // an init's extensions print in a hash map's order).
    let write = |p: &Option<Packet>| match p {
        Some(Packet::Write(w)) => Some(format!("{w:?}")),
        _ => None,
    };
    assert_eq!(ours.is_some(), theirs.is_some());
    assert_eq!(write(&ours), write(&theirs));
}

/// The SFTP request loop on a client's raw bytes: an empty request is answered as a bad message,
/// a length over the limit is not read (the next four bytes are a length again) and what follows
/// is answered, and a write whose bytes arrive in several channel messages is taken whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sftp_request_loop_reads_a_clients_frames_as_they_come() {
    use russh::ChannelMsg;
    let tc = TestConfig::new();
    let _d = Daemon::start(&tc);
    let (mut channel, _ssh) = support::RawSftp::channel(tc.sftp_port, CLINIC, CLINIC).await;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }
    fn string(s: &[u8]) -> Vec<u8> {
        let mut v = (s.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(s);
        v
    }
    // Reads replies until `n` whole ones came: (type, body after the type).
    async fn replies(
        channel: &mut russh::Channel<russh::client::Msg>,
        buf: &mut Vec<u8>,
        n: usize,
    ) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while out.len() < n {
            while buf.len() >= 4 {
                let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if buf.len() < 4 + len {
                    break;
                }
                let reply: Vec<u8> = buf.drain(..4 + len).skip(4).collect();
                out.push((reply[0], reply[1..].to_vec()));
            }
            if out.len() >= n {
                break;
            }
            match tokio::time::timeout(std::time::Duration::from_secs(10), channel.wait()).await {
                Ok(Some(ChannelMsg::Data { data })) => buf.extend_from_slice(&data),
                Ok(Some(_)) => {}
                other => panic!("no reply: {other:?}"),
            }
        }
        out
    }
    let mut buf = Vec::new();
    const STATUS: u8 = 101;
    const HANDLE: u8 = 102;
    const NAME: u8 = 104;

    channel.data(&frame(&[1, 0, 0, 0, 3])[..]).await.unwrap(); // INIT v3
    assert_eq!(replies(&mut channel, &mut buf, 1).await[0].0, 2); // VERSION

    // An empty request: a bad message (code 5) for request id 0.
    channel.data(&[0u8, 0, 0, 0][..]).await.unwrap();
    let r = replies(&mut channel, &mut buf, 1).await;
    assert_eq!(r[0].0, STATUS);
    assert_eq!(&r[0].1[..8], &[0, 0, 0, 0, 0, 0, 0, 5]);

    // A length over the limit, then REALPATH "." (id 9): only the REALPATH is answered.
    let mut realpath = vec![16u8, 0, 0, 0, 9];
    realpath.extend(string(b"."));
    let mut bytes = (300u32 << 10).to_be_bytes().to_vec();
    bytes.extend(frame(&realpath));
    channel.data(&bytes[..]).await.unwrap();
    let r = replies(&mut channel, &mut buf, 1).await;
    assert_eq!((r[0].0, &r[0].1[..4]), (NAME, &[0u8, 0, 0, 9][..]));

    // OPEN /inbox/raw.bin for writing (id 10), a 100 KiB WRITE (id 11) sent in three channel
    // messages, CLOSE (id 12).
    let mut open = vec![3u8, 0, 0, 0, 10];
    open.extend(string(b"/inbox/raw.bin"));
    open.extend(0x1au32.to_be_bytes()); // WRITE | CREAT | TRUNC
    open.extend(0u32.to_be_bytes()); // no attributes
    channel.data(&frame(&open)[..]).await.unwrap();
    let r = replies(&mut channel, &mut buf, 1).await;
    assert_eq!(r[0].0, HANDLE, "{r:?}");
    let handle = r[0].1[8..].to_vec();
    let content: Vec<u8> = (0..100 << 10).map(|i| (i % 251) as u8).collect();
    let mut write = vec![6u8, 0, 0, 0, 11];
    write.extend(string(&handle));
    write.extend(0u64.to_be_bytes());
    write.extend(string(&content));
    let write = frame(&write);
    for piece in [&write[..3], &write[3..40_000], &write[40_000..]] {
        channel.data(piece).await.unwrap();
    }
    let r = replies(&mut channel, &mut buf, 1).await;
    assert_eq!(
        (r[0].0, &r[0].1[..8]),
        (STATUS, &[0u8, 0, 0, 11, 0, 0, 0, 0][..])
    );
    let mut close = vec![4u8, 0, 0, 0, 12];
    close.extend(string(&handle));
    channel.data(&frame(&close)[..]).await.unwrap();
    let r = replies(&mut channel, &mut buf, 1).await;
    assert_eq!(
        (r[0].0, &r[0].1[..8]),
        (STATUS, &[0u8, 0, 0, 12, 0, 0, 0, 0][..])
    );
    // The file the pipeline took is the 100 KiB that were written.
    assert!(support::wait_for(20, || support::accepted_sha256(
        &tc, "raw.bin"
    )
    .is_some()));
    assert_eq!(
        support::accepted_sha256(&tc, "raw.bin"),
        Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            &content
        )))
    );
}
