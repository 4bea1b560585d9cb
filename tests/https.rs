//! Mutual-TLS HTTPS drop boxes driven by real `curl` with the example client certificates.

mod support;

use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{Daemon, TestConfig, random_file, sha256_file};

const CLINIC: &str = "clinic-1312345679";
const CLINIC_B: &str = "clinic-2717654327";
const INSURER: &str = "insurer-06130017";

fn certs() -> std::path::PathBuf {
    support::repo_root().join("certs-example")
}

/// curl with `cert` (a certs-example name, or None for no client certificate).
fn curl(tc: &TestConfig, cert: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--cacert"]).arg(certs().join("ca.pem"));
    if let Some(c) = cert {
        cmd.arg("--cert").arg(certs().join(format!("{c}.pem")));
        cmd.arg("--key").arg(certs().join(format!("{c}.key")));
    }
    cmd.args(
        args.iter()
            .map(|a| a.replace("{base}", &format!("https://localhost:{}", tc.https_port))),
    );
    cmd.output().expect("run curl")
}

/// `-w` output appended after the body: the status code.
fn status_of(out: &Output) -> u16 {
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .rsplit('\n')
        .next()
        .and_then(|l| l.trim().rsplit(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn start(tc: &TestConfig) -> Daemon {
    let d = Daemon::start(tc);
    assert!(
        support::wait_for(10, || std::net::TcpStream::connect((
            "127.0.0.1",
            tc.https_port
        ))
        .is_ok()),
        "HTTPS never listened"
    );
    d
}

#[test]
fn upload_list_download_with_and_without_range_and_delete() {
    let tc = TestConfig::new();
    let d = start(&tc);
    let src = tc.dir.path().join("up.bin");
    // Past 8 MiB and of no aligned length: the part of an upload written with direct I/O and
    // its unaligned tail are both covered.
    random_file(&src, (20 << 20) + 12_345);
    let out = curl(
        &tc,
        Some(CLINIC),
        &[
            "-T",
            &src.display().to_string(),
            "{base}/inbox/checkup.zip",
            "-w",
            "\n%{http_code}",
        ],
    );
    assert_eq!(
        status_of(&out),
        201,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
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
    assert!(String::from_utf8_lossy(&out.stdout).contains(&sha256_file(&src)));

    // Chunked upload from stdin works too.
    let mut child = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(certs().join("ca.pem"))
        .arg("--cert")
        .arg(certs().join(format!("{CLINIC}.pem")))
        .arg("--key")
        .arg(certs().join(format!("{CLINIC}.key")))
        .args([
            "-T",
            "-",
            &format!("https://localhost:{}/inbox/chunked.zip", tc.https_port),
            "-w",
            "\n%{http_code}",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&vec![7u8; 100_000])
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        status_of(&out),
        201,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let outbox = tc.state_dir().join("boxes").join(INSURER).join("outbox");
    let file = outbox.join("f1_checkup.zip.p7m");
    random_file(&file, 1 << 20);
    let out = curl(&tc, Some(INSURER), &["{base}/outbox/"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["files"][0]["name"], "f1_checkup.zip.p7m");
    assert_eq!(list["files"][0]["size"], 1 << 20);
    assert_eq!(list["files"][0]["sha256"], sha256_file(&file));

    let part = tc.dir.path().join("part");
    let out = curl(
        &tc,
        Some(INSURER),
        &[
            "-r",
            "0-99",
            "-o",
            &part.display().to_string(),
            "{base}/outbox/f1_checkup.zip.p7m",
            "-w",
            "%{http_code}",
        ],
    );
    assert_eq!(status_of(&out), 206);
    assert_eq!(fs::read(&part).unwrap(), fs::read(&file).unwrap()[..100]);
    assert!(
        d.audit_lines("box.retrieved").is_empty(),
        "a partial read is not a retrieval"
    );

    let whole = tc.dir.path().join("whole");
    let out = curl(
        &tc,
        Some(INSURER),
        &[
            "-o",
            &whole.display().to_string(),
            "{base}/outbox/f1_checkup.zip.p7m",
            "-w",
            "%{http_code}",
        ],
    );
    assert_eq!(status_of(&out), 200);
    assert_eq!(sha256_file(&whole), sha256_file(&file));
    assert_eq!(d.audit_lines("box.retrieved").len(), 1);

    let out = curl(
        &tc,
        Some(INSURER),
        &[
            "-X",
            "DELETE",
            "{base}/outbox/f1_checkup.zip.p7m",
            "-w",
            "%{http_code}",
        ],
    );
    assert_eq!(status_of(&out), 204);
    assert!(!file.exists());
    let out = curl(
        &tc,
        Some(INSURER),
        &["{base}/outbox/f1_checkup.zip.p7m", "-w", "\n%{http_code}"],
    );
    assert_eq!(status_of(&out), 404);
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("\"error\":\"not_found\""), "{body}");
}

#[test]
fn certificates_that_must_not_get_in() {
    let tc = TestConfig::new();
    let d = start(&tc);
    for cert in [
        None,
        Some("other-client"),
        Some("revoked-client"),
        Some("expired-client"),
    ] {
        let out = curl(&tc, cert, &["{base}/inbox/", "-w", "%{http_code}"]);
        assert!(
            !out.status.success() || status_of(&out) == 0,
            "{cert:?} got in: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert!(d.audit_lines("https.handshake_refused").len() >= 4);
    // A valid certificate of the CA that maps to no account: 403 with a reason.
    let out = curl(
        &tc,
        Some("unmapped-client"),
        &["{base}/inbox/", "-w", "\n%{http_code}"],
    );
    assert_eq!(status_of(&out), 403);
    assert_eq!(d.audit_lines("https.unmapped_certificate").len(), 1);
}

#[test]
fn traversal_is_refused_and_nothing_is_written_outside() {
    let tc = TestConfig::new();
    let _d = start(&tc);
    let src = tc.dir.path().join("x.bin");
    random_file(&src, 100);
    for path in [
        "/inbox/%2e%2e/x",
        "/inbox/..%2fx",
        "/inbox/%2e%2e%2f%2e%2e%2fx",
        "/inbox/a%2fb",
        "/inbox/a%5cb",
        "/inbox/.hidden",
        "/inbox/%00",
    ] {
        let out = curl(
            &tc,
            Some(CLINIC),
            &[
                "--path-as-is",
                "-T",
                &src.display().to_string(),
                &format!("{{base}}{path}"),
                "-w",
                "\n%{http_code}",
            ],
        );
        assert_eq!(
            status_of(&out),
            400,
            "{path}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let out = curl(
        &tc,
        Some(CLINIC),
        &[
            "--path-as-is",
            "-T",
            &src.display().to_string(),
            "{base}/outbox/x",
            "-w",
            "\n%{http_code}",
        ],
    );
    assert_eq!(status_of(&out), 403);
    let boxdir = tc.state_dir().join("boxes").join(CLINIC);
    for folder in ["inbox", "outbox", "receipts"] {
        assert_eq!(
            fs::read_dir(boxdir.join(folder)).unwrap().count(),
            0,
            "{folder}"
        );
    }
    assert!(!tc.state_dir().join("boxes/x").exists() && !tc.state_dir().join("x").exists());
}

#[test]
fn an_upload_cut_mid_body_never_reaches_the_inbox() {
    let tc = TestConfig::new();
    let d = start(&tc);
    let src = tc.dir.path().join("big.bin");
    random_file(&src, 20 << 20);
    let mut child = Command::new("curl")
        .args(["-sS", "--limit-rate", "1M", "--cacert"])
        .arg(certs().join("ca.pem"))
        .arg("--cert")
        .arg(certs().join(format!("{CLINIC}.pem")))
        .arg("--key")
        .arg(certs().join(format!("{CLINIC}.key")))
        .arg("-T")
        .arg(&src)
        .arg(format!("https://localhost:{}/inbox/cut.zip", tc.https_port))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let staging = tc.state_dir().join("staging").join(CLINIC);
    assert!(
        support::wait_for(10, || staging.exists()
            && fs::read_dir(&staging).unwrap().count() > 0),
        "upload never started"
    );
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        support::wait_for(5, || fs::read_dir(&staging).unwrap().count() == 0),
        "partial upload not discarded"
    );
    assert_eq!(
        fs::read_dir(tc.state_dir().join("boxes").join(CLINIC).join("inbox"))
            .unwrap()
            .count(),
        0
    );
    assert!(d.audit_lines("box.upload").is_empty());
}

#[test]
fn changing_an_account_closes_its_keep_alive_connection_within_a_second() {
    use std::io::{BufRead, BufReader, Write};
    let tc = TestConfig::new();
    let d = start(&tc);
    // An idle HTTP/1.1 keep-alive connection of clinic B, held open by openssl s_client.
    let mut client = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{}", tc.https_port),
        ])
        .arg("-CAfile")
        .arg(certs().join("ca.pem"))
        .arg("-cert")
        .arg(certs().join(format!("{CLINIC_B}.pem")))
        .arg("-key")
        .arg(certs().join(format!("{CLINIC_B}.key")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    stdin
        .write_all(b"GET /outbox/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(client.stdout.take().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let drain = std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut reader, &mut sink);
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        client.try_wait().unwrap().is_none(),
        "keep-alive connection open"
    );

    tc.rewrite(&tc.text().replace(
        "cert_subject = \"CN=clinic-2717654327,O=handoff EXAMPLE,C=JP\"\n",
        "",
    ));
    assert!(
        Command::new("kill")
            .args(["-HUP", &d.pid().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let cut = Instant::now();
    loop {
        if client.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            cut.elapsed() < Duration::from_secs(5),
            "connection not closed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        cut.elapsed() <= Duration::from_secs(1),
        "closed after {:?}",
        cut.elapsed()
    );
    drop(stdin);
    let _ = drain.join();
    let out = curl(
        &tc,
        Some(CLINIC_B),
        &["{base}/outbox/", "-w", "\n%{http_code}"],
    );
    assert_eq!(
        status_of(&out),
        403,
        "an unmapped certificate is refused after the reload"
    );
}

#[test]
fn a_revoked_account_loses_a_download_in_progress() {
    let tc = TestConfig::new();
    let d = start(&tc);
    let outbox = tc.state_dir().join("boxes").join(CLINIC_B).join("outbox");
    random_file(&outbox.join("slow.p7m"), 20 << 20);
    let mut child = Command::new("curl")
        .args(["-sS", "--limit-rate", "500K", "-o", "/dev/null", "--cacert"])
        .arg(certs().join("ca.pem"))
        .arg("--cert")
        .arg(certs().join(format!("{CLINIC_B}.pem")))
        .arg("--key")
        .arg(certs().join(format!("{CLINIC_B}.key")))
        .arg(format!(
            "https://localhost:{}/outbox/slow.p7m",
            tc.https_port
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        child.try_wait().unwrap().is_none(),
        "download still running"
    );
    tc.rewrite(&tc.text().replace(
        "cert_subject = \"CN=clinic-2717654327,O=handoff EXAMPLE,C=JP\"\n",
        "",
    ));
    assert!(
        Command::new("kill")
            .args(["-HUP", &d.pid().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let cut = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(cut.elapsed() < Duration::from_secs(10), "download not cut");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "the download must not complete");
    assert!(d.audit_lines("box.retrieved").is_empty());
}

#[test]
fn rate_limit_answers_429_with_retry_after() {
    let tc = TestConfig::with(|t| {
        t.replace(
            "requests_per_second_per_account = 50",
            "requests_per_second_per_account = 2",
        )
    });
    let _d = start(&tc);
    let urls: Vec<String> = (0..10).map(|_| "{base}/outbox/".to_owned()).collect();
    let mut args: Vec<&str> = vec!["-s", "-o", "/dev/null", "-D", "-", "-w", "%{http_code}\n"];
    args.extend(urls.iter().map(String::as_str));
    let out = curl(&tc, Some(INSURER), &args);
    let text = String::from_utf8_lossy(&out.stdout);
    // Bodies after the first URL are printed too: the status ends each line.
    assert!(text.lines().any(|l| l.trim().ends_with("429")), "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");
    assert!(text.lines().any(|l| l.trim().ends_with("200")), "{text}");
}

#[test]
fn oversized_upload_gets_413_and_both_http_versions_work() {
    let tc =
        TestConfig::with(|t| t.replace("max_upload_size = \"500 MiB\"", "max_upload_size = 1000"));
    let _d = start(&tc);
    let src = tc.dir.path().join("big.bin");
    random_file(&src, 5000);
    // Without a length the limit is found while the body is written: at its end, and mid-body.
    let streamed = tc.dir.path().join("streamed.bin");
    random_file(&streamed, 600 << 10);
    for version in ["--http1.1", "--http2"] {
        for (file, chunked) in [(&src, false), (&src, true), (&streamed, true)] {
            let mut args = vec![version, "-T"];
            let path = file.display().to_string();
            args.push(&path);
            if chunked && version == "--http1.1" {
                args.extend(["-H", "Transfer-Encoding: chunked"]);
            } else if chunked {
                args.extend(["-H", "Content-Length:"]);
            }
            args.extend(["{base}/inbox/big.zip", "-w", "\n%{http_code}"]);
            let out = curl(&tc, Some(CLINIC_B), &args);
            assert_eq!(
                status_of(&out),
                413,
                "{version} chunked={chunked} {path}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let out = curl(
            &tc,
            Some(CLINIC_B),
            &[
                version,
                "-o",
                "/dev/null",
                "{base}/inbox/",
                "-w",
                "%{http_version} %{http_code}",
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let want = if version == "--http2" {
            "2 200"
        } else {
            "1.1 200"
        };
        assert_eq!(text.trim(), want);
    }
}

#[test]
fn the_noc_api_is_for_noc_accounts_only() {
    let tc = TestConfig::new();
    let _d = start(&tc);
    let out = curl(&tc, Some("noc-tokyo"), &["{base}/noc/status"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["boxes"].as_array().unwrap().len(), 6);
    // The NOC reads receipts from the ledger, the record: a file planted in a box's receipts
    // folder is not one.
    let receipts = tc.state_dir().join("boxes").join(CLINIC).join("receipts");
    fs::write(
        receipts.join("f1.accepted.json"),
        "{\"hop\": \"accepted\", \"file_id\": \"f1\"}",
    )
    .unwrap();
    let src = tc.dir.path().join("noc.zip");
    random_file(&src, 1000);
    let out = curl(
        &tc,
        Some(CLINIC),
        &["-T", &src.display().to_string(), "{base}/inbox/noc.zip"],
    );
    assert!(out.status.success(), "{out:?}");
    let noc_receipts = || {
        let out = curl(
            &tc,
            Some("noc-tokyo"),
            &["{base}/noc/receipts?since=2000-01-01T00:00:00Z"],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        support::wait_for(30, || noc_receipts().contains("noc.zip")),
        "the accepted receipt never reached the NOC: {}",
        noc_receipts()
    );
    let lines: Vec<serde_json::Value> = noc_receipts()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // accepted, then rejected (random bytes are no archive), and nothing of the planted file.
    assert!(!lines.is_empty() && lines.len() <= 2, "{lines:?}");
    assert_eq!(lines[0]["hop"], "accepted");
    for line in &lines {
        assert_eq!(line["sender"], CLINIC);
        assert_eq!(line["original_name"], "noc.zip");
        assert_eq!(line["redacted"], true);
        assert!(line.get("signature").is_none(), "{line}");
        for finding in line["reasons"].as_array().unwrap() {
            assert!(finding.get("message").is_none(), "{line}");
        }
    }
    let out = curl(
        &tc,
        Some("noc-tokyo"),
        &["{base}/noc/receipts?since=2999-01-01T00:00:00Z"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "");
    let out = curl(
        &tc,
        Some(CLINIC),
        &["{base}/noc/status", "-w", "\n%{http_code}"],
    );
    assert_eq!(status_of(&out), 403);
    let out = curl(
        &tc,
        Some("noc-tokyo"),
        &["{base}/inbox/", "-w", "\n%{http_code}"],
    );
    assert_eq!(status_of(&out), 404);
}
