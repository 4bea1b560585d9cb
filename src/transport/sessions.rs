//! Live sessions by account, so that a removed, expired or changed account is cut off within a
//! second whatever transport it is connected over.
//!
//! Each transport registers a session after authentication and holds the returned
//! [`SessionGuard`]; its cancellation token fires when the account is revoked. Dropping the
//! guard unregisters the session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::accounts::AccountEvent;
use crate::sync::Recover;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("account {account} already has {max} sessions")]
pub struct TooManySessions {
    pub account: String,
    pub max: u32,
}

#[derive(Default)]
pub struct SessionRegistry {
    live: Mutex<HashMap<String, HashMap<u64, CancellationToken>>>,
    next_id: AtomicU64,
}

impl SessionRegistry {
    pub fn new() -> Arc<SessionRegistry> {
        Arc::new(SessionRegistry::default())
    }

    /// Registers a session of `account`, unless it already has `max` sessions.
    pub fn register(
        self: &Arc<Self>,
        account: &str,
        max: u32,
    ) -> Result<SessionGuard, TooManySessions> {
        let mut live = self.live.locked();
        let sessions = live.entry(account.to_owned()).or_default();
        if sessions.len() >= max as usize {
            return Err(TooManySessions {
                account: account.to_owned(),
                max,
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        sessions.insert(id, token.clone());
        Ok(SessionGuard {
            registry: self.clone(),
            account: account.to_owned(),
            id,
            token,
        })
    }

    /// Cancels every session of `account`; returns how many there were.
    pub fn revoke(&self, account: &str) -> usize {
        let live = self.live.locked();
        let Some(sessions) = live.get(account) else {
            return 0;
        };
        for t in sessions.values() {
            t.cancel();
        }
        sessions.len()
    }

    /// Sessions of `account` now.
    pub fn count(&self, account: &str) -> usize {
        let live = self.live.locked();
        live.get(account).map_or(0, HashMap::len)
    }

    /// Total live sessions.
    pub fn total(&self) -> usize {
        let live = self.live.locked();
        live.values().map(HashMap::len).sum()
    }

    /// Revokes sessions as account events arrive, until `shutdown`.
    pub async fn enforce(
        self: Arc<Self>,
        mut events: broadcast::Receiver<AccountEvent>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = events.recv() => match ev {
                    Ok(ev) if ev.change.ends_sessions() => {
                        let n = self.revoke(&ev.account);
                        if n > 0 {
                            tracing::warn!(account = %ev.account, change = %ev.change, sessions = n, "closing sessions of revoked account");
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::error!(missed = n, "account events lagged; closing every session to be safe");
                        let live = self.live.locked();
                        live.values().flat_map(HashMap::values).for_each(CancellationToken::cancel);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }
}

/// A registered session; its token is cancelled when the account is revoked.
pub struct SessionGuard {
    registry: Arc<SessionRegistry>,
    account: String,
    id: u64,
    token: CancellationToken,
}

impl SessionGuard {
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    pub fn account(&self) -> &str {
        &self.account
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut live = self.registry.live.locked();
        if let Some(sessions) = live.get_mut(&self.account) {
            sessions.remove(&self.id);
            if sessions.is_empty() {
                live.remove(&self.account);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{AccountChange, AccountId};

    #[tokio::test]
    async fn revocation_cancels_only_that_accounts_sessions() {
        let reg = SessionRegistry::new();
        let a1 = reg.register("a", 2).unwrap();
        let _a2 = reg.register("a", 2).unwrap();
        assert!(reg.register("a", 2).is_err(), "max sessions enforced");
        let b = reg.register("b", 2).unwrap();
        let (tx, rx) = broadcast::channel(4);
        let shutdown = CancellationToken::new();
        tokio::spawn(reg.clone().enforce(rx, shutdown.clone()));
        tx.send(AccountEvent {
            account: AccountId::new("a").unwrap(),
            change: AccountChange::Removed,
        })
        .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), a1.token().cancelled())
            .await
            .expect("cancelled within 1 s");
        assert!(!b.token().is_cancelled());
        drop(a1);
        assert_eq!(reg.count("a"), 1);
        shutdown.cancel();
    }
}
