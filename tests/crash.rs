//! Crash safety: the daemon is killed with SIGKILL at random moments while files pass
//! through every stage, restarted, and at the end every accepted file must have been delivered
//! or rejected exactly once, intact, with nothing doubled or partial in an outbox.
//!
//! A second clinic sends archives addressed to the agency among them, so kills also land in
//! splits (振分): each such parent is split or rejected exactly once, each child accepted and
//! delivered exactly once, and every DATA file of the parent is in exactly one child.
//!
//! The seed is printed; rerun one with `CRASH_SEED=<n> cargo test --test crash`.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;

use handoff::boxes::outbox_name;
use handoff::events::Hop;
use handoff::events::{EventLog, FileEvent};
use handoff::pipeline::jobs::{JobStore, SqliteStore};
use support::{ClamdInstance, Daemon, TestConfig, hand_off, wait_for};

const CLINIC: &str = "clinic-2717654327";
const INSURER: &str = "insurer-06130017";
const ROUNDS: usize = 24;
const FILES_PER_ROUND: usize = 8;
/// The clinic that sends to the agency, and the configured insurers its persons belong to.
const AGENCY_CLINIC: &str = "clinic-1312345679";
const AGENCY: &str = "80130012";
const SORTED_TO: [&str; 4] = ["06130017", "06270029", "06140016", "06270037"];
/// Agency archives fed, one every other round: N (0–9) allows ten splits a day per insurer,
/// and gives each parent a name of its own.
const AGENCY_ARCHIVES: u8 = 10;
/// Runs, after the feed, each killed a few ms after a split is planned or recorded.
const SPLIT_ROUNDS: usize = 16;

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

fn all_events(tc: &TestConfig) -> Vec<FileEvent> {
    let store = SqliteStore::open(&tc.state_dir().join("store")).expect("open store");
    store
        .events_after(0, 1_000_000)
        .expect("events")
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

/// DATA files of an archive: path inside the top folder → SHA-256.
fn data_files(zip_bytes: &[u8]) -> BTreeMap<String, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).expect("a zip");
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).expect("entry");
        let name = f.name().expect("a name").to_string();
        let Some((_, inside)) = name.split_once('/') else {
            continue;
        };
        if inside.starts_with("DATA/") && !f.is_dir() {
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).expect("read entry");
            out.insert(inside.to_owned(), support_sha256(&bytes));
        }
    }
    out
}

/// An archive addressed to the agency: `persons` persons of 2 to 4 configured insurers, its
/// own N and serials so that names differ between parents; one in eight carries EICAR.
fn agency_archive(rng: &mut Rng, k: u8, persons: usize) -> (String, Vec<u8>, bool) {
    use handoff::validate::testdata::{Spec, write_valid};
    let today = handoff::validate::today(time::UtcOffset::from_hms(9, 0, 0).expect("offset"));
    let first = rng.below(4) as usize;
    let count = 2 + rng.below(3) as usize;
    let insurers: Vec<&str> = (0..count).map(|i| SORTED_TO[(first + i) % 4]).collect();
    let mut spec = Spec::to_agency(
        persons,
        today.previous_day().expect("a date"),
        AGENCY,
        &insurers,
    );
    spec.send_count = k;
    spec.serial_start = 1 + u32::from(k) * 1000;
    spec.seed = rng.next();
    let infected = rng.below(8) == 0;
    if infected {
        spec.extra_files = vec![("XSD/eicar.com".to_owned(), support::eicar())];
    }
    let body = write_valid(&spec, Vec::new()).expect("generate an archive");
    (spec.archive_name().file_name(), body, infected)
}

/// Progress of the splits: (children planned, parents split). Read straight from the job
/// store's tables, as the daemon writes them, to time a kill inside a split.
fn split_progress(conn: &rusqlite::Connection) -> (i64, i64) {
    conn.query_row(
        "SELECT (SELECT COUNT(*) FROM splits), \
                (SELECT COUNT(*) FROM jobs WHERE state = 'split')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("read the job store")
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
    let dropbox = handoff::boxes::DropBox::open(
        &layout,
        None,
        &live.snapshot(),
        &master,
        &support::account(CLINIC),
        &support::counterpart(CLINIC),
        handoff::events::Channel::Sftp,
    )
    .expect("the clinic's box");

    let mut fed: HashMap<String, Vec<u8>> = HashMap::new();
    // Agency-addressed parents by name: their bytes, and whether they carry EICAR.
    let mut parents: BTreeMap<String, (Vec<u8>, bool)> = BTreeMap::new();
    let mut infected: std::collections::HashSet<String> = std::collections::HashSet::new();
    let inbox = tc.state_dir().join("boxes").join(CLINIC).join("inbox");
    for round in 0..ROUNDS {
        // Files arrive while the daemon runs; it is killed at a random moment among them, so
        // the kill lands in accept, validate, scan, seal or deliver of one file or another.
        let daemon = Daemon::start(&tc);
        let kill_after = rng.below(FILES_PER_ROUND as u64 + 1) as usize;
        // First in the round, so the kill may land while it is split.
        if round % 2 == 0 && parents.len() < usize::from(AGENCY_ARCHIVES) {
            let k = parents.len() as u8;
            let persons = 8 + rng.below(40) as usize;
            let (name, body, infected) = agency_archive(&mut rng, k, persons);
            hand_off(&tc, AGENCY_CLINIC, &name, &body);
            parents.insert(name, (body, infected));
        }
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
                vec![("XSD/eicar.com".to_owned(), support::eicar())]
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

    // The kills above mostly land in accepting and checking, as the backlog grows. The
    // backlog is now worked off by runs each killed a few ms after a split was planned or
    // recorded, so that kills land in splits: children half written, or not yet recorded.
    let conn = rusqlite::Connection::open(tc.state_dir().join("store").join("jobs.sqlite"))
        .expect("open the job store");
    for round in 0..SPLIT_ROUNDS {
        let before = split_progress(&conn);
        let daemon = Daemon::start(&tc);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut moved = false;
        while !moved && std::time::Instant::now() < deadline {
            moved = split_progress(&conn) != before;
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if !moved {
            break;
        }
        let after = rng.below(12);
        std::thread::sleep(std::time::Duration::from_millis(after));
        drop(daemon); // SIGKILL
        println!(
            "split round {round:02}: killed {after} ms after a split was planned or recorded; \
             (children planned, parents split) {before:?} -> {:?}",
            split_progress(&conn)
        );
    }
    drop(conn);

    let daemon = Daemon::start(&tc);
    // Finished: every upload delivered, rejected or split, and every child delivered.
    let unfinished = |evs: &[FileEvent]| {
        let ended = evs
            .iter()
            .filter(|e| e.parent.is_none())
            .filter(|e| matches!(e.hop, Hop::Delivered | Hop::Rejected | Hop::Split))
            .count();
        let children: usize = evs.iter().map(|e| e.children.len()).sum();
        let delivered_children = evs
            .iter()
            .filter(|e| e.parent.is_some() && e.hop == Hop::Delivered)
            .count();
        (fed.len() + parents.len()).saturating_sub(ended)
            + children.saturating_sub(delivered_children)
    };
    let done = wait_for(120, || unfinished(&all_events(&tc)) == 0);
    let events = all_events(&tc);
    assert!(
        done,
        "{} files or children unfinished:\n{}",
        unfinished(&events),
        daemon.log_text()
    );
    drop(daemon);

    let outbox_of = |account: &str| tc.state_dir().join("boxes").join(account).join("outbox");
    let outbox = outbox_of(INSURER);
    // Each insurer's outbox as it is, and as the events say it must be.
    let mut in_outbox: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for n in SORTED_TO {
        let account = format!("insurer-{n}");
        let names = std::fs::read_dir(outbox_of(&account))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        in_outbox.insert(account.clone(), names);
        expected.insert(account, BTreeSet::new());
    }

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
                delivered[0].sealed_sha256.map(|d| d.to_string()).as_deref(),
                Some(&*support_sha256(&bytes))
            );
            expected_outbox.push(out_name);
        }
    }
    expected
        .entry(INSURER.to_owned())
        .or_default()
        .extend(expected_outbox);

    // Each agency parent: split or rejected once; each child accepted and delivered once;
    // every DATA file of the parent in exactly one child, byte for byte.
    let mut children_total = 0;
    for (name, (body, infected)) in &parents {
        let of = |hop| {
            events
                .iter()
                .filter(|e| &e.original_name == name && e.parent.is_none() && e.hop == hop)
                .collect::<Vec<_>>()
        };
        let accepted = of(Hop::Accepted);
        assert_eq!(
            accepted.len(),
            1,
            "{name}: accepted {} times",
            accepted.len()
        );
        assert_eq!(
            accepted[0].sha256,
            support_sha256(body),
            "{name}: hash changed"
        );
        let (split, rejected) = (of(Hop::Split), of(Hop::Rejected));
        assert_eq!(
            split.len() + rejected.len(),
            1,
            "{name}: split {} and rejected {} times",
            split.len(),
            rejected.len()
        );
        if *infected {
            assert_eq!(rejected.len(), 1, "{name}: infected parent not rejected");
            assert_eq!(rejected[0].reasons[0].rule, "scan.infected");
            continue;
        }
        assert_eq!(split.len(), 1, "{name}: not split: {rejected:?}");
        let parent_id = &split[0].file_id;
        let mut sorted: BTreeMap<String, String> = BTreeMap::new();
        for child in &split[0].children {
            children_total += 1;
            let hops = |hop| {
                events
                    .iter()
                    .filter(|e| e.file_id == child.file_id && e.hop == hop)
                    .collect::<Vec<_>>()
            };
            let (accepted, delivered) = (hops(Hop::Accepted), hops(Hop::Delivered));
            assert_eq!(
                accepted.len(),
                1,
                "{name}: child {} accepted {} times",
                child.file_id,
                accepted.len()
            );
            assert_eq!(
                delivered.len(),
                1,
                "{name}: child {} delivered {} times",
                child.file_id,
                delivered.len()
            );
            assert_eq!(delivered[0].parent.as_deref(), Some(parent_id.as_str()));
            assert_eq!(
                delivered[0].recipient.as_deref(),
                Some(child.recipient.as_str())
            );
            let out_name = outbox_name(&child.file_id, &delivered[0].original_name);
            let path = outbox_of(&child.recipient).join(&out_name);
            let opened = support::openssl_decrypt(&path, &child.recipient);
            assert_eq!(
                support_sha256(&opened),
                child.sha256,
                "{name}: child {out_name} differs"
            );
            let data = data_files(&opened);
            assert_eq!(data.len() as u64, child.persons, "{name}: {out_name}");
            for (file, hash) in data {
                assert!(
                    sorted.insert(file.clone(), hash).is_none(),
                    "{name}: {file} in two children"
                );
            }
            expected
                .entry(child.recipient.to_string())
                .or_default()
                .insert(out_name);
        }
        assert_eq!(
            sorted,
            data_files(body),
            "{name}: DATA files of the children differ"
        );
    }

    println!(
        "agency archives: {} fed, {children_total} children delivered",
        parents.len()
    );
    assert!(children_total > 0, "no agency archive was split");
    // Nothing twice, nothing partial, nothing else.
    assert_eq!(in_outbox, expected);
    let accepted_total = events.iter().filter(|e| e.hop == Hop::Accepted).count();
    assert_eq!(
        accepted_total,
        fed.len() + parents.len() + children_total,
        "extra jobs"
    );
    for clinic in [CLINIC, AGENCY_CLINIC] {
        let inbox = tc.state_dir().join("boxes").join(clinic).join("inbox");
        assert_eq!(
            std::fs::read_dir(inbox).unwrap().count(),
            0,
            "{clinic}: inbox not emptied"
        );
    }
    let store = SqliteStore::open(&tc.state_dir().join("store")).unwrap();
    assert!(store.open_jobs().unwrap().is_empty());
}

fn support_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
