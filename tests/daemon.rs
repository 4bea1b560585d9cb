//! The daemon as systemd runs it: READY=1 once listening, watchdog pings, SIGHUP reload, a
//! clean stop on SIGTERM, and a unit file that `systemd-analyze verify` accepts and whose
//! syscall filter lets the daemon read the clock's sync state.

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{TestConfig, handoff_bin};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn recv_until(sock: &UnixDatagram, want: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = msg.lines().any(|l| l == want);
                seen.push(msg);
                if done {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no {want:?} within {timeout:?}; saw {seen:?}");
}

#[test]
fn serve_notifies_ready_pings_watchdog_reloads_and_stops() {
    let tc = TestConfig::new();
    let notify_path = tc.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify_path).unwrap();
    let child = Command::new(handoff_bin())
        .args(["serve", "--config"])
        .arg(&tc.path)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut daemon = Daemon(child);
    recv_until(&sock, "READY=1", Duration::from_secs(20));

    // Every listener of the config accepts connections once READY is sent.
    for port in [tc.sftp_port, tc.https_port, tc.metrics_port] {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("port {port}: {e}"));
    }
    // The state layout exists.
    assert!(
        tc.state_dir()
            .join("boxes/clinic-1312345679/inbox")
            .is_dir()
    );

    recv_until(&sock, "WATCHDOG=1", Duration::from_secs(2));

    // SIGHUP with a broken config: the daemon keeps running on the old one.
    tc.rewrite(&tc.text().replace("[gateway]", "[gateway]\nbogus = 1"));
    let pid = daemon.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        daemon.0.try_wait().unwrap().is_none(),
        "an invalid reload must not stop the daemon"
    );
    std::net::TcpStream::connect(("127.0.0.1", tc.sftp_port)).unwrap();

    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    recv_until(&sock, "STOPPING=1", Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            assert!(status.success(), "clean exit on SIGTERM, got {status}");
            break;
        }
        assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The audit log recorded start, the refused reload and stop, and its chain verifies.
    let audit = std::fs::read_to_string(tc.state_dir().join("audit/audit.log")).unwrap();
    for event in ["daemon.start", "config.refused", "daemon.stop"] {
        assert!(
            audit.contains(&format!("\"event\":\"{event}\"")),
            "{event} missing:\n{audit}"
        );
    }
    support::output_ok(
        Command::new(handoff_bin())
            .args(["audit", "verify", "--file"])
            .arg(tc.state_dir().join("audit/audit.log")),
    );
}

#[test]
fn a_second_daemon_on_the_same_state_directory_is_refused_until_the_first_dies() {
    let tc = TestConfig::new();
    let first = support::Daemon::start(&tc);
    let mut second = Command::new(handoff_bin())
        .args(["serve", "--config"])
        .arg(&tc.path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the second daemon did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("is in use by another handoff serve")
            && err.contains(&format!("(pid {})", first.pid())),
        "{err}"
    );
    // The first still serves; killed with -9, its lock goes with it.
    assert!(std::net::TcpStream::connect(("127.0.0.1", tc.sftp_port)).is_ok());
    drop(first);
    let _again = support::Daemon::start(&tc);
}

#[test]
fn serve_refuses_an_invalid_config_with_exit_1() {
    let tc = TestConfig::with(|t| t.replace("kind = \"clinic\"", "kind = \"hospital\""));
    let out = Command::new(handoff_bin())
        .args(["serve", "--config"])
        .arg(&tc.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:", tc.path.display())) && err.contains("hospital"),
        "{err}"
    );
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let unit =
        std::fs::read_to_string(support::repo_root().join("systemd/handoff.service")).unwrap();
    for required in [
        "Type=notify",
        "WatchdogSec=",
        "User=handoff",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/handoff",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(required), "unit lacks {required}");
    }
    // Verify a copy whose ExecStart points at the binary under test (verify checks it exists).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("handoff.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/bin/handoff",
            &handoff_bin().display().to_string(),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze is installed by scripts/install-deps");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("handoff.service:"),
        "systemd-analyze verify: {err}"
    );
}

/// The syscalls a `SystemCallFilter=` entry names: a syscall, or a group expanded (nested groups
/// too) by `systemd-analyze syscall-filter`.
fn syscalls_of(entry: &str) -> std::collections::BTreeSet<String> {
    if !entry.starts_with('@') {
        return [entry.to_owned()].into();
    }
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", entry])
        .output()
        .expect("systemd-analyze is installed by scripts/install-deps");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut set = std::collections::BTreeSet::new();
    for line in text.lines().skip(1) {
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        set.extend(syscalls_of(name));
    }
    set
}

/// The unit's `SystemCallFilter=` lines applied in order, as systemd does: the first one not
/// starting with `~` makes an allow list; later plain lines add to it and `~` lines take away.
#[test]
fn the_unit_lets_the_daemon_read_the_clock_state_and_nothing_more_of_the_clock() {
    let unit = std::fs::read_to_string(support::repo_root().join("systemd/handoff.service"))
        .expect("the unit");
    let mut allowed = std::collections::BTreeSet::new();
    let mut lines = 0;
    for value in unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("SystemCallFilter="))
    {
        lines += 1;
        let (deny, names) = match value.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        assert!(
            !(deny && lines == 1),
            "the unit's filter must start with an allow list"
        );
        for name in names.split_whitespace() {
            let calls = syscalls_of(name);
            if deny {
                allowed.retain(|c| !calls.contains(c));
            } else {
                allowed.extend(calls);
            }
        }
    }
    assert!(lines > 0, "the unit has no SystemCallFilter=");
    // The audit log reads the clock's sync state with adjtimex (modes = 0).
    assert!(
        allowed.contains("adjtimex"),
        "adjtimex is filtered out: every receipt would say the clock is unsynchronised"
    );
    for setter in ["clock_settime", "settimeofday", "clock_adjtime"] {
        assert!(!allowed.contains(setter), "{setter} is allowed");
    }
}
