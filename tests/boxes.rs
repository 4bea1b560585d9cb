//! The box layer both transports use: uploads are atomic and encrypted from their first byte,
//! names cannot escape, symlinks are never followed, and each folder allows only what
//! ARCHITECTURE.md, *Confinement*, says.

mod support;

use std::fs;
use std::io::Read;
use std::sync::Arc;

use handoff::boxes::{BoxError, BoxEvent, DropBox, FileName, Folder, committed_sha256};
use handoff::config::live::LiveConfig;
use handoff::keys::MasterKey;
use handoff::seal::at_rest::{self, AtRestReader};
use handoff::state::StateLayout;
use sha2::{Digest, Sha256};
use support::TestConfig;

const CLINIC: &str = "clinic-1312345679";

struct Fixture {
    tc: TestConfig,
    layout: StateLayout,
    live: Arc<LiveConfig>,
    master: Arc<MasterKey>,
}

fn fixture(edit: impl FnOnce(String) -> String) -> Fixture {
    let tc = TestConfig::with(edit);
    let live = LiveConfig::load(&tc.path).unwrap();
    let layout = StateLayout::new(tc.state_dir());
    layout.create(&live.snapshot().config).unwrap();
    let master = handoff::keys::load_master_key(&live.snapshot().config.gateway.master_key)
        .expect("master key");
    Fixture {
        tc,
        layout,
        live,
        master: Arc::new(master),
    }
}

impl Fixture {
    fn open(&self, account: &str, owner: &str) -> Result<DropBox, BoxError> {
        DropBox::open(
            &self.layout,
            None,
            &self.live.snapshot(),
            &self.master,
            &support::account(account),
            &support::counterpart(owner),
            handoff::events::Channel::Sftp,
        )
    }

    /// What a file waiting in the inbox holds, opened with the master key; fails the test if
    /// its bytes on disk are not sealed.
    fn read_inbox(&self, file: &str) -> Vec<u8> {
        let path = self.layout.inbox(&support::counterpart(CLINIC)).join(file);
        assert!(
            at_rest::is_sealed_upload(&self.master, &fs::File::open(&path).unwrap()),
            "{file} is not sealed on disk"
        );
        let mut plain = Vec::new();
        AtRestReader::new(&self.master, "any file id", fs::File::open(&path).unwrap())
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        plain
    }
}

fn name(s: &str) -> FileName {
    FileName::new(s).unwrap()
}

#[test]
fn committed_upload_appears_in_inbox_and_staging_is_empty() {
    let f = fixture(|t| t);
    let b = f.open(CLINIC, CLINIC).unwrap();
    let mut up = b.begin_upload(name("a.zip")).unwrap();
    up.write_at(5, b"world").unwrap();
    up.write_at(0, b"hello").unwrap();
    assert!(
        b.list(Folder::Inbox).unwrap().is_empty(),
        "not visible before commit"
    );
    let committed = up.commit().unwrap();
    assert_eq!(
        committed.event,
        BoxEvent::Uploaded {
            account: support::counterpart(CLINIC),
            actor: support::account(CLINIC),
            name: name("a.zip")
        }
    );
    assert_eq!(f.read_inbox("a.zip"), b"helloworld");
    // The upload carries the SHA-256 of what was uploaded, for the accept.
    let sha = hex::encode(Sha256::digest(b"helloworld"));
    assert_eq!(committed.sha256, sha);
    let waiting =
        fs::File::open(f.layout.inbox(&support::counterpart(CLINIC)).join("a.zip")).unwrap();
    assert_eq!(committed_sha256(&waiting), Some(sha));
    assert_eq!(
        fs::read_dir(f.layout.staging(&support::account(CLINIC)))
            .unwrap()
            .count(),
        0
    );
    let listed = b.list(Folder::Inbox).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, 10);
}

#[test]
fn dropped_upload_leaves_nothing() {
    let f = fixture(|t| t);
    let b = f.open(CLINIC, CLINIC).unwrap();
    let mut up = b.begin_upload(name("a.zip")).unwrap();
    up.append(b"partial").unwrap();
    assert_eq!(
        fs::read_dir(f.layout.staging(&support::account(CLINIC)))
            .unwrap()
            .count(),
        1
    );
    drop(up);
    assert_eq!(
        fs::read_dir(f.layout.staging(&support::account(CLINIC)))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        fs::read_dir(f.layout.inbox(&support::counterpart(CLINIC)))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn upload_never_replaces_a_waiting_file() {
    let f = fixture(|t| t);
    let b = f.open(CLINIC, CLINIC).unwrap();
    let mut first = b.begin_upload(name("a.zip")).unwrap();
    let mut second = b.begin_upload(name("a.zip")).unwrap();
    first.append(b"first").unwrap();
    second.append(b"second").unwrap();
    first.commit().unwrap();
    assert!(matches!(second.commit(), Err(BoxError::NameTaken)));
    assert_eq!(f.read_inbox("a.zip"), b"first");
    assert!(matches!(
        b.begin_upload(name("a.zip")),
        Err(BoxError::NameTaken)
    ));
}

#[test]
fn empty_and_oversized_uploads_are_refused() {
    let f = fixture(|t| t.replace("max_upload_size = \"500 MiB\"", "max_upload_size = 10"));
    let b = f.open(CLINIC, CLINIC).unwrap();
    assert!(matches!(
        b.begin_upload(name("e.zip")).unwrap().commit(),
        Err(BoxError::Empty)
    ));
    let small = f.open("clinic-2717654327", "clinic-2717654327").unwrap();
    let mut up = small.begin_upload(name("big.zip")).unwrap();
    up.append(b"0123456789").unwrap();
    assert!(matches!(
        up.append(b"x"),
        Err(BoxError::TooLarge { limit: 10 })
    ));
    assert!(matches!(
        up.write_at(u64::MAX - 1, b"xx"),
        Err(BoxError::TooLarge { .. })
    ));
}

#[test]
fn folders_allow_only_their_operations() {
    let f = fixture(|t| t);
    let b = f.open(CLINIC, CLINIC).unwrap();
    let mut up = b.begin_upload(name("a.zip")).unwrap();
    up.append(b"x").unwrap();
    up.commit().unwrap();
    assert!(matches!(
        b.open_read(Folder::Inbox, &name("a.zip")),
        Err(BoxError::PermissionDenied(_))
    ));
    assert!(matches!(
        b.acknowledge(Folder::Inbox, &name("a.zip")),
        Err(BoxError::PermissionDenied(_))
    ));
    fs::write(
        f.layout
            .receipts(&support::counterpart(CLINIC))
            .join("r.json"),
        b"{}",
    )
    .unwrap();
    assert!(matches!(
        b.acknowledge(Folder::Receipts, &name("r.json")),
        Err(BoxError::PermissionDenied(_))
    ));
    fs::write(
        f.layout.outbox(&support::counterpart(CLINIC)).join("o.p7m"),
        b"sealed",
    )
    .unwrap();
    let (_, entry) = b.open_read(Folder::Outbox, &name("o.p7m")).unwrap();
    assert_eq!(entry.size, 6);
    b.acknowledge(Folder::Outbox, &name("o.p7m")).unwrap();
    assert!(
        !f.layout
            .outbox(&support::counterpart(CLINIC))
            .join("o.p7m")
            .exists()
    );
}

#[test]
fn planted_symlinks_are_never_followed() {
    let f = fixture(|t| t);
    let secret = f.tc.dir.path().join("secret.txt");
    fs::write(&secret, b"outside the box").unwrap();
    std::os::unix::fs::symlink(
        &secret,
        f.layout.outbox(&support::counterpart(CLINIC)).join("link"),
    )
    .unwrap();
    let b = f.open(CLINIC, CLINIC).unwrap();
    assert!(b.open_read(Folder::Outbox, &name("link")).is_err());
    assert!(
        b.list(Folder::Outbox).unwrap().is_empty(),
        "symlinks are not listed"
    );
    assert!(matches!(
        b.stat(Folder::Outbox, &name("link")),
        Err(BoxError::NotFound)
    ));
    assert!(matches!(
        b.acknowledge(Folder::Outbox, &name("link")),
        Err(BoxError::NotFound)
    ));
    assert_eq!(fs::read(&secret).unwrap(), b"outside the box");
}

#[test]
fn accounts_open_only_boxes_in_their_scope() {
    let f = fixture(|t| t);
    assert!(matches!(
        f.open(CLINIC, "insurer-06130017"),
        Err(BoxError::NoBox(_))
    ));
    // The maintainer's scope names the clinic; its access is read-only.
    let m = f.open("m.sato", CLINIC).unwrap();
    assert!(matches!(
        m.begin_upload(name("x.zip")),
        Err(BoxError::PermissionDenied(_))
    ));
    assert!(matches!(
        f.open("m.sato", "insurer-06130017"),
        Err(BoxError::NoBox(_))
    ));
    assert!(matches!(f.open("nobody", CLINIC), Err(BoxError::NoBox(_))));
}

#[test]
fn state_directories_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture(|t| t);
    for d in [
        f.layout.root().to_path_buf(),
        f.layout.inbox(&support::counterpart(CLINIC)),
        f.layout.spool(),
        f.layout.staging(&support::account(CLINIC)),
    ] {
        let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
}

/// Deterministic bytes that differ at every offset, so a misplaced piece changes the file.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect()
}

fn commit_and_read(f: &Fixture, up: handoff::boxes::Upload, file: &str) -> Vec<u8> {
    up.commit().unwrap();
    f.read_inbox(file)
}

#[test]
fn large_upload_in_odd_pieces_arrives_intact() {
    // Past 8 MiB an upload's sequential body is written with direct I/O in aligned blocks; the
    // pieces here never line up with those blocks.
    let f = fixture(|t| t);
    let b = f.open(CLINIC, CLINIC).unwrap();
    let data = pattern((20 << 20) + 777);
    let mut up = b.begin_upload(name("big.zip")).unwrap();
    for piece in data.chunks(12_345) {
        up.append(piece).unwrap();
    }
    assert_eq!(up.size(), data.len() as u64);
    assert!(commit_and_read(&f, up, "big.zip") == data);
}

#[test]
fn large_upload_out_of_order_arrives_intact() {
    let f = fixture(|t| t);
    let b = f.open(CLINIC, CLINIC).unwrap();
    let data = pattern(24 << 20);
    let mib = 1 << 20;
    let mut up = b.begin_upload(name("big.zip")).unwrap();
    for piece in data[..12 * mib].chunks(261_120).enumerate() {
        up.write_at((piece.0 * 261_120) as u64, piece.1).unwrap();
    }
    // Pieces ahead of a gap, in reverse order, then the gap filled, then the rest in order.
    up.write_at((15 * mib) as u64, &data[15 * mib..17 * mib])
        .unwrap();
    up.write_at((13 * mib) as u64, &data[13 * mib..15 * mib])
        .unwrap();
    assert_eq!(up.size(), (17 * mib) as u64);
    up.write_at((12 * mib) as u64, &data[12 * mib..13 * mib])
        .unwrap();
    for (i, piece) in data[17 * mib..].chunks(100_000).enumerate() {
        up.write_at((17 * mib + i * 100_000) as u64, piece).unwrap();
    }
    assert!(commit_and_read(&f, up, "big.zip") == data);
}

#[test]
fn rewrites_gaps_and_too_much_ahead_are_refused() {
    let f = fixture(|t| t);
    let b = f.open(CLINIC, CLINIC).unwrap();
    let mut up = b.begin_upload(name("a.zip")).unwrap();
    up.write_at(0, b"0123456789").unwrap();
    up.write_at(20, b"abcdefghij").unwrap();
    // Bytes already written, or overlapping a piece waiting ahead of the gap.
    for (offset, data) in [(5u64, &b"xx"[..]), (25, b"xx"), (18, b"xxxx"), (20, b"y")] {
        assert!(
            matches!(up.write_at(offset, data), Err(BoxError::OutOfOrder(_))),
            "rewrite at {offset} accepted"
        );
    }
    // The gap is still open at commit.
    assert!(matches!(up.commit(), Err(BoxError::OutOfOrder(_))));
    assert_eq!(
        fs::read_dir(f.layout.inbox(&support::counterpart(CLINIC)))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        fs::read_dir(f.layout.staging(&support::account(CLINIC)))
            .unwrap()
            .count(),
        0
    );

    // Held ahead of a gap: at most 16 MiB.
    let mut up = b.begin_upload(name("b.zip")).unwrap();
    let piece = vec![7u8; 4 << 20];
    for i in 0..4u64 {
        up.write_at(1 + i * (4 << 20), &piece).unwrap();
    }
    assert!(matches!(
        up.write_at(1 + (16 << 20), &piece),
        Err(BoxError::OutOfOrder(_))
    ));
}

#[test]
fn uploads_never_reach_the_disk_in_plaintext() {
    let f = fixture(|t| t);
    let b = f.open(CLINIC, CLINIC).unwrap();
    // A recognisable text, repeated past the part an upload keeps in memory before writing.
    let marker = b"<patient>Yamada Taro 1970-01-01</patient>";
    let data: Vec<u8> = marker.iter().copied().cycle().take(3 << 20).collect();
    let mut up = b.begin_upload(name("c.zip")).unwrap();
    for piece in data.chunks(32_768) {
        up.append(piece).unwrap();
    }
    let staged: Vec<_> = fs::read_dir(f.layout.staging(&support::account(CLINIC)))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(staged.len(), 1);
    let partial = fs::read(&staged[0]).unwrap();
    assert!(partial.len() >= 2 << 20, "the partial file was written");
    let contains = |hay: &[u8]| hay.windows(marker.len()).any(|w| w == marker);
    assert!(!contains(&partial), "plaintext in the partial upload");
    up.commit().unwrap();
    let waiting = fs::read(f.layout.inbox(&support::counterpart(CLINIC)).join("c.zip")).unwrap();
    assert!(!contains(&waiting), "plaintext in the inbox");
    assert!(f.read_inbox("c.zip") == data);
    // Listings show the size that was uploaded, not the sealed one.
    assert_eq!(b.list(Folder::Inbox).unwrap()[0].size, data.len() as u64);
    assert_eq!(
        b.stat(Folder::Inbox, &name("c.zip")).unwrap().size,
        data.len() as u64
    );
}

#[test]
fn large_upload_bypasses_the_page_cache() {
    let f = fixture(|t| t);
    let b = f.open(CLINIC, CLINIC).unwrap();
    let data = pattern(24 << 20);
    let mut up = b.begin_upload(name("big.zip")).unwrap();
    for piece in data.chunks(65_536) {
        up.append(piece).unwrap();
    }
    up.commit().unwrap();
    let path = f
        .layout
        .inbox(&support::counterpart(CLINIC))
        .join("big.zip");
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(&path)
        .output()
        .expect("fincore (util-linux) runs");
    let resident: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    // The first 8 MiB go through the page cache; the 16 MiB after them must not.
    assert!(
        resident <= 9 << 20,
        "{resident} bytes of a 24 MiB upload are in the page cache"
    );
}

#[tokio::test]
async fn the_upload_writer_reports_errors_later_and_discards_when_dropped() {
    use bytes::Bytes;
    use handoff::boxes::Writers;

    let f = fixture(|t| t);
    let b = f.open(CLINIC, CLINIC).unwrap();
    let writers = Writers::new(2, 64 << 20, 128 << 20, Default::default()).unwrap();
    let data = pattern(3 << 20);
    let mut w = writers.spawn(b.begin_upload(name("w.zip")).unwrap());
    let (head, tail) = data.split_at(1 << 20);
    w.write_at(1 << 20, vec![Bytes::copy_from_slice(tail)])
        .await
        .unwrap();
    w.write_at(0, vec![Bytes::copy_from_slice(head)])
        .await
        .unwrap();
    assert_eq!(w.size(), data.len() as u64);
    w.rename(name("renamed.zip"));
    w.commit().await.unwrap();
    assert!(f.read_inbox("renamed.zip") == data);

    // A rewrite is refused by the writer's thread: the answer comes from a later call.
    let mut w = writers.spawn(b.begin_upload(name("x.zip")).unwrap());
    w.append(vec![Bytes::from_static(b"0123456789")])
        .await
        .unwrap();
    let _ = w.write_at(2, vec![Bytes::from_static(b"xx")]).await;
    let mut refused = None;
    for _ in 0..20 {
        if let Err(e) = w.append(vec![Bytes::from_static(b"more")]).await {
            refused = Some(e);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        matches!(refused, Some(BoxError::OutOfOrder(_))),
        "{refused:?}"
    );
    drop(w);

    // Dropped before finishing: nothing is left in staging or the inbox.
    let mut w = writers.spawn(b.begin_upload(name("y.zip")).unwrap());
    w.append(vec![Bytes::from_static(b"partial")])
        .await
        .unwrap();
    drop(w);
    let staging = f.layout.staging(&support::account(CLINIC));
    let emptied = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::read_dir(&staging).unwrap().count() == 0
    });
    assert!(emptied, "a dropped upload's partial file stayed");
    assert!(
        !f.layout
            .inbox(&support::counterpart(CLINIC))
            .join("y.zip")
            .exists()
    );
    assert!(
        !f.layout
            .inbox(&support::counterpart(CLINIC))
            .join("x.zip")
            .exists()
    );
}

#[tokio::test]
async fn data_written_ahead_of_gaps_is_held_within_the_accounts_budget() {
    use bytes::Bytes;
    use handoff::boxes::Writers;

    let f = fixture(|t| t);
    let b = f.open(CLINIC, CLINIC).unwrap();
    let writers = Writers::new(1, 1 << 20, 4 << 20, Default::default()).unwrap();
    let piece = || vec![Bytes::from(vec![7u8; 256 << 10])];
    let mut first = writers.spawn(b.begin_upload(name("p.zip")).unwrap());
    let mut second = writers.spawn(b.begin_upload(name("q.zip")).unwrap());
    for i in 1..4u64 {
        first.write_at(i << 18, piece()).await.unwrap();
    }
    second.write_at(1 << 18, piece()).await.unwrap();
    // The account's 1 MiB is taken; one more piece ahead of a gap is refused.
    second.write_at(2 << 18, piece()).await.unwrap();
    let refused = second.commit().await;
    assert!(
        matches!(refused, Err(BoxError::Buffered { limit, .. }) if limit == 1 << 20),
        "{refused:?}"
    );
    assert_eq!(
        writers.buffered(&support::account(CLINIC)),
        3 << 18,
        "the refused upload gave its part back"
    );
    first.write_at(0, piece()).await.unwrap();
    first.commit().await.unwrap();
    assert_eq!(writers.buffered(&support::account(CLINIC)), 0);
    assert_eq!(writers.buffered_total(), 0);
    assert_eq!(f.read_inbox("p.zip").len(), 1 << 20);
}
