//! The config: the example parses, each validation error names its line, reloads swap only
//! valid configs, account events fire on reload and on expiry, and the CLI's exit codes.

mod support;

use std::process::Command;
use std::time::Duration;

use handoff::accounts::AccountChange;
use handoff::config::{self, ConfigError, live::LiveConfig};
use support::{TestConfig, handoff_bin, remove_account};

fn errors_of(tc: &TestConfig) -> Vec<String> {
    match config::load(&tc.path) {
        Err(ConfigError::Invalid(d)) => d.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("config {} was accepted", tc.path.display()),
    }
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect(needle) + 1
}

#[test]
fn example_config_parses() {
    support::fix_example_key_modes();
    // As shipped, but for the schema sets: run-example installs them into var/schemas; here
    // they are read where the suite reads them.
    let path = support::repo_root().join("config/handoff.toml");
    let text = std::fs::read_to_string(&path).expect("example config");
    assert!(text.contains("schema_dir = \"../var/schemas\""));
    let text = text.replace("\"../var/schemas\"", "\"../../shared/formats\"");
    let loaded = config::parse(&path, &text).expect("example config is valid");
    assert_eq!(loaded.config.counterparts.len(), 6);
    assert!(loaded.config.may_send_to_agency("clinic-1312345679"));
    assert!(!loaded.config.may_send_to_agency("clinic-2717654327"));
    assert!(
        loaded
            .config
            .route_allowed("clinic-1312345679", "insurer-06130017")
    );
    assert!(
        !loaded
            .config
            .route_allowed("clinic-2717654327", "insurer-06270029")
    );
    // Break-glass is disabled, every number carries a right check digit, and both the RSA and
    // the EC P-256 encryption certificates can be sealed to: no warning at all.
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.message.clone()).collect();
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn an_encryption_cert_on_another_curve_is_a_warning() {
    let tc = TestConfig::new();
    let p384 = support::p384_certificate(tc.dir.path());
    let text = tc.text();
    let ec = text
        .lines()
        .find(|l| l.contains("insurer-06270029-enc.pem"))
        .expect("EC encryption_cert line");
    tc.rewrite(&text.replace(
        ec,
        &format!("encryption_cert = {:?}", p384.display().to_string()),
    ));
    let loaded = config::load(&tc.path).expect("still valid");
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.message.clone()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("p384.pem") && warnings[0].contains("only P-256"),
        "{warnings:?}"
    );
}

/// Each case: an edit to the example text (from → to), the text of the line the error must
/// point at with which occurrence of it (0 = first), and a fragment of the message.
#[test]
fn each_validation_error_names_its_line() {
    let cases: &[(&str, &str, &str, usize, &str)] = &[
        (
            "log_format = \"text\"",
            "log_format = \"text\"\ncolour = true",
            "colour = true",
            0,
            "unknown field `colour`",
        ),
        (
            "number = \"06130017\"",
            "number = \"0613001\"",
            "number = \"0613001\"",
            0,
            "exactly 8 ASCII digits",
        ),
        (
            "number = \"1312345679\"",
            "number = \"1312345676\"",
            "number = \"1312345676\"",
            0,
            "has check digit 6, expected 9",
        ),
        (
            "number = \"2717654327\"",
            "number = \"1312345679\"",
            "number = \"1312345679\"",
            1,
            "duplicate number",
        ),
        (
            "id = \"insurer-06270029\"",
            "id = \"insurer-06130017\"",
            "id = \"insurer-06130017\"",
            1,
            "duplicate id",
        ),
        (
            "id = \"m.sato\"",
            "id = \"M Sato\"",
            "id = \"M Sato\"",
            0,
            "not a valid id",
        ),
        (
            "clamd = \"unix:",
            "clamd = \"smb:",
            "clamd = \"smb:",
            0,
            "not a clamd address",
        ),
        (
            "routes = [\"insurer-06130017\"]\nmax_upload_size",
            "routes = [\"insurer-99999999\"]\nmax_upload_size",
            "routes = [\"insurer-99999999\"]",
            0,
            "not a counterpart",
        ),
        (
            "password_hash = \"$argon2id",
            "password_hash = \"$argon2i",
            "password_hash =",
            0,
            "argon2id",
        ),
        (
            "cert_fingerprint = \"e6f2",
            "cert_fingerprint = \"zze6f2",
            "cert_fingerprint = \"zz",
            0,
            "SHA-256 fingerprint",
        ),
        (
            "\nexpires = 2027-03-31",
            "\nexpires = 2099-03-31",
            "expires = 2099-03-31",
            0,
            "more than a year ahead",
        ),
        (
            "\nexpires = 2027-06-30",
            "\nexpires = 2099-06-30",
            "expires = 2099-06-30",
            0,
            "more than a year ahead",
        ),
        (
            "\nexpires = 2027-06-30",
            "",
            "id = \"emergency\"",
            0,
            "needs expires",
        ),
        (
            "\nexpires = 2027-03-31",
            "\nexpires = 10:00:00",
            "expires = 10:00:00",
            0,
            "needs a date",
        ),
        (
            "master_key = \"",
            "master_key = \"/nonexistent/",
            "master_key =",
            0,
            "No such file",
        ),
        (
            "max_buffered_per_account = \"32 MiB\"",
            "max_buffered_per_account = \"512 KiB\"",
            "max_buffered_per_account =",
            0,
            "must be at least 1048576 bytes",
        ),
        (
            "max_buffered_total = \"64 MiB\"",
            "max_buffered_total = \"16 MiB\"",
            "max_buffered_total =",
            0,
            "must be at least max_buffered_per_account",
        ),
        (
            "upload_writer_threads = 8",
            "upload_writer_threads = 0",
            "upload_writer_threads =",
            0,
            "must be from 1 to 256",
        ),
    ];
    for (from, to, at, nth, message) in cases {
        eprintln!("case: {from:?} -> {to:?}");
        let tc = TestConfig::with(|t| {
            assert!(t.contains(from), "{from}");
            t.replacen(from, to, 1)
        });
        let errors = errors_of(&tc);
        let text = tc.text();
        let want_line = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(at))
            .nth(*nth)
            .map(|(i, _)| i + 1)
            .unwrap_or_else(|| panic!("{at:?} #{nth} not in config"));
        let hit = errors
            .iter()
            .find(|e| e.contains(message))
            .unwrap_or_else(|| panic!("no error with {message:?} in {errors:?}"));
        let prefix = format!("{}:{want_line}:", tc.path.display());
        assert!(
            hit.starts_with(&prefix),
            "{hit:?} should start with {prefix:?}"
        );
    }
}

/// Values parsed as the file is read (numbers, the clamd address, the time zone) are refused
/// at their line and column, named by their key, saying what is accepted.
#[test]
fn values_parsed_at_load_are_refused_with_key_and_position() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "clamd = ",
            "clamd = \"tcp:localhost\"",
            "gateway.clamd: tcp:localhost needs host:port",
        ),
        (
            "clamd = ",
            "clamd = \"/run/clamd.ctl\"",
            "gateway.clamd: \"/run/clamd.ctl\" is not a clamd address: use unix:/path/to/clamd.ctl or tcp:host:port",
        ),
        (
            "time_zone = \"+09:00\"",
            "time_zone = \"JST\"",
            "gateway.time_zone: \"JST\" is not a UTC offset such as \"+09:00\"",
        ),
        (
            "agency_number = \"80130012\"",
            "agency_number = \"8013001\"",
            "gateway.agency_number: the agency number must be 8 digits, got \"8013001\"",
        ),
        (
            "number = \"06130017\"",
            "number = \"06130018\"",
            "counterpart[2].number: insurer number 06130018 has check digit 8, expected 7",
        ),
        (
            "number = \"06130017\"",
            "number = \"061300170\"",
            "counterpart[2].number: a number must be exactly 8 ASCII digits (insurer number) or exactly 10 (institution number), got \"061300170\"",
        ),
    ];
    for (from, to, message) in cases {
        // The whole line of `from` (its value may have been rewritten for the test) becomes `to`.
        let tc = TestConfig::with(|t| {
            let line = t
                .lines()
                .find(|l| l.starts_with(from))
                .expect(from)
                .to_owned();
            t.replacen(&line, to, 1)
        });
        let errors = errors_of(&tc);
        let text = tc.text();
        let line = line_of(&text, to);
        let column = text
            .lines()
            .nth(line - 1)
            .and_then(|l| l.find('"'))
            .expect("a string")
            + 1;
        let want = format!("{}:{line}:{column}: {message}", tc.path.display());
        assert_eq!(errors, vec![want], "{to}");
    }
}

/// `gateway.clamd` with its line replaced by `clamd = VALUE`.
fn with_clamd(value: &str) -> TestConfig {
    TestConfig::with(|t| {
        let line = t
            .lines()
            .find(|l| l.starts_with("clamd = "))
            .expect("the clamd line")
            .to_owned();
        t.replacen(&line, &format!("clamd = {value}"), 1)
    })
}

/// `file:line:column: ` of the first `"` on the line holding `needle` (of the `nth` such line).
fn at_quote(tc: &TestConfig, needle: &str, nth: usize) -> String {
    let text = tc.text();
    let (i, line) = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .nth(nth)
        .expect(needle);
    let column = line.find('"').expect("a string") + 1;
    format!("{}:{}:{column}: ", tc.path.display(), i + 1)
}

/// `gateway.clamd` is one address or a list of them: a list is read in its order, its relative
/// socket paths resolved like any path of the config; one address is a list of one.
#[test]
fn clamd_is_one_address_or_a_list() {
    let tc = with_clamd("[\n  \"unix:clamd-a.sock\",\n  \"tcp:192.0.2.7:3310\",\n]");
    let loaded = config::load(&tc.path).expect("a list of two endpoints");
    assert_eq!(
        loaded.config.gateway.clamd.as_slice(),
        [
            config::ClamdAddress::Unix(tc.dir.path().join("clamd-a.sock")),
            config::ClamdAddress::Tcp("192.0.2.7:3310".into()),
        ]
    );
    let tc = with_clamd("\"tcp:192.0.2.7:3310\"");
    let loaded = config::load(&tc.path).expect("one endpoint");
    assert_eq!(
        loaded.config.gateway.clamd.as_slice(),
        [config::ClamdAddress::Tcp("192.0.2.7:3310".into())]
    );
}

/// An empty list, an endpoint listed twice, and an element that is no address are refused at
/// their line and column, named by their key.
#[test]
fn clamd_lists_are_refused_empty_with_repeats_or_bad_elements() {
    let tc = with_clamd("[]");
    let errors = errors_of(&tc);
    let text = tc.text();
    let line = line_of(&text, "clamd = []");
    let column = text
        .lines()
        .nth(line - 1)
        .and_then(|l| l.find('['))
        .unwrap()
        + 1;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let prefix = format!(
        "{}:{line}:{column}: gateway.clamd: no clamd is named",
        tc.path.display()
    );
    assert!(errors[0].starts_with(&prefix), "{errors:?}");

    let tc = with_clamd(
        "[\n  \"tcp:192.0.2.7:3310\",\n  \"unix:/run/clamav/clamd.ctl\",\n  \"tcp:192.0.2.7:3310\",\n]",
    );
    assert_eq!(
        errors_of(&tc),
        vec![format!(
            "{}gateway.clamd[2]: duplicate clamd endpoint tcp:192.0.2.7:3310 (first at gateway.clamd[0])",
            at_quote(&tc, "tcp:192.0.2.7:3310", 1)
        )]
    );

    let tc = with_clamd("[\n  \"unix:/run/clamav/clamd.ctl\",\n  \"smb:x\",\n]");
    assert_eq!(
        errors_of(&tc),
        vec![format!(
            "{}gateway.clamd[1]: \"smb:x\" is not a clamd address: use unix:/path/to/clamd.ctl or tcp:host:port",
            at_quote(&tc, "smb:x", 0)
        )]
    );
}

/// A number of the other kind than its entry's is refused at validation, with the others.
#[test]
fn a_number_of_the_wrong_kind_is_refused() {
    let tc =
        TestConfig::with(|t| t.replacen("number = \"1312345679\"", "number = \"06139463\"", 1));
    let errors = errors_of(&tc);
    assert!(
        errors.iter().any(|e| e.contains(
            "number: a clinic is identified by its institution number of 10 digits, got the insurer number 06139463"
        )),
        "{errors:?}"
    );
}

#[test]
fn duplicate_ssh_key_is_refused() {
    let tc = TestConfig::new();
    let text = tc.text();
    let sato_key = text
        .lines()
        .find(|l| l.contains("m.sato EXAMPLE key"))
        .unwrap()
        .to_owned();
    let emergency_key = text
        .lines()
        .find(|l| l.contains("emergency EXAMPLE key"))
        .unwrap()
        .to_owned();
    tc.rewrite(&text.replace(&emergency_key, &sato_key));
    let errors = errors_of(&tc);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("break_glass[0].ssh_keys[0]") && e.contains("already used")),
        "{errors:?}"
    );
}

#[test]
fn world_readable_secret_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tc = TestConfig::new();
    let key = tc.dir.path().join("receipt.key");
    std::fs::copy(support::repo_root().join("certs-example/receipt.key"), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = tc.text();
    let line = text
        .lines()
        .find(|l| l.starts_with("receipt_key"))
        .unwrap()
        .to_owned();
    tc.rewrite(&text.replace(&line, &format!("receipt_key = \"{}\"", key.display())));
    let errors = errors_of(&tc);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("mode 0644") && e.contains("chmod 600")),
        "{errors:?}"
    );
}

#[test]
fn expired_maintainer_is_reported_not_refused() {
    let tc = TestConfig::with(|t| t.replace("expires = 2027-03-31", "expires = 2020-01-01"));
    let loaded = config::load(&tc.path).expect("an expired maintainer is a warning");
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.message.contains("maintainer m.sato expired")),
        "{:?}",
        loaded.warnings
    );
    let dir = handoff::accounts::Directory::from_config(&loaded.config);
    let sato = dir.get("m.sato").unwrap();
    assert!(sato.check_active(time::OffsetDateTime::now_utc()).is_err());
}

#[test]
fn reload_swaps_a_valid_config_and_keeps_the_old_on_error() {
    let tc = TestConfig::new();
    let live = LiveConfig::load(&tc.path).unwrap();
    let mut events = live.subscribe();
    assert!(live.snapshot().accounts.get("m.sato").is_some());

    // Invalid: refused, old config stays.
    tc.rewrite(
        &tc.text()
            .replace("kind = \"insurer\"", "kind = \"hospital\""),
    );
    assert!(live.reload().is_err());
    assert!(live.snapshot().accounts.get("m.sato").is_some());
    assert!(
        events.try_recv().is_err(),
        "no events from a refused reload"
    );

    // Valid: the maintainer is removed; subscribers hear of it.
    tc.rewrite(
        &tc.text()
            .replace("kind = \"hospital\"", "kind = \"insurer\""),
    );
    live.reload().unwrap();
    tc.rewrite(&remove_account(&tc.text(), "maintainer", "m.sato"));
    let changes = live.reload().unwrap();
    assert!(live.snapshot().accounts.get("m.sato").is_none());
    assert!(
        changes
            .iter()
            .any(|e| e.account == "m.sato" && e.change == AccountChange::Removed)
    );
    let ev = events.try_recv().unwrap();
    assert_eq!(
        (ev.account.as_str(), ev.change),
        ("m.sato", AccountChange::Removed)
    );
}

#[tokio::test]
async fn file_change_and_expiry_fire_account_events() {
    let tc = TestConfig::new();
    let live = LiveConfig::load(&tc.path).unwrap();
    let mut events = live.subscribe();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(
        live.clone()
            .run(handoff::audit::Audit::to_log(), shutdown.clone()),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The watcher sees the file replaced and reloads: m.sato removed.
    tc.rewrite(&remove_account(&tc.text(), "maintainer", "m.sato"));
    let ev = tokio::time::timeout(Duration::from_secs(1), events.recv())
        .await
        .expect("event within 1 s")
        .unwrap();
    assert_eq!(
        (ev.account.as_str(), ev.change),
        ("m.sato", AccountChange::Removed)
    );

    // A break-glass account enabled until two seconds from now: it expires while running.
    let until = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let until = until
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    tc.rewrite(&tc.text().replace("expires = 2027-06-30\n", "").replace(
        "enabled = false",
        &format!("enabled = true\nexpires = {until}"),
    ));
    let ev = tokio::time::timeout(Duration::from_secs(1), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (ev.account.as_str(), ev.change),
        ("emergency", AccountChange::Changed)
    );
    let ev = tokio::time::timeout(Duration::from_secs(3), events.recv())
        .await
        .expect("expiry event")
        .unwrap();
    assert_eq!(
        (ev.account.as_str(), ev.change),
        ("emergency", AccountChange::Expired)
    );
    shutdown.cancel();
}

#[test]
fn check_config_exit_codes_and_output() {
    let tc = TestConfig::new();
    let ok = Command::new(handoff_bin())
        .args(["check-config"])
        .arg(&tc.path)
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        out.contains("2 clinics, 4 insurers")
            && out.contains("clinic-1312345679 -> insurer-06130017"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "store: local, in {}",
            tc.state_dir().join("store").display()
        )),
        "{out}"
    );

    tc.rewrite(
        &tc.text()
            .replace("number = \"06270029\"", "number = \"6270029\""),
    );
    let bad = Command::new(handoff_bin())
        .args(["check-config"])
        .arg(&tc.path)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    let line = line_of(&tc.text(), "number = \"6270029\"");
    assert!(
        err.starts_with(&format!(
            "{}:{line}:10: counterpart[3].number",
            tc.path.display()
        )),
        "{err}"
    );

    let missing = Command::new(handoff_bin())
        .args(["check-config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    let usage = Command::new(handoff_bin())
        .args(["check-config"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

/// `[gateway.ssh]` with `lines` under its header, in the example config.
fn with_ssh(lines: &str) -> TestConfig {
    TestConfig::with(|t| t.replace("[gateway.ssh]\n", &format!("[gateway.ssh]\n{lines}\n")))
}

#[test]
fn ssh_algorithms_that_are_unknown_or_unsafe_are_refused_at_their_line() {
    let tc = with_ssh(
        "macs = [\"hmac-sha2-256\", \"hmac-sha1\"]\n\
         ciphers = [\"-aes192-ctr\", \"aes256-cbc\"]\n\
         kex = [\"sntrup761x25519-sha512@openssh.com\"]\n\
         host_key_algorithms = [\"ssh-rsa\"]",
    );
    let text = tc.text();
    let errors = errors_of(&tc);
    let file = tc.path.display();
    for (needle, path, message) in [
        (
            "macs = ",
            "gateway.ssh.macs[1]",
            "\"hmac-sha1\" uses SHA-1: refused",
        ),
        (
            "ciphers = [\"-aes192",
            "gateway.ssh.ciphers[1]",
            "write every entry as +name or -name",
        ),
        (
            "kex = [\"sntrup",
            "gateway.ssh.kex[0]",
            "is not a key exchange the gateway knows",
        ),
        (
            "host_key_algorithms = [\"ssh-rsa",
            "gateway.ssh.host_key_algorithms[0]",
            "signs with SHA-1",
        ),
    ] {
        let line = line_of(&text, needle);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("{file}:{line}:"))
                    && e.contains(&format!("{path}: "))
                    && e.contains(message)),
            "{path}: {errors:#?}"
        );
    }
}

#[test]
fn check_config_prints_the_ssh_algorithms_in_force() {
    let tc = with_ssh(
        "ciphers = [\"-aes192-ctr\", \"-aes128-gcm@openssh.com\"]\n\
         host_key_algorithms = [\"rsa-sha2-256\", \"ssh-ed25519\"]",
    );
    let out = Command::new(handoff_bin())
        .args(["check-config"])
        .arg(&tc.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "  ciphers: aes256-gcm@openssh.com, chacha20-poly1305@openssh.com, aes256-ctr, aes128-ctr\n",
        "  macs: hmac-sha2-512-etm@openssh.com, hmac-sha2-256-etm@openssh.com, hmac-sha2-512, hmac-sha2-256\n",
        "  host_key_algorithms: rsa-sha2-256, ssh-ed25519\n",
        ", ext-info-s, kex-strict-s-v00@openssh.com\n",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }
}

#[test]
fn host_key_algorithms_without_a_matching_key_are_refused() {
    let tc = TestConfig::with(|t| {
        t.replace(
            "[gateway.ssh]\n",
            "[gateway.ssh]\nhost_key_algorithms = [\"ecdsa-sha2-nistp384\"]\n",
        )
    });
    let errors = errors_of(&tc);
    assert!(
        errors.iter().any(|e| e.contains(
            "gateway.ssh.host_key_algorithms: no host key algorithm offered matches a key in host_keys"
        )),
        "{errors:#?}"
    );
}

#[test]
fn keygen_writes_0600_files_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(handoff_bin())
            .args(["keygen", "--dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    assert!(run().status.success());
    for f in [
        "ssh_host_ed25519_key",
        "ssh_host_ecdsa_key",
        "ssh_host_rsa_key",
        "receipt.key",
        "master.key",
    ] {
        let mode = std::fs::metadata(dir.path().join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    assert_eq!(
        run().status.code(),
        Some(1),
        "a second keygen must not overwrite"
    );
}

#[test]
fn accounts_to_a_closed_pipe_ends_without_a_panic() {
    // `handoff accounts | head -0`: the reader is gone before the first line is written.
    use std::os::unix::process::ExitStatusExt;
    let tc = TestConfig::new();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(handoff_bin())
        .args(["accounts", "--config"])
        .arg(&tc.path)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{err}");
}

#[test]
fn accounts_lists_every_account() {
    let tc = TestConfig::new();
    let out = Command::new(handoff_bin())
        .args(["accounts", "--config"])
        .arg(&tc.path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for id in [
        "clinic-1312345679",
        "insurer-06270029",
        "m.sato",
        "emergency",
        "noc-tokyo",
    ] {
        assert!(text.contains(id), "{id} missing from {text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("emergency") && l.contains("disabled"))
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("clinic-2717654327") && l.contains("password"))
    );
}

#[test]
fn encrypted_uploads_need_the_gateways_inbound_key() {
    let tc = TestConfig::with(|t| {
        let without_key: String = t
            .lines()
            .filter(|l| !l.starts_with("inbound_key"))
            .map(|l| format!("{l}\n"))
            .collect();
        without_key.replacen(
            "id = \"clinic-2717654327\"",
            "id = \"clinic-2717654327\"\ninbound = \"cms\"",
            1,
        )
    });
    let errors = errors_of(&tc);
    let line = tc
        .text()
        .lines()
        .position(|l| l == "inbound = \"cms\"")
        .expect("the edited line")
        + 1;
    assert!(
        errors
            .iter()
            .any(|e| e.contains(&format!(":{line}:")) && e.contains("gateway.inbound_key")),
        "{errors:?}"
    );
}

/// Every command and subcommand, as `handoff help` lists them.
const COMMANDS: &[&[&str]] = &[
    &["serve"],
    &["check-config"],
    &["keygen"],
    &["accounts"],
    &["hash-password"],
    &["bans"],
    &["bans", "unban"],
    &["receipts"],
    &["receipts", "tail"],
    &["receipts", "show"],
    &["receipts", "trace"],
    &["receipts", "verify"],
    &["receipts", "export"],
    &["seal"],
    &["open"],
    &["audit"],
    &["audit", "verify"],
    &["validate"],
    &["testdata"],
    &["schemas"],
    &["schemas", "install"],
    &["schemas", "verify"],
    &["schemas", "list"],
    &["ingest"],
    &["export"],
    &["migrate"],
];

/// The names under `Commands:` in a help text, `help` aside.
fn commands_in_help(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_command_has_help_and_the_list_is_complete() {
    for path in COMMANDS {
        let out = Command::new(handoff_bin())
            .args(*path)
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{path:?} --help: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            help.contains(&format!("Usage: handoff {}", path.join(" "))),
            "{path:?}:\n{help}"
        );
        // The commands listed under this one are exactly those the table knows.
        let listed = commands_in_help(&help);
        let known: Vec<String> = COMMANDS
            .iter()
            .filter(|p| p.len() == path.len() + 1 && p.starts_with(path))
            .map(|p| p[path.len()].to_owned())
            .collect();
        assert_eq!(listed, known, "{path:?}:\n{help}");
    }
    let top = Command::new(handoff_bin()).arg("help").output().unwrap();
    assert!(top.status.success());
    let listed = commands_in_help(&String::from_utf8_lossy(&top.stdout));
    let known: Vec<String> = COMMANDS
        .iter()
        .filter(|p| p.len() == 1)
        .map(|p| p[0].to_owned())
        .collect();
    assert_eq!(listed, known);
}

#[test]
fn commands_reading_the_installed_config_default_to_the_same_file() {
    for path in [
        &["serve"][..],
        &["accounts"],
        &["bans"],
        &["bans", "unban"],
        &["receipts", "tail"],
        &["receipts", "show"],
        &["receipts", "trace"],
        &["receipts", "verify"],
        &["receipts", "export"],
        &["audit", "verify"],
        &["ingest"],
        &["export"],
        &["migrate"],
    ] {
        let out = Command::new(handoff_bin())
            .args(path)
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("-c, --config <CONFIG>")
                && help.contains("[default: /etc/handoff/handoff.toml]"),
            "{path:?}:\n{help}"
        );
    }
}

#[test]
fn an_unknown_log_format_is_refused_with_the_accepted_ones() {
    let tc = TestConfig::new();
    let out = Command::new(handoff_bin())
        .args(["serve", "--log-format", "bogus", "--config"])
        .arg(&tc.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value 'bogus' for '--log-format <LOG_FORMAT>'")
            && err.contains("[possible values: text, json]"),
        "{err}"
    );
    // Both accepted values parse: the config error that follows is the command's, exit 1.
    for format in ["text", "json"] {
        let out = Command::new(handoff_bin())
            .args([
                "serve",
                "--config",
                "/nonexistent.toml",
                "--log-format",
                format,
            ])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let help = Command::new(handoff_bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("- text:") && help.contains("- json:"),
        "{help}"
    );
}
