//! The ban list outside the daemon: `handoff bans` reads it and `handoff bans unban` lifts a ban
//! on the running daemon, without a network port of its own.
//!
//! The daemon mirrors its bans to `STATE/bans/bans.json` whenever they change (written whole,
//! then renamed into place) and takes them over at start. An unban is a request file dropped
//! into `STATE/bans/unban/`: the daemon applies and removes it within a second, or at its next
//! start. Both live in the state directory (mode 0700), so only the gateway's own user can read
//! the list or lift a ban.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::limits::{BanKey, Source};

/// How often the daemon looks for unban requests.
const REQUEST_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum BanFileError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{file}")]
    Format {
        file: PathBuf,
        #[source]
        error: serde_json::Error,
    },
    #[error("{file}: bad source")]
    Source {
        file: PathBuf,
        #[source]
        error: super::limits::BadSource,
    },
}

/// One ban as listed: a source, or an account from a source, and its times (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanEntry {
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub since: u64,
    pub until: u64,
    /// The score (source) or failure count (account from source) that set the ban off.
    pub score: u32,
    #[serde(skip)]
    parsed: Option<Source>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl BanEntry {
    pub fn new(key: &BanKey, since: SystemTime, until: SystemTime, score: u32) -> BanEntry {
        BanEntry {
            source: key.source().to_string(),
            account: key.account().map(str::to_owned),
            since: unix(since),
            // Rounded up: the list never shows a ban ending before it does.
            until: unix(until) + 1,
            score,
            parsed: Some(key.source()),
        }
    }

    pub fn key(&self) -> BanKey {
        let source = self
            .parsed
            .or_else(|| self.source.parse().ok())
            .unwrap_or_else(|| Source::of(std::net::Ipv4Addr::UNSPECIFIED.into()));
        match &self.account {
            None => BanKey::Source(source),
            Some(a) => BanKey::AccountFrom {
                account: a.clone(),
                source,
            },
        }
    }

    pub fn since(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.since)
    }

    pub fn until(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.until)
    }
}

/// Reads a ban list; every source in it must parse.
pub fn read_list(path: &Path) -> Result<Vec<BanEntry>, BanFileError> {
    let text = std::fs::read(path)?;
    let mut list: Vec<BanEntry> =
        serde_json::from_slice(&text).map_err(|error| BanFileError::Format {
            file: path.to_owned(),
            error,
        })?;
    for e in &mut list {
        e.parsed = Some(e.source.parse().map_err(|error| BanFileError::Source {
            file: path.to_owned(),
            error,
        })?);
    }
    Ok(list)
}

/// Replaces the ban list at `path` whole (a reader never sees half a list).
pub fn write_list(path: &Path, list: &[BanEntry]) -> Result<(), BanFileError> {
    let tmp = path.with_extension("json.new");
    let text = serde_json::to_vec_pretty(list).map_err(|error| BanFileError::Format {
        file: path.to_owned(),
        error,
    })?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A request to lift the bans of a source (or of one account from it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnbanRequest {
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// Drops an unban request into `dir`; returns its path, which disappears once applied.
pub fn request_unban(dir: &Path, request: &UnbanRequest) -> Result<PathBuf, BanFileError> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| std::io::Error::other(e.to_string()))?;
    let name = hex::encode(nonce);
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(format!("{name}.json"));
    let text = serde_json::to_vec(request).map_err(|error| BanFileError::Format {
        file: path.clone(),
        error,
    })?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Applies the unban requests waiting in `dir` to the daemon's limiter, and removes them.
/// Requests that do not parse are removed too, with a warning.
pub fn apply_requests(services: &crate::services::Services, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let request = std::fs::read(&path)
            .ok()
            .and_then(|t| serde_json::from_slice::<UnbanRequest>(&t).ok())
            .and_then(|r| Some((r.source.parse::<Source>().ok()?, r.account)));
        match request {
            Some((source, account)) => {
                let lifted = services.limiter.unban(source, account.as_deref());
                services.audit.record(
                    crate::audit::Event::AuthUnban,
                    account.as_deref(),
                    None,
                    serde_json::json!({
                        "source": source.to_string(),
                        "lifted": lifted.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
                    }),
                );
            }
            None => {
                tracing::warn!(file = %path.display(), "ignoring an unban request that does not parse")
            }
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove an unban request");
        }
    }
}

/// Applies unban requests as they arrive, until `shutdown`.
pub async fn serve_requests(services: crate::services::Services, shutdown: CancellationToken) {
    let dir = services.layout.unban_requests();
    let mut tick = tokio::time::interval(REQUEST_POLL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = services.clone();
        let d = dir.clone();
        let _ = tokio::task::spawn_blocking(move || apply_requests(&s, &d)).await;
    }
}
