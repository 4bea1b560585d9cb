//! The state directory: where every file the gateway holds lives. Created at start-up with mode
//! 0700 throughout; documented in docs/state-layout.md.
//!
//! ```text
//! STATE/
//!   boxes/<counterpart>/inbox/     completed uploads waiting to be accepted (the hand-off point)
//!   boxes/<counterpart>/outbox/    sealed files for the counterpart
//!   boxes/<counterpart>/receipts/  receipts of files it sent or received
//!   staging/<account>/             partial uploads, never seen by the pipeline
//!   spool/                         accepted files, encrypted at rest
//!   quarantine/                    infected files, encrypted at rest
//!   store/                         the durable job store
//!   audit/                         the hash-chained audit log
//!   bans/                          the ban list (bans.json) and unban requests (unban/)
//! ```

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::accounts::{AccountId, CounterpartId};
use crate::config::Config;

/// Why the state directory could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// A second daemon on the same state directory would accept, deliver and receipt the same
    /// files twice and fork the receipt chain.
    #[error(
        "the state directory {} is in use by another handoff serve{}: one gateway per state directory",
        .path.display(),
        .holder.as_deref().map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse {
        path: PathBuf,
        holder: Option<String>,
    },
    #[error("locking the state directory ({})", .0.display())]
    Io(PathBuf, #[source] io::Error),
}

/// The three folders of every box.
pub const BOX_FOLDERS: [&str; 3] = ["inbox", "outbox", "receipts"];

#[derive(Debug, Clone)]
pub struct StateLayout {
    root: PathBuf,
}

impl StateLayout {
    pub fn new(root: impl Into<PathBuf>) -> StateLayout {
        StateLayout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn boxes(&self) -> PathBuf {
        self.root.join("boxes")
    }

    /// The box of one counterpart.
    pub fn box_dir(&self, counterpart: &CounterpartId) -> PathBuf {
        // A checked id is one safe folder name.
        self.boxes().join(counterpart.as_str())
    }

    pub fn inbox(&self, counterpart: &CounterpartId) -> PathBuf {
        self.box_dir(counterpart).join("inbox")
    }

    pub fn outbox(&self, counterpart: &CounterpartId) -> PathBuf {
        self.box_dir(counterpart).join("outbox")
    }

    pub fn receipts(&self, counterpart: &CounterpartId) -> PathBuf {
        self.box_dir(counterpart).join("receipts")
    }

    /// Partial uploads of one account.
    pub fn staging(&self, account: &AccountId) -> PathBuf {
        self.root.join("staging").join(account.as_str())
    }

    pub fn spool(&self) -> PathBuf {
        self.root.join("spool")
    }

    pub fn quarantine(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }

    /// The receipt ledger (SQLite), beside the job store.
    pub fn receipt_ledger(&self) -> PathBuf {
        self.store().join("receipts.db")
    }

    pub fn audit(&self) -> PathBuf {
        self.root.join("audit")
    }

    /// The ban list the daemon mirrors its bans to, for `handoff bans`.
    pub fn ban_list(&self) -> PathBuf {
        self.root.join("bans").join("bans.json")
    }

    /// Where `handoff bans unban` leaves requests for the running daemon.
    pub fn unban_requests(&self) -> PathBuf {
        self.root.join("bans").join("unban")
    }

    /// The file `handoff serve` holds locked while it runs: one daemon per state directory.
    pub fn daemon_lock(&self) -> PathBuf {
        self.root.join("handoff.lock")
    }

    /// Takes the state directory for this process: an exclusive lock on `handoff.lock`, held
    /// until the returned file is dropped (at exit, or by the kernel when the process dies,
    /// `kill -9` included), with the pid written in it for the message of a second taker. The
    /// daemon holds it for its life; a command that must not run beside it takes it too.
    pub fn lock(&self) -> Result<fs::File, LockError> {
        use std::io::{Read, Seek, Write};
        let path = self.daemon_lock();
        let lock_err = |e| LockError::Io(path.clone(), e);
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(lock_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(LockError::InUse {
                    path: self.root.clone(),
                    holder: (!holder.is_empty() && holder.len() <= 16).then(|| holder.to_owned()),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(lock_err(e)),
        }
        file.set_len(0).map_err(lock_err)?;
        file.rewind().map_err(lock_err)?;
        writeln!(file, "{}", std::process::id()).map_err(lock_err)?;
        Ok(file)
    }

    /// Where `handoff export` leaves hand-over requests for the running daemon.
    pub fn export_requests(&self) -> PathBuf {
        self.root.join("requests").join("export")
    }

    /// Creates every directory the config needs, mode 0700, and tightens existing ones.
    /// Boxes of removed counterparts are left in place: their files are records.
    pub fn create(&self, config: &Config) -> io::Result<()> {
        let mut dirs = vec![
            self.root.clone(),
            self.boxes(),
            self.root.join("staging"),
            self.spool(),
            self.quarantine(),
            self.store(),
            self.audit(),
            self.root.join("bans"),
            self.unban_requests(),
            self.root.join("requests"),
            self.export_requests(),
        ];
        for c in &config.counterparts {
            dirs.push(self.box_dir(&c.id));
            dirs.extend(BOX_FOLDERS.iter().map(|f| self.box_dir(&c.id).join(f)));
            dirs.push(self.staging(&c.id.account()));
        }
        for d in dirs {
            private_dir(&d)?;
        }
        Ok(())
    }
}

/// Creates a directory with mode 0700, or sets that mode on an existing one.
pub fn private_dir(path: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}
