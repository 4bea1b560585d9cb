//! Crash safety: the daemon is killed with SIGKILL at random moments while files pass
//! through every stage, restarted, and at the end every accepted file must have been delivered
//! or rejected exactly once, intact, with nothing doubled or partial in an outbox.
//!
//! The seed is printed; rerun one with `CRASH_SEED=<n> cargo test --test crash`.

mod support;

use std::collections::{BTreeMap, HashMap};

use handoff::pipeline::events::{EventLog, FileEvent};
use handoff::pipeline::stages::outbox_name;
use handoff::receipts::Hop;
use handoff::spool::store::{JobStore, SqliteStore};
use support::{ClamdInstance, Daemon, TestConfig, hand_off, wait_for};

const CLINIC: &str = "clinic-2717654327";
const INSURER: &str = "insurer-06130017";
const ROUNDS: usize = 24;
const FILES_PER_ROUND: usize = 8;

/// xorshift64*: enough randomness for kill points, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn eicar() -> Vec<u8> {
    let mut v = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$".to_vec();
    v.extend_from_slice(b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*");
    v
}

fn all_events(tc: &TestConfig) -> Vec<FileEvent> {
    let store = SqliteStore::open(&tc.state_dir().join("store")).expect("open store");
    store
        .events_after(0, 1_000_000)
        .expect("events")
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

fn open_states(tc: &TestConfig) -> BTreeMap<&'static str, usize> {
    let store = SqliteStore::open(&tc.state_dir().join("store")).expect("open store");
    let mut m = BTreeMap::new();
    for j in store.open_jobs().expect("open jobs") {
        *m.entry(j.state.as_str()).or_default() += 1;
    }
    m
}

#[test]
fn kill_9_at_random_points_loses_and_doubles_nothing() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    println!("crash test seed: {seed}");
    let mut rng = Rng(seed);
    let tc = TestConfig::new();
    let _clamd = ClamdInstance::start(tc.dir.path());
    let config = handoff::config::load(&tc.path).expect("config").config;
    let layout = handoff::state::StateLayout::new(tc.state_dir());
    layout.create(&config).expect("state dir");
    // Half the files come as a transport commits them (sealed, hashed, moved into the spool
    // without a copy), half as an operator places them in the inbox by hand.
    let live = handoff::config::live::LiveConfig::load(&tc.path).expect("config");
    let master = std::sync::Arc::new(
        handoff::keys::load_master_key(&config.gateway.master_key).expect("master key"),
    );
    let dropbox = handoff::boxes::DropBox::open(&layout, &live.snapshot(), &master, CLINIC, CLINIC)
        .expect("the clinic's box");

    let mut fed: HashMap<String, Vec<u8>> = HashMap::new();
    let mut infected: std::collections::HashSet<String> = std::collections::HashSet::new();
    let inbox = tc.state_dir().join("boxes").join(CLINIC).join("inbox");
    for round in 0..ROUNDS {
        // Files arrive while the daemon runs; it is killed at a random moment among them, so
        // the kill lands in accept, validate, scan, seal or deliver of one file or another.
        let daemon = Daemon::start(&tc);
        let kill_after = rng.below(FILES_PER_ROUND as u64 + 1) as usize;
        for k in 0..FILES_PER_ROUND {
            if k == kill_after {
                break;
            }
            let name = format!("r{round:02}-f{k}.zip");
            // A valid archive of 1 to 100 persons; one in ten carries EICAR where only the
            // scanner looks.
            let persons = 1 + rng.below(100) as usize;
            let extra = if rng.below(10) == 0 {
                infected.insert(name.clone());
                vec![("XSD/eicar.com".to_owned(), eicar())]
            } else {
                Vec::new()
            };
            let body =
                support::checkup_archive_with("2717654327", "06130017", persons, rng.next(), extra);
            if rng.below(2) == 0 {
                hand_off(&tc, CLINIC, &name, &body);
            } else {
                let mut upload = dropbox
                    .begin_upload(handoff::boxes::FileName::new(&name).unwrap())
                    .unwrap();
                upload.append(&body).unwrap();
                upload.commit().unwrap();
            }
            fed.insert(name, body);
            std::thread::sleep(std::time::Duration::from_millis(rng.below(15)));
        }
        let after = rng.below(40);
        std::thread::sleep(std::time::Duration::from_millis(after));
        drop(daemon); // SIGKILL
        let waiting = std::fs::read_dir(&inbox).map(|d| d.count()).unwrap_or(0);
        println!(
            "round {round:02}: killed {after} ms after file {kill_after}; in inbox {waiting}, \
             unfinished jobs by state {:?}",
            open_states(&tc)
        );
    }

    let daemon = Daemon::start(&tc);
    let finished = |evs: &[FileEvent]| {
        evs.iter()
            .filter(|e| matches!(e.hop, Hop::Delivered | Hop::Rejected))
            .count()
    };
    let done = wait_for(120, || finished(&all_events(&tc)) >= fed.len());
    let events = all_events(&tc);
    assert!(
        done,
        "only {} of {} files finished:\n{}",
        finished(&events),
        fed.len(),
        daemon.log_text()
    );
    drop(daemon);

    let outbox = tc.state_dir().join("boxes").join(INSURER).join("outbox");
    let mut in_outbox: Vec<String> = std::fs::read_dir(&outbox)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    in_outbox.sort();

    let mut expected_outbox = Vec::new();
    for (name, body) in &fed {
        let of = |hop| {
            events
                .iter()
                .filter(|e| &e.original_name == name && e.hop == hop)
                .collect::<Vec<_>>()
        };
        let accepted = of(Hop::Accepted);
        assert_eq!(
            accepted.len(),
            1,
            "{name}: accepted {} times",
            accepted.len()
        );
        let (delivered, rejected) = (of(Hop::Delivered), of(Hop::Rejected));
        assert_eq!(
            delivered.len() + rejected.len(),
            1,
            "{name}: delivered {} and rejected {} times",
            delivered.len(),
            rejected.len()
        );
        assert_eq!(
            accepted[0].sha256,
            support_sha256(body),
            "{name}: hash changed"
        );
        if infected.contains(name) {
            assert_eq!(rejected.len(), 1, "{name}: infected file not rejected");
            assert_eq!(rejected[0].reasons[0].rule, "scan.infected");
        } else {
            assert_eq!(
                delivered.len(),
                1,
                "{name}: clean file not delivered: {rejected:?}"
            );
            let out_name = outbox_name(&delivered[0].file_id, name);
            let bytes = std::fs::read(outbox.join(&out_name))
                .unwrap_or_else(|e| panic!("{name}: {out_name} missing: {e}"));
            let opened = support::openssl_decrypt(&outbox.join(&out_name), INSURER);
            assert!(
                &opened == body,
                "{name}: sealed content differs from the upload"
            );
            assert_eq!(
                delivered[0].sealed_sha256.as_deref(),
                Some(&*support_sha256(&bytes))
            );
            expected_outbox.push(out_name);
        }
    }
    expected_outbox.sort();
    // Nothing twice, nothing partial, nothing else.
    assert_eq!(in_outbox, expected_outbox);
    let accepted_total = events.iter().filter(|e| e.hop == Hop::Accepted).count();
    assert_eq!(accepted_total, fed.len(), "extra jobs");
    let inbox = tc.state_dir().join("boxes").join(CLINIC).join("inbox");
    assert_eq!(
        std::fs::read_dir(inbox).unwrap().count(),
        0,
        "inbox not emptied"
    );
    let store = SqliteStore::open(&tc.state_dir().join("store")).unwrap();
    assert!(store.open_jobs().unwrap().is_empty());
}

fn support_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
