//! Accept and routing, called directly on a prepared state directory.

mod support;

use handoff::boxes::{FileName, LocalBoxes};
use handoff::events::EventLog;
use handoff::events::Hop;
use handoff::pipeline::accept::accept;
use handoff::pipeline::jobs::{JobState, JobStore, SqliteStore};
use handoff::pipeline::stages::{Routing, route};
use handoff::spool::Spool;
use handoff::state::StateLayout;
use support::{TestConfig, hand_off};

const CLINIC: &str = "clinic-2717654327";

fn prepared(tc: &TestConfig) -> (handoff::config::Config, StateLayout, SqliteStore, Spool) {
    let config = handoff::config::load(&tc.path).expect("config").config;
    let layout = StateLayout::new(tc.state_dir());
    layout.create(&config).expect("state dir");
    let store = SqliteStore::open(&layout.store()).expect("store");
    let master = handoff::keys::load_master_key(&config.gateway.master_key).expect("master key");
    let spool = Spool::new(&layout, std::sync::Arc::new(master), None);
    (config, layout, store, spool)
}

#[test]
fn accepting_the_same_hand_off_file_again_makes_no_second_job() {
    let tc = TestConfig::new();
    let (config, layout, store, spool) = prepared(&tc);
    hand_off(&tc, CLINIC, "twice.zip", b"the same file");
    let boxes = LocalBoxes::new(&layout, None);
    let name = FileName::new("twice.zip").unwrap();
    let inbox_file = layout
        .inbox(&support::counterpart(CLINIC))
        .join("twice.zip");
    // Keep a second link so the very same inode can be put back, as if the daemon had
    // crashed after committing the job but before removing the inbox file.
    let keep = tc.dir.path().join("kept-link");
    std::fs::hard_link(&inbox_file, &keep).unwrap();

    let job = accept(
        &store,
        &spool,
        &boxes,
        &config,
        &support::counterpart(CLINIC),
        &name,
    )
    .unwrap()
    .expect("first accept makes a job");
    assert_eq!(job.state, JobState::Accepted);
    assert!(!inbox_file.exists(), "inbox file not removed");

    std::fs::hard_link(&keep, &inbox_file).unwrap();
    let again = accept(
        &store,
        &spool,
        &boxes,
        &config,
        &support::counterpart(CLINIC),
        &name,
    )
    .unwrap();
    assert!(again.is_none(), "second accept made a job: {again:?}");
    assert!(
        !inbox_file.exists(),
        "already-accepted inbox file not removed"
    );

    let accepted: Vec<_> = store
        .events_after(0, 100)
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.hop == Hop::Accepted)
        .collect();
    assert_eq!(accepted.len(), 1);
    assert_eq!(store.open_jobs().unwrap().len(), 1);
    let spooled: Vec<_> = std::fs::read_dir(layout.spool())
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(spooled.len(), 1, "stray spool files");
}

#[test]
fn concurrent_accepts_of_one_file_make_one_job() {
    let tc = TestConfig::new();
    let (config, layout, store, spool) = prepared(&tc);
    for i in 0..20 {
        hand_off(
            &tc,
            CLINIC,
            &format!("race-{i}.zip"),
            format!("race {i}").as_bytes(),
        );
    }
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for i in 0..20 {
                    accept(
                        &store,
                        &spool,
                        &LocalBoxes::new(&layout, None),
                        &config,
                        &support::counterpart(CLINIC),
                        &FileName::new(&format!("race-{i}.zip")).unwrap(),
                    )
                    .unwrap();
                }
            });
        }
    });
    assert_eq!(store.open_jobs().unwrap().len(), 20);
    assert_eq!(store.events_after(0, 1000).unwrap().len(), 20);
    assert_eq!(std::fs::read_dir(layout.spool()).unwrap().count(), 20);
    assert_eq!(
        std::fs::read_dir(layout.inbox(&support::counterpart(CLINIC)))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn spool_files_without_an_open_job_are_swept() {
    let tc = TestConfig::new();
    let (config, layout, store, spool) = prepared(&tc);
    hand_off(&tc, CLINIC, "kept.zip", b"kept");
    let job = accept(
        &store,
        &spool,
        &LocalBoxes::new(&layout, None),
        &config,
        &support::counterpart(CLINIC),
        &FileName::new("kept.zip").unwrap(),
    )
    .unwrap()
    .unwrap();
    // What a crash between writing the spool file and committing the job leaves.
    std::fs::write(
        layout.spool().join("0190aaaa-0000-7000-8000-000000000000"),
        b"o",
    )
    .unwrap();
    std::fs::write(layout.spool().join("x.deliver.tmp"), b"t").unwrap();
    let removed = spool
        .sweep_orphans(
            |id| store.get(id).unwrap().is_some_and(|j| j.state.is_open()),
            |id| store.has_job(id).unwrap(),
        )
        .unwrap();
    assert_eq!(removed, 2);
    let left: Vec<String> = std::fs::read_dir(layout.spool())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![job.file_id]);
}

#[test]
fn routing_never_guesses() {
    let tc = TestConfig::new();
    let config = handoff::config::load(&tc.path).expect("config").config;
    let by_number = |n: &str| Routing {
        agency: false,
        receiver: Some(handoff::numbers::Number::Insurer(
            handoff::numbers::InsurerNumber::parse(n).expect("a valid insurer number"),
        )),
    };
    // The receiver number read from the archive decides, when the route is allowed.
    assert_eq!(
        route(&config, CLINIC, &by_number("06130017")).unwrap(),
        "insurer-06130017"
    );
    // A known insurer this clinic has no route to.
    assert_eq!(
        route(&config, CLINIC, &by_number("06270029"))
            .unwrap_err()
            .rule,
        "route.not-allowed"
    );
    // A valid number nobody has.
    assert_eq!(
        route(&config, CLINIC, &by_number("99999997"))
            .unwrap_err()
            .rule,
        "route.unknown-recipient"
    );
    // No number: the single route, or nothing.
    assert_eq!(
        route(&config, CLINIC, &Routing::default()).unwrap(),
        "insurer-06130017"
    );
    assert_eq!(
        route(&config, "clinic-1312345679", &Routing::default())
            .unwrap_err()
            .rule,
        "route.unknown-recipient"
    );
}

/// `good.zip` and `bad.zip`, the same 200 KB, committed into the clinic's inbox as a transport
/// commits an upload (sealed, hashed); `bad.zip` then has one byte changed on disk. With
/// `strip_hash` both are rewritten without their hash attribute, as on a file system without
/// extended attributes. Returns the uploaded bytes.
fn sealed_uploads(tc: &TestConfig, layout: &StateLayout, strip_hash: bool) -> Vec<u8> {
    use handoff::boxes::{DropBox, FileName};

    let live = handoff::config::live::LiveConfig::load(&tc.path).expect("config");
    let config = &live.snapshot().config;
    let master = std::sync::Arc::new(
        handoff::keys::load_master_key(&config.gateway.master_key).expect("master key"),
    );
    let dropbox = DropBox::open(
        layout,
        None,
        &live.snapshot(),
        &master,
        &support::account(CLINIC),
        &support::counterpart(CLINIC),
        handoff::events::Channel::Sftp,
    )
    .unwrap();
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for name in ["good.zip", "bad.zip"] {
        let mut up = dropbox.begin_upload(FileName::new(name).unwrap()).unwrap();
        up.append(&body).unwrap();
        up.commit().unwrap();
        let path = layout.inbox(&support::counterpart(CLINIC)).join(name);
        let mut bytes = std::fs::read(&path).unwrap();
        if name == "bad.zip" {
            bytes[100_000] ^= 1;
        }
        if strip_hash {
            std::fs::remove_file(&path).unwrap();
        }
        // Rewriting in place keeps the inode and its attributes.
        std::fs::write(&path, bytes).unwrap();
    }
    body
}

#[test]
fn sealed_uploads_move_into_the_spool_without_a_copy() {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    use sha2::{Digest, Sha256};

    let tc = TestConfig::new();
    let (config, layout, store, spool) = prepared(&tc);
    let body = sealed_uploads(&tc, &layout, false);
    let good = layout.inbox(&support::counterpart(CLINIC)).join("good.zip");
    let inode = std::fs::metadata(&good).unwrap().ino();
    let job = accept(
        &store,
        &spool,
        &LocalBoxes::new(&layout, None),
        &config,
        &support::counterpart(CLINIC),
        &FileName::new("good.zip").unwrap(),
    )
    .unwrap()
    .expect("the sealed upload is accepted");
    assert_eq!(job.size, body.len() as u64);
    assert_eq!(job.sha256, hex::encode(Sha256::digest(&body)));
    assert!(!good.exists());
    let spooled = layout.spool().join(&job.file_id);
    assert_eq!(
        std::fs::metadata(&spooled).unwrap().ino(),
        inode,
        "the upload was copied, not moved"
    );
    let mut content = Vec::new();
    spool
        .open(&job.file_id)
        .unwrap()
        .read_to_end(&mut content)
        .unwrap();
    assert!(content == body);

    // A byte changed while the file waited: the seal catches it when the file is read.
    let job = accept(
        &store,
        &spool,
        &LocalBoxes::new(&layout, None),
        &config,
        &support::counterpart(CLINIC),
        &FileName::new("bad.zip").unwrap(),
    )
    .unwrap()
    .expect("accepted with the hash taken as it arrived");
    let mut content = Vec::new();
    let read = spool
        .open(&job.file_id)
        .and_then(|mut r| r.read_to_end(&mut content));
    assert_eq!(
        read.map_err(|e| e.kind()).unwrap_err(),
        std::io::ErrorKind::InvalidData
    );
}

#[test]
fn sealed_uploads_without_their_hash_are_opened_and_checked() {
    use sha2::{Digest, Sha256};

    let tc = TestConfig::new();
    let (config, layout, store, spool) = prepared(&tc);
    let body = sealed_uploads(&tc, &layout, true);
    let job = accept(
        &store,
        &spool,
        &LocalBoxes::new(&layout, None),
        &config,
        &support::counterpart(CLINIC),
        &FileName::new("good.zip").unwrap(),
    )
    .unwrap()
    .expect("the sealed upload is accepted");
    assert_eq!(job.size, body.len() as u64);
    assert_eq!(job.sha256, hex::encode(Sha256::digest(&body)));

    let bad = layout.inbox(&support::counterpart(CLINIC)).join("bad.zip");
    assert!(
        accept(
            &store,
            &spool,
            &LocalBoxes::new(&layout, None),
            &config,
            &support::counterpart(CLINIC),
            &FileName::new("bad.zip").unwrap()
        )
        .is_err()
    );
    assert!(bad.exists(), "a file whose seal fails is kept in the inbox");
    assert_eq!(store.open_jobs().unwrap().len(), 1);
}
