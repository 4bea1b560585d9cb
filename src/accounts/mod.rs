//! Who may log in: the accounts of every kind, derived from a validated config.
//!
//! Transports authenticate against a [`Directory`] and subscribe to [`AccountEvent`]s (from
//! [`crate::config::live`]) to close the sessions of accounts that were removed, expired or
//! changed while connected.

pub mod break_glass;
mod id;

pub use id::{AccountId, CounterpartId, IdError};

use std::collections::BTreeMap;
use std::fmt;

use time::OffsetDateTime;

use crate::config::{self, Access, Config, CounterpartKind};

/// What kind of account, and so what it may do (ARCHITECTURE.md, *Accounts*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Clinic,
    Insurer,
    Maintainer,
    BreakGlass,
    Noc,
    /// Carries files between media and boxes from the gateway's command line; never logs in.
    Operator,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Clinic => "clinic",
            Role::Insurer => "insurer",
            Role::Maintainer => "maintainer",
            Role::BreakGlass => "break_glass",
            Role::Noc => "noc",
            Role::Operator => "operator",
        })
    }
}

/// How a TLS client certificate is mapped to this account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertMatch {
    pub subject: Option<String>,
    /// Lower-case hex SHA-256 of the certificate's DER.
    pub fingerprint: Option<String>,
}

impl CertMatch {
    pub fn is_empty(&self) -> bool {
        self.subject.is_none() && self.fingerprint.is_none()
    }

    pub fn matches(&self, subject: &str, fingerprint_hex: &str) -> bool {
        self.fingerprint.as_deref() == Some(fingerprint_hex)
            || self.subject.as_deref() == Some(subject)
    }
}

/// One login identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub id: AccountId,
    pub role: Role,
    /// The institution or insurer number, for counterparts.
    pub number: Option<String>,
    pub ssh_keys: Vec<russh::keys::PublicKey>,
    pub password_hash: Option<String>,
    pub cert: CertMatch,
    pub expires: Option<OffsetDateTime>,
    /// False only for a break-glass account that is not switched on.
    pub enabled: bool,
    /// The counterpart boxes this account may open: its own for a counterpart, the granted
    /// scope for maintainers and break-glass.
    pub boxes: Vec<CounterpartId>,
    pub access: Access,
}

/// Why an account may not log in now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("account expired")]
    Expired,
    #[error("account disabled")]
    Disabled,
}

impl Account {
    pub fn check_active(&self, now: OffsetDateTime) -> Result<(), Refusal> {
        if !self.enabled {
            return Err(Refusal::Disabled);
        }
        match self.expires {
            Some(t) if t <= now => Err(Refusal::Expired),
            _ => Ok(()),
        }
    }

    /// Whether this account is a counterpart (has a box of its own).
    pub fn is_counterpart(&self) -> bool {
        matches!(self.role, Role::Clinic | Role::Insurer)
    }

    /// The authentication methods configured, for tables and logs.
    pub fn auth_methods(&self) -> Vec<String> {
        let mut m = Vec::new();
        if !self.ssh_keys.is_empty() {
            m.push(format!("ssh-key×{}", self.ssh_keys.len()));
        }
        if self.password_hash.is_some() {
            m.push("password".to_owned());
        }
        if !self.cert.is_empty() {
            m.push("certificate".to_owned());
        }
        m
    }
}

/// All accounts of one config, by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Directory {
    accounts: BTreeMap<AccountId, Account>,
}

fn parse_keys(lines: &[String]) -> Vec<russh::keys::PublicKey> {
    // Validation has refused unparsable keys; skipping here cannot widen access.
    lines
        .iter()
        .filter_map(|l| russh::keys::PublicKey::from_openssh(l.trim()).ok())
        .collect()
}

impl Directory {
    pub fn from_config(config: &Config) -> Directory {
        let zone = config.gateway.utc_offset();
        let expiry = |e: &toml::value::Datetime| config::expiry_instant(e, zone).ok();
        let mut accounts = BTreeMap::new();
        for c in &config.counterparts {
            accounts.insert(
                c.id.account(),
                Account {
                    id: c.id.account(),
                    role: match c.kind {
                        CounterpartKind::Clinic => Role::Clinic,
                        CounterpartKind::Insurer => Role::Insurer,
                    },
                    number: Some(c.number.to_string()),
                    ssh_keys: parse_keys(&c.ssh_keys),
                    password_hash: c.password_hash.clone(),
                    cert: CertMatch {
                        subject: c.cert_subject.clone(),
                        fingerprint: c
                            .cert_fingerprint
                            .as_deref()
                            .and_then(config::normalize_fingerprint),
                    },
                    expires: None,
                    enabled: true,
                    boxes: vec![c.id.clone()],
                    access: Access::ReadWrite,
                },
            );
        }
        for m in &config.maintainers {
            accounts.insert(
                m.id.clone(),
                Account {
                    id: m.id.clone(),
                    role: Role::Maintainer,
                    number: None,
                    ssh_keys: parse_keys(&m.ssh_keys),
                    password_hash: None,
                    cert: CertMatch::default(),
                    // An unreadable date was refused by validation; treat it as already past.
                    expires: Some(expiry(&m.expires).unwrap_or(OffsetDateTime::UNIX_EPOCH)),
                    enabled: true,
                    boxes: m.scope.clone(),
                    access: m.access,
                },
            );
        }
        for b in &config.break_glass {
            accounts.insert(
                b.id.clone(),
                Account {
                    id: b.id.clone(),
                    role: Role::BreakGlass,
                    number: None,
                    ssh_keys: parse_keys(&b.ssh_keys),
                    password_hash: None,
                    cert: CertMatch::default(),
                    expires: b.expires.as_ref().and_then(expiry),
                    enabled: b.enabled,
                    boxes: b.scope.clone(),
                    access: Access::ReadWrite,
                },
            );
        }
        for n in &config.noc {
            accounts.insert(
                n.id.clone(),
                Account {
                    id: n.id.clone(),
                    role: Role::Noc,
                    number: None,
                    ssh_keys: Vec::new(),
                    password_hash: None,
                    cert: CertMatch {
                        subject: n.cert_subject.clone(),
                        fingerprint: n
                            .cert_fingerprint
                            .as_deref()
                            .and_then(config::normalize_fingerprint),
                    },
                    expires: None,
                    enabled: true,
                    boxes: Vec::new(),
                    access: Access::Read,
                },
            );
        }
        for o in &config.operators {
            accounts.insert(
                o.id.clone(),
                Account {
                    id: o.id.clone(),
                    role: Role::Operator,
                    number: None,
                    ssh_keys: Vec::new(),
                    password_hash: None,
                    cert: CertMatch::default(),
                    // An unreadable date was refused by validation; treat it as already past.
                    expires: o
                        .expires
                        .as_ref()
                        .map(|e| expiry(e).unwrap_or(OffsetDateTime::UNIX_EPOCH)),
                    enabled: true,
                    boxes: match &o.scope {
                        Some(ids) => ids.clone(),
                        None => config.counterparts.iter().map(|c| c.id.clone()).collect(),
                    },
                    access: Access::ReadWrite,
                },
            );
        }
        Directory { accounts }
    }

    pub fn get(&self, id: &str) -> Option<&Account> {
        self.accounts.get(id)
    }

    /// The account a client certificate maps to, by fingerprint or subject.
    pub fn by_certificate(&self, subject: &str, fingerprint_hex: &str) -> Option<&Account> {
        self.accounts
            .values()
            .find(|a| a.cert.matches(subject, fingerprint_hex))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }
}

/// What happened to an account while the daemon ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountChange {
    Added,
    /// Gone from the config: close its sessions.
    Removed,
    /// Its credentials, scope or limits changed: close its sessions so new ones get the new rules.
    Changed,
    /// Its `expires` passed: close its sessions.
    Expired,
}

impl AccountChange {
    /// Whether live sessions of the account must be closed.
    pub fn ends_sessions(self) -> bool {
        !matches!(self, AccountChange::Added)
    }
}

impl fmt::Display for AccountChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccountChange::Added => "added",
            AccountChange::Removed => "removed",
            AccountChange::Changed => "changed",
            AccountChange::Expired => "expired",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountEvent {
    pub account: AccountId,
    pub change: AccountChange,
}

/// The account events that turn `old` into `new`.
pub fn diff(old: &Directory, new: &Directory) -> Vec<AccountEvent> {
    let mut events = Vec::new();
    for (id, a) in &old.accounts {
        match new.accounts.get(id) {
            None => events.push(AccountEvent {
                account: id.clone(),
                change: AccountChange::Removed,
            }),
            Some(b) if a != b => events.push(AccountEvent {
                account: id.clone(),
                change: AccountChange::Changed,
            }),
            Some(_) => {}
        }
    }
    for id in new.accounts.keys() {
        if !old.accounts.contains_key(id) {
            events.push(AccountEvent {
                account: id.clone(),
                change: AccountChange::Added,
            });
        }
    }
    events
}
