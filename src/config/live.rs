//! The config in force, and how it changes while the daemon runs.
//!
//! Readers take a cheap [`Snapshot`] (an `Arc`) and never see half a reload. A reload validates
//! the whole new file first; an invalid file is refused and the old config stays in force. Each
//! reload, and each `expires` passing, publishes [`AccountEvent`]s that transports use to close
//! sessions.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Config, ConfigError, Diagnostic, Loaded, load};
use crate::accounts::{self, AccountChange, AccountEvent, AccountId, Directory};
use crate::error::Chain;
use crate::sync::Recover;

/// One validated config together with the accounts derived from it.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub accounts: Directory,
    pub warnings: Vec<Diagnostic>,
}

impl From<Loaded> for Snapshot {
    fn from(l: Loaded) -> Self {
        Snapshot {
            accounts: Directory::from_config(&l.config),
            config: l.config,
            warnings: l.warnings,
        }
    }
}

/// How often expiry is checked: well inside the one second a removed account may live on.
const EXPIRY_TICK: Duration = Duration::from_millis(200);
/// Editors write a file in several steps; wait for the burst to end before reading it.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(150);

pub struct LiveConfig {
    path: PathBuf,
    current: ArcSwap<Snapshot>,
    events: broadcast::Sender<AccountEvent>,
    /// Accounts whose expiry has been announced, so it is announced once.
    expired: Mutex<HashSet<AccountId>>,
    /// Serialises reloads from the watcher, SIGHUP and callers.
    reloading: Mutex<()>,
}

impl LiveConfig {
    pub fn load(path: &Path) -> Result<Arc<LiveConfig>, ConfigError> {
        let loaded = load(path)?;
        Ok(Arc::new(LiveConfig::new(path, loaded.into())))
    }

    pub fn new(path: &Path, snapshot: Snapshot) -> LiveConfig {
        let now = OffsetDateTime::now_utc();
        let expired = snapshot
            .accounts
            .iter()
            .filter(|a| a.expires.is_some_and(|t| t <= now))
            .map(|a| a.id.clone())
            .collect();
        LiveConfig {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(snapshot),
            events: broadcast::channel(1024).0,
            expired: Mutex::new(expired),
            reloading: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The config in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The limits in force now (`[gateway.limits]`), as a reload may have changed them.
    pub fn limits(&self) -> super::Limits {
        self.current.load().config.gateway.limits.clone()
    }

    /// Account events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AccountEvent> {
        self.events.subscribe()
    }

    /// Reads and validates the file again; swaps it in only if it is valid as a whole.
    pub fn reload(&self) -> Result<Vec<AccountEvent>, ConfigError> {
        let _guard = self.reloading.locked();
        let new: Snapshot = load(&self.path)?.into();
        let old = self.current.load_full();
        let events = accounts::diff(&old.accounts, &new.accounts);
        {
            let mut expired = self.expired.locked();
            // Forget accounts that are gone or whose expiry moved; the tick re-announces them.
            for e in &events {
                if e.change.ends_sessions() {
                    expired.remove(&e.account);
                }
            }
        }
        self.current.store(Arc::new(new));
        for e in &events {
            tracing::info!(account = %e.account, change = %e.change, "account changed by reload");
            let _ = self.events.send(e.clone());
        }
        // An account already past its expiry in the new file is announced at once.
        self.check_expiry(OffsetDateTime::now_utc());
        Ok(events)
    }

    /// Announces every account whose `expires` has passed at `now` and was not announced yet.
    pub fn check_expiry(&self, now: OffsetDateTime) -> Vec<AccountEvent> {
        let snap = self.snapshot();
        let mut expired = self.expired.locked();
        let mut events = Vec::new();
        for a in snap.accounts.iter() {
            if a.expires.is_some_and(|t| t <= now) && expired.insert(a.id.clone()) {
                let e = AccountEvent {
                    account: a.id.clone(),
                    change: AccountChange::Expired,
                };
                tracing::warn!(account = %a.id, "account expired");
                let _ = self.events.send(e.clone());
                events.push(e);
            }
        }
        events
    }

    /// Keeps the config current until `shutdown`: reloads when the file changes or on SIGHUP,
    /// and announces expiries as they happen. The file watch and the SIGHUP listener are set up
    /// when this is called, not when the returned future first runs, so a change or a SIGHUP
    /// right after the daemon reports ready is not lost.
    pub fn run(
        self: Arc<Self>,
        audit: crate::audit::Audit,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (tx, mut changed) = mpsc::channel::<()>(1);
        let watcher = match self.watch_file(tx) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, file = %self.path.display(), "cannot watch the config file; reload with SIGHUP");
                None
            }
        };
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP");
                None
            }
        };
        async move {
            // Moved in: the watch lasts as long as the task.
            let _watcher = watcher;
            let mut tick = tokio::time::interval(EXPIRY_TICK);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => { self.check_expiry(OffsetDateTime::now_utc()); }
                    Some(()) = changed.recv() => {
                        tokio::time::sleep(WATCH_DEBOUNCE).await;
                        while changed.try_recv().is_ok() {}
                        self.reload_logged("file changed", &audit);
                    }
                    Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                        self.reload_logged("SIGHUP", &audit);
                    }
                }
            }
        }
    }

    fn reload_logged(&self, trigger: &str, audit: &crate::audit::Audit) {
        match self.reload() {
            Ok(events) => {
                tracing::info!(trigger, changes = events.len(), "config reloaded");
                let changes: Vec<_> = events
                    .iter()
                    .map(|e| serde_json::json!({"account": e.account, "change": e.change.to_string()}))
                    .collect();
                audit.record(
                    crate::audit::Event::ConfigReloaded,
                    None,
                    None,
                    serde_json::json!({"trigger": trigger, "changes": changes}),
                );
            }
            Err(e) => {
                tracing::error!(trigger, error = %Chain(&e), "config refused; the previous config stays in force");
                audit.record(
                    crate::audit::Event::ConfigRefused,
                    None,
                    None,
                    serde_json::json!({"trigger": trigger, "error": Chain(&e).to_string()}),
                );
            }
        }
    }

    /// Watches the directory, not the file: editors and config management replace the file by
    /// renaming a new one over it, which a watch on the old inode would miss.
    fn watch_file(&self, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
        use notify::Watcher;
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let name = self.path.file_name().map(|n| n.to_os_string());
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if let Ok(ev) = res {
                    let ours = ev
                        .paths
                        .iter()
                        .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
                    if ours && (ev.kind.is_modify() || ev.kind.is_create()) {
                        let _ = tx.try_send(());
                    }
                }
            })?;
        watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        Ok(watcher)
    }
}
