//! One use disables a break-glass account: the first login under an entry of the config is
//! recorded in the state directory (`STATE/break-glass/<id>.json`, fsynced before the login is
//! let in), and from then on the account may log in only while that use's session is still
//! open and within `max_session`. A restart keeps the record, so it does not re-enable the
//! account; a changed entry (its fingerprint, [`crate::config::BreakGlass::fingerprint`]) does.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::state::{StateLayout, private_dir};

/// What is kept of one use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Use {
    /// The fingerprint of the config entry the use was made under.
    fingerprint: String,
    /// Unix seconds of the first login of the use.
    first_login: i64,
}

/// The recorded uses of break-glass accounts.
#[derive(Debug, Clone)]
pub struct Uses {
    dir: PathBuf,
}

impl Uses {
    pub fn new(layout: &StateLayout) -> Uses {
        Uses {
            dir: layout.root().join("break-glass"),
        }
    }

    fn path(&self, id: &str) -> PathBuf {
        // Account ids are [a-z0-9._-] and start with a letter or digit: a plain file name.
        self.dir.join(format!("{id}.json"))
    }

    /// When the use of `id` under the entry with `fingerprint` began, if it has been used.
    /// An unreadable record counts as a use (fail closed).
    pub fn first_login(&self, id: &str, fingerprint: &str) -> io::Result<Option<OffsetDateTime>> {
        let bytes = match fs::read(self.path(id)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let used: Use = serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if used.fingerprint != fingerprint {
            return Ok(None);
        }
        OffsetDateTime::from_unix_timestamp(used.first_login)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Records the first login of a use, durably.
    pub fn record(&self, id: &str, fingerprint: &str, at: OffsetDateTime) -> io::Result<()> {
        private_dir(&self.dir)?;
        let body = serde_json::to_vec(&Use {
            fingerprint: fingerprint.to_owned(),
            first_login: at.unix_timestamp(),
        })
        .map_err(io::Error::other)?;
        let tmp = self.dir.join(format!(".{id}.json.tmp"));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        fs::rename(&tmp, self.path(id))?;
        fs::File::open(&self.dir)?.sync_all()
    }
}

/// Whether a login may begin now: a fresh entry, or the use in progress (a session of it still
/// open, within `max_session` of its first login).
pub fn may_log_in(
    first_login: Option<OffsetDateTime>,
    open_sessions: usize,
    max_session: std::time::Duration,
    now: OffsetDateTime,
) -> bool {
    match first_login {
        None => true,
        Some(first) => open_sessions > 0 && now < first + max_session,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_use_disables_until_the_entry_changes_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = StateLayout::new(dir.path());
        let uses = Uses::new(&layout);
        let now = OffsetDateTime::now_utc();
        assert_eq!(uses.first_login("emergency", "a").expect("read"), None);
        uses.record("emergency", "a", now).expect("record");
        let again = Uses::new(&layout);
        let first = again.first_login("emergency", "a").expect("read");
        assert_eq!(
            first.map(|t| t.unix_timestamp()),
            Some(now.unix_timestamp())
        );
        assert_eq!(again.first_login("emergency", "b").expect("read"), None);
        let hour = std::time::Duration::from_secs(3600);
        assert!(may_log_in(first, 1, hour, now));
        assert!(!may_log_in(first, 0, hour, now), "the session ended");
        assert!(
            !may_log_in(first, 1, hour, now + hour),
            "max_session passed"
        );
        assert!(may_log_in(None, 0, hour, now));
        std::fs::write(dir.path().join("break-glass/emergency.json"), b"{").expect("write");
        assert!(again.first_login("emergency", "a").is_err(), "fail closed");
    }
}
