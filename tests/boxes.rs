//! The box layer both transports use: uploads are atomic, names cannot escape, symlinks are
//! never followed, and each folder allows only what DESIGN §2 says.

mod support;

use std::fs;

use handoff::boxes::{BoxError, BoxEvent, DropBox, FileName, Folder};
use handoff::config::live::LiveConfig;
use handoff::state::StateLayout;
use support::TestConfig;

const CLINIC: &str = "clinic-1312345676";

struct Fixture {
    tc: TestConfig,
    layout: StateLayout,
    live: std::sync::Arc<LiveConfig>,
}

fn fixture(edit: impl FnOnce(String) -> String) -> Fixture {
    let tc = TestConfig::with(edit);
    let live = LiveConfig::load(&tc.path).unwrap();
    let layout = StateLayout::new(tc.state_dir());
    layout.create(&live.snapshot().config).unwrap();
    Fixture { tc, layout, live }
}

impl Fixture {
    fn open(&self, account: &str, owner: &str) -> Result<DropBox, BoxError> {
        DropBox::open(&self.layout, &self.live.snapshot(), account, owner)
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
    let ev = up.commit().unwrap();
    assert_eq!(
        ev,
        BoxEvent::Uploaded {
            account: CLINIC.into(),
            name: name("a.zip")
        }
    );
    assert_eq!(
        fs::read(f.layout.inbox(CLINIC).join("a.zip")).unwrap(),
        b"helloworld"
    );
    assert_eq!(fs::read_dir(f.layout.staging(CLINIC)).unwrap().count(), 0);
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
    assert_eq!(fs::read_dir(f.layout.staging(CLINIC)).unwrap().count(), 1);
    drop(up);
    assert_eq!(fs::read_dir(f.layout.staging(CLINIC)).unwrap().count(), 0);
    assert_eq!(fs::read_dir(f.layout.inbox(CLINIC)).unwrap().count(), 0);
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
    assert_eq!(
        fs::read(f.layout.inbox(CLINIC).join("a.zip")).unwrap(),
        b"first"
    );
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
    let small = f.open("clinic-2717654320", "clinic-2717654320").unwrap();
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
    fs::write(f.layout.receipts(CLINIC).join("r.json"), b"{}").unwrap();
    assert!(matches!(
        b.acknowledge(Folder::Receipts, &name("r.json")),
        Err(BoxError::PermissionDenied(_))
    ));
    fs::write(f.layout.outbox(CLINIC).join("o.p7m"), b"sealed").unwrap();
    let (_, entry) = b.open_read(Folder::Outbox, &name("o.p7m")).unwrap();
    assert_eq!(entry.size, 6);
    b.acknowledge(Folder::Outbox, &name("o.p7m")).unwrap();
    assert!(!f.layout.outbox(CLINIC).join("o.p7m").exists());
}

#[test]
fn planted_symlinks_are_never_followed() {
    let f = fixture(|t| t);
    let secret = f.tc.dir.path().join("secret.txt");
    fs::write(&secret, b"outside the box").unwrap();
    std::os::unix::fs::symlink(&secret, f.layout.outbox(CLINIC).join("link")).unwrap();
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
        f.layout.inbox(CLINIC),
        f.layout.spool(),
        f.layout.staging(CLINIC),
    ] {
        let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
}
