//! The clamd client against a real clamd (scripts/clamd-test-instance): verdicts, and the
//! size-limit pitfalls, which must never come back as clean; a pool of real clamds, on its own
//! and in the running gateway, when one of them or all of them stop.

mod support;

use std::io::Cursor;

use handoff::config::ClamdAddress;
use handoff::events::Hop;
use handoff::scan::{Clamd, ClamdPool, ScanError, Verdict};
use support::{
    ClamdInstance, Daemon, TestConfig, checkup_archive, checkup_archive_with, event_of, hand_off,
    wait_for,
};

const CLINIC: &str = "clinic-2717654327";
/// The numbers of CLINIC and of the insurer it sends to, as archives carry them.
const CLINIC_NO: &str = "2717654327";
const INSURER_NO: &str = "06130017";

fn client(clamd: &ClamdInstance) -> Clamd {
    Clamd::new(ClamdAddress::Unix(clamd.socket()))
}

#[test]
fn clean_infected_and_embedded_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let clamd = ClamdInstance::start(dir.path());
    let c = client(&clamd);
    c.ping().expect("ping");
    let clean: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(c.scan(&clean[..]).unwrap(), Verdict::Clean);
    match c.scan(&support::eicar()[..]).unwrap() {
        Verdict::Found(name) => {
            assert!(name.starts_with("Handoff-Test-EICAR") && name.ends_with(".UNOFFICIAL"))
        }
        Verdict::Clean => panic!("EICAR reported clean"),
    }
    // Embedded in a larger file: only the body signature catches it.
    let mut embedded = vec![b'z'; 100_000];
    embedded.extend_from_slice(&support::eicar());
    embedded.extend_from_slice(&[b'q'; 100_000]);
    match c.scan(&embedded[..]).unwrap() {
        Verdict::Found(name) => assert!(name.starts_with("Handoff-Test-EICAR"), "{name}"),
        Verdict::Clean => panic!("embedded EICAR reported clean"),
    }
}

#[test]
fn over_stream_max_length_is_an_error_not_clean() {
    let dir = tempfile::tempdir().unwrap();
    let clamd = ClamdInstance::start_with_env(dir.path(), &[("CLAMD_STREAM_MAX_LENGTH", "1M")]);
    let big = vec![b'a'; 3 << 20];
    let r = client(&clamd).scan(&big[..]);
    assert!(r.is_err(), "over StreamMaxLength gave {r:?}");
}

#[test]
fn over_max_file_size_is_a_finding_not_clean() {
    let dir = tempfile::tempdir().unwrap();
    let clamd = ClamdInstance::start_with_env(
        dir.path(),
        &[("CLAMD_MAX_FILE_SIZE", "1M"), ("CLAMD_MAX_SCAN_SIZE", "1M")],
    );
    let big = vec![b'a'; 2 << 20];
    match client(&clamd).scan(&big[..]) {
        Ok(Verdict::Found(name)) => {
            assert!(name.starts_with("Heuristics.Limits.Exceeded"), "{name}")
        }
        other => panic!("over MaxFileSize gave {other:?}"),
    }
}

#[test]
fn unreachable_clamd_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = Clamd::new(ClamdAddress::Unix(dir.path().join("absent.sock")));
    assert!(c.ping().is_err());
    assert!(c.scan(&b"anything"[..]).is_err());
}

/// Checks each endpoint of the pool once, as the gateway's health checks do.
fn check(pool: &ClamdPool) {
    for e in pool.endpoints() {
        e.health().record(&e.clamd().ping());
    }
}

/// Two clamds in a pool: scans go to the endpoints that are up; a clamd that died is marked down
/// by the scan that meets it, and the file is scanned by the other in the same call; with none
/// up a scan is an error, never a verdict.
#[test]
fn a_pool_scans_with_the_clamd_that_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&dir_a).unwrap();
    std::fs::create_dir(&dir_b).unwrap();
    let a = ClamdInstance::start(&dir_a);
    let b = ClamdInstance::start(&dir_b);
    let (socket_a, socket_b) = (a.socket(), b.socket());
    let pool = ClamdPool::new(&[
        ClamdAddress::Unix(socket_a.clone()),
        ClamdAddress::Unix(socket_b.clone()),
    ]);
    let clean: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();

    // Not checked yet: no endpoint counts as up, and nothing is scanned.
    assert!(!pool.is_up());
    assert!(matches!(
        pool.scan(&mut Cursor::new(&clean)),
        Err(ScanError::NoneUp)
    ));
    check(&pool);
    assert!(pool.is_up() && pool.last_error().is_none());
    for _ in 0..2 {
        assert_eq!(pool.scan(&mut Cursor::new(&clean)).unwrap(), Verdict::Clean);
    }

    // a dies but is still marked up. Of the next two scans one starts at a (they take the
    // endpoints in turn): it fails there, marks a down and gets its verdict from b.
    a.stop();
    for _ in 0..2 {
        match pool.scan(&mut Cursor::new(support::eicar())).unwrap() {
            Verdict::Found(name) => assert!(name.starts_with("Handoff-Test-EICAR"), "{name}"),
            Verdict::Clean => panic!("EICAR reported clean"),
        }
    }
    let [ea, eb] = pool.endpoints() else {
        panic!("two endpoints")
    };
    assert!(!ea.health().is_up(), "the dead clamd is still up");
    let why = ea.health().last_error().expect("why a is down");
    assert!(why.contains(&socket_a.display().to_string()), "{why}");
    assert!(eb.health().is_up() && pool.is_up());
    assert_eq!(pool.scan(&mut Cursor::new(&clean)).unwrap(), Verdict::Clean);

    // b dies too: the scan that meets it has no verdict, and then no endpoint is up.
    b.stop();
    let r = pool.scan(&mut Cursor::new(&clean));
    assert!(matches!(r, Err(ScanError::Io { .. })), "{r:?}");
    assert!(!pool.is_up());
    let why = pool.last_error().expect("why the pool is down");
    for socket in [&socket_a, &socket_b] {
        assert!(why.contains(&socket.display().to_string()), "{why}");
    }
    assert!(matches!(
        pool.scan(&mut Cursor::new(&clean)),
        Err(ScanError::NoneUp)
    ));
}

/// The gateway with `clamd` a list of two real clamds: files are delivered while either is up,
/// and an infected one is still rejected; with both down a file neither passes nor is rejected
/// but waits, and is delivered once one of them is back. One down is audited, not alerted;
/// both down is the `scanner_down` alert.
#[test]
fn the_gateway_scans_with_a_pool_and_waits_when_no_clamd_is_up() {
    // Relative socket paths: resolved against the config's directory, like any path in it.
    let tc = TestConfig::with(|t| {
        let line = t
            .lines()
            .find(|l| l.starts_with("clamd = "))
            .expect("the clamd line")
            .to_owned();
        t.replace(
            &line,
            "clamd = [\"unix:a/clamd.sock\", \"unix:b/clamd.sock\"]",
        )
    });
    let (dir_a, dir_b) = (tc.dir.path().join("a"), tc.dir.path().join("b"));
    std::fs::create_dir(&dir_a).unwrap();
    std::fs::create_dir(&dir_b).unwrap();
    let a = ClamdInstance::start(&dir_a);
    let b = ClamdInstance::start(&dir_b);
    let endpoint_a = format!("unix:{}", a.socket().display());
    let endpoint_b = format!("unix:{}", b.socket().display());
    let daemon = Daemon::start(&tc);
    let scanner = || -> serde_json::Value {
        let body = support::curl_as(&tc, "noc-tokyo", "/noc/status", None);
        let status: serde_json::Value = serde_json::from_slice(&body).expect("NOC status");
        status["scanner"].clone()
    };
    let up = |s: &serde_json::Value, endpoint: &str| {
        s["endpoints"]
            .as_array()
            .and_then(|l| l.iter().find(|e| e["endpoint"] == endpoint))
            .map(|e| e["up"] == true)
    };
    let metrics = || support::metrics_text(&tc);
    let gauge = |endpoint: &str, value: u8| {
        format!("handoff_scanner_endpoint_up{{endpoint=\"{endpoint}\"}} {value}\n")
    };
    let delivered = |names: &[&str]| {
        wait_for(40, || {
            names
                .iter()
                .all(|n| event_of(&tc, n, Hop::Delivered).is_some())
        })
    };

    // Both up: each endpoint is shown, in the order of the config, and files pass.
    assert!(
        wait_for(15, || {
            let s = scanner();
            up(&s, &endpoint_a) == Some(true) && up(&s, &endpoint_b) == Some(true)
        }),
        "not both up: {}",
        scanner()
    );
    let order: Vec<serde_json::Value> = scanner()["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| e["endpoint"].clone())
        .collect();
    assert_eq!(order, vec![endpoint_a.clone(), endpoint_b.clone()]);
    for (i, name) in ["both-1.zip", "both-2.zip"].into_iter().enumerate() {
        hand_off(
            &tc,
            CLINIC,
            name,
            &checkup_archive(CLINIC_NO, INSURER_NO, 2, 20 + i as u64),
        );
    }
    assert!(
        delivered(&["both-1.zip", "both-2.zip"]),
        "not delivered with both up"
    );

    // a stops. Files handed off at once (a may still count as up) are delivered all the same,
    // and an infected one is still found.
    a.stop();
    for (i, name) in ["one-1.zip", "one-2.zip", "one-3.zip"]
        .into_iter()
        .enumerate()
    {
        hand_off(
            &tc,
            CLINIC,
            name,
            &checkup_archive(CLINIC_NO, INSURER_NO, 2, 30 + i as u64),
        );
    }
    hand_off(
        &tc,
        CLINIC,
        "infected.zip",
        &checkup_archive_with(
            CLINIC_NO,
            INSURER_NO,
            2,
            39,
            vec![("XSD/eicar.com".into(), support::eicar())],
        ),
    );
    assert!(
        delivered(&["one-1.zip", "one-2.zip", "one-3.zip"]),
        "not delivered with one clamd down:\n{}",
        daemon.log_text()
    );
    assert!(
        wait_for(30, || event_of(&tc, "infected.zip", Hop::Rejected)
            .is_some()),
        "infected.zip not rejected"
    );
    let rejected = event_of(&tc, "infected.zip", Hop::Rejected).unwrap();
    assert_eq!(rejected.reasons.len(), 1);
    assert_eq!(rejected.reasons[0].rule, "scan.infected");
    assert!(rejected.reasons[0].message.contains("Handoff-Test-EICAR"));
    assert!(event_of(&tc, "infected.zip", Hop::Delivered).is_none());
    // The NOC sees which one is down and why; the scanner as a whole is up, and no alert.
    assert!(
        wait_for(15, || {
            let m = metrics();
            m.contains(&gauge(&endpoint_a, 0))
                && m.contains(&gauge(&endpoint_b, 1))
                && m.contains("handoff_scanner_up 1\n")
        }),
        "metrics with a down:\n{}",
        metrics()
    );
    let s = scanner();
    assert_eq!(
        (up(&s, &endpoint_a), up(&s, &endpoint_b)),
        (Some(false), Some(true)),
        "{s}"
    );
    assert_eq!(
        (s["up"].clone(), s["error"].clone()),
        (true.into(), serde_json::Value::Null)
    );
    let why = s["endpoints"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(why.contains(&endpoint_a), "{s}");
    // The status page shows the same, a row per endpoint.
    let page = support::output_ok(
        std::process::Command::new("curl")
            .args(["-sS"])
            .arg(format!("http://127.0.0.1:{}/status", tc.metrics_port)),
    );
    let page = String::from_utf8_lossy(&page.stdout).into_owned();
    for row in [
        format!("<tr><td>{endpoint_a}</td><td><span class=\"bad\">down</span></td>"),
        format!("<tr><td>{endpoint_b}</td><td>up</td><td>-</td></tr>"),
    ] {
        assert!(page.contains(&row), "no {row} in {page}");
    }
    assert!(wait_for(10, || !daemon
        .audit_lines("scanner.endpoint_down")
        .is_empty()));
    let down = daemon.audit_lines("scanner.endpoint_down");
    assert_eq!(down.len(), 1, "{down:?}");
    assert!(down[0].contains(&endpoint_a), "{down:?}");
    assert!(daemon.audit_lines("alert.scanner_down").is_empty());

    // b stops too: the alert, and a file handed off now waits at the scan, retried, neither
    // delivered nor rejected.
    b.stop();
    assert!(
        wait_for(15, || daemon.audit_lines("alert.scanner_down").len() == 1),
        "no scanner_down alert:\n{}",
        daemon.log_text()
    );
    let s = scanner();
    assert_eq!(s["up"], false, "{s}");
    let why = s["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        why.contains(&endpoint_a) && why.contains(&endpoint_b),
        "{s}"
    );
    assert!(metrics().contains("handoff_scanner_up 0\n"));
    hand_off(
        &tc,
        CLINIC,
        "waits.zip",
        &checkup_archive(CLINIC_NO, INSURER_NO, 2, 40),
    );
    assert!(wait_for(10, || event_of(&tc, "waits.zip", Hop::Accepted).is_some()));
    let file_id = event_of(&tc, "waits.zip", Hop::Accepted).unwrap().file_id;
    let waits = || {
        daemon
            .log_text()
            .lines()
            .filter(|l| {
                l.contains(&file_id) && l.contains("job waits") && l.contains("no clamd is up")
            })
            .count()
    };
    assert!(
        wait_for(20, || waits() >= 2),
        "waits.zip was not held at the scan:\n{}",
        daemon.log_text()
    );
    assert!(
        event_of(&tc, "waits.zip", Hop::Delivered).is_none(),
        "delivered unscanned"
    );
    assert!(
        event_of(&tc, "waits.zip", Hop::Rejected).is_none(),
        "rejected for want of a scanner"
    );

    // a is back: the file is delivered, a's return is audited, and the alert was raised once.
    let _a = ClamdInstance::start(&dir_a);
    assert!(
        delivered(&["waits.zip"]),
        "not delivered once a clamd was back:\n{}",
        daemon.log_text()
    );
    assert!(
        wait_for(10, || daemon
            .audit_lines("scanner.endpoint_up")
            .iter()
            .any(|l| l.contains(&endpoint_a))),
        "a's return not audited"
    );
    assert_eq!(daemon.audit_lines("alert.scanner_down").len(), 1);
}
