//! Rate limits and bans against flooding and brute force, shared by both transports.
//!
//! Connection and request rates are GCRA limits (governor) keyed by client IP or account.
//!
//! Bans hit the source of an attack, not its target (as SFTPGo's Defender does): every failed
//! login adds to the score of its [`Source`] — an IPv4 address, or an IPv6 /64, which one host
//! usually holds whole — and a source whose score within `ban_time` exceeds
//! `auth_failures_per_ip` is banned for `ban_time`. Failures against one account are counted per
//! (account, source) pair only: past `auth_failures_per_account` that pair is banned, so someone
//! guessing at a clinic's account from one address cannot lock the clinic out of it from another.
//! Every attempt from a banned source, or at a banned pair, is refused before any credential is
//! looked at. The ban list is mirrored to a file for `handoff bans` ([`super::bans`]).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::bans::{self, BanEntry};
use crate::config::Limits as LimitsConfig;
use crate::error::Chain;
use crate::sync::Recover;

/// Where failed logins come from, as bans see it: an IPv4 address, or the /64 of an IPv6
/// address (a host gets a whole /64 and can change the rest at will). IPv4-mapped IPv6
/// addresses count as their IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    Source(IpAddr::V6(Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
        }
    }

    /// Whether `ip` belongs to this source.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Source::of(ip) == *self
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

/// A source that does not parse: an address, or an IPv6 prefix written `ADDR/64`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an IP address or IPv6 /64 prefix: {0:?}")]
pub struct BadSource(pub String);

impl std::str::FromStr for Source {
    type Err = BadSource;

    /// An IPv4 or IPv6 address (an IPv6 address stands for its /64), or `ADDR/64` or `ADDR/32`.
    fn from_str(s: &str) -> Result<Source, BadSource> {
        let bad = || BadSource(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        match (ip, prefix) {
            (_, None) | (IpAddr::V6(_), Some("64")) | (IpAddr::V4(_), Some("32")) => {
                Ok(Source::of(ip))
            }
            _ => Err(bad()),
        }
    }
}

/// Who is banned: a whole source, or one account from one source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BanKey {
    Source(Source),
    AccountFrom { account: String, source: Source },
}

impl BanKey {
    pub fn source(&self) -> Source {
        match self {
            BanKey::Source(s) | BanKey::AccountFrom { source: s, .. } => *s,
        }
    }

    pub fn account(&self) -> Option<&str> {
        match self {
            BanKey::Source(_) => None,
            BanKey::AccountFrom { account, .. } => Some(account),
        }
    }

    /// The label of `handoff_bans_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            BanKey::Source(_) => "source",
            BanKey::AccountFrom { .. } => "account-source",
        }
    }
}

impl std::fmt::Display for BanKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BanKey::Source(s) => write!(f, "source {s}"),
            BanKey::AccountFrom { account, source } => {
                write!(f, "account {account} from {source}")
            }
        }
    }
}

/// What kind of failed login, for the score of its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A login name that is no account: what spraying looks like. Scores 2.
    UnknownAccount,
    /// A wrong key or password, or an account that may not log in now. Scores 1.
    WrongCredential,
}

impl Failure {
    fn score(self) -> u32 {
        match self {
            Failure::UnknownAccount => 2,
            Failure::WrongCredential => 1,
        }
    }
}

/// Why a connection or request is turned away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{key} is banned for {remaining:?}")]
    Banned { key: BanKey, remaining: Duration },
    #[error("rate limit exceeded; retry after {retry_after:?}")]
    RateLimited { retry_after: Duration },
}

/// Why a connection finds no slot: the gateway holds as many as it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    #[error("too many connections (at most {0})")]
    Connections(u32),
    #[error("too many connections not yet authenticated (at most {0})")]
    Unauthenticated(u32),
}

/// The transports whose connections are counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Sftp,
    Https,
}

/// A bounded number of slots, taken without waiting.
struct Slots {
    max: u32,
    semaphore: Arc<tokio::sync::Semaphore>,
}

impl Slots {
    fn new(max: u32) -> Slots {
        Slots {
            max,
            semaphore: Arc::new(tokio::sync::Semaphore::new(max.max(1) as usize)),
        }
    }

    fn take(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.semaphore.clone().try_acquire_owned().ok()
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

/// `n` events per `window`, all of which may come at once.
fn quota(n: u32, window: Duration) -> Quota {
    let per = window / nz(n).get();
    Quota::with_period(per.max(Duration::from_micros(1)))
        .unwrap_or_else(|| Quota::per_second(nz(n)))
        .allow_burst(nz(n))
}

/// One ban in force.
#[derive(Debug, Clone)]
struct Ban {
    until: Instant,
    since_wall: SystemTime,
    until_wall: SystemTime,
    score: u32,
}

/// argon2 verifications running at once: each takes a core and 19 MiB for a while, so a flood
/// of password attempts must queue for these rather than take the machine.
fn hashing_slots() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

pub struct Limiter {
    connections: DefaultKeyedRateLimiter<IpAddr>,
    /// Connections open at once, per transport; a permit is held for a connection's life.
    open_sftp: Slots,
    open_https: Slots,
    /// SSH connections that have not authenticated yet (OpenSSH's `MaxStartups`).
    unauthenticated: Slots,
    /// Password attempts per source, checked before any hashing.
    passwords: DefaultKeyedRateLimiter<Source>,
    hashing: Arc<tokio::sync::Semaphore>,
    requests_by_ip: DefaultKeyedRateLimiter<IpAddr>,
    requests_by_account: DefaultKeyedRateLimiter<String>,
    /// Scored failures within the last `ban_time`, per source and per (account, source).
    failures: Mutex<HashMap<BanKey, VecDeque<(Instant, u32)>>>,
    max_source_score: u32,
    max_account_failures: u32,
    bans: Mutex<HashMap<BanKey, Ban>>,
    ban_time: Duration,
    /// The file the ban list is mirrored to, once the daemon has set it.
    ban_file: OnceLock<PathBuf>,
    /// Serialises writes of the ban file, so that the last one written is the newest list.
    persisting: Mutex<()>,
}

impl Limiter {
    pub fn new(c: &LimitsConfig) -> Limiter {
        Limiter {
            connections: RateLimiter::keyed(quota(
                c.connections_per_ip_per_minute,
                Duration::from_secs(60),
            )),
            open_sftp: Slots::new(c.max_connections),
            open_https: Slots::new(c.max_connections),
            unauthenticated: Slots::new(c.max_unauthenticated_connections),
            passwords: RateLimiter::keyed(quota(
                c.password_attempts_per_minute,
                Duration::from_secs(60),
            )),
            hashing: Arc::new(tokio::sync::Semaphore::new(hashing_slots())),
            requests_by_ip: RateLimiter::keyed(Quota::per_second(nz(
                c.requests_per_second_per_account
            ))),
            requests_by_account: RateLimiter::keyed(Quota::per_second(nz(
                c.requests_per_second_per_account
            ))),
            failures: Mutex::new(HashMap::new()),
            max_source_score: c.auth_failures_per_ip,
            max_account_failures: c.auth_failures_per_account,
            bans: Mutex::new(HashMap::new()),
            ban_time: c.ban_time,
            ban_file: OnceLock::new(),
            persisting: Mutex::new(()),
        }
    }

    /// Mirrors the ban list to `path` from now on, after taking over the bans still in force
    /// that it holds (a restart does not lift bans). Returns how many were taken over; a list
    /// that cannot be read is an error, and is replaced by the bans in memory all the same.
    pub fn persist_to(&self, path: PathBuf) -> Result<usize, bans::BanFileError> {
        let (restored, unreadable) = match bans::read_list(&path) {
            Ok(list) => (list, None),
            Err(bans::BanFileError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                (Vec::new(), None)
            }
            Err(e) => (Vec::new(), Some(e)),
        };
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut n = 0;
        {
            let mut map = self.bans.locked();
            for e in restored {
                let Some(left) = e.until().duration_since(wall).ok() else {
                    continue;
                };
                map.insert(
                    e.key(),
                    Ban {
                        until: now + left,
                        since_wall: e.since(),
                        until_wall: e.until(),
                        score: e.score,
                    },
                );
                n += 1;
            }
        }
        let _ = self.ban_file.set(path);
        self.persist();
        match unreadable {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    /// Writes the ban list to the ban file, if there is one. A failure is logged: the bans in
    /// memory still hold.
    fn persist(&self) {
        let Some(path) = self.ban_file.get() else {
            return;
        };
        let _one_at_a_time = self.persisting.locked();
        if let Err(e) = bans::write_list(path, &self.bans()) {
            tracing::warn!(error = %Chain(&e), file = %path.display(), "cannot write the ban list");
        }
    }

    /// The bans in force, sources first.
    pub fn bans(&self) -> Vec<BanEntry> {
        let now = Instant::now();
        let map = self.bans.locked();
        let mut list: Vec<BanEntry> = map
            .iter()
            .filter(|(_, b)| b.until > now)
            .map(|(k, b)| BanEntry::new(k, b.since_wall, b.until_wall, b.score))
            .collect();
        list.sort_by_key(BanEntry::key);
        list
    }

    fn banned(&self, key: &BanKey) -> Result<(), Refused> {
        let mut bans = self.bans.locked();
        match bans.get(key) {
            Some(b) if b.until > Instant::now() => Err(Refused::Banned {
                key: key.clone(),
                remaining: b.until.saturating_duration_since(Instant::now()),
            }),
            Some(_) => {
                bans.remove(key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// A new connection from `ip`: refused while its source is banned or over its rate.
    pub fn check_connection(&self, ip: IpAddr) -> Result<(), Refused> {
        self.banned(&BanKey::Source(Source::of(ip)))?;
        self.connections
            .check_key(&ip)
            .map_err(|n| Refused::RateLimited {
                retry_after: n.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                )),
            })
    }

    /// A slot for one more open connection of `transport`, held until it ends.
    pub fn connection_slot(
        &self,
        transport: Transport,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Full> {
        let slots = match transport {
            Transport::Sftp => &self.open_sftp,
            Transport::Https => &self.open_https,
        };
        slots.take().ok_or(Full::Connections(slots.max))
    }

    /// A slot for one more SSH connection that has not authenticated, held until it does (or
    /// ends): a flood of handshakes takes these, not the room of clients that log in.
    pub fn unauthenticated_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Full> {
        self.unauthenticated
            .take()
            .ok_or(Full::Unauthenticated(self.unauthenticated.max))
    }

    /// As [`Limiter::unauthenticated_slot`], waiting up to `wait` for one to come free (after
    /// a silent connection was made to give up its own).
    pub async fn unauthenticated_slot_within(
        &self,
        wait: Duration,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        tokio::time::timeout(wait, self.unauthenticated.semaphore.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// An authentication attempt: refused while the source is banned, or this account from
    /// this source.
    pub fn check_auth(&self, ip: IpAddr, account: &str) -> Result<(), Refused> {
        let source = Source::of(ip);
        self.banned(&BanKey::Source(source))?;
        self.banned(&BanKey::AccountFrom {
            account: account.to_owned(),
            source,
        })
    }

    /// A password attempt from `ip`: refused, before any hashing, while its source is over
    /// `password_attempts_per_minute`.
    pub fn check_password_rate(&self, ip: IpAddr) -> Result<(), Refused> {
        self.passwords
            .check_key(&Source::of(ip))
            .map_err(|n| Refused::RateLimited {
                retry_after: n.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                )),
            })
    }

    /// One of the few slots for an argon2 verification, or `None` if none came free within
    /// `wait`; hold it while hashing.
    pub async fn hashing_slot(&self, wait: Duration) -> Option<tokio::sync::OwnedSemaphorePermit> {
        tokio::time::timeout(wait, self.hashing.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// One request of an authenticated account (HTTPS): limited per account and per IP.
    pub fn check_request(&self, ip: IpAddr, account: &str) -> Result<(), Refused> {
        let now = governor::clock::Clock::now(&governor::clock::DefaultClock::default());
        self.requests_by_ip
            .check_key(&ip)
            .map_err(|n| Refused::RateLimited {
                retry_after: n.wait_time_from(now),
            })?;
        self.requests_by_account
            .check_key(&account.to_owned())
            .map_err(|n| Refused::RateLimited {
                retry_after: n.wait_time_from(now),
            })
    }

    /// Records a failed authentication from `ip` (against `account`, if it named one); returns
    /// the bans it triggered.
    pub fn record_failure(
        &self,
        ip: IpAddr,
        account: Option<&str>,
        failure: Failure,
    ) -> Vec<BanKey> {
        let now = Instant::now();
        let source = Source::of(ip);
        let mut keys = vec![(
            BanKey::Source(source),
            failure.score(),
            self.max_source_score,
        )];
        if let Some(a) = account {
            let pair = BanKey::AccountFrom {
                account: a.to_owned(),
                source,
            };
            keys.push((pair, 1, self.max_account_failures));
        }
        let mut new_bans = Vec::new();
        {
            let mut failures = self.failures.locked();
            for (key, score, max) in keys {
                let events = failures.entry(key.clone()).or_default();
                events.push_back((now, score));
                while events
                    .front()
                    .is_some_and(|(t, _)| now.duration_since(*t) > self.ban_time)
                {
                    events.pop_front();
                }
                let total: u32 = events.iter().map(|(_, s)| s).sum();
                if total > max {
                    events.clear();
                    new_bans.push((key, total));
                }
            }
        }
        if new_bans.is_empty() {
            return Vec::new();
        }
        {
            let wall = SystemTime::now();
            let mut bans = self.bans.locked();
            for (key, score) in &new_bans {
                tracing::warn!(ban = %key, score, seconds = self.ban_time.as_secs(), "banned after repeated authentication failures");
                bans.insert(
                    key.clone(),
                    Ban {
                        until: now + self.ban_time,
                        since_wall: wall,
                        until_wall: wall + self.ban_time,
                        score: *score,
                    },
                );
            }
        }
        self.persist();
        new_bans.into_iter().map(|(k, _)| k).collect()
    }

    /// Lifts the bans of `source` — all of them, or with `account` only that account's from
    /// it — and forgets their failures; returns the bans lifted.
    pub fn unban(&self, source: Source, account: Option<&str>) -> Vec<BanKey> {
        let hit =
            |k: &BanKey| k.source() == source && account.is_none_or(|a| k.account() == Some(a));
        let lifted: Vec<BanKey> = {
            let mut bans = self.bans.locked();
            let keys: Vec<BanKey> = bans.keys().filter(|k| hit(k)).cloned().collect();
            for k in &keys {
                bans.remove(k);
            }
            keys
        };
        self.failures.locked().retain(|k, _| !hit(k));
        if !lifted.is_empty() {
            self.persist();
        }
        lifted
    }

    /// Drops limiter state for keys that have been idle, and bans that have ended; call now
    /// and then.
    pub fn housekeeping(&self) {
        self.connections.retain_recent();
        self.passwords.retain_recent();
        self.requests_by_ip.retain_recent();
        self.requests_by_account.retain_recent();
        let now = Instant::now();
        self.failures.locked().retain(|_, events| {
            events
                .back()
                .is_some_and(|(t, _)| now.duration_since(*t) <= self.ban_time)
        });
        let ended = {
            let mut bans = self.bans.locked();
            let before = bans.len();
            bans.retain(|_, b| b.until > now);
            before != bans.len()
        };
        if ended {
            self.persist();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_source: u32, per_account: u32, ban: Duration) -> LimitsConfig {
        LimitsConfig {
            auth_failures_per_ip: per_source,
            auth_failures_per_account: per_account,
            ban_time: ban,
            ..LimitsConfig::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_is_banned_past_its_score_and_the_ban_lifts_after_ban_time() {
        let l = Limiter::new(&limits(3, 100, Duration::from_millis(300)));
        let attacker = ip("192.0.2.7");
        for _ in 0..3 {
            assert!(
                l.record_failure(attacker, Some("clinic-a"), Failure::WrongCredential)
                    .is_empty()
            );
        }
        assert!(l.check_auth(attacker, "clinic-a").is_ok(), "not banned yet");
        let bans = l.record_failure(attacker, Some("clinic-a"), Failure::WrongCredential);
        assert_eq!(bans, vec![BanKey::Source(Source::of(attacker))]);
        assert!(matches!(
            l.check_connection(attacker),
            Err(Refused::Banned { .. })
        ));
        // The account itself is not locked: its owner elsewhere still gets in.
        assert!(l.check_connection(ip("192.0.2.8")).is_ok());
        assert!(l.check_auth(ip("192.0.2.8"), "clinic-a").is_ok());
        std::thread::sleep(Duration::from_millis(350));
        assert!(l.check_connection(attacker).is_ok());
    }

    #[test]
    fn unknown_accounts_score_double() {
        let l = Limiter::new(&limits(3, 100, Duration::from_secs(60)));
        let attacker = ip("192.0.2.7");
        assert!(
            l.record_failure(attacker, Some("nobody"), Failure::UnknownAccount)
                .is_empty()
        );
        assert_eq!(
            l.record_failure(attacker, Some("nobody2"), Failure::UnknownAccount),
            vec![BanKey::Source(Source::of(attacker))]
        );
    }

    #[test]
    fn account_failures_ban_only_the_pair() {
        let l = Limiter::new(&limits(100, 2, Duration::from_secs(60)));
        let attacker = ip("192.0.2.7");
        for _ in 0..2 {
            l.record_failure(attacker, Some("clinic-a"), Failure::WrongCredential);
        }
        let bans = l.record_failure(attacker, Some("clinic-a"), Failure::WrongCredential);
        let pair = BanKey::AccountFrom {
            account: "clinic-a".into(),
            source: Source::of(attacker),
        };
        assert_eq!(bans, vec![pair.clone()]);
        assert!(matches!(
            l.check_auth(attacker, "clinic-a"),
            Err(Refused::Banned { key, .. }) if key == pair
        ));
        assert!(l.check_auth(attacker, "clinic-b").is_ok());
        assert!(l.check_connection(attacker).is_ok());
        assert!(l.check_auth(ip("192.0.2.8"), "clinic-a").is_ok());
    }

    #[test]
    fn ipv6_sources_are_slash_64() {
        let l = Limiter::new(&limits(1, 100, Duration::from_secs(60)));
        l.record_failure(ip("2001:db8:1:2::1"), None, Failure::WrongCredential);
        let bans = l.record_failure(ip("2001:db8:1:2:ffff::9"), None, Failure::WrongCredential);
        assert_eq!(bans.len(), 1, "two addresses of one /64 are one source");
        assert_eq!(bans[0].source().to_string(), "2001:db8:1:2::/64");
        assert!(l.check_connection(ip("2001:db8:1:2:abcd::1")).is_err());
        assert!(l.check_connection(ip("2001:db8:1:3::1")).is_ok());
        assert_eq!(
            Source::of(ip("::ffff:192.0.2.1")),
            Source::of(ip("192.0.2.1"))
        );
    }

    #[test]
    fn sources_parse_as_addresses_or_prefixes() {
        let s: Source = "2001:db8:1:2::/64".parse().unwrap();
        assert_eq!(s, "2001:db8:1:2:3::4".parse().unwrap());
        assert_eq!(
            "192.0.2.1/32".parse::<Source>().unwrap(),
            Source::of(ip("192.0.2.1"))
        );
        for bad in [
            "192.0.2.1/24",
            "2001:db8::/48",
            "example.org",
            "",
            "1.2.3.4/x",
        ] {
            assert!(bad.parse::<Source>().is_err(), "{bad}");
        }
    }

    #[test]
    fn unban_lifts_and_forgets_and_the_list_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bans.json");
        let c = limits(1, 100, Duration::from_secs(600));
        let l = Limiter::new(&c);
        assert_eq!(l.persist_to(file.clone()).unwrap(), 0);
        let a = ip("192.0.2.7");
        let b = ip("192.0.2.9");
        for who in [a, a, b, b] {
            l.record_failure(who, Some("clinic-a"), Failure::WrongCredential);
        }
        assert_eq!(bans::read_list(&file).unwrap().len(), 2);

        let restarted = Limiter::new(&c);
        assert_eq!(restarted.persist_to(file.clone()).unwrap(), 2);
        assert!(
            restarted.check_connection(a).is_err(),
            "a restart keeps bans"
        );

        let lifted = restarted.unban(Source::of(a), None);
        assert_eq!(lifted, vec![BanKey::Source(Source::of(a))]);
        assert!(restarted.check_connection(a).is_ok());
        assert!(restarted.check_connection(b).is_err());
        let list = bans::read_list(&file).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].key(), BanKey::Source(Source::of(b)));
        // Failures were forgotten with the ban: one more is not yet a ban.
        assert!(
            restarted
                .record_failure(a, None, Failure::WrongCredential)
                .is_empty()
        );
    }

    #[test]
    fn password_attempts_are_limited_per_source_and_hashing_slots_are_bounded() {
        let c = LimitsConfig {
            password_attempts_per_minute: 2,
            ..LimitsConfig::default()
        };
        let l = Limiter::new(&c);
        let a = ip("2001:db8::1");
        assert!(l.check_password_rate(a).is_ok());
        assert!(l.check_password_rate(ip("2001:db8::2")).is_ok());
        assert!(
            l.check_password_rate(ip("2001:db8::3")).is_err(),
            "one /64, one budget"
        );
        assert!(l.check_password_rate(ip("192.0.2.1")).is_ok());

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut held = Vec::new();
            for _ in 0..hashing_slots() {
                held.push(l.hashing_slot(Duration::from_millis(10)).await.unwrap());
            }
            assert!(l.hashing_slot(Duration::from_millis(50)).await.is_none());
            held.pop();
            assert!(l.hashing_slot(Duration::from_millis(10)).await.is_some());
        });
    }

    #[test]
    fn connection_rate_is_limited_per_ip() {
        let c = LimitsConfig {
            connections_per_ip_per_minute: 2,
            ..LimitsConfig::default()
        };
        let l = Limiter::new(&c);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(l.check_connection(ip).is_ok());
        assert!(l.check_connection(ip).is_ok());
        assert!(matches!(
            l.check_connection(ip),
            Err(Refused::RateLimited { .. })
        ));
        assert!(l.check_connection("192.0.2.10".parse().unwrap()).is_ok());
    }
}
