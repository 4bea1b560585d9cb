//! SFTP drop boxes driven by the real OpenSSH `sftp` client against `handoff serve`.

mod support;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Daemon, TestConfig, remove_account, sftp_batch, sftp_command, sha256_file};

const CLINIC: &str = "clinic-1312345679";
const INSURER: &str = "insurer-06130017";

fn stderr(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn random_file(dir: &std::path::Path, name: &str, len: usize) -> std::path::PathBuf {
    let path = dir.join(name);
    support::random_file(&path, len);
    path
}

#[test]
fn openssh_client_uses_the_announced_limits() {
    let tc = TestConfig::new();
    let _d = Daemon::start(&tc);
    let src = random_file(tc.dir.path(), "up.bin", 1 << 20);
    let out = support::sftp_batch_with(
        tc.sftp_port,
        CLINIC,
        CLINIC,
        &format!("put {} /inbox/big.bin\n", src.display()),
        &["-vvv"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("limits@openssh.com"),
        "extension not seen by the client: {log}"
    );
    // The client's own account of the request sizes it picked from the server's limits.
    let sizes = log
        .lines()
        .find(|l| l.contains("upload/download buffer sizes"))
        .unwrap_or_else(|| panic!("no buffer size line: {log}"));
    assert!(sizes.contains("261120"), "{sizes}");
}

#[test]
fn key_login_upload_reaches_the_inbox_intact() {
    let tc = TestConfig::new();
    let d = Daemon::start(&tc);
    // Past 8 MiB and of no aligned length: the part of an upload written with direct I/O and
    // its unaligned tail are both covered.
    let src = random_file(tc.dir.path(), "up.bin", (20 << 20) + 4321);
    let out = sftp_batch(
        tc.sftp_port,
        CLINIC,
        CLINIC,
        &format!("cd inbox\nput {} checkup.zip\nls -l\n", src.display()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The pipeline accepts the upload from the inbox at once and records its SHA-256.
    assert!(
        support::wait_for(20, || support::accepted_sha256(&tc, "checkup.zip")
            .is_some()),
        "upload not accepted from the inbox"
    );
    assert_eq!(
        support::accepted_sha256(&tc, "checkup.zip"),
        Some(sha256_file(&src))
    );
    assert_eq!(
        fs::read_dir(tc.state_dir().join("staging").join(CLINIC))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(d.audit_lines("sftp.login").len(), 1);
    assert_eq!(d.audit_lines("box.upload").len(), 1);
}

#[test]
fn wrong_key_and_unknown_user_are_refused() {
    let tc = TestConfig::new();
    let d = Daemon::start(&tc);
    let out = sftp_batch(tc.sftp_port, CLINIC, INSURER, "ls\n");
    assert!(
        !out.status.success(),
        "login with another account's key must fail"
    );
    let out = sftp_batch(tc.sftp_port, "nobody", CLINIC, "ls\n");
    assert!(!out.status.success());
    let failures = d.audit_lines("sftp.auth_failure");
    assert!(failures.len() >= 2, "{failures:?}");
    assert!(d.audit_lines("sftp.login").is_empty());
}

#[test]
fn expired_maintainer_is_refused_and_valid_one_sees_scoped_boxes() {
    let tc = TestConfig::new();
    let d = Daemon::start(&tc);
    let out = sftp_batch(
        tc.sftp_port,
        "m.sato",
        "m.sato",
        "ls /\nls /clinic-1312345679\n-put /etc/hostname /clinic-1312345679/inbox/x\n",
    );
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("clinic-1312345679") && text.contains("outbox"),
        "{text}"
    );
    assert!(
        text.contains("Permission denied") || text.contains("read-only"),
        "read-only maintainer cannot upload: {text}"
    );
    drop(d);

    let tc = TestConfig::with(|t| t.replace("expires = 2027-03-31", "expires = 2020-01-01"));
    let d = Daemon::start(&tc);
    let out = sftp_batch(tc.sftp_port, "m.sato", "m.sato", "ls\n");
    assert!(!out.status.success(), "expired maintainer must be refused");
    assert!(
        d.audit_lines("sftp.auth_failure")
            .iter()
            .any(|l| l.contains("account-inactive"))
    );
}

#[test]
fn password_login_works_only_with_the_right_password() {
    let tc = TestConfig::new();
    let _d = Daemon::start(&tc);
    let run = |password: &str| {
        let askpass = tc.dir.path().join(format!("askpass-{}", password.len()));
        fs::write(&askpass, format!("#!/bin/sh\necho '{password}'\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&askpass, fs::Permissions::from_mode(0o700)).unwrap();
        // Batch mode (-b) disables password prompts: feed the commands on stdin instead.
        let mut child = Command::new("sftp")
            .args([
                "-P",
                &tc.sftp_port.to_string(),
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
                "-o",
                "NumberOfPasswordPrompts=1",
            ])
            .arg("clinic-2717654327@127.0.0.1")
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"ls /\nbye\n").unwrap();
        }
        child.wait_with_output().unwrap()
    };
    assert!(!run("wrong-password").status.success());
    let ok = run("example-password-clinic-b");
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("outbox"),
        "{}",
        stderr(&ok)
    );
}

#[test]
fn traversal_links_and_folder_changes_are_refused() {
    let tc = TestConfig::new();
    let d = Daemon::start(&tc);
    let src = random_file(tc.dir.path(), "x.bin", 1000);
    let outside = tc.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let s = src.display();
    let batch = format!(
        "-put {s} ../x\n-put {s} /../x\n-put {s} {}/x\n-cd /..\n-ls /..\n-put {s} /outbox/x\n-put {s} /receipts/x\n\
         -mkdir /inbox/d\n-ln -s /etc/passwd /inbox/l\n-symlink /etc/passwd /inbox/l2\n-rename /inbox/a /outbox/a\n\
         -put {s} /inbox/.hidden\n-chmod 777 /inbox\n-rm /inbox/nothing\n-get /inbox/anything /tmp/x\n",
        outside.display()
    );
    let out = sftp_batch(tc.sftp_port, CLINIC, CLINIC, &batch);
    let text = stderr(&out);
    assert!(text.matches("Permission denied").count() >= 8, "{text}");
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
    for folder in ["inbox", "outbox", "receipts"] {
        let dir = tc.state_dir().join("boxes").join(CLINIC).join(folder);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "{folder} untouched");
    }
    assert!(
        support::accepted_files(&tc).is_empty(),
        "something was uploaded"
    );
    assert!(!tc.state_dir().join("x").exists() && !tc.state_dir().join("boxes/x").exists());
    assert!(d.audit_lines("box.denied").len() >= 8);
}

#[test]
fn outbox_read_to_end_emits_one_retrieve_and_delete_acknowledges() {
    let tc = TestConfig::new();
    let d = Daemon::start(&tc);
    let outbox = tc.state_dir().join("boxes").join(INSURER).join("outbox");
    let data = random_file(&outbox, "f1_checkup.zip.p7m", 5 << 20);
    let dst = tc.dir.path().join("got");
    let out = sftp_batch(
        tc.sftp_port,
        INSURER,
        INSURER,
        &format!("get /outbox/f1_checkup.zip.p7m {}\n", dst.display()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha256_file(&dst), sha256_file(&data));
    assert_eq!(d.audit_lines("box.retrieved").len(), 1);
    // A partial read is not a retrieval.
    let out = sftp_batch(tc.sftp_port, INSURER, INSURER, "ls -l /outbox\n");
    assert!(out.status.success());
    assert_eq!(d.audit_lines("box.retrieved").len(), 1);
    let out = sftp_batch(
        tc.sftp_port,
        INSURER,
        INSURER,
        "rm /outbox/f1_checkup.zip.p7m\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!data.exists());
    assert_eq!(d.audit_lines("box.remove").len(), 1);
}

#[test]
fn slow_client_and_large_reads_both_complete() {
    let tc = TestConfig::new();
    let _d = Daemon::start(&tc);
    let outbox = tc.state_dir().join("boxes").join(INSURER).join("outbox");
    let big = random_file(&outbox, "big.p7m", 40 << 20);
    let small = random_file(&outbox, "small.p7m", 1 << 20);
    // 255 KiB requests, 64 outstanding.
    let dst = tc.dir.path().join("big.out");
    let out = sftp_command(
        tc.sftp_port,
        INSURER,
        INSURER,
        &["-B", "261120", "-R", "64", "-b", "-"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .and_then(|mut c| {
        use std::io::Write;
        c.stdin
            .take()
            .unwrap()
            .write_all(format!("get /outbox/big.p7m {}\n", dst.display()).as_bytes())?;
        c.wait_with_output()
    })
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha256_file(&dst), sha256_file(&big));
    // A client limited to 4 Mbit/s.
    let dst = tc.dir.path().join("small.out");
    let batch = tc.dir.path().join("slow-batch");
    fs::write(&batch, format!("get /outbox/small.p7m {}\n", dst.display())).unwrap();
    let out = sftp_command(
        tc.sftp_port,
        INSURER,
        INSURER,
        &["-l", "4000", "-b", &batch.display().to_string()],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha256_file(&dst), sha256_file(&small));
}

#[test]
fn interrupted_upload_never_reaches_the_inbox() {
    let tc = TestConfig::new();
    let d = Daemon::start(&tc);
    let src = random_file(tc.dir.path(), "big.bin", 20 << 20);
    let batch = tc.dir.path().join("b");
    fs::write(&batch, format!("put {} /inbox/cut.zip\n", src.display())).unwrap();
    // 8 Mbit/s: the 20 MiB upload takes ~20 s; kill the client after 2.
    let mut child = sftp_command(
        tc.sftp_port,
        CLINIC,
        CLINIC,
        &["-l", "8000", "-b", &batch.display().to_string()],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let staging = tc.state_dir().join("staging").join(CLINIC);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_dir(&staging).unwrap().count() == 0 {
        assert!(Instant::now() < deadline, "upload never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::read_dir(&staging).unwrap().count() != 0 {
        assert!(Instant::now() < deadline, "partial file not discarded");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        fs::read_dir(tc.state_dir().join("boxes").join(CLINIC).join("inbox"))
            .unwrap()
            .count(),
        0
    );
    assert!(support::accepted_sha256(&tc, "cut.zip").is_none());
    assert!(d.audit_lines("box.upload").is_empty());
    assert_eq!(d.audit_lines("box.upload_discarded").len(), 1);
}

#[test]
fn removing_an_account_cuts_its_live_session_within_a_second() {
    let tc = TestConfig::new();
    let d = Daemon::start(&tc);
    let outbox = tc.state_dir().join("boxes").join(CLINIC).join("outbox");
    random_file(&outbox, "slow.p7m", 8 << 20);
    let batch = tc.dir.path().join("b");
    fs::write(
        &batch,
        format!(
            "get /clinic-1312345679/outbox/slow.p7m {}\n",
            tc.dir.path().join("o").display()
        ),
    )
    .unwrap();
    // The maintainer downloads at 1 Mbit/s: about a minute, unless cut.
    let mut child = sftp_command(
        tc.sftp_port,
        "m.sato",
        "m.sato",
        &["-l", "1000", "-b", &batch.display().to_string()],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.audit_lines("box.open").is_empty() {
        assert!(Instant::now() < deadline, "download never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        support::established_on(tc.sftp_port),
        1,
        "the download's connection"
    );
    tc.rewrite(&remove_account(&tc.text(), "maintainer", "m.sato"));
    assert!(
        Command::new("kill")
            .args(["-HUP", &d.pid().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let cut_from = Instant::now();
    // The gateway's side of the connection leaves ESTABLISHED when it closes the socket; the
    // client notices later, after it has read what its own buffers still hold.
    while support::established_on(tc.sftp_port) > 0 {
        assert!(
            cut_from.elapsed() < Duration::from_secs(5),
            "session not cut"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = cut_from.elapsed();
    assert!(
        elapsed <= Duration::from_secs(1),
        "session closed after {elapsed:?}"
    );
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            cut_from.elapsed() < Duration::from_secs(10),
            "client never noticed the cut"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "the download must not complete");
    // And the account can no longer log in.
    let out = sftp_batch(tc.sftp_port, "m.sato", "m.sato", "ls\n");
    assert!(!out.status.success());
}

#[test]
fn repeated_failures_ban_the_ip_until_the_ban_ends() {
    let tc = TestConfig::with(|t| {
        t.replace("auth_failures_per_ip = 10", "auth_failures_per_ip = 3")
            .replace("ban_time = \"15m\"", "ban_time = \"3s\"")
    });
    let d = Daemon::start(&tc);
    for _ in 0..4 {
        let out = sftp_batch(tc.sftp_port, CLINIC, INSURER, "ls\n");
        assert!(!out.status.success());
    }
    let banned = sftp_batch(tc.sftp_port, CLINIC, CLINIC, "ls\n");
    assert!(
        !banned.status.success(),
        "the right key is refused while banned"
    );
    assert!(!d.audit_lines("auth.ban").is_empty());
    std::thread::sleep(Duration::from_millis(3500));
    let ok = sftp_batch(tc.sftp_port, CLINIC, CLINIC, "ls\n");
    assert!(ok.status.success(), "ban lifted: {}", stderr(&ok));
}

#[test]
fn strict_kex_is_offered_and_shell_exec_are_refused() {
    let tc = TestConfig::new();
    let d = Daemon::start(&tc);
    let key = support::repo_root().join("certs-example/ssh").join(CLINIC);
    let ssh = |extra: &[&str]| {
        Command::new("ssh")
            .args([
                "-vv",
                "-p",
                &tc.sftp_port.to_string(),
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-i"])
            .arg(&key)
            .args(extra)
            .arg(format!("{CLINIC}@127.0.0.1"))
            .args(["true"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = ssh(&[]);
    let text = stderr(&out);
    assert!(
        text.contains("kex-strict-s-v00@openssh.com"),
        "strict kex not offered: {text}"
    );
    assert!(
        !text.contains("ssh-rsa,") && !text.contains("-cbc"),
        "weak algorithms offered: {text}"
    );
    assert!(!out.status.success(), "exec must be refused");
    let out = ssh(&["-t", "-t"]);
    assert!(!out.status.success());
    let refused = d.audit_lines("sftp.refused");
    assert!(refused.iter().any(|l| l.contains("exec")), "{refused:?}");
}
