//! Rate limits and temporary bans against flooding and brute force, shared by both transports.
//!
//! Connection and request rates are GCRA limits (governor) keyed by client IP or account.
//! Authentication failures are counted per IP and per account over a sliding window of
//! `ban_time`; one failure more than the limit within that window bans the IP or account for
//! `ban_time`, and every attempt during the ban is refused before any credential is looked at.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Limits as LimitsConfig;

/// Who is banned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BanKey {
    Ip(IpAddr),
    Account(String),
}

impl std::fmt::Display for BanKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BanKey::Ip(ip) => write!(f, "ip {ip}"),
            BanKey::Account(a) => write!(f, "account {a}"),
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

pub struct Limiter {
    connections: DefaultKeyedRateLimiter<IpAddr>,
    requests_by_ip: DefaultKeyedRateLimiter<IpAddr>,
    requests_by_account: DefaultKeyedRateLimiter<String>,
    failures: Mutex<HashMap<BanKey, VecDeque<Instant>>>,
    max_ip_failures: u32,
    max_account_failures: u32,
    bans: Mutex<HashMap<BanKey, Instant>>,
    ban_time: Duration,
}

impl Limiter {
    pub fn new(c: &LimitsConfig) -> Limiter {
        Limiter {
            connections: RateLimiter::keyed(quota(
                c.connections_per_ip_per_minute,
                Duration::from_secs(60),
            )),
            requests_by_ip: RateLimiter::keyed(Quota::per_second(nz(
                c.requests_per_second_per_account
            ))),
            requests_by_account: RateLimiter::keyed(Quota::per_second(nz(
                c.requests_per_second_per_account
            ))),
            failures: Mutex::new(HashMap::new()),
            max_ip_failures: c.auth_failures_per_ip,
            max_account_failures: c.auth_failures_per_account,
            bans: Mutex::new(HashMap::new()),
            ban_time: c.ban_time,
        }
    }

    fn banned(&self, key: &BanKey) -> Result<(), Refused> {
        let mut bans = self.bans.lock().unwrap_or_else(|p| p.into_inner());
        match bans.get(key) {
            Some(until) if *until > Instant::now() => Err(Refused::Banned {
                key: key.clone(),
                remaining: until.saturating_duration_since(Instant::now()),
            }),
            Some(_) => {
                bans.remove(key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// A new connection from `ip`: refused while the IP is banned or over its rate.
    pub fn check_connection(&self, ip: IpAddr) -> Result<(), Refused> {
        self.banned(&BanKey::Ip(ip))?;
        self.connections
            .check_key(&ip)
            .map_err(|n| Refused::RateLimited {
                retry_after: n.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                )),
            })
    }

    /// An authentication attempt: refused while the IP or the account is banned.
    pub fn check_auth(&self, ip: IpAddr, account: &str) -> Result<(), Refused> {
        self.banned(&BanKey::Ip(ip))?;
        self.banned(&BanKey::Account(account.to_owned()))
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

    /// Records a failed authentication; returns the bans it triggered.
    pub fn record_failure(&self, ip: IpAddr, account: Option<&str>) -> Vec<BanKey> {
        let now = Instant::now();
        let mut keys = vec![(BanKey::Ip(ip), self.max_ip_failures)];
        if let Some(a) = account {
            keys.push((BanKey::Account(a.to_owned()), self.max_account_failures));
        }
        let mut new_bans = Vec::new();
        {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            for (key, max) in keys {
                let times = failures.entry(key.clone()).or_default();
                times.push_back(now);
                while times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > self.ban_time)
                {
                    times.pop_front();
                }
                if times.len() > max as usize {
                    times.clear();
                    new_bans.push(key);
                }
            }
        }
        if !new_bans.is_empty() {
            let until = now + self.ban_time;
            let mut bans = self.bans.lock().unwrap_or_else(|p| p.into_inner());
            for b in &new_bans {
                tracing::warn!(ban = %b, seconds = self.ban_time.as_secs(), "banned after repeated authentication failures");
                bans.insert(b.clone(), until);
            }
        }
        new_bans
    }

    /// Drops limiter state for keys that have been idle; call now and then.
    pub fn housekeeping(&self) {
        self.connections.retain_recent();
        self.requests_by_ip.retain_recent();
        self.requests_by_account.retain_recent();
        let now = Instant::now();
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) <= self.ban_time)
            });
        self.bans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(failures: u32, ban: Duration) -> LimitsConfig {
        LimitsConfig {
            auth_failures_per_ip: failures,
            auth_failures_per_account: failures,
            ban_time: ban,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn bans_after_the_failure_quota_and_lifts_after_ban_time() {
        let l = Limiter::new(&limits(3, Duration::from_millis(300)));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..3 {
            assert!(l.record_failure(ip, Some("clinic-a")).is_empty());
        }
        assert!(l.check_auth(ip, "other").is_ok(), "not banned yet");
        let bans = l.record_failure(ip, Some("clinic-a"));
        assert_eq!(
            bans,
            vec![BanKey::Ip(ip), BanKey::Account("clinic-a".into())]
        );
        assert!(matches!(
            l.check_connection(ip),
            Err(Refused::Banned { .. })
        ));
        let other_ip: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(matches!(
            l.check_auth(other_ip, "clinic-a"),
            Err(Refused::Banned { .. })
        ));
        std::thread::sleep(Duration::from_millis(350));
        assert!(l.check_connection(ip).is_ok());
        assert!(l.check_auth(other_ip, "clinic-a").is_ok());
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
