//! The spool pipeline end to end: the daemon as a child process, a real clamd started by the
//! test, files handed off into inboxes the way transports do.

mod support;

use std::path::{Path, PathBuf};

use handoff::events::Hop;
use handoff::validate::testdata::{self, Spec, Violation};
use support::{
    ClamdInstance, Daemon, TestConfig, checkup_archive, checkup_archive_with, event_of, events,
    hand_off, wait_for,
};

const CLINIC: &str = "clinic-2717654327";
const INSURER: &str = "insurer-06130017";
/// The numbers of CLINIC and INSURER, as archives carry them.
const CLINIC_NO: &str = "2717654327";
const INSURER_NO: &str = "06130017";

fn folder(tc: &TestConfig, counterpart: &str, folder: &str) -> PathBuf {
    tc.state_dir().join("boxes").join(counterpart).join(folder)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn clean_file_goes_to_the_recipients_outbox() {
    let tc = TestConfig::new();
    let _clamd = ClamdInstance::start(tc.dir.path());
    let daemon = Daemon::start(&tc);
    let body = checkup_archive(CLINIC_NO, INSURER_NO, 50, 1);
    hand_off(&tc, CLINIC, "h0123456789_2024.zip", &body);

    let outbox = folder(&tc, INSURER, "outbox");
    assert!(
        wait_for(30, || event_of(&tc, "h0123456789_2024.zip", Hop::Delivered)
            .is_some()),
        "not delivered: {:?}",
        events(&tc)
    );
    let delivered = event_of(&tc, "h0123456789_2024.zip", Hop::Delivered).unwrap();
    let accepted = event_of(&tc, "h0123456789_2024.zip", Hop::Accepted).unwrap();
    assert_eq!(accepted.sha256, sha256_hex(&body));
    assert_eq!(accepted.sender, CLINIC);
    assert_eq!(delivered.recipient.as_deref(), Some(INSURER));
    // Uploaded under a name of its own, not the official one: delivered, with that warning.
    let warned: Vec<(&str, bool)> = delivered
        .reasons
        .iter()
        .map(|r| (r.rule.as_str(), r.warning))
        .collect();
    assert_eq!(warned, vec![("archive.name", true)]);
    let expected_name = format!("{}_h0123456789_2024.zip.p7m", delivered.file_id);
    assert_eq!(names(&outbox), vec![expected_name.clone()]);
    // The outbox holds CMS sealed for the insurer: openssl opens it to the uploaded bytes.
    let out = std::fs::read(outbox.join(&expected_name)).unwrap();
    assert_ne!(out, body);
    assert_eq!(
        support::openssl_decrypt(&outbox.join(&expected_name), INSURER),
        body
    );
    assert_eq!(
        delivered.sealed_sha256.map(|d| d.to_string()),
        Some(sha256_hex(&out))
    );
    assert!(
        names(&folder(&tc, CLINIC, "inbox")).is_empty(),
        "inbox not emptied"
    );
    assert!(
        names(&tc.state_dir().join("spool")).is_empty(),
        "spool not cleared"
    );
    for hop in ["file.accepted", "file.delivered"] {
        assert_eq!(daemon.audit_lines(hop).len(), 1, "{hop} not audited once");
    }
    // Receipts are issued from the event log: the sender gets accepted and delivered.
    assert!(
        wait_for(10, || names(&folder(&tc, CLINIC, "receipts")).len() >= 2),
        "no receipts: {:?}",
        names(&folder(&tc, CLINIC, "receipts"))
    );
}

#[test]
fn eicar_inside_a_valid_archive_is_quarantined_and_rejected() {
    let tc = TestConfig::new();
    let _clamd = ClamdInstance::start(tc.dir.path());
    let _daemon = Daemon::start(&tc);

    // XSD/ is not read by the schema check, so the archive passes it: the scanner must
    // still find what is inside.
    let archive = checkup_archive_with(
        CLINIC_NO,
        INSURER_NO,
        3,
        2,
        vec![("XSD/eicar.com".into(), support::eicar())],
    );
    hand_off(&tc, CLINIC, "eicar-inside.zip", &archive);

    let name = "eicar-inside.zip";
    assert!(
        wait_for(30, || event_of(&tc, name, Hop::Rejected).is_some()),
        "{name} not rejected: {:?}",
        events(&tc)
    );
    let rejected = event_of(&tc, name, Hop::Rejected).unwrap();
    assert_eq!(rejected.reasons.len(), 1);
    assert_eq!(rejected.reasons[0].rule, "scan.infected");
    assert!(
        rejected.reasons[0].message.contains("Handoff-Test-EICAR"),
        "no signature name: {}",
        rejected.reasons[0].message
    );
    assert!(
        event_of(&tc, name, Hop::Delivered).is_none(),
        "{name} was delivered"
    );
    let q = tc.state_dir().join("quarantine").join(&rejected.file_id);
    assert!(q.is_file(), "{name} not quarantined");
    assert!(names(&folder(&tc, INSURER, "outbox")).is_empty());
}

#[test]
fn files_that_fail_the_schema_check_are_rejected_before_scanning() {
    let tc = TestConfig::new();
    let _clamd = ClamdInstance::start(tc.dir.path());
    let daemon = Daemon::start(&tc);
    // Plain EICAR is not an archive: the schema check refuses it, nothing reaches clamd or
    // the quarantine.
    hand_off(&tc, CLINIC, "plain-eicar.com", &support::eicar());
    let mut spec = Spec::example(
        3,
        handoff::validate::today(time::UtcOffset::UTC)
            .previous_day()
            .unwrap(),
    );
    spec.sender = CLINIC_NO.into();
    let limits =
        handoff::validate::archive::Limits::from(&handoff::config::ArchiveLimits::default());
    let (bad, expected) =
        testdata::write_violation(&spec, Violation::DateInvalid, &limits, Vec::new()).unwrap();
    hand_off(&tc, CLINIC, "bad-date.zip", &bad);

    for (name, rule, file, line) in [
        ("plain-eicar.com", "zip.unreadable", None, None),
        (
            "bad-date.zip",
            "date.invalid",
            expected.file.clone(),
            expected.line,
        ),
    ] {
        assert!(
            wait_for(30, || event_of(&tc, name, Hop::Rejected).is_some()),
            "{name} not rejected: {}",
            daemon.log_text()
        );
        let r = event_of(&tc, name, Hop::Rejected).unwrap();
        assert_eq!(r.reasons[0].rule, rule, "{name}: {:?}", r.reasons);
        assert_eq!(r.reasons[0].file, file, "{name}");
        assert_eq!(r.reasons[0].line, line, "{name}");
        assert!(!tc.state_dir().join("quarantine").join(&r.file_id).exists());
    }
    assert!(names(&folder(&tc, INSURER, "outbox")).is_empty());
}

#[test]
fn without_clamd_files_wait_and_are_delivered_once_it_is_back() {
    let tc = TestConfig::new();
    let daemon = Daemon::start(&tc);
    hand_off(
        &tc,
        CLINIC,
        "waits.zip",
        &checkup_archive(CLINIC_NO, INSURER_NO, 2, 3),
    );
    assert!(wait_for(10, || event_of(&tc, "waits.zip", Hop::Accepted).is_some()));
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        names(&folder(&tc, INSURER, "outbox")).is_empty(),
        "delivered unscanned"
    );
    assert!(event_of(&tc, "waits.zip", Hop::Delivered).is_none());
    assert!(event_of(&tc, "waits.zip", Hop::Rejected).is_none());
    assert_eq!(daemon.audit_lines("alert.scanner_down").len(), 1);

    let _clamd = ClamdInstance::start(tc.dir.path());
    assert!(
        wait_for(40, || event_of(&tc, "waits.zip", Hop::Delivered).is_some()),
        "not delivered after clamd came back"
    );
    assert_eq!(names(&folder(&tc, INSURER, "outbox")).len(), 1);
}

#[test]
fn files_without_an_allowed_route_are_rejected() {
    let tc = TestConfig::new();
    let _clamd = ClamdInstance::start(tc.dir.path());
    let _daemon = Daemon::start(&tc);
    // insurer-06270029 has no routes at all; clinic-2717654327 may send to insurer-06130017
    // only, not to insurer-06270029 which its archive names.
    hand_off(
        &tc,
        "insurer-06270029",
        "no-route.zip",
        &checkup_archive("06270029", "1312345679", 1, 4),
    );
    hand_off(
        &tc,
        "clinic-2717654327",
        "not-allowed.zip",
        &checkup_archive(CLINIC_NO, "06270029", 1, 5),
    );
    for name in ["no-route.zip", "not-allowed.zip"] {
        assert!(
            wait_for(30, || event_of(&tc, name, Hop::Rejected).is_some()),
            "{name} not rejected"
        );
        let r = event_of(&tc, name, Hop::Rejected).unwrap();
        assert_eq!(r.reasons[0].rule, "route.not-allowed", "{:?}", r.reasons);
        assert!(event_of(&tc, name, Hop::Delivered).is_none());
    }
    for c in ["insurer-06130017", "clinic-1312345679", "clinic-2717654327"] {
        assert!(names(&folder(&tc, c, "outbox")).is_empty());
    }
}

#[test]
fn retrieval_of_a_delivered_file_is_recorded_once() {
    let tc = TestConfig::new();
    let _clamd = ClamdInstance::start(tc.dir.path());
    let daemon = Daemon::start(&tc);
    hand_off(
        &tc,
        CLINIC,
        "fetch-me.zip",
        &checkup_archive(CLINIC_NO, INSURER_NO, 1, 6),
    );
    assert!(wait_for(30, || event_of(
        &tc,
        "fetch-me.zip",
        Hop::Delivered
    )
    .is_some()));
    let outbox_name = names(&folder(&tc, INSURER, "outbox")).remove(0);
    for _ in 0..2 {
        let out = support::sftp_batch(
            tc.sftp_port,
            INSURER,
            INSURER,
            &format!("get outbox/{outbox_name} {}/got\n", tc.dir.path().display()),
        );
        assert!(
            out.status.success(),
            "sftp get failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            daemon.log_text()
        );
    }
    assert!(wait_for(10, || event_of(
        &tc,
        "fetch-me.zip",
        Hop::Retrieved
    )
    .is_some()));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let n = events(&tc)
        .iter()
        .filter(|e| e.hop == Hop::Retrieved)
        .count();
    assert_eq!(n, 1);
}

#[test]
fn retention_purges_unretrieved_deliveries_and_old_quarantine() {
    let tc = TestConfig::with(|t| {
        t.replace("outbox = \"30d\"", "outbox = \"1s\"")
            .replace("quarantine = \"90d\"", "quarantine = \"1s\"")
    });
    let _clamd = ClamdInstance::start(tc.dir.path());
    let daemon = Daemon::start(&tc);
    hand_off(
        &tc,
        CLINIC,
        "kept-too-long.zip",
        &checkup_archive(CLINIC_NO, INSURER_NO, 1, 7),
    );
    hand_off(
        &tc,
        CLINIC,
        "infected.com",
        &checkup_archive_with(
            CLINIC_NO,
            INSURER_NO,
            1,
            9,
            vec![("XSD/eicar.com".into(), support::eicar())],
        ),
    );
    assert!(wait_for(30, || {
        event_of(&tc, "kept-too-long.zip", Hop::Delivered).is_some()
            && event_of(&tc, "infected.com", Hop::Rejected).is_some()
    }));
    let rejected = event_of(&tc, "infected.com", Hop::Rejected).unwrap();
    assert!(
        tc.state_dir()
            .join("quarantine")
            .join(&rejected.file_id)
            .exists()
    );
    assert_eq!(names(&folder(&tc, INSURER, "outbox")).len(), 1);
    drop(daemon);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // Retention is applied at start-up and then every half minute.
    let _daemon = Daemon::start(&tc);
    assert!(
        wait_for(20, || {
            event_of(&tc, "kept-too-long.zip", Hop::Purged).is_some()
                && event_of(&tc, "infected.com", Hop::Purged).is_some()
        }),
        "not purged: {:?}",
        events(&tc)
    );
    assert!(names(&folder(&tc, INSURER, "outbox")).is_empty());
    assert!(
        !tc.state_dir()
            .join("quarantine")
            .join(&rejected.file_id)
            .exists()
    );
}

#[test]
fn files_too_large_for_clamd_are_rejected_not_delivered() {
    let tc = TestConfig::new();
    let _clamd = ClamdInstance::start_with_env(
        tc.dir.path(),
        &[("CLAMD_MAX_FILE_SIZE", "1M"), ("CLAMD_MAX_SCAN_SIZE", "1M")],
    );
    let _daemon = Daemon::start(&tc);
    // A valid archive of over 2 MiB (its XSD/ part incompressible), past clamd's 1 MiB.
    let mut noise = Vec::with_capacity(2 << 20);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while noise.len() < 2 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    let huge = checkup_archive_with(
        CLINIC_NO,
        INSURER_NO,
        2,
        10,
        vec![("XSD/noise.xsd".into(), noise)],
    );
    hand_off(&tc, CLINIC, "huge.zip", &huge);
    assert!(
        wait_for(30, || event_of(&tc, "huge.zip", Hop::Rejected).is_some()),
        "not rejected: {:?}",
        events(&tc)
    );
    let r = event_of(&tc, "huge.zip", Hop::Rejected).unwrap();
    assert_eq!(r.reasons[0].rule, "scan.limits-exceeded");
    assert!(r.reasons[0].message.contains("Heuristics.Limits.Exceeded"));
    assert!(names(&folder(&tc, INSURER, "outbox")).is_empty());
}

/// The scanner part of the NOC status, over mutual-TLS HTTPS with the NOC's certificate.
fn noc_scanner(tc: &TestConfig) -> serde_json::Value {
    let certs = support::repo_root().join("certs-example");
    let out = std::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join("noc-tokyo.pem"))
        .arg("--key")
        .arg(certs.join("noc-tokyo.key"))
        .arg(format!("https://localhost:{}/noc/status", tc.https_port))
        .output()
        .expect("run curl");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    status["scanner"].clone()
}

#[test]
fn scanner_health_is_shown_to_the_noc() {
    let tc = TestConfig::new();
    let clamd = ClamdInstance::start(tc.dir.path());
    let _daemon = Daemon::start(&tc);
    assert!(
        wait_for(15, || noc_scanner(&tc)["up"] == true),
        "scanner not up: {}",
        noc_scanner(&tc)
    );
    // One clamd is a pool of one: its endpoint is the scanner.
    let endpoint = format!("unix:{}", clamd.socket().display());
    let up = noc_scanner(&tc);
    assert_eq!(
        up["endpoints"],
        serde_json::json!([{ "endpoint": endpoint, "up": true, "error": null }]),
        "{up}"
    );
    clamd.stop();
    assert!(
        wait_for(15, || noc_scanner(&tc)["up"] == false),
        "scanner still up: {}",
        noc_scanner(&tc)
    );
    let down = noc_scanner(&tc);
    assert!(down["error"].is_string());
    assert_eq!(down["endpoints"][0]["up"], false, "{down}");
    assert_eq!(down["endpoints"][0]["error"], down["error"], "{down}");
}

#[test]
fn pipeline_metrics_are_exported() {
    let tc = TestConfig::new();
    let clamd = ClamdInstance::start(tc.dir.path());
    let _daemon = Daemon::start(&tc);
    hand_off(
        &tc,
        CLINIC,
        "counted.zip",
        &checkup_archive(CLINIC_NO, INSURER_NO, 1, 8),
    );
    assert!(wait_for(30, || event_of(
        &tc,
        "counted.zip",
        Hop::Delivered
    )
    .is_some()));
    let scrape = || support::metrics_text(&tc);
    let endpoint_up = format!(
        "handoff_scanner_endpoint_up{{endpoint=\"unix:{}\"}} 1",
        clamd.socket().display()
    );
    let want = [
        "handoff_pipeline_files_total{hop=\"accepted\",counterpart=\"clinic-2717654327\"} 1",
        "handoff_pipeline_files_total{hop=\"delivered\",counterpart=\"insurer-06130017\"} 1",
        "handoff_scanner_up 1",
        endpoint_up.as_str(),
        "handoff_pipeline_stage_seconds_count{stage=\"scan\"} 1",
    ];
    assert!(
        wait_for(10, || {
            let text = scrape();
            want.iter().all(|w| text.contains(w))
        }),
        "missing pipeline metrics in:\n{}",
        scrape()
    );
}

#[test]
fn an_archive_refused_over_sftp_gets_a_receipt_naming_rule_file_and_line() {
    let tc = TestConfig::new();
    let _clamd = ClamdInstance::start(tc.dir.path());
    let daemon = Daemon::start(&tc);
    let clinic = "clinic-1312345679";
    let spec = Spec::example(
        5,
        handoff::validate::today(time::UtcOffset::UTC)
            .previous_day()
            .unwrap(),
    );
    let limits =
        handoff::validate::archive::Limits::from(&handoff::config::ArchiveLimits::default());
    let (bad, expected) =
        testdata::write_violation(&spec, Violation::XsdInvalid, &limits, Vec::new()).unwrap();
    let local = tc.dir.path().join("h-results.zip");
    std::fs::write(&local, &bad).unwrap();
    let out = support::sftp_batch(
        tc.sftp_port,
        clinic,
        clinic,
        &format!("put {} inbox/h-results.zip\n", local.display()),
    );
    assert!(out.status.success(), "{out:?}\n{}", daemon.log_text());
    assert!(
        wait_for(30, || event_of(&tc, "h-results.zip", Hop::Rejected)
            .is_some()),
        "not rejected: {}",
        daemon.log_text()
    );
    let file_id = event_of(&tc, "h-results.zip", Hop::Rejected)
        .unwrap()
        .file_id;

    // The clinic reads its rejection receipt from its own receipts/ folder over SFTP.
    let receipt_name = format!("{file_id}.rejected.json");
    let fetched = tc.dir.path().join("receipt.json");
    assert!(wait_for(20, || {
        let out = support::sftp_batch(
            tc.sftp_port,
            clinic,
            clinic,
            &format!("get receipts/{receipt_name} {}\n", fetched.display()),
        );
        out.status.success()
    }));
    let receipt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&fetched).unwrap()).unwrap();
    let reason = &receipt["reasons"][0];
    println!("rejection receipt: {receipt}");
    assert_eq!(reason["rule"], "xsd.invalid");
    assert_eq!(reason["file"].as_str(), expected.file.as_deref());
    assert_eq!(reason["line"].as_u64(), expected.line.map(u64::from));
    assert!(reason["message"].as_str().unwrap().contains("remark"));
    assert!(names(&folder(&tc, INSURER, "outbox")).is_empty());
}

/// `openssl cms -encrypt` of `plain` for the certificate `cert` in certs-example.
/// CMS for `cert` made by openssl; RSA key transport with OAEP unless `pkcs1v15`.
fn openssl_encrypt(tc: &TestConfig, plain: &[u8], cert: &str, pkcs1v15: bool) -> Vec<u8> {
    let input = tc.dir.path().join("to-encrypt.zip");
    let output = tc.dir.path().join("encrypted.p7m");
    std::fs::write(&input, plain).unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "cms",
            "-encrypt",
            "-aes-256-gcm",
            "-binary",
            "-outform",
            "DER",
            "-in",
        ])
        .arg(&input)
        .arg("-out")
        .arg(&output)
        .arg("-recip")
        .arg(support::repo_root().join("certs-example").join(cert))
        .args(if pkcs1v15 {
            &[][..]
        } else {
            &["-keyopt", "rsa_padding_mode:oaep"][..]
        })
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::read(&output).unwrap()
}

#[test]
fn uploads_encrypted_for_the_gateway_are_opened_before_the_check() {
    let tc = TestConfig::with(|t| {
        t.replacen(
            "id = \"clinic-2717654327\"",
            "id = \"clinic-2717654327\"\ninbound = \"cms\"",
            1,
        )
    });
    let _clamd = ClamdInstance::start(tc.dir.path());
    let daemon = Daemon::start(&tc);
    let archive = checkup_archive(CLINIC_NO, INSURER_NO, 5, 11);
    let sealed = openssl_encrypt(&tc, &archive, "gateway-enc.pem", false);
    hand_off(&tc, CLINIC, "sealed.zip.p7m", &sealed);
    // This account must encrypt: its plain archive, or one for another certificate, is refused.
    hand_off(
        &tc,
        CLINIC,
        "plain.zip",
        &checkup_archive(CLINIC_NO, INSURER_NO, 2, 12),
    );
    let for_insurer = openssl_encrypt(
        &tc,
        &checkup_archive(CLINIC_NO, INSURER_NO, 2, 13),
        "insurer-06130017-enc.pem",
        false,
    );
    hand_off(&tc, CLINIC, "wrong-cert.zip.p7m", &for_insurer);
    // RSA PKCS#1 v1.5 key transport (openssl's default) is off unless the config allows it.
    let pkcs1 = openssl_encrypt(
        &tc,
        &checkup_archive(CLINIC_NO, INSURER_NO, 2, 14),
        "gateway-enc.pem",
        true,
    );
    hand_off(&tc, CLINIC, "pkcs1.zip.p7m", &pkcs1);

    assert!(
        wait_for(40, || event_of(&tc, "sealed.zip.p7m", Hop::Delivered)
            .is_some()),
        "not delivered: {:?}\n{}",
        event_of(&tc, "sealed.zip.p7m", Hop::Rejected),
        daemon.log_text()
    );
    let accepted = event_of(&tc, "sealed.zip.p7m", Hop::Accepted).unwrap();
    assert_eq!(
        accepted.sha256,
        sha256_hex(&sealed),
        "the receipt is of what was sent"
    );
    let outbox = folder(&tc, INSURER, "outbox");
    let delivered = names(&outbox);
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    // The insurer gets the archive itself, sealed for it.
    let opened = support::openssl_decrypt(&outbox.join(&delivered[0]), INSURER);
    assert!(
        opened == archive,
        "the insurer's file is not the clinic's archive"
    );

    for (name, rule) in [
        ("plain.zip", "inbound.not-cms"),
        ("wrong-cert.zip.p7m", "inbound.wrong-recipient"),
        ("pkcs1.zip.p7m", "inbound.unsupported"),
    ] {
        assert!(
            wait_for(30, || event_of(&tc, name, Hop::Rejected).is_some()),
            "{name} not rejected"
        );
        let r = event_of(&tc, name, Hop::Rejected).unwrap();
        assert_eq!(r.reasons[0].rule, rule, "{name}: {:?}", r.reasons);
    }
    // Nothing of the opened content stays in the spool once the jobs are done.
    let spool: Vec<String> = names(&tc.state_dir().join("spool"));
    assert!(spool.iter().all(|n| !n.ends_with(".opened")), "{spool:?}");
}
