//! The shape of `handoff.toml`, as serde reads it. Every key is documented in
//! `config/handoff.toml`; unknown keys are refused.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::size::ByteSize;
use crate::accounts::{AccountId, CounterpartId};
pub use crate::validate::finding::{Lang, RuleSettings, Severity as RuleSeverity};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: Gateway,
    #[serde(default, rename = "counterpart")]
    pub counterparts: Vec<Counterpart>,
    #[serde(default, rename = "maintainer")]
    pub maintainers: Vec<Maintainer>,
    #[serde(default, rename = "break_glass")]
    pub break_glass: Vec<BreakGlass>,
    #[serde(default, rename = "noc")]
    pub noc: Vec<Noc>,
    #[serde(default, rename = "operator")]
    pub operators: Vec<Operator>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    pub state_dir: PathBuf,
    pub sftp_listen: Option<SocketAddr>,
    pub https_listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    pub host_keys: Vec<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default)]
    pub client_ca: Vec<PathBuf>,
    #[serde(default)]
    pub crl: Vec<PathBuf>,
    /// How long clients of a CA whose CRL is past its nextUpdate are still let in (an alert is
    /// raised at once): a CA that stops publishing must not leave revocation unknown for ever.
    #[serde(default = "default_crl_grace", with = "humantime_serde")]
    pub crl_grace: std::time::Duration,
    pub receipt_key: PathBuf,
    pub master_key: PathBuf,
    /// Private key that opens uploads encrypted for the gateway (counterparts with
    /// `inbound = "cms"`), and its certificate.
    pub inbound_key: Option<PathBuf>,
    pub inbound_cert: Option<PathBuf>,
    /// Open inbound files whose content key is wrapped with RSA PKCS#1 v1.5 (OpenSSL's
    /// default): off, since that padding is a decryption oracle's raw material (docs/sealing.md).
    #[serde(default)]
    pub inbound_allow_rsa_pkcs1v15: bool,
    /// One clamd or a pool of them (docs/scanning.md).
    pub clamd: super::ClamdEndpoints,
    pub schema_dir: PathBuf,
    /// Offset used to read date-only `expires` values, e.g. "+09:00"; parsed at load.
    #[serde(
        default = "default_time_zone",
        deserialize_with = "super::validate::deserialize_offset"
    )]
    pub time_zone: time::UtcOffset,
    #[serde(default)]
    pub log_format: LogFormat,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub archive: ArchiveLimits,
    #[serde(default)]
    pub validation: Validation,
    /// The gateway's own 代行機関 (agency) number, 8 digits: archives addressed to it are
    /// sorted by insurer (docs/sorting.md). Unset: no archive may name an agency.
    pub agency_number: Option<crate::numbers::AgencyNumber>,
    #[serde(default)]
    pub sorting: Sorting,
    #[serde(default)]
    pub ssh: Ssh,
    #[serde(default)]
    pub store: Store,
}

/// `[gateway.store]`: where jobs, events and the receipt chain live (docs/cluster.md). The
/// default keeps them in SQLite under the state directory; `postgres` shares them between
/// gateway nodes.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Store {
    #[serde(default)]
    pub backend: StoreBackend,
    /// `postgres://USER@HOST:PORT/DATABASE`, without a password (`password_file` holds it, so
    /// the config can be shown without a secret).
    pub url: Option<String>,
    /// The database password, alone on the file's first line; the file readable by its owner only.
    pub password_file: Option<PathBuf>,
    /// The CA certificate (PEM) that signed the database server's: the connection is TLS and the
    /// server's name is checked against its certificate. Required unless the server is on this
    /// machine (a loopback address or a Unix socket).
    pub tls_ca: Option<PathBuf>,
    /// This node's name in the database (its copy of the audit log is kept under it); the
    /// machine's host name when unset.
    pub node: Option<String>,
}

impl Store {
    /// This node's name: `node`, or the machine's host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "gateway".to_owned())
        })
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StoreBackend {
    /// SQLite files in the state directory: one gateway node.
    #[default]
    Local,
    /// A PostgreSQL database shared by every gateway node.
    Postgres,
}

/// `[gateway.ssh]`: the SSH algorithms offered, by preference. Unset, a kind keeps the
/// defaults (docs/sftp.md); a list of names replaces them; a list of `+name`/`-name` edits them.
/// Names are checked at load against `transport::sftp::algorithms`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Ssh {
    pub kex: Option<Vec<String>>,
    pub ciphers: Option<Vec<String>>,
    pub macs: Option<Vec<String>>,
    pub host_key_algorithms: Option<Vec<String>>,
}

impl Ssh {
    /// The configured list of one kind, if any.
    pub fn list(&self, kind: crate::transport::sftp::algorithms::Kind) -> Option<&[String]> {
        use crate::transport::sftp::algorithms::Kind;
        match kind {
            Kind::Kex => self.kex.as_deref(),
            Kind::Cipher => self.ciphers.as_deref(),
            Kind::Mac => self.macs.as_deref(),
            Kind::HostKey => self.host_key_algorithms.as_deref(),
        }
    }
}

/// How archives addressed to the agency are sorted.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Sorting {
    pub unroutable: Unroutable,
}

/// What happens to an agency-addressed archive holding persons whose insurer the sender may
/// not send to (not a configured insurer, or no route from that clinic).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Unroutable {
    /// The whole archive goes back, naming each such person's file: nothing is sent.
    #[default]
    RejectArchive,
    /// The routable persons are delivered; the others come back in a `rejected` receipt.
    DeliverRoutable,
}

/// What the schema check accepts: the editions of the official format, and the severity of
/// each rule where it differs from its default (docs/validation.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Validation {
    /// Edition ids: "current", "intermediate", "2007".
    pub editions: Vec<String>,
    pub rules: RuleSettings,
}

impl Default for Validation {
    fn default() -> Self {
        Validation {
            editions: ["current", "intermediate", "2007"]
                .map(String::from)
                .to_vec(),
            rules: RuleSettings::new(),
        }
    }
}

/// Bounds on what an uploaded archive may hold, checked before anything is decompressed.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveLimits {
    pub max_entries: u64,
    pub max_entry_size: ByteSize,
    pub max_total_size: ByteSize,
    /// Largest uncompressed/compressed ratio of an entry over 1 MiB.
    pub max_ratio: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_entries: 100_000,
            max_entry_size: ByteSize(64 << 20),
            max_total_size: ByteSize(4 << 30),
            max_ratio: 100,
        }
    }
}

fn default_crl_grace() -> std::time::Duration {
    std::time::Duration::from_secs(24 * 3600)
}

fn default_time_zone() -> time::UtcOffset {
    time::macros::offset!(+9)
}

/// How the daemon writes its log on stderr: `gateway.log_format`, or `handoff serve
/// --log-format` over it. The names are the same in both places.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people (with colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

/// How long things may stay where they are.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    #[serde(with = "humantime_serde")]
    pub partial_upload: Duration,
    #[serde(with = "humantime_serde")]
    pub accept_overdue: Duration,
    #[serde(with = "humantime_serde")]
    pub retrieve_sla: Duration,
    #[serde(with = "humantime_serde")]
    pub outbox: Duration,
    #[serde(with = "humantime_serde")]
    pub quarantine: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const HOUR: u64 = 3600;
        Retention {
            partial_upload: Duration::from_secs(24 * HOUR),
            accept_overdue: Duration::from_secs(15 * 60),
            retrieve_sla: Duration::from_secs(72 * HOUR),
            outbox: Duration::from_secs(30 * 24 * HOUR),
            quarantine: Duration::from_secs(90 * 24 * HOUR),
        }
    }
}

/// Limits against abuse and exhaustion. Per-account values may override `max_upload_size`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_upload_size: ByteSize,
    pub min_free_space: ByteSize,
    pub connections_per_ip_per_minute: u32,
    pub auth_failures_per_ip: u32,
    pub auth_failures_per_account: u32,
    /// SSH password attempts per source and minute; more are refused before any hashing.
    pub password_attempts_per_minute: u32,
    #[serde(with = "humantime_serde")]
    pub ban_time: Duration,
    pub max_sessions_per_account: u32,
    pub max_requests_per_account: u32,
    pub requests_per_second_per_account: u32,
    /// Time a client has to send a request's headers (slow-loris protection).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Longest pause allowed between two pieces of a request body.
    #[serde(with = "humantime_serde")]
    pub body_idle_timeout: Duration,
    /// Time an SSH client has to send its version string after connecting.
    #[serde(with = "humantime_serde")]
    pub ssh_version_timeout: Duration,
    /// Time an SSH client has to authenticate after connecting (OpenSSH's `LoginGraceTime`).
    #[serde(with = "humantime_serde")]
    pub login_grace_time: Duration,
    /// SSH connections not yet authenticated at once (OpenSSH's `MaxStartups`): a flood of
    /// handshakes cannot take every slot from clients that log in.
    pub max_unauthenticated_connections: u32,
    /// Connections open at once, per transport.
    pub max_connections: u32,
    /// An authenticated SSH session with no channel activity for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Channels open at once on one SSH connection (OpenSSH's `MaxSessions`).
    pub max_channels_per_connection: u32,
    /// Files and directories one SFTP session may hold open at once.
    pub max_handles_per_session: u32,
    /// Bytes of out-of-order SFTP writes one account's uploads may hold in memory together,
    /// waiting for a gap before them to be filled.
    pub max_buffered_per_account: ByteSize,
    /// The same, for the uploads of all accounts together.
    pub max_buffered_total: ByteSize,
    /// Threads that hash, seal and write uploads, shared by all uploads of both transports.
    pub upload_writer_threads: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_upload_size: ByteSize(2 << 30),
            min_free_space: ByteSize(1 << 30),
            connections_per_ip_per_minute: 60,
            auth_failures_per_ip: 10,
            auth_failures_per_account: 5,
            password_attempts_per_minute: 10,
            ban_time: Duration::from_secs(15 * 60),
            max_sessions_per_account: 8,
            max_requests_per_account: 16,
            requests_per_second_per_account: 50,
            header_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
            ssh_version_timeout: Duration::from_secs(10),
            login_grace_time: Duration::from_secs(30),
            max_unauthenticated_connections: 64,
            max_connections: 1024,
            idle_timeout: Duration::from_secs(15 * 60),
            max_channels_per_connection: 10,
            max_handles_per_session: 64,
            max_buffered_per_account: ByteSize(32 << 20),
            max_buffered_total: ByteSize(64 << 20),
            upload_writer_threads: 8,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum CounterpartKind {
    Clinic,
    Insurer,
}

impl CounterpartKind {
    /// The kind on the other end of a route: files go between clinics and insurers.
    pub fn peer(self) -> CounterpartKind {
        match self {
            CounterpartKind::Clinic => CounterpartKind::Insurer,
            CounterpartKind::Insurer => CounterpartKind::Clinic,
        }
    }

    /// The number that identifies a counterpart of this kind.
    pub fn number_kind(self) -> crate::numbers::NumberKind {
        match self {
            CounterpartKind::Clinic => crate::numbers::NumberKind::Institution,
            CounterpartKind::Insurer => crate::numbers::NumberKind::Insurer,
        }
    }
}

/// A clinic or an insurer: the parties whose files pass through.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Counterpart {
    pub id: CounterpartId,
    pub kind: CounterpartKind,
    /// Checked at load; validation refuses a number of the other kind.
    pub number: crate::numbers::Number,
    pub name: Option<String>,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    pub password_hash: Option<String>,
    pub cert_subject: Option<String>,
    pub cert_fingerprint: Option<String>,
    pub encryption_cert: Option<PathBuf>,
    /// Ids of the counterparts this one may send files to.
    #[serde(default)]
    pub routes: Vec<CounterpartId>,
    pub max_upload_size: Option<ByteSize>,
    /// What this counterpart's uploads are: as they are, or CMS encrypted for the gateway.
    #[serde(default)]
    pub inbound: Inbound,
    /// What files an operator ingests for it from offline media must be.
    #[serde(default)]
    pub media: Media,
    /// The language of the findings in the receipts of its files.
    #[serde(default)]
    pub language: Lang,
    /// Severities of the schema check's rules for this counterpart's uploads, over the
    /// gateway's `[gateway.validation.rules]`.
    #[serde(default)]
    pub rules: RuleSettings,
}

/// The form a counterpart's uploads arrive in.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Inbound {
    /// The archive itself (protected in transit by SSH or TLS).
    #[default]
    Plain,
    /// CMS (AuthEnvelopedData) encrypted for the gateway's `inbound_cert`; opened before the
    /// schema check, and refused otherwise.
    Cms,
}

/// The form files ingested from offline media must have (`handoff ingest`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Media {
    /// CMS encrypted for the gateway's `inbound_cert`: a lost or stolen medium discloses
    /// nothing. A plain archive is rejected (`inbound.not-cms`).
    #[default]
    Cms,
    /// CMS encrypted for the gateway, or the plain archive.
    Any,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    #[default]
    Read,
    ReadWrite,
}

/// One named person of a maintenance vendor. Never shared; always expires.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Maintainer {
    pub id: AccountId,
    pub name: String,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    pub expires: toml::value::Datetime,
    /// Ids of the counterparts whose boxes this person may open.
    #[serde(default)]
    pub scope: Vec<CounterpartId>,
    #[serde(default)]
    pub access: Access,
}

/// One named person of the agency who carries files between media and boxes (`handoff
/// ingest`, `handoff export`). Has no credentials: an operator never logs in over SFTP or
/// HTTPS; the id is who the receipts and the audit log say acted.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    pub id: AccountId,
    pub name: String,
    pub expires: Option<toml::value::Datetime>,
    /// The counterparts this person may ingest for and export for; absent: every counterpart.
    pub scope: Option<Vec<CounterpartId>>,
}

/// The emergency account: off unless `enabled = true`; every use raises an alert, and one use
/// (a session, at most `max_session` long) disables it until its entry is changed again.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BreakGlass {
    pub id: AccountId,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    #[serde(default)]
    pub enabled: bool,
    /// Required (validation refuses its absence with the entry's line): an enabled emergency
    /// account must not be forgotten switched on.
    pub expires: Option<toml::value::Datetime>,
    /// Longest time from the first login of a use until its sessions are closed.
    #[serde(default = "default_max_session", with = "humantime_serde")]
    pub max_session: Duration,
    #[serde(default)]
    pub scope: Vec<CounterpartId>,
    pub reason: Option<String>,
}

fn default_max_session() -> Duration {
    Duration::from_secs(3600)
}

impl BreakGlass {
    /// A digest of the whole entry: a use is recorded against it, and any change to the entry
    /// (a new `expires` or `reason`, say) is what enables the account again.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let fields = [
            self.id.to_string(),
            self.ssh_keys.join("\n"),
            self.enabled.to_string(),
            self.expires
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            self.max_session.as_secs().to_string(),
            self.scope
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            self.reason.clone().unwrap_or_default(),
        ];
        for f in fields {
            h.update((f.len() as u64).to_be_bytes());
            h.update(f.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// The operations centre: read-only status, receipts and metrics over HTTPS.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Noc {
    pub id: AccountId,
    pub name: Option<String>,
    pub cert_subject: Option<String>,
    pub cert_fingerprint: Option<String>,
}
