//! The shared store (`[gateway.store] backend = "postgres"`, docs/cluster.md) against a private
//! PostgreSQL started by the test: the job store keeps the same contract as SQLite's, the
//! schema is `handoff migrate`'s, and a gateway on it takes files through the pipeline to
//! verifiable receipts, and holds them while the database is away.

mod support;

use std::process::Command;
use std::sync::Arc;

use handoff::events::{Channel, EventLog, Hop};
use handoff::ids::Sha256;
use handoff::pipeline::jobs::{
    Handover, Job, JobState, JobStore, MAX_SEND_COUNT, PgStore, SqliteStore, Transition,
};
use handoff::store::Database;
use support::postgres::Postgres;
use support::{
    ClamdInstance, Daemon, TestConfig, account, checkup_archive, counterpart, hand_off,
    handoff_bin, output_ok, sftp_batch, wait_for,
};

const CLINIC: &str = "clinic-2717654327";
const INSURER: &str = "insurer-06130017";

fn settings(pg: &Postgres) -> handoff::config::Store {
    handoff::config::Store {
        backend: handoff::config::StoreBackend::Postgres,
        url: Some(format!("postgres://handoff@127.0.0.1:{}/handoff", pg.port)),
        password_file: Some(pg.password_file.clone()),
        tls_ca: None,
        node: None,
    }
}

fn migrated(pg: &Postgres) -> Arc<Database> {
    let db = Database::new(&settings(pg)).expect("settings");
    db.migrate().expect("migrate");
    db
}

fn job(n: u32) -> Job {
    Job {
        file_id: format!("file-{n}"),
        sender: counterpart(CLINIC),
        original_name: format!("archive-{n}.zip"),
        size: 1000 + u64::from(n),
        sha256: Sha256::digest(format!("content {n}").as_bytes()),
        inbox_key: format!("inbox-key-{n}"),
        state: JobState::Accepted,
        recipient: None,
        sealed_sha256: None,
        accepted_at: time::OffsetDateTime::now_utc(),
        delivered_at: None,
        retrieved: false,
        quarantined: false,
        warnings: Vec::new(),
        parent: None,
        accepted_by: Some(account(CLINIC)),
        channel: Some(Channel::Sftp),
    }
}

/// One pass through every operation of the job store, written down as what it answered.
fn exercise(store: &dyn JobStore) -> Vec<String> {
    let mut said = Vec::new();
    let a = job(1);
    let b = job(2);
    said.push(format!("insert a: {}", store.insert_accepted(&a).unwrap()));
    said.push(format!(
        "insert a again: {}",
        store.insert_accepted(&a).unwrap()
    ));
    said.push(format!("insert b: {}", store.insert_accepted(&b).unwrap()));
    let got = store.get(&a.file_id).unwrap().expect("a is stored");
    said.push(format!(
        "a: {} {} {} {} {:?}",
        got.state.as_str(),
        got.sender,
        got.size,
        got.sha256,
        got.channel
    ));
    said.push(format!(
        "by inbox key: {:?}",
        store.by_inbox_key(&b.inbox_key).unwrap().map(|j| j.file_id)
    ));
    said.push(format!(
        "claim a: {:?}",
        store
            .claim(&a.file_id)
            .unwrap()
            .map(|c| c.job.state.as_str())
    ));
    said.push(format!(
        "claim waiting: {:?}, but a: {:?}",
        store.claim_waiting(10, &[]).unwrap(),
        store
            .claim_waiting(10, std::slice::from_ref(&a.file_id))
            .unwrap()
    ));
    let mut delivered = a.clone();
    delivered.recipient = Some(counterpart(INSURER));
    store
        .transition(&Transition {
            file_id: a.file_id.clone(),
            to: JobState::Validated,
            recipient: Some(counterpart(INSURER)),
            sealed_sha256: None,
            quarantined: false,
            warnings: Vec::new(),
            event: None,
        })
        .unwrap();
    store
        .transition(&Transition {
            file_id: a.file_id.clone(),
            to: JobState::Delivered,
            recipient: None,
            sealed_sha256: Some(Sha256::digest(b"sealed")),
            quarantined: false,
            warnings: Vec::new(),
            event: Some(delivered.event(Hop::Delivered, Vec::new())),
        })
        .unwrap();
    let missing = store.transition(&Transition {
        file_id: "no-such-file".into(),
        to: JobState::Rejected,
        recipient: None,
        sealed_sha256: None,
        quarantined: true,
        warnings: Vec::new(),
        event: None,
    });
    said.push(format!("transition of no job fails: {}", missing.is_err()));
    said.push(format!(
        "claim a delivered: {:?}",
        store.claim(&a.file_id).unwrap().map(|c| c.job.file_id)
    ));
    let open: Vec<String> = store
        .open_jobs()
        .unwrap()
        .into_iter()
        .map(|j| j.file_id)
        .collect();
    said.push(format!("open: {open:?}"));
    let to_insurer = |with_retrieved| -> Vec<String> {
        store
            .delivered_to(&counterpart(INSURER), with_retrieved)
            .unwrap()
            .into_iter()
            .map(|j| j.file_id)
            .collect()
    };
    said.push(format!("delivered to insurer: {:?}", to_insurer(false)));
    let by = Handover {
        actor: account(INSURER),
        channel: Channel::Https,
    };
    said.push(format!(
        "retrieved: {}",
        store.mark_retrieved(&a.file_id, &by).unwrap()
    ));
    said.push(format!(
        "retrieved again: {}",
        store.mark_retrieved(&a.file_id, &by).unwrap()
    ));
    said.push(format!(
        "delivered to insurer, not retrieved: {:?}, all: {:?}",
        to_insurer(false),
        to_insurer(true)
    ));
    said.push(format!(
        "same content: {:?}",
        store
            .same_content(&counterpart(CLINIC), &b.sha256)
            .unwrap()
            .into_iter()
            .map(|j| j.file_id)
            .collect::<Vec<_>>()
    ));
    said.push(format!(
        "has a: {}, has c: {}",
        store.has_job(&a.file_id).unwrap(),
        store.has_job("file-3").unwrap()
    ));
    for k in 0..=MAX_SEND_COUNT {
        let plan = store
            .plan_split(&format!("parent-{k}"), "20261207", &["06130017"])
            .unwrap()
            .expect("within the day's sends");
        said.push(format!("split {k}: n = {}", plan[0].n));
    }
    said.push(format!(
        "split past the day's sends: {:?}",
        store
            .plan_split("parent-x", "20261207", &["06270029", "06130017"])
            .unwrap()
            .map(|p| p.len())
    ));
    let events: Vec<String> = store
        .events_after(0, 100)
        .unwrap()
        .into_iter()
        .map(|(seq, e)| {
            format!(
                "{seq} {} {} {:?} {:?}",
                e.file_id,
                e.hop,
                e.actor.map(|a| a.to_string()),
                e.channel
            )
        })
        .collect();
    said.push(format!("events: {events:?}"));
    said.push(format!("newest: {}", *store.watch().borrow()));
    said
}

/// The PostgreSQL job store answers every operation as the SQLite store does: the pipeline
/// cannot tell them apart.
#[test]
fn the_job_store_answers_the_same_on_postgres_as_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(dir.path());
    let sqlite = SqliteStore::open(dir.path()).unwrap();
    let postgres = PgStore::open(migrated(&pg)).unwrap();
    let local = exercise(&sqlite);
    let shared = exercise(&postgres);
    assert_eq!(local, shared);
    // And what they both said is right.
    let said = |prefix: &str| {
        shared
            .iter()
            .find(|l| l.starts_with(prefix))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(said("insert a:"), "insert a: true");
    assert_eq!(said("insert a again"), "insert a again: false");
    assert_eq!(said("claim a:"), "claim a: Some(\"accepted\")");
    assert_eq!(
        said("claim waiting"),
        "claim waiting: [\"file-1\", \"file-2\"], but a: [\"file-2\"]"
    );
    assert_eq!(said("claim a delivered"), "claim a delivered: None");
    assert_eq!(said("open"), "open: [\"file-2\"]");
    assert_eq!(said("retrieved:"), "retrieved: true");
    assert_eq!(said("retrieved again"), "retrieved again: false");
    assert_eq!(
        said("delivered to insurer, not"),
        "delivered to insurer, not retrieved: [], all: [\"file-1\"]"
    );
    assert_eq!(
        said("transition of no job"),
        "transition of no job fails: true"
    );
    assert_eq!(said("split 9"), "split 9: n = 9");
    assert_eq!(
        said("split past"),
        "split past the day's sends: Err(\"06130017\")"
    );
    assert_eq!(
        said("events"),
        "events: [\"1 file-1 accepted Some(\\\"clinic-2717654327\\\") Some(Sftp)\", \
         \"2 file-2 accepted Some(\\\"clinic-2717654327\\\") Some(Sftp)\", \
         \"3 file-1 delivered None None\", \
         \"4 file-1 retrieved Some(\\\"insurer-06130017\\\") Some(Https)\"]"
    );
    assert_eq!(said("newest"), "newest: 4");
}

/// The job store of node `name` on `pg`'s database.
fn node_store(pg: &Postgres, name: &str) -> PgStore {
    let mut settings = settings(pg);
    settings.node = Some(name.to_owned());
    let db = Database::new(&settings).expect("settings");
    db.migrate().expect("migrate");
    PgStore::open(db).unwrap()
}

/// A transition of `file_id` to `to`, with no event.
fn step(file_id: &str, to: JobState) -> Transition {
    Transition {
        file_id: file_id.to_owned(),
        to,
        recipient: Some(counterpart(INSURER)),
        sealed_sha256: None,
        quarantined: false,
        warnings: Vec::new(),
        event: None,
    }
}

/// Jobs are claimed one node at a time: a job another node holds is neither claimed nor
/// changed by this one; claims made at once from two nodes never meet (`SKIP LOCKED`); a claim
/// renewed holds, and one whose lease ran out passes to the other node, after which the first
/// can no longer record a step.
#[test]
fn jobs_are_claimed_by_one_node_at_a_time() {
    use handoff::pipeline::jobs::{CLAIM_LEASE, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(dir.path());
    let a = node_store(&pg, "gw-a");
    let b = node_store(&pg, "gw-b");
    for n in 1..=3 {
        assert!(a.insert_accepted(&job(n)).unwrap());
    }
    let claimed = a.claim("file-1").unwrap().expect("nobody holds file-1");
    assert!(claimed.taken_over, "nobody held it before");
    assert!(!a.claim("file-1").unwrap().unwrap().taken_over);
    assert!(b.claim("file-1").unwrap().is_none(), "A holds file-1");
    assert_eq!(b.claim_waiting(10, &[]).unwrap(), ["file-2", "file-3"]);
    assert!(a.claim_waiting(10, &["file-1".into()]).unwrap().is_empty());
    match b.transition(&step("file-1", JobState::Validated)) {
        Err(StoreError::Taken { by, .. }) => assert_eq!(by, "gw-a"),
        other => panic!("B changed A's job: {other:?}"),
    }
    a.transition(&step("file-1", JobState::Validated)).unwrap();

    // Renewed, the claim holds for another lease.
    pg.psql("UPDATE jobs SET lease_until = now() + interval '1 second' WHERE file_id = 'file-1'");
    a.renew(&["file-1".into()]).unwrap();
    let left: f64 = pg
        .psql("SELECT EXTRACT(EPOCH FROM lease_until - now()) FROM jobs WHERE file_id = 'file-1'")
        .parse()
        .unwrap();
    assert!(left > CLAIM_LEASE.as_secs_f64() - 5.0, "{left} s left");
    // A stops renewing (it died): once the lease has run out, B takes the job from its last
    // recorded step, and A's late step is refused.
    pg.psql("UPDATE jobs SET lease_until = now() - interval '1 second' WHERE file_id = 'file-1'");
    let taken = b.claim("file-1").unwrap().expect("A's lease ran out");
    assert!(taken.taken_over);
    assert_eq!(taken.job.state, JobState::Validated);
    match a.transition(&step("file-1", JobState::Scanned)) {
        Err(StoreError::Taken { by, .. }) => assert_eq!(by, "gw-b"),
        other => panic!("A recorded a step of a job it lost: {other:?}"),
    }
    b.transition(&step("file-1", JobState::Scanned)).unwrap();
    assert_eq!(
        pg.psql("SELECT state, owner FROM jobs WHERE file_id = 'file-1'"),
        "scanned|gw-b"
    );

    // 200 jobs claimed from both nodes at once, five at a time: each by exactly one.
    for n in 100..300 {
        assert!(a.insert_accepted(&job(n)).unwrap());
    }
    let (a, b) = (Arc::new(a), Arc::new(b));
    let takers: Vec<_> = [a, b]
        .into_iter()
        .map(|store| {
            std::thread::spawn(move || {
                let mut mine: Vec<String> = Vec::new();
                loop {
                    let got = store.claim_waiting(5, &mine).unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got);
                }
            })
        })
        .collect();
    let [mine_a, mine_b]: [Vec<String>; 2] = takers
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let fresh = |ids: &[String]| {
        ids.iter()
            .filter(|id| id["file-".len()..].parse::<u32>().unwrap() >= 100)
            .count()
    };
    let both: std::collections::HashSet<&String> = mine_a.iter().chain(&mine_b).collect();
    assert_eq!(
        both.len(),
        mine_a.len() + mine_b.len(),
        "a job claimed twice"
    );
    assert_eq!(fresh(&mine_a) + fresh(&mine_b), 200);
    println!(
        "claimed at once: {} by A, {} by B",
        fresh(&mine_a),
        fresh(&mine_b)
    );
}

/// Events committed at once from many threads get numbers in commit order with no gaps: the
/// issuer, which reads the log from where it stopped, never steps over one.
#[test]
fn concurrent_commits_number_events_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(dir.path());
    let store = Arc::new(PgStore::open(migrated(&pg)).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    assert!(store.insert_accepted(&job(t * 100 + i)).unwrap());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let seqs: Vec<u64> = store
        .events_after(0, 1000)
        .unwrap()
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
}

/// With `tls_ca` the connection is TLS and the server's certificate is checked against that CA:
/// the server of another CA is refused before anything is sent.
#[test]
fn tls_to_the_database_is_checked_against_tls_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = support::repo_root().join("certs-example");
    support::fix_example_key_modes();
    let pg = Postgres::start_tls(
        dir.path(),
        &certs.join("gateway.pem"),
        &certs.join("gateway.key"),
    );
    let over_tls = |host: &str, ca: &str| handoff::config::Store {
        url: Some(format!("postgres://handoff@{host}:{}/handoff", pg.port)),
        tls_ca: Some(certs.join(ca)),
        ..settings(&pg)
    };
    let db = Database::new(&over_tls("localhost", "ca.pem")).unwrap();
    assert_eq!(db.migrate().unwrap(), vec![1, 2, 3, 4]);
    // The gateway's connection, idle now, is encrypted.
    assert_eq!(
        pg.psql(
            "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'handoff' AND s.ssl"
        ),
        "1"
    );
    // A server whose certificate another CA signed is not this database.
    let wrong = Database::new(&over_tls("localhost", "other-ca.pem")).unwrap();
    let refused = wrong.schema_version().unwrap_err();
    let why = handoff::error::Chain(&refused).to_string();
    assert!(why.to_lowercase().contains("certificate"), "{why}");
    // Nor is a name its certificate does not carry.
    let renamed = Database::new(&handoff::config::Store {
        url: Some(format!(
            "host=127.0.0.2 hostaddr=127.0.0.1 port={} user=handoff dbname=handoff",
            pg.port
        )),
        ..over_tls("localhost", "ca.pem")
    })
    .unwrap();
    let why = handoff::error::Chain(&renamed.schema_version().unwrap_err()).to_string();
    assert!(why.contains("not valid for name \"127.0.0.2\""), "{why}");
}

/// A config on `pg`'s database (with `extra` keys of `[gateway.store]`), which `handoff
/// migrate` has prepared.
fn on_migrated_database(pg: &Postgres, extra: &str) -> TestConfig {
    let tc = TestConfig::with(|text| text + &pg.store_table() + extra);
    output_ok(
        Command::new(handoff_bin())
            .args(["migrate", "--config"])
            .arg(&tc.path),
    );
    tc
}

fn handoff(tc: &TestConfig, args: &[&str]) -> std::process::Output {
    Command::new(handoff_bin())
        .args(args)
        .arg("--config")
        .arg(&tc.path)
        .output()
        .unwrap()
}

/// A file one node shares is read by another in full (chunks written over several calls), a
/// newer version replaces the other node's copy, a removal reaches it, a name is never taken
/// twice by `Put::New`, a blob goes with the last file that names it, and one that names no file
/// is collected once old.
#[test]
fn shared_files_reach_another_node_in_their_latest_version() {
    use handoff::store::files::{FilesError, Put, SharedFiles};
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(dir.path());
    let db = migrated(&pg);
    let roots = [dir.path().join("node-a"), dir.path().join("node-b")];
    let outbox = |root: &std::path::Path| root.join("boxes").join(INSURER).join("outbox");
    for root in &roots {
        std::fs::create_dir_all(outbox(root)).unwrap();
    }
    let [a, b] = roots
        .each_ref()
        .map(|root| SharedFiles::new(db.clone(), root));
    let on_a = outbox(&roots[0]).join("x.p7m");
    let on_b = outbox(&roots[1]).join("x.p7m");

    // Large: its chunks go in over two calls.
    support::random_file(&on_a, (17 << 20) + 12345);
    a.publish(&on_a, Put::Replace).unwrap();
    assert_eq!(pg.psql("SELECT COUNT(*) FROM blob_chunks"), "18");
    assert!(b.fetch(&on_b).unwrap().is_some());
    assert_eq!(std::fs::read(&on_b).unwrap(), std::fs::read(&on_a).unwrap());
    let again = a.put(
        &on_a,
        &std::fs::File::open(&on_a).unwrap(),
        1,
        &Default::default(),
        Put::New,
    );
    assert!(matches!(again, Err(FilesError::Exists(_))), "{again:?}");

    std::fs::write(&on_a, b"the second version").unwrap();
    a.publish(&on_a, Put::Replace).unwrap();
    assert_eq!(
        pg.psql("SELECT COUNT(*) FROM blobs"),
        "1",
        "the first blob went"
    );
    b.fetch(&on_b).unwrap();
    assert_eq!(std::fs::read(&on_b).unwrap(), b"the second version");
    let listed = b.list(&outbox(&roots[1])).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "x.p7m");

    // Gone from the database: B's copy is pruned, a file B never shared is not.
    let unshared = outbox(&roots[1]).join("placed.p7m");
    std::fs::write(&unshared, b"not shared").unwrap();
    a.remove(&on_a).unwrap();
    assert!(!on_a.exists());
    assert_eq!(pg.psql("SELECT COUNT(*) FROM blobs"), "0");
    assert_eq!(
        b.prune_copies(&outbox(&roots[1]), std::time::Duration::ZERO)
            .unwrap(),
        1
    );
    assert!(!on_b.exists());
    assert!(unshared.exists());
    assert!(b.fetch(&on_b).unwrap().is_none());

    // A blob that names no file (a large file whose writing was cut) is collected once old.
    pg.psql("INSERT INTO blobs (size, created) VALUES (5, now() - interval '2 days'), (5, now())");
    assert_eq!(
        a.collect_orphans(std::time::Duration::from_secs(24 * 3600))
            .unwrap(),
        1
    );
    assert_eq!(
        pg.psql("SELECT COUNT(*) FROM blobs"),
        "1",
        "the recent one stays"
    );
}

/// `handoff migrate` prepares the database once; a gateway refuses to start on a database
/// that was not migrated, saying what to run.
#[test]
fn migrate_prepares_the_database_and_a_gateway_refuses_one_not_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(dir.path());
    let tc = TestConfig::with(|text| text + &pg.store_table());

    let check = handoff(&tc, &["migrate", "--check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stdout).contains("schema version 0"));

    let serve = Command::new(handoff_bin())
        .args(["serve", "--config"])
        .arg(&tc.path)
        .output()
        .unwrap();
    assert_eq!(serve.status.code(), Some(1));
    let err = String::from_utf8_lossy(&serve.stderr);
    assert!(err.contains("run handoff migrate"), "{err}");
    assert!(!err.contains(pg.password_file.to_str().unwrap()) || err.contains("password_file"));

    let first = handoff(&tc, &["migrate"]);
    assert!(first.status.success());
    assert!(String::from_utf8_lossy(&first.stdout).contains("applied 1, 2, 3, 4"));
    let again = handoff(&tc, &["migrate"]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already at schema version 4"));
    assert!(handoff(&tc, &["migrate", "--check"]).status.success());
    assert_eq!(pg.psql("SELECT COUNT(*) FROM schema_migrations"), "4");
}

/// A gateway on PostgreSQL takes a file from the clinic's inbox to the insurer's outbox; jobs,
/// events and receipts are in the database (none in the state directory), and
/// `handoff receipts verify` checks the chain there. The node's audit log is copied there too,
/// and `handoff audit verify` finds a line changed in the copy. `handoff export` hands the file
/// over through the database.
#[test]
fn a_gateway_on_postgres_delivers_and_its_receipts_verify() {
    let tc_dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(tc_dir.path());
    let tc = on_migrated_database(&pg, "node = \"gw-test\"\n");
    let _clamd = ClamdInstance::start(tc.dir.path());
    let _daemon = Daemon::start(&tc);

    let body = checkup_archive("2717654327", "06130017", 20, 7);
    hand_off(&tc, CLINIC, "h0000000001_2026.zip", &body);
    assert!(
        wait_for(60, || pg
            .psql("SELECT COUNT(*) FROM receipts WHERE hop = 'delivered'")
            == "1"),
        "not delivered: {}",
        pg.psql("SELECT file_id, hop FROM events")
    );
    let outbox = tc.state_dir().join("boxes").join(INSURER).join("outbox");
    let delivered: Vec<_> = std::fs::read_dir(&outbox).unwrap().flatten().collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        support::openssl_decrypt(&delivered[0].path(), INSURER),
        body
    );
    assert_eq!(
        pg.psql("SELECT state FROM jobs"),
        "delivered",
        "the job is in the database"
    );
    let store = tc.state_dir().join("store");
    assert!(!store.join("jobs.sqlite").exists());
    assert!(!store.join("receipts.db").exists());

    let verify = handoff(&tc, &["receipts", "verify"]);
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // The audit log is copied into the database under the node's name, and checked there.
    assert!(
        wait_for(10, || pg.psql(
            "SELECT COUNT(*) FROM audit WHERE line LIKE '%file.delivered%'"
        ) == "1"),
        "{}",
        pg.psql("SELECT node, seq FROM audit")
    );
    let audit = handoff(&tc, &["audit", "verify"]);
    let said = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    assert!(
        said.contains("chain intact (node gw-test in 127.0.0.1:"),
        "{said}"
    );
    pg.psql("UPDATE audit SET line = replace(line, 'file.delivered', 'file.rejected') WHERE line LIKE '%file.delivered%'");
    let tampered = handoff(&tc, &["audit", "verify"]);
    assert_eq!(tampered.status.code(), Some(1));
    let why = String::from_utf8_lossy(&tampered.stderr);
    assert!(
        why.contains("BROKEN: node gw-test") && why.contains("modified"),
        "{why}"
    );
    let file_id = pg.psql("SELECT file_id FROM jobs");
    let trace = handoff(&tc, &["receipts", "trace", &file_id]);
    let trace = String::from_utf8_lossy(&trace.stdout);
    assert!(
        trace.contains("accepted") && trace.contains("delivered"),
        "{trace}"
    );
    // The receipts are also files in the clinic's box, as with the local store.
    let receipts = tc.state_dir().join("boxes").join(CLINIC).join("receipts");
    assert!(wait_for(10, || std::fs::read_dir(&receipts)
        .map(|d| d.count())
        .unwrap_or(0)
        == 2));

    // The offline desk works on the database too: the export's hand-over is a `retrieved`
    // receipt there, and the medium's manifest verifies.
    let medium = tc.dir.path().join("cdr1");
    let exported = Command::new(handoff_bin())
        .args([
            "export",
            "--for",
            INSURER,
            "--operator",
            "op-tanaka",
            "--config",
        ])
        .arg(&tc.path)
        .arg("--to")
        .arg(&medium)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&exported.stdout);
    assert!(
        exported.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    assert!(said.contains("exported 1 file"), "{said}");
    assert!(
        pg.psql("SELECT json FROM receipts WHERE hop = 'retrieved'")
            .contains("\"channel\":\"offline\"")
    );
    let checked = Command::new(support::python())
        .arg(support::repo_root().join("docs/verify-receipt.py"))
        .arg(support::repo_root().join("certs-example/receipt.pub"))
        .arg(medium.join("manifest.json"))
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );
}

/// A node that ran on the local store moves onto the database with `handoff migrate
/// --import-local`: its jobs, events and receipts are copied as they are, and the receipt chain
/// goes on from where it stopped.
#[test]
fn a_local_store_is_imported_and_its_receipt_chain_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(dir.path());
    let tc = TestConfig::new();
    let _clamd = ClamdInstance::start(tc.dir.path());
    let on_database = tc.dir.path().join("on-database.toml");
    std::fs::write(&on_database, tc.text() + &pg.store_table()).unwrap();
    let migrate = |extra: &[&str]| {
        Command::new(handoff_bin())
            .args(["migrate", "--config"])
            .arg(&on_database)
            .args(extra)
            .output()
            .unwrap()
    };
    let local = Daemon::start(&tc);
    for i in 0..2 {
        let body = checkup_archive("2717654327", "06130017", 5, 40 + i);
        hand_off(&tc, CLINIC, &format!("local-{i}.zip"), &body);
    }
    assert!(wait_for(60, || {
        support::events(&tc)
            .iter()
            .filter(|e| e.hop == Hop::Delivered)
            .count()
            == 2
    }));
    let local_receipts = || handoff(&tc, &["receipts", "verify"]);
    assert!(wait_for(10, || String::from_utf8_lossy(
        &local_receipts().stdout
    )
    .contains("4 receipts")));

    // Not while the gateway runs on the state directory.
    let busy = migrate(&["--import-local"]);
    assert_eq!(busy.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("in use by another handoff serve"));
    drop(local);

    let moved = migrate(&["--import-local"]);
    let said = String::from_utf8_lossy(&moved.stdout);
    assert!(
        moved.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    assert!(
        said.contains("imported 2 jobs, 4 events and 4 receipts"),
        "{said}"
    );
    assert!(said.contains("goes on from receipt 4"), "{said}");
    assert!(said.contains("copied"), "{said}");
    assert_eq!(
        files_in(&pg, &format!("boxes/{INSURER}/outbox")),
        "2",
        "the delivered files are in the database"
    );
    let again = migrate(&["--import-local"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("only into a new database"));

    // The gateway on the database finishes the chain where the local one left it.
    tc.rewrite(&(tc.text() + &pg.store_table()));
    let _daemon = Daemon::start(&tc);
    hand_off(
        &tc,
        CLINIC,
        "after.zip",
        &checkup_archive("2717654327", "06130017", 5, 50),
    );
    assert!(wait_for(60, || pg.psql("SELECT MAX(seq) FROM receipts") == "6"));
    let verify = handoff(&tc, &["receipts", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    assert!(String::from_utf8_lossy(&verify.stdout).contains("6 receipts"));
    assert_eq!(
        pg.psql("SELECT COUNT(*) FROM jobs WHERE state = 'delivered'"),
        "3"
    );
}

/// A second node on `pg`'s database beside `first`: the same accounts, keys and host key, a
/// state directory and ports of its own, scanning with `first`'s clamd.
fn second_node(pg: &Postgres, first: &TestConfig, name: &str) -> TestConfig {
    let clamd = format!("clamd = \"unix:{}/clamd.sock\"", first.dir.path().display());
    TestConfig::with(|text| {
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("clamd = ") {
                    clamd.as_str()
                } else {
                    l
                }
            })
            .map(|l| format!("{l}\n"))
            .collect();
        text + &pg.store_table() + &format!("node = \"{name}\"\n")
    })
}

/// Archives for `CLINIC` to `INSURER`, written under `dir` as `burst-N.zip`.
fn write_archives(dir: &std::path::Path, n: u64, seed: u64) -> Vec<std::path::PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let path = dir.join(format!("burst-{i}.zip"));
            std::fs::write(
                &path,
                checkup_archive("2717654327", "06130017", 2, seed + i),
            )
            .unwrap();
            path
        })
        .collect()
}

/// Two gateway nodes on `pg`'s database, sharing one clamd: `a` started first (the
/// coordinating node), then `b`. A test binds every part: a part it leaves out is dropped at
/// once (its node stopped, its folder removed).
struct TwoNodes {
    a: TestConfig,
    node_a: Daemon,
    b: TestConfig,
    node_b: Daemon,
    _clamd: ClamdInstance,
}

impl TwoNodes {
    fn start(pg: &Postgres) -> TwoNodes {
        let a = on_migrated_database(pg, "node = \"gw-a\"\n");
        let clamd = ClamdInstance::start(a.dir.path());
        let node_a = Daemon::start(&a);
        let b = second_node(pg, &a, "gw-b");
        let node_b = Daemon::start(&b);
        TwoNodes {
            a,
            node_a,
            b,
            node_b,
            _clamd: clamd,
        }
    }
}

/// Uploads `files` into `CLINIC`'s inbox through `tc`'s node, in one sftp session.
fn upload(tc: &TestConfig, files: &[std::path::PathBuf]) -> std::process::Output {
    let batch: String = files
        .iter()
        .map(|p| format!("put {} inbox/\n", p.display()))
        .collect();
    sftp_batch(tc.sftp_port, CLINIC, CLINIC, &batch)
}

/// How many files the database holds in `dir` (a folder under the state directory).
fn files_in(pg: &Postgres, dir: &str) -> String {
    pg.psql(&format!("SELECT COUNT(*) FROM files WHERE dir = '{dir}'"))
}

/// `handoff receipts verify` and `handoff audit verify` pass on `tc`'s node.
fn assert_chains_verify(tc: &TestConfig) {
    for what in [&["receipts", "verify"][..], &["audit", "verify"]] {
        let out = handoff(tc, what);
        assert!(
            out.status.success(),
            "{what:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Two nodes share one database: a file uploaded to one node is downloaded from it though the
/// node had no copy of the delivered file; a burst uploaded to both is worked by both, and when
/// A (coordinating) is killed (-9) in its middle, B takes over A's claims once their lease has
/// run out, and A's coordination, and delivers every file exactly once; the receipt and audit
/// chains verify.
#[test]
fn two_nodes_share_the_boxes_and_one_finishes_the_burst_of_the_other_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(dir.path());
    let TwoNodes {
        a,
        mut node_a,
        b,
        node_b,
        _clamd,
    } = TwoNodes::start(&pg);
    assert!(
        wait_for(10, || node_b.log_text().contains("stands by to coordinate")),
        "{}",
        node_b.log_text()
    );
    assert!(
        node_a
            .log_text()
            .contains("this node is the coordinating node"),
        "the node that takes the lock at start says so: {}",
        node_a.log_text()
    );

    // Uploaded to B and accepted there; listed on B, and downloaded from the node that did not
    // deliver it (and so had no copy).
    let first = write_archives(&dir.path().join("first"), 1, 900).remove(0);
    let put = upload(&b, std::slice::from_ref(&first));
    assert!(put.status.success(), "{put:?}{}", node_b.log_text());
    assert!(
        wait_for(60, || pg
            .psql("SELECT COUNT(*) FROM receipts WHERE hop = 'delivered'")
            == "1"),
        "not delivered: {}{}",
        node_a.log_text(),
        node_b.log_text()
    );
    assert!(node_b.log_text().contains("accepted"));
    let listed = sftp_batch(b.sftp_port, INSURER, INSURER, "ls -1 outbox\n");
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let name = listed
        .lines()
        .find(|l| l.ends_with("_burst-0.zip.p7m"))
        .unwrap_or_else(|| panic!("not listed on B: {listed}"))
        .trim()
        .trim_start_matches("outbox/")
        .to_owned();
    let has_copy = |tc: &TestConfig| {
        tc.state_dir()
            .join("boxes")
            .join(INSURER)
            .join("outbox")
            .join(&name)
            .exists()
    };
    let (from, which) = if has_copy(&b) { (&a, "A") } else { (&b, "B") };
    assert!(!has_copy(from), "one node has no copy before the download");
    let got = dir.path().join("got.p7m");
    let get = sftp_batch(
        from.sftp_port,
        INSURER,
        INSURER,
        &format!("get outbox/{name} {}\n", got.display()),
    );
    assert!(get.status.success(), "{get:?}");
    assert_eq!(
        support::openssl_decrypt(&got, INSURER),
        std::fs::read(&first).unwrap()
    );
    assert!(
        wait_for(20, || pg
            .psql("SELECT COUNT(*) FROM receipts WHERE hop = 'retrieved'")
            == "1"),
        "the download on {which} is not a retrieval"
    );
    println!("the first file was downloaded from {which}, which had no copy");

    // A burst of 200, half to each node at once; A is killed while both work on them.
    let burst = write_archives(&dir.path().join("burst"), 200, 1000);
    let (to_a, to_b) = burst.split_at(100);
    let put = std::thread::scope(|s| {
        let on_a = s.spawn(|| upload(&a, to_a));
        let on_b = upload(&b, to_b);
        [on_a.join().unwrap(), on_b]
    });
    for put in put {
        assert!(put.status.success(), "{put:?}");
    }
    let delivered = || {
        pg.psql("SELECT COUNT(*) FROM jobs WHERE state = 'delivered'")
            .parse::<u32>()
            .unwrap_or(0)
    };
    // Who delivered each file: the node that held its claim last.
    let by = |node: &str| -> u32 {
        pg.psql(&format!(
            "SELECT COUNT(*) FROM jobs WHERE state = 'delivered' AND owner = '{node}'"
        ))
        .parse()
        .unwrap_or(0)
    };
    assert!(
        wait_for(120, || by("gw-a") >= 5 && by("gw-b") >= 5),
        "both nodes deliver: A {}, B {}",
        by("gw-a"),
        by("gw-b")
    );
    node_a.child.kill().unwrap();
    node_a.child.wait().unwrap();
    let killed = std::time::Instant::now();
    // Counted at one moment: A's share is fixed, B's goes on.
    let at_kill = pg.psql(
        "SELECT COUNT(*) FILTER (WHERE owner = 'gw-a'), COUNT(*) FILTER (WHERE owner = 'gw-b') \
         FROM jobs WHERE state = 'delivered'",
    );
    let (by_a, by_b) = at_kill.split_once('|').unwrap();
    let at_kill: u32 = by_a.parse::<u32>().unwrap() + by_b.parse::<u32>().unwrap();
    let held_by_a = pg.psql(
        "SELECT COUNT(*) FROM jobs WHERE owner = 'gw-a' \
         AND state IN ('accepted', 'validated', 'scanned', 'sealed')",
    );
    assert!(at_kill < 201, "the burst was over before A was killed");
    assert!(
        wait_for(30, || node_b
            .log_text()
            .contains("this node is the coordinating node")),
        "B did not take over: {}",
        node_b.log_text()
    );
    assert!(
        wait_for(300, || delivered() == 201),
        "{} of 201 delivered: {}",
        delivered(),
        node_b.log_text()
    );
    let finished = killed.elapsed();
    assert!(
        wait_for(60, || pg
            .psql("SELECT COUNT(*) FROM receipts WHERE hop = 'delivered'")
            == "201"),
        "receipts of the deliveries"
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    for hop in ["accepted", "delivered"] {
        assert_eq!(
            pg.psql(&format!(
                "SELECT COUNT(*), COUNT(DISTINCT file_id) FROM receipts WHERE hop = '{hop}'"
            )),
            "201|201",
            "{hop} receipts"
        );
    }
    assert_eq!(pg.psql("SELECT COUNT(*) FROM jobs"), "201");
    assert_eq!(files_in(&pg, &format!("boxes/{INSURER}/outbox")), "201");
    let inbox = format!("boxes/{CLINIC}/inbox");
    assert!(
        wait_for(15, || files_in(&pg, &inbox) == "0"),
        "uploads left in the inbox"
    );
    // A spool file whose job A never recorded (killed between the two) is an orphan; the
    // coordinating node removes it once it is old enough that no live node can be writing it.
    let orphans = files_in(&pg, "spool");
    pg.psql("UPDATE files SET modified = now() - interval '1 hour' WHERE dir = 'spool'");
    assert!(
        wait_for(45, || files_in(&pg, "spool") == "0"),
        "spool files left"
    );
    let listed = sftp_batch(b.sftp_port, INSURER, INSURER, "ls -1 outbox\n");
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter(|l| l.contains(".zip.p7m"))
            .count(),
        201
    );
    assert_eq!(
        pg.psql(
            "SELECT COUNT(*) FROM jobs WHERE state IN ('accepted', 'validated', 'scanned', 'sealed')"
        ),
        "0"
    );
    println!(
        "two nodes: {at_kill} of 201 delivered when A was killed (A {by_a}, B {by_b}); \
         A held {held_by_a} open jobs; 201 after B took over, {:.1} s after the kill \
         (A {}, B {}); {orphans} orphan spool files swept",
        finished.as_secs_f64(),
        by("gw-a"),
        by("gw-b")
    );
    assert_chains_verify(&b);
}

/// PostgreSQL stopped in the middle of a burst worked by two nodes: uploads are refused with the
/// message while it is away, nothing is lost, and once it is back every file is delivered once,
/// by whichever node works then; the chains verify.
#[test]
fn two_nodes_hold_a_burst_while_the_database_is_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut pg = Postgres::start(dir.path());
    let TwoNodes {
        a: _a,
        node_a: _node_a,
        b,
        node_b,
        _clamd,
    } = TwoNodes::start(&pg);
    let burst = write_archives(&dir.path().join("burst"), 60, 3000);
    let put = upload(&b, &burst);
    assert!(put.status.success(), "{put:?}");
    let delivered = |pg: &Postgres| {
        pg.psql("SELECT COUNT(*) FROM receipts WHERE hop = 'delivered'")
            .parse::<u32>()
            .unwrap_or(0)
    };
    assert!(wait_for(60, || delivered(&pg) >= 5), "nothing delivered");
    pg.stop();

    let late = write_archives(&dir.path().join("late"), 1, 4000).remove(0);
    let late_batch = format!("put {} inbox/late.zip\n", late.display());
    assert!(
        wait_for(10, || node_b.log_text().contains("alert.store_down")
            || node_b.log_text().contains("store_down")),
        "{}",
        node_b.log_text()
    );
    let refused = sftp_batch(b.sftp_port, CLINIC, CLINIC, &late_batch);
    assert!(
        !refused.status.success(),
        "taken while the database was away"
    );
    assert!(
        wait_for(5, || node_b.log_text().contains("cannot take files now")),
        "{}",
        node_b.log_text()
    );

    pg.resume();
    assert!(
        wait_for(30, || sftp_batch(b.sftp_port, CLINIC, CLINIC, &late_batch)
            .status
            .success()),
        "uploads not taken after the database came back"
    );
    assert!(
        wait_for(240, || delivered(&pg) == 61),
        "{} of 61 delivered",
        delivered(&pg)
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        pg.psql("SELECT COUNT(*), COUNT(DISTINCT file_id) FROM receipts WHERE hop = 'delivered'"),
        "61|61"
    );
    assert_eq!(pg.psql("SELECT COUNT(*) FROM jobs"), "61");
    assert_eq!(files_in(&pg, &format!("boxes/{INSURER}/outbox")), "61");
    assert_chains_verify(&b);
}

/// A node killed in the middle of an upload: the client sends it again to the other node,
/// which takes it; of the cut upload nothing is kept but the dead node's audit line.
#[test]
fn an_upload_cut_by_its_node_dying_is_sent_again_to_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(dir.path());
    let TwoNodes {
        a,
        mut node_a,
        b,
        node_b: _node_b,
        _clamd,
    } = TwoNodes::start(&pg);
    let big = dir.path().join("big.zip");
    support::random_file(&big, 16 << 20);
    let batch = format!("put {} inbox/\n", big.display());
    let batch_file = dir.path().join("batch");
    std::fs::write(&batch_file, &batch).unwrap();
    // 16 MiB at 8 Mbit/s: about 16 seconds, cut after 2.
    let mut slow = support::sftp_command(
        a.sftp_port,
        CLINIC,
        CLINIC,
        &["-l", "8000", "-b", &batch_file.display().to_string()],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    assert!(
        wait_for(10, || !node_a.audit_lines("box.open").is_empty()),
        "the upload never started"
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    node_a.child.kill().unwrap();
    node_a.child.wait().unwrap();
    let cut = slow.wait().unwrap();
    assert!(!cut.success(), "the cut upload cannot have completed");
    assert_eq!(
        pg.psql("SELECT COUNT(*) FROM files"),
        "0",
        "nothing of the cut upload is shared"
    );

    let again = upload(&b, std::slice::from_ref(&big));
    assert!(again.status.success(), "{again:?}");
    assert!(
        wait_for(60, || pg.psql(
            "SELECT COUNT(*) FROM jobs WHERE original_name = 'big.zip'"
        ) == "1"),
        "the upload sent again was not accepted"
    );
    assert_eq!(
        pg.psql("SELECT size FROM jobs WHERE original_name = 'big.zip'"),
        (16u64 << 20).to_string()
    );
    let opened = node_a.audit_lines("box.open");
    assert!(opened.iter().any(|l| l.contains("big.zip")), "{opened:?}");
    assert!(node_a.audit_lines("box.upload").is_empty());
}

/// Removing an account from the config of both nodes closes its sessions on both within a
/// second.
#[test]
fn removing_an_account_closes_its_sessions_on_both_nodes_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(dir.path());
    let TwoNodes {
        a,
        node_a,
        b,
        node_b,
        _clamd,
    } = TwoNodes::start(&pg);
    let mut sessions = Vec::new();
    for (tc, node) in [(&a, &node_a), (&b, &node_b)] {
        let child = support::sftp_command(tc.sftp_port, "m.sato", "m.sato", &[])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            wait_for(10, || support::established_on(tc.sftp_port) == 1
                && !node.audit_lines("sftp.login").is_empty()),
            "no session on {}",
            tc.path.display()
        );
        sessions.push(child);
    }
    for (tc, node) in [(&a, &node_a), (&b, &node_b)] {
        tc.rewrite(&support::remove_account(&tc.text(), "maintainer", "m.sato"));
        assert!(
            Command::new("kill")
                .args(["-HUP", &node.pid().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }
    let cut_from = std::time::Instant::now();
    while support::established_on(a.sftp_port) + support::established_on(b.sftp_port) > 0 {
        assert!(
            cut_from.elapsed() < std::time::Duration::from_secs(5),
            "sessions not cut"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let elapsed = cut_from.elapsed();
    println!("both sessions closed {elapsed:?} after the reload");
    assert!(elapsed <= std::time::Duration::from_secs(1), "{elapsed:?}");
    for mut child in sessions {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A node is refused while another running node has its name (jobs are claimed by name), with
/// the reason and who has it; a node of another name starts beside it.
#[test]
fn a_node_whose_name_another_running_node_has_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(dir.path());
    let a = on_migrated_database(&pg, "node = \"gw-a\"\n");
    let _clamd = ClamdInstance::start(a.dir.path());
    let _node_a = Daemon::start(&a);
    let twin = second_node(&pg, &a, "gw-a");
    let mut serve = Command::new(handoff_bin())
        .args(["serve", "--config"])
        .arg(&twin.path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stopped = wait_for(30, || matches!(serve.try_wait(), Ok(Some(_))));
    if !stopped {
        let _ = serve.kill();
    }
    let out = serve.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(stopped, "the twin runs beside A: {err}");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("another gateway node named \"gw-a\" is running")
            && err.contains("(connected from 127.0.0.1, database session"),
        "{err}"
    );
    let b = second_node(&pg, &a, "gw-b");
    let node_b = Daemon::start(&b);
    assert!(
        wait_for(10, || node_b.log_text().contains("stands by to coordinate")),
        "{}",
        node_b.log_text()
    );
}

/// A node whose connection broke and whose database another node took meanwhile stops, with
/// the reason, rather than work beside it.
#[test]
fn a_node_that_loses_its_database_to_another_stops() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(dir.path());
    let tc = on_migrated_database(&pg, "");
    let _clamd = ClamdInstance::start(tc.dir.path());
    let mut node = Daemon::start(&tc);
    // One session cuts the node's hold and takes the lock itself, before the node can again.
    let key = handoff::store::postgres::locks::NODE;
    let mut thief = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "PGPASSWORD=$(head -n 1 {pw}) \"$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)/psql\" \
             -h 127.0.0.1 -p {port} -U handoff -d handoff -c \
             \"SELECT pg_terminate_backend(l.pid) FROM pg_locks l WHERE l.locktype = 'advisory' \
               AND ((l.classid::bigint << 32) | l.objid::bigint) = {key}\" \
             -c \"SELECT pg_advisory_lock({key})\" -c \"SELECT pg_sleep(30)\"",
            pw = pg.password_file.display(),
            port = pg.port,
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stopped = wait_for(15, || matches!(node.child.try_wait(), Ok(Some(_))));
    let _ = thief.kill();
    let _ = thief.wait();
    assert!(stopped, "the node went on: {}", node.log_text());
    let status = node.child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(
        node.log_text()
            .contains("another node became the coordinating node"),
        "{}",
        node.log_text()
    );
}

/// While the database is away nothing is accepted and nothing is lost: the NOC has the alert,
/// uploads are refused with a message, files already in the inbox wait there, and once the
/// database is back every one is delivered once, by itself.
#[test]
fn files_wait_while_the_database_is_away_and_go_on_when_it_returns() {
    let tc_dir = tempfile::tempdir().unwrap();
    let mut pg = Postgres::start(tc_dir.path());
    let tc = on_migrated_database(&pg, "");
    let _clamd = ClamdInstance::start(tc.dir.path());
    let daemon = Daemon::start(&tc);

    hand_off(
        &tc,
        CLINIC,
        "before.zip",
        &checkup_archive("2717654327", "06130017", 5, 1),
    );
    assert!(wait_for(60, || pg
        .psql("SELECT COUNT(*) FROM receipts WHERE hop = 'delivered'")
        == "1"));

    pg.stop();
    // The NOC hears of it once, and uploads are refused with a message while it lasts.
    assert!(
        wait_for(15, || !daemon.audit_lines("alert.store_down").is_empty()),
        "{}",
        daemon.log_text()
    );
    assert!(support::metrics_text(&tc).contains("handoff_store_up 0"));
    let up = tc.dir.path().join("during.zip");
    std::fs::write(&up, checkup_archive("2717654327", "06130017", 5, 99)).unwrap();
    let refused = support::sftp_batch(
        tc.sftp_port,
        CLINIC,
        CLINIC,
        &format!("put {} inbox/\n", up.display()),
    );
    assert!(
        !refused.status.success(),
        "an upload was taken while the database was away"
    );
    assert!(
        wait_for(5, || daemon.log_text().contains("cannot take files now")),
        "{}",
        daemon.log_text()
    );
    // A delivered file can still be downloaded (its bytes are on the node); its retrieval is
    // recorded once the database is back.
    let outbox = tc.state_dir().join("boxes").join(INSURER).join("outbox");
    let first = std::fs::read_dir(&outbox)
        .unwrap()
        .flatten()
        .next()
        .unwrap();
    let name = first.file_name().to_string_lossy().into_owned();
    support::curl_as(
        &tc,
        INSURER,
        &format!("/outbox/{name}"),
        Some(&tc.dir.path().join("got")),
    );
    // What is already in the inbox waits there, unaccepted.
    for i in 0..5 {
        let body = checkup_archive("2717654327", "06130017", 5, 10 + i);
        hand_off(&tc, CLINIC, &format!("away-{i}.zip"), &body);
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    let inbox = tc.state_dir().join("boxes").join(CLINIC).join("inbox");
    let waiting = std::fs::read_dir(&inbox).unwrap().count();
    assert_eq!(
        waiting, 5,
        "the files wait in the inbox while the database is away"
    );
    assert!(daemon.child.id() > 0);

    pg.resume();
    assert!(wait_for(15, || !daemon.audit_lines("store.up").is_empty()));
    assert_eq!(
        daemon.audit_lines("alert.store_down").len(),
        1,
        "one alert per outage"
    );
    let sent = support::sftp_batch(
        tc.sftp_port,
        CLINIC,
        CLINIC,
        &format!("put {} inbox/\n", up.display()),
    );
    assert!(
        sent.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&sent.stderr),
        daemon.log_text()
    );
    assert!(
        wait_for(90, || pg
            .psql("SELECT COUNT(*) FROM receipts WHERE hop = 'delivered'")
            == "7"),
        "not all delivered after the database came back: {}\nreceipts: {}\n{}",
        pg.psql("SELECT original_name, state FROM jobs"),
        pg.psql("SELECT seq, hop, file_id FROM receipts ORDER BY seq"),
        daemon.log_text()
    );
    assert_eq!(std::fs::read_dir(&inbox).unwrap().count(), 0);
    assert!(
        wait_for(15, || pg
            .psql("SELECT COUNT(*) FROM receipts WHERE hop = 'retrieved'")
            == "1"),
        "the retrieval during the outage was not recorded: {}",
        daemon.log_text()
    );
    assert_eq!(std::fs::read_dir(&outbox).unwrap().count(), 7);
    assert_eq!(
        pg.psql("SELECT COUNT(*) FROM (SELECT file_id, hop FROM receipts GROUP BY file_id, hop HAVING COUNT(*) > 1) d"),
        "0"
    );
    assert!(handoff(&tc, &["receipts", "verify"]).status.success());
    // A database away is no broken chain.
    assert!(daemon.audit_lines("alert.receipt_chain_broken").is_empty());
    // The audit lines written while it was away are copied once it is back, the chain whole.
    assert!(wait_for(10, || pg.psql(
        "SELECT COUNT(*) FROM audit WHERE line LIKE '%\"alert.store_down\"%'"
    ) == "1"));
    let audit = handoff(&tc, &["audit", "verify"]);
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
}
