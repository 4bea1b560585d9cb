//! Offline media end to end: `handoff ingest` and `handoff export` as an operator runs them,
//! beside the daemon as a child process with a real clamd, media made and opened with
//! `openssl cms`, and the export's manifest checked with the documented Python procedure.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use handoff::receipts::Receipt;
use support::{ClamdInstance, Daemon, TestConfig, checkup_archive, hand_off, wait_for};

const CLINIC: &str = "clinic-2717654327";
const INSURER: &str = "insurer-06130017";
const CLINIC_NO: &str = "2717654327";
const INSURER_NO: &str = "06130017";
/// The example config's operator.
const OPERATOR: &str = "op-tanaka";

fn ingest(tc: &TestConfig, files: &[&Path]) -> Output {
    let mut cmd = Command::new(support::handoff_bin());
    cmd.args(["ingest", "--as", CLINIC, "--operator", OPERATOR, "--config"])
        .arg(&tc.path)
        .args(files);
    cmd.output().expect("run handoff ingest")
}

fn export(tc: &TestConfig, to: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(support::handoff_bin());
    cmd.args([
        "export",
        "--for",
        INSURER,
        "--operator",
        OPERATOR,
        "--config",
    ])
    .arg(&tc.path)
    .arg("--to")
    .arg(to)
    .args(extra);
    cmd.output().expect("run handoff export")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `openssl cms -encrypt` for a certificate of certs-example, as a clinic prepares a medium.
fn encrypt_for(tc: &TestConfig, plain: &[u8], cert: &str, out: &Path) {
    let input = tc.dir.path().join("plain-for-openssl.zip");
    std::fs::write(&input, plain).unwrap();
    let status = Command::new("openssl")
        .args([
            "cms",
            "-encrypt",
            "-aes-256-gcm",
            "-binary",
            "-outform",
            "DER",
        ])
        .arg("-in")
        .arg(&input)
        .arg("-out")
        .arg(out)
        .arg("-recip")
        .arg(support::repo_root().join("certs-example").join(cert))
        .args(["-keyopt", "rsa_padding_mode:oaep"])
        .status()
        .expect("run openssl");
    assert!(status.success());
    std::fs::remove_file(&input).unwrap();
}

fn receipt(tc: &TestConfig, counterpart: &str, id: &str) -> Option<Receipt> {
    let path = tc
        .state_dir()
        .join("boxes")
        .join(counterpart)
        .join("receipts")
        .join(format!("{id}.json"));
    let text = std::fs::read_to_string(path).ok()?;
    Some(serde_json::from_str(&text).expect("a receipt"))
}

/// The receipts in a box of one hop, for files of this original name.
fn receipts_of(tc: &TestConfig, counterpart: &str, name: &str, hop: &str) -> Vec<Receipt> {
    let dir = tc
        .state_dir()
        .join("boxes")
        .join(counterpart)
        .join("receipts");
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let r: Receipt = serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap();
        if r.original_name == name && r.hop.as_str() == hop {
            v.push(r);
        }
    }
    v
}

fn medium(tc: &TestConfig) -> PathBuf {
    let dir = tc.dir.path().join("medium");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn verify_medium(manifest: &Path) -> Output {
    Command::new(support::python())
        .arg(support::repo_root().join("docs/verify-receipt.py"))
        .arg(support::repo_root().join("certs-example/receipt.pub"))
        .arg(manifest)
        .output()
        .expect("run verify-receipt.py")
}

#[test]
fn an_encrypted_medium_is_ingested_and_delivered_with_offline_receipts() {
    let tc = TestConfig::new();
    let _clamd = ClamdInstance::start(tc.dir.path());
    let daemon = Daemon::start(&tc);
    let archive = checkup_archive(CLINIC_NO, INSURER_NO, 3, 31);
    let file = medium(&tc).join("kenshin.zip.p7m");
    encrypt_for(&tc, &archive, "gateway-enc.pem", &file);

    let out = ingest(&tc, &[&file]);
    let said = text(&out);
    assert!(out.status.success(), "{said}\n{}", daemon.log_text());
    assert!(said.contains("kenshin.zip.p7m: accepted as "), "{said}");
    assert!(
        said.contains(&format!("kenshin.zip.p7m: delivered to {INSURER}")),
        "{said}"
    );

    // The clinic sees the receipts online: the operator acted, offline.
    let accepted = receipts_of(&tc, CLINIC, "kenshin.zip.p7m", "accepted");
    assert_eq!(accepted.len(), 1);
    let accepted = &accepted[0];
    assert_eq!(accepted.actor.as_deref(), Some(OPERATOR));
    assert_eq!(
        accepted.channel,
        Some(handoff::events::Channel::Offline),
        "{accepted:?}"
    );
    assert_eq!(accepted.sha256.to_hex(), support::sha256_file(&file));
    assert!(receipt(&tc, CLINIC, &format!("{}.delivered", accepted.file_id)).is_some());
    // The insurer gets the clinic's archive, sealed for it.
    let outbox = support::outbox_names(&tc, INSURER);
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    let sealed = tc
        .state_dir()
        .join("boxes")
        .join(INSURER)
        .join("outbox")
        .join(&outbox[0]);
    assert!(support::openssl_decrypt(&sealed, INSURER) == archive);
    assert!(
        wait_for(5, || !daemon.audit_lines("offline.ingest").is_empty()),
        "no offline.ingest audit line"
    );
    let line = &daemon.audit_lines("offline.ingest")[0];
    assert!(
        line.contains(OPERATOR) && line.contains(&accepted.file_id),
        "{line}"
    );

    // The same medium again is refused before anything is written, unless asked.
    let again = ingest(&tc, &[&file]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        text(&again).contains("accepted before as"),
        "{}",
        text(&again)
    );
    let inbox = tc.state_dir().join("boxes").join(CLINIC).join("inbox");
    assert_eq!(std::fs::read_dir(&inbox).unwrap().count(), 0);
}

#[test]
fn damaged_or_misaddressed_media_are_rejected_with_their_rule_and_never_in_plain() {
    let tc = TestConfig::new();
    let _clamd = ClamdInstance::start(tc.dir.path());
    let daemon = Daemon::start(&tc);
    let dir = medium(&tc);
    let archives: Vec<Vec<u8>> = (0..3)
        .map(|i| checkup_archive(CLINIC_NO, INSURER_NO, 2, 40 + i))
        .collect();
    // A disc with a changed byte in the middle of the ciphertext.
    let damaged = dir.join("damaged.zip.p7m");
    encrypt_for(&tc, &archives[0], "gateway-enc.pem", &damaged);
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() - archives[0].len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&damaged, &bytes).unwrap();
    // One encrypted for the insurer, not for the gateway.
    let misaddressed = dir.join("for-insurer.zip.p7m");
    encrypt_for(&tc, &archives[1], "insurer-06130017-enc.pem", &misaddressed);
    // A plain archive, where this clinic's media must be encrypted (the default).
    let plain = dir.join("plain.zip");
    std::fs::write(&plain, &archives[2]).unwrap();

    let out = ingest(&tc, &[&damaged, &misaddressed, &plain]);
    let said = text(&out);
    assert!(out.status.success(), "{said}\n{}", daemon.log_text());
    for (name, rule) in [
        ("damaged.zip.p7m", "inbound.damaged"),
        ("for-insurer.zip.p7m", "inbound.wrong-recipient"),
        ("plain.zip", "inbound.not-cms"),
    ] {
        assert!(
            said.contains(&format!("{name}: rejected: [{rule}]")),
            "{name}: {said}"
        );
        let rejected = receipts_of(&tc, CLINIC, name, "rejected");
        assert_eq!(rejected.len(), 1, "{name}");
        assert_eq!(rejected[0].reasons[0].rule, rule);
        let accepted = &receipts_of(&tc, CLINIC, name, "accepted")[0];
        assert_eq!(accepted.channel, Some(handoff::events::Channel::Offline));
    }
    assert!(support::outbox_names(&tc, INSURER).is_empty());

    // Nothing of any archive was ever written in plain text: the start of each (a zip's local
    // header and first entry name) appears in no file of the state directory.
    for path in files_under(&tc.state_dir()) {
        let Ok(content) = std::fs::read(&path) else {
            continue;
        };
        for a in &archives {
            assert!(
                !contains(&content, &a[..64]),
                "plaintext in {}",
                path.display()
            );
        }
    }
}

#[test]
fn an_export_hands_files_over_on_a_medium_once() {
    let tc = TestConfig::new();
    let _clamd = ClamdInstance::start(tc.dir.path());
    let daemon = Daemon::start(&tc);
    let archives: Vec<Vec<u8>> = (0..2)
        .map(|i| checkup_archive(CLINIC_NO, INSURER_NO, 2, 50 + i))
        .collect();
    for (i, a) in archives.iter().enumerate() {
        hand_off(&tc, CLINIC, &format!("upload-{i}.zip"), a);
    }
    assert!(
        wait_for(60, || support::outbox_names(&tc, INSURER).len() == 2),
        "not delivered:\n{}",
        daemon.log_text()
    );

    let to = tc.dir.path().join("cdr-1");
    let out = export(&tc, &to, &[]);
    let said = text(&out);
    assert!(out.status.success(), "{said}\n{}", daemon.log_text());
    assert!(said.contains("exported 2 files"), "{said}");

    // The medium's files are the clinic's archives, sealed for the insurer.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(to.join("manifest.json")).unwrap()).unwrap();
    let files = manifest["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    let mut opened: Vec<Vec<u8>> = files
        .iter()
        .map(|f| support::openssl_decrypt(&to.join(f["name"].as_str().unwrap()), INSURER))
        .collect();
    opened.sort();
    let mut expected = archives.clone();
    expected.sort();
    assert!(opened == expected, "the medium does not hold the archives");
    // Each file's hand-over receipt names the operator and the offline channel.
    for f in files {
        let id = format!("{}.retrieved", f["file_id"].as_str().unwrap());
        let r: Receipt = serde_json::from_str(
            &std::fs::read_to_string(to.join("receipts").join(format!("{id}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(r.actor.as_deref(), Some(OPERATOR));
        assert_eq!(r.channel, Some(handoff::events::Channel::Offline));
        // The insurer's and the clinic's boxes hold it too.
        assert!(receipt(&tc, INSURER, &id).is_some());
        assert!(receipt(&tc, CLINIC, &id).is_some());
    }
    // The documented procedure checks the whole medium with the public key.
    let checked = verify_medium(&to.join("manifest.json"));
    assert!(checked.status.success(), "{}", text(&checked));
    assert!(
        daemon
            .audit_lines("offline.export")
            .iter()
            .any(|l| l.contains(OPERATOR)),
        "no offline.export audit line"
    );

    // A changed byte on the medium is caught.
    let first = to.join(files[0]["name"].as_str().unwrap());
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&first, &bytes).unwrap();
    let checked = verify_medium(&to.join("manifest.json"));
    assert_eq!(checked.status.code(), Some(1), "{}", text(&checked));

    // Exported files are not offered twice.
    let second = tc.dir.path().join("cdr-2");
    let out = export(&tc, &second, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nothing to export"), "{}", text(&out));
    assert!(!second.exists(), "a second export wrote something");
    // ... unless asked, and the copy is as good as the first.
    let third = tc.dir.path().join("cdr-3");
    let out = export(&tc, &third, &["--again"]);
    assert!(out.status.success(), "{}", text(&out));
    let checked = verify_medium(&third.join("manifest.json"));
    assert!(checked.status.success(), "{}", text(&checked));
}

#[test]
fn an_export_without_the_gateway_hands_nothing_over() {
    let tc = TestConfig::new();
    let _clamd = ClamdInstance::start(tc.dir.path());
    let daemon = Daemon::start(&tc);
    hand_off(
        &tc,
        CLINIC,
        "upload.zip",
        &checkup_archive(CLINIC_NO, INSURER_NO, 2, 60),
    );
    assert!(
        wait_for(60, || support::outbox_names(&tc, INSURER).len() == 1),
        "not delivered:\n{}",
        daemon.log_text()
    );
    // Let the receipts of the delivery be issued before the gateway stops.
    std::thread::sleep(std::time::Duration::from_millis(500));
    drop(daemon);

    let to = tc.dir.path().join("cdr");
    let out = export(&tc, &to, &["--wait", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("nothing was exported"),
        "{}",
        text(&out)
    );
    let outbox = tc.state_dir().join("boxes").join(INSURER).join("outbox");
    assert_eq!(files_under(&outbox).len(), 1, "the outbox file stays");
    let left: Vec<PathBuf> = files_under(&to);
    assert!(left.is_empty(), "copies left behind: {left:?}");
    let queue = tc.state_dir().join("requests").join("export");
    assert_eq!(std::fs::read_dir(&queue).unwrap().count(), 0);

    // With the gateway back, the same export hands the file over.
    let daemon = Daemon::start(&tc);
    let out = export(&tc, &to, &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        daemon.log_text()
    );
    assert!(text(&out).contains("exported 1 file "), "{}", text(&out));
}

#[test]
fn operators_are_checked_before_anything_is_written() {
    let tc = TestConfig::with(|t| {
        format!(
            "{t}\n[[operator]]\nid = \"op-suzuki\"\nname = \"Suzuki Ichiro\"\nscope = [\"insurer-06130017\"]\n"
        )
    });
    // The state directory as a first start leaves it.
    let daemon = Daemon::start(&tc);
    drop(daemon);
    let file = medium(&tc).join("a.zip.p7m");
    encrypt_for(
        &tc,
        &checkup_archive(CLINIC_NO, INSURER_NO, 1, 70),
        "gateway-enc.pem",
        &file,
    );
    let inbox = tc.state_dir().join("boxes").join(CLINIC).join("inbox");
    for (operator, why) in [
        ("nobody", "nobody is not an operator"),
        ("op-suzuki", "may not act for clinic-2717654327"),
        // A counterpart's account is no operator.
        (CLINIC, "is not an operator"),
    ] {
        let out = Command::new(support::handoff_bin())
            .args(["ingest", "--as", CLINIC, "--operator", operator, "--config"])
            .arg(&tc.path)
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains(why), "{operator}: {}", text(&out));
        assert_eq!(std::fs::read_dir(&inbox).unwrap().count(), 0);
    }
    let out = Command::new(support::handoff_bin())
        .args([
            "export",
            "--for",
            CLINIC,
            "--operator",
            "op-suzuki",
            "--config",
        ])
        .arg(&tc.path)
        .arg("--to")
        .arg(tc.dir.path().join("cdr"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!tc.dir.path().join("cdr").exists());

    // An operator whose scope names no counterpart is refused by the config check.
    let bad = TestConfig::with(|t| {
        format!("{t}\n[[operator]]\nid = \"op-x\"\nname = \"X\"\nscope = [\"clinic-0000000000\"]\n")
    });
    let out = Command::new(support::handoff_bin())
        .arg("check-config")
        .arg(&bad.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("operator[1].scope[0]"),
        "{}",
        text(&out)
    );
}
