//! An official-format archive the whole way, with the peers a clinic and an insurer have:
//! OpenSSH `sftp` uploads it under its official name, the gateway checks it against the MHLW
//! schemas, scans it with a real clamd, seals it for the insurer and delivers it; `curl` with
//! the insurer's client certificate downloads it and `openssl cms -decrypt` opens it to the
//! uploaded bytes. A second archive with a warning-level finding is delivered with that
//! warning in the receipts of both parties; a broken one comes back with a Japanese finding.

mod support;

use handoff::validate::testdata::{self, Spec, Violation};
use support::{ClamdInstance, Daemon, TestConfig, curl_as, outbox_names, sftp_batch, wait_for};

const CLINIC: &str = "clinic-1312345679";
const INSURER: &str = "insurer-06130017";

/// The receipts (JSON) in a box's `receipts/` folder, as text.
fn receipts(tc: &TestConfig, account: &str) -> Vec<String> {
    let dir = tc.state_dir().join("boxes").join(account).join("receipts");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect()
}

#[test]
fn an_official_archive_goes_from_sftp_to_curl_and_opens_with_openssl() {
    support::fix_example_key_modes();
    let tc = TestConfig::new();
    let _clamd = ClamdInstance::start(tc.dir.path());
    let _daemon = Daemon::start(&tc);
    let today = handoff::validate::today(time::UtcOffset::from_hms(9, 0, 0).expect("offset"));
    let spec = Spec::example(12, today.previous_day().expect("a date"));
    let upload_dir = tc.dir.path().join("upload");
    std::fs::create_dir_all(&upload_dir).expect("mkdir");

    // A valid archive, one with a warning (serials from 000005) and one that is refused.
    let valid = upload_dir.join(spec.archive_name().file_name());
    let bytes = testdata::write_valid(&spec, Vec::new()).expect("generate");
    std::fs::write(&valid, &bytes).expect("write");
    let mut warned_spec = spec.clone();
    warned_spec.send_count = 1;
    let warned = upload_dir.join(Violation::NameSerial.file_name(&warned_spec));
    let limits =
        handoff::validate::archive::Limits::from(&handoff::config::ArchiveLimits::default());
    let (warned_bytes, _) =
        testdata::write_violation(&warned_spec, Violation::NameSerial, &limits, Vec::new())
            .expect("generate");
    std::fs::write(&warned, &warned_bytes).expect("write");
    let mut broken_spec = spec.clone();
    broken_spec.send_count = 2;
    let broken = upload_dir.join(Violation::DateInvalid.file_name(&broken_spec));
    let (broken_bytes, expected) =
        testdata::write_violation(&broken_spec, Violation::DateInvalid, &limits, Vec::new())
            .expect("generate");
    std::fs::write(&broken, &broken_bytes).expect("write");

    let batch = [&valid, &warned, &broken]
        .iter()
        .map(|p| format!("put {} inbox/\n", p.display()))
        .collect::<String>();
    let out = sftp_batch(tc.sftp_port, CLINIC, CLINIC, &batch);
    assert!(out.status.success(), "{out:?}");

    // Two files reach the insurer's outbox; the listing names each by its original name.
    let listing = || outbox_names(&tc, INSURER);
    assert!(wait_for(60, || listing().len() >= 2), "not delivered");
    let valid_name = valid.file_name().and_then(|n| n.to_str()).expect("name");
    let names = listing();
    assert_eq!(names.len(), 2, "{names:?}");
    let sealed_name = names
        .iter()
        .find(|n| n.ends_with(&format!("_{valid_name}.p7m")))
        .unwrap_or_else(|| panic!("{valid_name} not listed: {names:?}"))
        .clone();

    let sealed = tc.dir.path().join("download.p7m");
    curl_as(
        &tc,
        INSURER,
        &format!("/outbox/{sealed_name}"),
        Some(&sealed),
    );
    let opened = support::openssl_decrypt(&sealed, INSURER);
    assert_eq!(opened, bytes, "the opened archive differs from the upload");

    // The warning travels in the delivered receipt of both parties; the refusal says, in
    // Japanese, which file and line to correct.
    assert!(
        wait_for(20, || {
            receipts(&tc, CLINIC)
                .iter()
                .any(|r| r.contains("\"name.serial\"") && r.contains("\"warning\":true"))
                && receipts(&tc, INSURER)
                    .iter()
                    .any(|r| r.contains("\"name.serial\""))
        }),
        "no warning in the delivered receipts"
    );
    let file = expected.file.expect("a file");
    assert!(
        wait_for(20, || receipts(&tc, CLINIC).iter().any(|r| {
            r.contains("\"rejected\"")
                && r.contains("\"date.invalid\"")
                && r.contains(&file)
                && r.contains("存在しない日付")
        })),
        "no Japanese rejection receipt naming {file}"
    );
}
