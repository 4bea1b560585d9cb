//! Every check a careful admin would want before a config goes live. Checks never stop at the
//! first problem: the admin gets the whole list at once.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use time::{OffsetDateTime, UtcOffset};

use super::diagnostic::{KeyPath, Severity};
use super::model::*;
use crate::accounts::CounterpartId;
use crate::error::Chain;
use crate::key_path;
use crate::numbers;

/// The least `max_buffered_per_account`: room for a client that reorders a few 255 KiB writes.
const MIN_BUFFERED_PER_ACCOUNT: u64 = 1 << 20;
/// The most `upload_writer_threads`: more threads than this only compete for the same cores.
const MAX_UPLOAD_WRITER_THREADS: u32 = 256;

pub struct Finding {
    pub path: KeyPath,
    pub severity: Severity,
    pub message: String,
}

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn error(&mut self, path: KeyPath, message: impl Into<String>) {
        self.0.push(Finding {
            path,
            severity: Severity::Error,
            message: message.into(),
        });
    }

    fn warn(&mut self, path: KeyPath, message: impl Into<String>) {
        self.0.push(Finding {
            path,
            severity: Severity::Warning,
            message: message.into(),
        });
    }
}

pub fn validate(config: &Config) -> Vec<Finding> {
    validate_at(config, OffsetDateTime::now_utc())
}

pub(crate) fn validate_at(config: &Config, now: OffsetDateTime) -> Vec<Finding> {
    let mut f = Findings::default();
    gateway(&config.gateway, &mut f);
    accounts(config, config.gateway.time_zone, now, &mut f);
    f.0
}

pub(crate) fn parse_offset(s: &str) -> Result<UtcOffset, String> {
    let fmt = time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]");
    UtcOffset::parse(s, &fmt).map_err(|_| format!("{s:?} is not a UTC offset such as \"+09:00\""))
}

/// `gateway.time_zone` as the offset it names, refused while the config is read.
pub(crate) fn deserialize_offset<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<UtcOffset, D::Error> {
    let s: String = serde::Deserialize::deserialize(d)?;
    parse_offset(&s).map_err(serde::de::Error::custom)
}

/// The instant an `expires` value stands for. A date alone means the account is valid through
/// that whole day in the gateway's time zone; a time without offset is read in that zone too.
pub fn expiry_instant(
    dt: &toml::value::Datetime,
    zone: UtcOffset,
) -> Result<OffsetDateTime, String> {
    let d = dt
        .date
        .ok_or_else(|| "expires needs a date, e.g. 2027-03-31".to_owned())?;
    let month = time::Month::try_from(d.month).map_err(|e| e.to_string())?;
    let date = time::Date::from_calendar_date(i32::from(d.year), month, d.day)
        .map_err(|e| e.to_string())?;
    let offset = match dt.offset {
        None => zone,
        Some(toml::value::Offset::Z) => UtcOffset::UTC,
        Some(toml::value::Offset::Custom { minutes }) => {
            UtcOffset::from_whole_seconds(i32::from(minutes) * 60).map_err(|e| e.to_string())?
        }
    };
    let at = match dt.time {
        None => date
            .next_day()
            .ok_or_else(|| "date out of range".to_owned())?
            .midnight(),
        Some(t) => {
            let second = t.second.unwrap_or(0);
            let nano = t.nanosecond.unwrap_or(0);
            let time = time::Time::from_hms_nano(t.hour, t.minute, second, nano)
                .map_err(|e| e.to_string())?;
            date.with_time(time)
        }
    };
    Ok(at.assume_offset(offset))
}

fn gateway(g: &Gateway, f: &mut Findings) {
    let at = |k: &'static str| key_path!["gateway", k];
    if g.sftp_listen.is_some() && g.host_keys.is_empty() {
        f.error(
            at("host_keys"),
            "sftp_listen is set but no host_keys are given",
        );
    }
    for (i, p) in g.host_keys.iter().enumerate() {
        secret_file(p, at("host_keys").join(i), f);
    }
    ssh_algorithms(g, f);
    store(&g.store, f);
    if g.https_listen.is_some() {
        match (&g.tls_cert, &g.tls_key) {
            (Some(_), Some(_)) => {}
            _ => f.error(
                at("https_listen"),
                "https_listen is set but tls_cert and tls_key are not both given",
            ),
        }
        if g.client_ca.is_empty() {
            f.error(at("client_ca"), "https_listen is set but no client_ca is given: client certificates could not be verified");
        }
    }
    if let Some(p) = &g.tls_cert {
        existing_file(p, at("tls_cert"), f);
    }
    if let Some(p) = &g.tls_key {
        secret_file(p, at("tls_key"), f);
    }
    for (i, p) in g.client_ca.iter().enumerate() {
        existing_file(p, at("client_ca").join(i), f);
    }
    for (i, p) in g.crl.iter().enumerate() {
        if !existing_file(p, at("crl").join(i), f) {
            continue;
        }
        match super::crl::read(p) {
            Err(e) => f.error(at("crl").join(i), Chain(&e).to_string()),
            Ok(crls) => {
                let now = time::OffsetDateTime::now_utc();
                for c in crls
                    .iter()
                    .filter(|c| c.next_update.is_some_and(|t| t < now))
                {
                    f.warn(
                        at("crl").join(i),
                        format!(
                            "{}: the CRL of {} is past its nextUpdate: its clients are refused once crl_grace has passed",
                            p.display(),
                            c.issuer
                        ),
                    );
                }
            }
        }
    }
    secret_file(&g.receipt_key, at("receipt_key"), f);
    secret_file(&g.master_key, at("master_key"), f);
    if let Some(p) = &g.inbound_key {
        secret_file(p, at("inbound_key"), f);
    }
    if let Some(p) = &g.inbound_cert {
        existing_file(p, at("inbound_cert"), f);
    }
    clamd(&g.clamd, at("clamd"), f);
    if !g.schema_dir.is_dir() {
        f.error(
            at("schema_dir"),
            format!("{} is not a directory", g.schema_dir.display()),
        );
    } else {
        schema_dir(&g.schema_dir, at("schema_dir"), f);
    }
    use crate::validate::schemas::Edition;
    let validation = key_path!["gateway", "validation"];
    for (i, edition) in g.validation.editions.iter().enumerate() {
        if Edition::from_id(edition).is_none() {
            let known: Vec<&str> = Edition::ALL.iter().map(|e| e.id()).collect();
            f.error(
                validation.join("editions").join(i),
                format!("unknown edition {edition:?}: one of {known:?}"),
            );
        }
    }
    if !g.validation.editions.iter().any(|e| e == "current") {
        f.warn(
            validation.join("editions"),
            "the current edition is not accepted: every up-to-date archive will be refused",
        );
    }
    rule_settings(&g.validation.rules, &validation.join("rules"), f);
    let archive = &g.archive;
    for (key, zero) in [
        ("max_entries", archive.max_entries == 0),
        ("max_entry_size", archive.max_entry_size.bytes() == 0),
        ("max_total_size", archive.max_total_size.bytes() == 0),
        ("max_ratio", archive.max_ratio == 0),
    ] {
        if zero {
            f.error(key_path!["gateway", "archive", key], "must be more than 0");
        }
    }
    // The agency number's shape was checked as it was read (numbers::AgencyNumber).
    let limits = &g.limits;
    for (key, zero) in [
        ("max_upload_size", limits.max_upload_size.bytes() == 0),
        ("ssh_version_timeout", limits.ssh_version_timeout.is_zero()),
        ("login_grace_time", limits.login_grace_time.is_zero()),
        (
            "max_unauthenticated_connections",
            limits.max_unauthenticated_connections == 0,
        ),
        ("max_connections", limits.max_connections == 0),
        ("idle_timeout", limits.idle_timeout.is_zero()),
        (
            "max_channels_per_connection",
            limits.max_channels_per_connection == 0,
        ),
        (
            "max_handles_per_session",
            limits.max_handles_per_session == 0,
        ),
    ] {
        if zero {
            f.error(key_path!["gateway", "limits", key], "must be more than 0");
        }
    }
    if limits.max_buffered_per_account.bytes() < MIN_BUFFERED_PER_ACCOUNT {
        f.error(
            key_path!["gateway", "limits", "max_buffered_per_account"],
            format!(
                "must be at least {MIN_BUFFERED_PER_ACCOUNT} bytes (1 MiB): SFTP clients reorder a few writes of up to 255 KiB"
            ),
        );
    }
    if limits.max_buffered_total.bytes() < limits.max_buffered_per_account.bytes() {
        f.error(
            key_path!["gateway", "limits", "max_buffered_total"],
            "must be at least max_buffered_per_account",
        );
    }
    if !(1..=MAX_UPLOAD_WRITER_THREADS).contains(&limits.upload_writer_threads) {
        f.error(
            key_path!["gateway", "limits", "upload_writer_threads"],
            format!("must be from 1 to {MAX_UPLOAD_WRITER_THREADS}"),
        );
    }
}

/// `[gateway.ssh]`: every name known and safe; some host key offered (a key no algorithm
/// offered signs with is a warning).
fn ssh_algorithms(g: &Gateway, f: &mut Findings) {
    use crate::transport::sftp::algorithms::Effective;
    let base = key_path!["gateway", "ssh"];
    let effective = match Effective::of(&g.ssh) {
        Ok(e) => e,
        Err(errors) => {
            for (kind, e) in errors {
                let mut path = base.join(kind.key());
                if let Some(i) = e.index {
                    path = path.join(i);
                }
                f.error(path, e.message);
            }
            return;
        }
    };
    if g.sftp_listen.is_none() {
        return;
    }
    let (mut loaded, mut any) = (false, false);
    for (i, p) in g.host_keys.iter().enumerate() {
        // A key that does not load is reported by the start; its mode is checked above.
        let Ok(key) = crate::keys::load_host_key(p) else {
            continue;
        };
        loaded = true;
        if effective.host_keys_for(&[key.algorithm()]).is_empty() {
            f.warn(
                key_path!["gateway", "host_keys", i],
                format!(
                    "{}: no algorithm in gateway.ssh.host_key_algorithms signs with this {} key: it is not offered",
                    p.display(),
                    key.algorithm()
                ),
            );
        } else {
            any = true;
        }
    }
    if loaded && !any {
        f.error(
            base.join("host_key_algorithms"),
            "no host key algorithm offered matches a key in host_keys",
        );
    }
}

/// `[gateway.store]`: a database's settings complete and safe (the URL without a password,
/// TLS to a server on another machine), its files there. The database itself is reached only
/// by the gateway and `handoff migrate`.
fn store(s: &super::Store, f: &mut Findings) {
    let at = |k: &'static str| key_path!["gateway", "store", k];
    if let Some(p) = &s.password_file {
        secret_file(p, at("password_file"), f);
    }
    if let Some(p) = &s.tls_ca {
        existing_file(p, at("tls_ca"), f);
    }
    if let Some(node) = &s.node
        && (node.is_empty()
            || node.len() > 64
            || !node
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
    {
        f.error(
            at("node"),
            "a node name is 1 to 64 letters, digits, '.', '_' or '-'",
        );
    }
    match s.backend {
        super::StoreBackend::Local => {
            if s.url.is_some()
                || s.password_file.is_some()
                || s.tls_ca.is_some()
                || s.node.is_some()
            {
                f.warn(
                    at("backend"),
                    "the store is local: url, password_file, tls_ca and node are not used",
                );
            }
        }
        super::StoreBackend::Postgres => match crate::store::postgres::check_settings(s) {
            Ok(()) => {}
            Err(crate::store::DatabaseError::Settings { key, message }) => {
                f.error(at(key), message)
            }
            Err(e) => f.error(at("tls_ca"), Chain(&e).to_string()),
        },
    }
}

/// `gateway.clamd`: at least one endpoint, and none twice. Each address was checked as it was
/// read ([`ClamdAddress::parse`](super::ClamdAddress::parse)).
fn clamd(endpoints: &super::ClamdEndpoints, path: KeyPath, f: &mut Findings) {
    let addresses = endpoints.as_slice();
    if addresses.is_empty() {
        f.error(
            path,
            "no clamd is named: give its address, or a list of them (without one no file could be scanned, and every file would wait)",
        );
        return;
    }
    for (i, address) in addresses.iter().enumerate() {
        if let Some(first) = addresses[..i].iter().position(|a| a == address) {
            f.error(
                path.join(i),
                format!(
                    "duplicate clamd endpoint {address} (first at {})",
                    path.join(first)
                ),
            );
        }
    }
}

/// `schema_dir` holds one folder per official set; the current one is required and complete
/// (its hashes and compilation are `check-config`'s, which loads it).
fn schema_dir(dir: &Path, path: KeyPath, f: &mut Findings) {
    use crate::validate::schemas::SET_CURRENT;
    let current = dir.join(SET_CURRENT.folder);
    if current.is_dir() {
        for pin in SET_CURRENT.files {
            let file = current.join(pin.path);
            if !file.is_file() {
                f.error(
                    path.clone(),
                    format!("the current schema set has no {}", file.display()),
                );
            }
        }
    } else {
        f.error(
            path,
            format!(
                "{} has no {}/: install MHLW's current schema set with \
                 `handoff schemas install --from DOWNLOAD --to {}`",
                dir.display(),
                SET_CURRENT.folder,
                dir.display()
            ),
        );
    }
}

fn existing_file(p: &Path, path: KeyPath, f: &mut Findings) -> bool {
    match fs::metadata(p) {
        Ok(m) if m.is_file() => true,
        Ok(_) => {
            f.error(path, format!("{} is not a regular file", p.display()));
            false
        }
        Err(e) => {
            f.error(path, format!("{}: {e}", p.display()));
            false
        }
    }
}

/// A key file must exist and be readable by its owner only.
fn secret_file(p: &Path, path: KeyPath, f: &mut Findings) {
    if !existing_file(p, path.clone(), f) {
        return;
    }
    if let Ok(m) = fs::metadata(p) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            f.error(
                path,
                format!(
                    "{} is a secret key but has mode {mode:04o}: run chmod 600 on it",
                    p.display()
                ),
            );
        }
    }
}

/// Normalises a SHA-256 fingerprint written with or without colons, in either case.
pub fn normalize_fingerprint(s: &str) -> Option<String> {
    let hex: String = s
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

struct Seen<'a> {
    ids: HashMap<&'a str, KeyPath>,
    keys: HashMap<Vec<u8>, KeyPath>,
    certs: HashMap<String, KeyPath>,
}

impl<'a> Seen<'a> {
    fn id(&mut self, id: &'a str, path: KeyPath, f: &mut Findings) {
        if let Some(first) = self.ids.get(id) {
            f.error(path, format!("duplicate id {id:?} (first used at {first})"));
        } else {
            self.ids.insert(id, path);
        }
    }

    fn ssh_keys(&mut self, keys: &[String], path: KeyPath, f: &mut Findings) {
        for (i, line) in keys.iter().enumerate() {
            let at = path.join(i);
            let key = match russh::keys::PublicKey::from_openssh(line.trim()) {
                Ok(k) => k,
                Err(e) => {
                    f.error(at, format!("not an OpenSSH public key line: {e}"));
                    continue;
                }
            };
            use russh::keys::Algorithm;
            match key.algorithm() {
                Algorithm::Ed25519 | Algorithm::Ecdsa { .. } => {}
                Algorithm::Rsa { .. } => {
                    let bits = key
                        .key_data()
                        .rsa()
                        .map_or(0, |k| k.n().as_positive_bytes().map_or(0, |b| b.len() * 8));
                    if bits < 2048 {
                        f.error(
                            at.clone(),
                            format!("RSA key of {bits} bits: at least 2048 are required"),
                        );
                    }
                }
                other => {
                    f.error(
                        at.clone(),
                        format!("key type {other} is not accepted (use ed25519, ecdsa or rsa)"),
                    );
                }
            }
            let blob = {
                use russh::keys::ssh_encoding::Encode;
                key.key_data().encode_vec().unwrap_or_default()
            };
            if let Some(first) = self.keys.get(&blob) {
                f.error(at, format!("this SSH key is already used at {first}"));
            } else {
                self.keys.insert(blob, at);
            }
        }
    }

    fn cert(
        &mut self,
        subject: Option<&str>,
        fingerprint: Option<&str>,
        path: KeyPath,
        f: &mut Findings,
    ) {
        if let Some(s) = subject {
            let at = path.join("cert_subject");
            if s.trim().is_empty() {
                f.error(at.clone(), "cert_subject is empty");
            }
            let norm = format!("subject:{}", s.trim());
            if let Some(first) = self.certs.get(&norm) {
                f.error(
                    at,
                    format!("this certificate subject is already mapped at {first}"),
                );
            } else {
                self.certs.insert(norm, at);
            }
        }
        if let Some(fp) = fingerprint {
            let at = path.join("cert_fingerprint");
            match normalize_fingerprint(fp) {
                None => f.error(
                    at,
                    "cert_fingerprint must be a SHA-256 fingerprint: 64 hex digits, colons allowed",
                ),
                Some(hex) => {
                    let norm = format!("sha256:{hex}");
                    if let Some(first) = self.certs.get(&norm) {
                        f.error(
                            at,
                            format!("this certificate fingerprint is already mapped at {first}"),
                        );
                    } else {
                        self.certs.insert(norm, at);
                    }
                }
            }
        }
    }
}

/// How far ahead a maintainer's or break-glass account's `expires` may lie: personal and
/// emergency access is granted for a bounded time and renewed on purpose, never open-ended.
pub const MAX_EXPIRY_AHEAD: time::Duration = time::Duration::days(366);

fn too_far(t: OffsetDateTime) -> String {
    format!("expires {t} is more than a year ahead: grant such access for at most a year")
}

fn accounts(config: &Config, zone: UtcOffset, now: OffsetDateTime, f: &mut Findings) {
    let mut seen = Seen {
        ids: HashMap::new(),
        keys: HashMap::new(),
        certs: HashMap::new(),
    };
    let mut numbers: HashMap<&numbers::Number, usize> = HashMap::new();

    for (i, c) in config.counterparts.iter().enumerate() {
        let at = key_path!["counterpart", i];
        seen.id(&c.id, at.join("id"), f);
        // Shape and check digit were checked as the number was read; its kind is the entry's.
        let kind = c.kind.number_kind();
        if c.number.kind() != kind {
            f.error(
                at.join("number"),
                format!(
                    "a {} is identified by its {kind} of {} digits, got the {} {}",
                    match c.kind {
                        CounterpartKind::Clinic => "clinic",
                        CounterpartKind::Insurer => "insurer",
                    },
                    kind.digits(),
                    c.number.kind(),
                    c.number
                ),
            );
        }
        rule_settings(&c.rules, &at.join("rules"), f);
        if let Some(first) = numbers.insert(&c.number, i) {
            f.error(
                at.join("number"),
                format!("duplicate number {} (also counterpart[{first}])", c.number),
            );
        }
        seen.ssh_keys(&c.ssh_keys, at.join("ssh_keys"), f);
        if let Some(h) = &c.password_hash {
            match argon2::PasswordHash::new(h) {
                Ok(p) if p.algorithm == argon2::ARGON2ID_IDENT => {}
                Ok(p) => f.error(
                    at.join("password_hash"),
                    format!("password hashes must be argon2id, not {}", p.algorithm),
                ),
                Err(e) => f.error(
                    at.join("password_hash"),
                    format!("not a PHC argon2id hash: {e}"),
                ),
            }
        }
        seen.cert(
            c.cert_subject.as_deref(),
            c.cert_fingerprint.as_deref(),
            at.clone(),
            f,
        );
        if c.ssh_keys.is_empty()
            && c.password_hash.is_none()
            && c.cert_subject.is_none()
            && c.cert_fingerprint.is_none()
        {
            f.error(at.join("id"), format!("{} has no way to log in: give ssh_keys, password_hash, cert_subject or cert_fingerprint", c.id));
        }
        if c.inbound == Inbound::Cms && config.gateway.inbound_key.is_none() {
            f.error(
                at.join("inbound"),
                "inbound = \"cms\" needs gateway.inbound_key to open the uploads with",
            );
        }
        if let Some(p) = &c.encryption_cert
            && existing_file(p, at.join("encryption_cert"), f)
        {
            encryption_cert(p, at.join("encryption_cert"), now, f);
        }
        if c.id == super::AGENCY_ROUTE {
            f.error(
                at.join("id"),
                format!(
                    "{:?} is reserved for routes to the agency",
                    super::AGENCY_ROUTE
                ),
            );
        }
        for (j, r) in c.routes.iter().enumerate() {
            let rat = at.join("routes").join(j);
            if r == super::AGENCY_ROUTE {
                if config.gateway.agency_number.is_none() {
                    f.error(
                        rat,
                        "route to the agency, but gateway.agency_number is not set",
                    );
                } else if c.kind != CounterpartKind::Clinic {
                    f.error(rat, "only clinics send archives to the agency");
                }
                continue;
            }
            match config.counterpart(r) {
                None => f.error(rat, format!("route to {r:?}, which is not a counterpart")),
                Some(t) if t.id == c.id => f.error(rat, "a counterpart cannot route to itself"),
                Some(t) if t.encryption_cert.is_none() => f.error(
                    rat,
                    format!("route to {r}, which has no encryption_cert to seal its files to"),
                ),
                Some(_) => {}
            }
            if c.routes[..j].contains(r) {
                f.warn(
                    at.join("routes").join(j),
                    format!("route to {r} is listed twice"),
                );
            }
        }
    }

    for (i, m) in config.maintainers.iter().enumerate() {
        let at = key_path!["maintainer", i];
        seen.id(&m.id, at.join("id"), f);
        if m.name.trim().is_empty() {
            f.error(
                at.join("name"),
                "a maintainer account is personal: give the person's name",
            );
        }
        if m.ssh_keys.is_empty() {
            f.error(
                at.join("ssh_keys"),
                "a maintainer needs at least one SSH key",
            );
        }
        seen.ssh_keys(&m.ssh_keys, at.join("ssh_keys"), f);
        match expiry_instant(&m.expires, zone) {
            Err(e) => f.error(at.join("expires"), e),
            Ok(t) if t <= now => f.warn(
                at.join("expires"),
                format!("maintainer {} expired at {t}: the account is refused", m.id),
            ),
            Ok(t) if t > now + MAX_EXPIRY_AHEAD => f.error(at.join("expires"), too_far(t)),
            Ok(_) => {}
        }
        scope(config, &m.scope, at.join("scope"), f);
    }

    for (i, b) in config.break_glass.iter().enumerate() {
        let at = key_path!["break_glass", i];
        seen.id(&b.id, at.join("id"), f);
        if b.ssh_keys.is_empty() {
            f.error(
                at.join("ssh_keys"),
                "a break-glass account needs at least one SSH key",
            );
        }
        seen.ssh_keys(&b.ssh_keys, at.join("ssh_keys"), f);
        match b.expires.as_ref().map(|e| expiry_instant(e, zone)) {
            None => f.error(
                at.join("id"),
                format!(
                    "break-glass account {} needs expires (at most a year ahead)",
                    b.id
                ),
            ),
            Some(Err(e)) => f.error(at.join("expires"), e),
            Some(Ok(t)) if t <= now => f.warn(
                at.join("expires"),
                format!("break-glass account {} expired at {t}: it is refused", b.id),
            ),
            Some(Ok(t)) if t > now + MAX_EXPIRY_AHEAD => f.error(at.join("expires"), too_far(t)),
            Some(Ok(_)) => {}
        }
        if b.max_session.is_zero() {
            f.error(
                at.join("max_session"),
                "max_session must be longer than zero",
            );
        }
        if b.enabled {
            f.warn(
                at.join("enabled"),
                format!(
                    "break-glass account {} is ENABLED: every login raises an alert",
                    b.id
                ),
            );
        }
        scope(config, &b.scope, at.join("scope"), f);
    }

    for (i, o) in config.operators.iter().enumerate() {
        let at = key_path!["operator", i];
        seen.id(&o.id, at.join("id"), f);
        if o.name.trim().is_empty() {
            f.error(
                at.join("name"),
                "an operator is a named person: give the person's name",
            );
        }
        match o.expires.as_ref().map(|e| expiry_instant(e, zone)) {
            Some(Err(e)) => f.error(at.join("expires"), e),
            Some(Ok(t)) if t <= now => f.warn(
                at.join("expires"),
                format!("operator {} expired at {t}: the operator is refused", o.id),
            ),
            _ => {}
        }
        if let Some(ids) = &o.scope {
            scope(config, ids, at.join("scope"), f);
        }
    }

    for (i, n) in config.noc.iter().enumerate() {
        let at = key_path!["noc", i];
        seen.id(&n.id, at.join("id"), f);
        if n.cert_subject.is_none() && n.cert_fingerprint.is_none() {
            f.error(at.join("id"), "a noc account logs in with a client certificate: give cert_subject or cert_fingerprint");
        }
        seen.cert(
            n.cert_subject.as_deref(),
            n.cert_fingerprint.as_deref(),
            at,
            f,
        );
    }
}

fn scope(config: &Config, ids: &[CounterpartId], path: KeyPath, f: &mut Findings) {
    for (j, id) in ids.iter().enumerate() {
        if config.counterpart(id).is_none() {
            f.error(
                path.join(j),
                format!("scope names {id:?}, which is not a counterpart"),
            );
        }
    }
}

fn encryption_cert(p: &Path, path: KeyPath, now: OffsetDateTime, f: &mut Findings) {
    let bytes = match fs::read(p) {
        Ok(b) => b,
        Err(e) => return f.error(path, format!("{}: {e}", p.display())),
    };
    let der = match x509_parser::pem::parse_x509_pem(&bytes) {
        Ok((_, pem)) => pem.contents,
        Err(_) => bytes,
    };
    match x509_parser::parse_x509_certificate(&der) {
        Err(e) => f.error(
            path,
            format!(
                "{} is not an X.509 certificate (PEM or DER): {e}",
                p.display()
            ),
        ),
        Ok((_, cert)) => {
            if let Err(e) = crate::seal::Recipient::from_certificate(&der) {
                f.warn(
                    path.clone(),
                    format!(
                        "{}: {}; files routed to this counterpart are rejected",
                        p.display(),
                        Chain(&e)
                    ),
                );
            }
            let not_after = cert.validity().not_after.timestamp();
            if not_after < now.unix_timestamp() {
                f.warn(
                    path,
                    format!("{} expired at {}", p.display(), cert.validity().not_after),
                );
            }
        }
    }
}

/// Rule severities name known rules, and never lower one that always rejects.
fn rule_settings(rules: &crate::config::RuleSettings, at: &KeyPath, f: &mut Findings) {
    for (id, severity) in rules {
        if let Err(e) = crate::validate::finding::check_setting(id, *severity) {
            // A known rule is pointed at by its key; an unknown one by its table.
            match crate::validate::finding::Rule::from_id(id) {
                Some(rule) => f.error(at.join(rule.id()), e),
                None => f.error(at.clone(), e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClamdAddress, ClamdEndpoints};

    fn clamd_findings(addresses: &[&str]) -> Vec<(String, String)> {
        let endpoints = ClamdEndpoints(
            addresses
                .iter()
                .map(|a| ClamdAddress::parse(a).expect("an address"))
                .collect(),
        );
        let mut f = Findings::default();
        clamd(&endpoints, key_path!["gateway", "clamd"], &mut f);
        assert!(f.0.iter().all(|f| f.severity == Severity::Error));
        f.0.into_iter()
            .map(|f| (f.path.to_string(), f.message))
            .collect()
    }

    #[test]
    fn clamd_endpoints_are_at_least_one_and_distinct() {
        assert!(clamd_findings(&["unix:/run/clamav/clamd.ctl"]).is_empty());
        assert!(clamd_findings(&["unix:/run/clamav/clamd.ctl", "tcp:10.0.0.5:3310"]).is_empty());
        let empty = clamd_findings(&[]);
        assert_eq!(empty.len(), 1, "{empty:?}");
        assert_eq!(empty[0].0, "gateway.clamd");
        assert!(empty[0].1.starts_with("no clamd is named"), "{empty:?}");
        assert_eq!(
            clamd_findings(&[
                "tcp:10.0.0.5:3310",
                "unix:/run/clamav/clamd.ctl",
                "tcp:10.0.0.5:3310",
            ]),
            vec![(
                "gateway.clamd[2]".to_owned(),
                "duplicate clamd endpoint tcp:10.0.0.5:3310 (first at gateway.clamd[0])".to_owned()
            )]
        );
    }

    fn store_findings(backend: &str, url: Option<&str>) -> Vec<(Severity, String, String)> {
        let settings = crate::config::Store {
            backend: if backend == "postgres" {
                crate::config::StoreBackend::Postgres
            } else {
                crate::config::StoreBackend::Local
            },
            url: url.map(str::to_owned),
            password_file: None,
            tls_ca: None,
            node: None,
        };
        let mut f = Findings::default();
        super::store(&settings, &mut f);
        f.0.into_iter()
            .map(|f| (f.severity, f.path.to_string(), f.message))
            .collect()
    }

    /// A database's settings are checked with the config: a URL, no password in it, TLS to a
    /// server elsewhere; settings the local store does not use are pointed out.
    #[test]
    fn store_settings_are_complete_and_safe() {
        assert!(store_findings("local", None).is_empty());
        assert!(
            store_findings("postgres", Some("postgres://handoff@127.0.0.1/handoff")).is_empty()
        );
        let at = |f: Vec<(Severity, String, String)>| -> Vec<(Severity, String)> {
            f.into_iter().map(|(s, p, _)| (s, p)).collect()
        };
        assert_eq!(
            at(store_findings("postgres", None)),
            vec![(Severity::Error, "gateway.store.url".to_owned())]
        );
        let remote = store_findings("postgres", Some("postgres://handoff@db.example.jp/handoff"));
        assert_eq!(remote.len(), 1);
        assert_eq!(remote[0].1, "gateway.store.url");
        assert!(remote[0].2.contains("tls_ca"), "{}", remote[0].2);
        let secret = store_findings("postgres", Some("postgres://handoff:pw@127.0.0.1/handoff"));
        assert!(secret[0].2.contains("password_file"), "{}", secret[0].2);
        assert_eq!(
            at(store_findings(
                "local",
                Some("postgres://handoff@127.0.0.1/handoff")
            )),
            vec![(Severity::Warning, "gateway.store.backend".to_owned())]
        );
    }
}
