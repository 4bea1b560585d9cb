//! PostgreSQL, shared by every gateway node (DESIGN §8, docs/cluster.md): the connection
//! settings, the schema's migrations (`migrations/postgres/`), and the one way the pipeline's
//! blocking code talks to the asynchronous driver.
//!
//! The driver's connections run on a small runtime of their own. A caller borrows an idle
//! client (or connects one) and drives its queries with a plain executor on its own thread, so
//! the job store works the same from a worker thread, the receipt issuer's thread or the
//! command line, as SQLite does; a client whose connection broke is dropped, and the next call
//! connects again: the gateway resumes by itself when the database comes back.

use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};
pub use tokio_postgres::{Client, Row, Transaction};

use crate::config::Store;
use crate::sync::Recover;

/// The schema's versions, in order: each is applied once, in one transaction, by
/// `handoff migrate`.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        include_str!("../../migrations/postgres/0001_jobs_and_receipts.sql"),
    ),
    (2, include_str!("../../migrations/postgres/0002_audit.sql")),
    (3, include_str!("../../migrations/postgres/0003_files.sql")),
    (4, include_str!("../../migrations/postgres/0004_claims.sql")),
];

/// The version of the schema this gateway works with.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Advisory lock keys, one per kind of work that one session at a time may do. The high word
/// spells "hand", so that they do not meet another application's locks in a shared cluster.
pub mod locks {
    const BASE: i64 = 0x6861_6e64 << 32;
    /// `handoff migrate`: nodes migrating at once take turns.
    pub const MIGRATE: i64 = BASE | 1;
    /// Appending events: held to commit, so that events become visible in their order.
    pub const EVENTS: i64 = BASE | 2;
    /// Issuing receipts: one issuer extends the chain at a time.
    pub const ISSUER: i64 = BASE | 3;
    /// Held by the node that does what one node does for all (the coordinating node,
    /// docs/cluster.md): receipts, retention, alerts and the inboxes' watch. Every node works
    /// the jobs it claims.
    pub const NODE: i64 = BASE | 4;
    /// With a hash of its `node` name as the second key, held by each node for its life: jobs
    /// are claimed by name, so two nodes of one name would each take the other's for its own.
    pub const NAMES: i32 = 0x6861_6e64;
}

/// Longest a call may wait for the database before it fails (and its work is retried).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("gateway.store.{key}: {message}")]
    Settings { key: &'static str, message: String },
    #[error("gateway.store.password_file: {}", .0.display())]
    Password(PathBuf, #[source] io::Error),
    #[error("gateway.store.tls_ca")]
    Tls(#[from] crate::transport::https::TlsError),
    #[error("PostgreSQL")]
    Sql(#[from] tokio_postgres::Error),
    #[error("PostgreSQL: no answer within {0:?}")]
    Timeout(Duration),
    #[error(
        "PostgreSQL: the database schema is at version {found} and this gateway works with version {wanted}: {}",
        if .found < .wanted { "run handoff migrate" } else { "this gateway is older than the database; upgrade it" }
    )]
    Schema { found: i32, wanted: i32 },
    #[error("PostgreSQL: starting the connection thread")]
    Runtime(#[source] io::Error),
    #[error(
        "another gateway node became the coordinating node of {0} while this one's connection was broken: this node stopped rather than coordinate beside it; started again, it works beside it (docs/cluster.md)"
    )]
    Taken(String),
    #[error(
        "another gateway node named {node:?} is running on {database}{holder}: give each node its own [gateway.store] node (docs/cluster.md)"
    )]
    NameInUse {
        node: String,
        database: String,
        holder: String,
    },
}

/// Why a node stopped itself ([`Database::lost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    /// Another node coordinates now.
    Coordination,
    /// Another node of this node's name took the name.
    Name,
}

#[derive(Clone)]
enum Tls {
    Off,
    On(tokio_postgres_rustls::MakeRustlsConnect),
}

/// A PostgreSQL database and the idle connections to it.
pub struct Database {
    config: tokio_postgres::Config,
    tls: Tls,
    /// Drives the connections; shut down in the background on drop (a runtime may not be
    /// dropped by a thread of another one).
    runtime: Option<tokio::runtime::Runtime>,
    idle: Mutex<Vec<Client>>,
    /// What the last health check found: `None` before the first, then `Ok` or why not.
    health: Mutex<Option<Result<(), String>>>,
    /// Set when another node took the coordination or this node's name while this one had lost
    /// its connection.
    lost: Mutex<Option<Lost>>,
    /// Whether this node holds the coordinating node's lock now.
    leading: std::sync::atomic::AtomicBool,
    /// This node's name (`[gateway.store] node`): the owner of the jobs it claims.
    node: String,
}

/// Checks the settings of `[gateway.store]` (what `handoff check-config` reports) without
/// reading the password or connecting.
pub fn check_settings(store: &Store) -> Result<(), DatabaseError> {
    connection(store).map(drop)
}

/// The connection settings of `[gateway.store]`, but for the password.
fn connection(store: &Store) -> Result<(tokio_postgres::Config, Tls), DatabaseError> {
    let Some(url) = &store.url else {
        return Err(settings(
            "url",
            "backend = \"postgres\" needs url = \"postgres://USER@HOST:PORT/DATABASE\"",
        ));
    };
    let mut config = tokio_postgres::Config::from_str(url).map_err(|e| settings("url", e))?;
    if config.get_password().is_some() {
        return Err(settings(
            "url",
            "a password in the URL would be shown wherever the config is; put it in password_file",
        ));
    }
    let tls = match &store.tls_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in crate::transport::https::tls::certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| settings("tls_ca", format!("{}: {e}", ca.display())))?;
            }
            let client = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.ssl_mode(SslMode::Require);
            Tls::On(tokio_postgres_rustls::MakeRustlsConnect::new(client))
        }
        None => {
            if let Some(host) = config.get_hosts().iter().find(|h| !is_local(h)) {
                return Err(settings(
                    "url",
                    format!(
                        "{} is not on this machine: give tls_ca, the CA of the server's certificate, so that the connection is encrypted and the server checked",
                        host_name(host)
                    ),
                ));
            }
            config.ssl_mode(SslMode::Disable);
            Tls::Off
        }
    };
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .application_name("handoff");
    Ok((config, tls))
}

impl Database {
    /// The database of `[gateway.store]`, not yet connected: the settings are checked here, the
    /// first call connects.
    pub fn new(store: &Store) -> Result<Arc<Database>, DatabaseError> {
        let (mut config, tls) = connection(store)?;
        if let Some(path) = &store.password_file {
            config.password(read_password(path)?);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("handoff-postgres")
            .enable_all()
            .build()
            .map_err(DatabaseError::Runtime)?;
        Ok(Arc::new(Database {
            config,
            tls,
            runtime: Some(runtime),
            idle: Mutex::new(Vec::new()),
            health: Mutex::new(None),
            lost: Mutex::new(None),
            leading: std::sync::atomic::AtomicBool::new(false),
            node: store.node_name(),
        }))
    }

    /// This node's name, which owns the jobs it claims (unique among the nodes).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Where the database is, for messages: hosts, port and database, never the password.
    pub fn describe(&self) -> String {
        let hosts: Vec<String> = self.config.get_hosts().iter().map(host_name).collect();
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}:{port}/{}",
            hosts.join(","),
            self.config.get_dbname().unwrap_or("")
        )
    }

    fn handle(&self) -> Result<&tokio::runtime::Handle, DatabaseError> {
        // Set in `new`, taken only by `drop`.
        self.runtime
            .as_ref()
            .map(tokio::runtime::Runtime::handle)
            .ok_or_else(|| DatabaseError::Runtime(io::Error::other("stopped")))
    }

    fn connect(&self) -> Result<Client, DatabaseError> {
        let task = self
            .handle()?
            .spawn(reconnect(self.config.clone(), self.tls.clone()));
        match futures::executor::block_on(task) {
            Ok(client) => Ok(client?),
            Err(e) => Err(DatabaseError::Runtime(io::Error::other(e))),
        }
    }

    /// Runs `f` with a client of its own, on the calling thread, within 30 seconds.
    pub fn with<T, E: From<DatabaseError>>(
        &self,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, E>,
    ) -> Result<T, E> {
        let idle = {
            let mut idle = self.idle.locked();
            idle.retain(|c| !c.is_closed());
            idle.pop()
        };
        let mut client = match idle {
            Some(c) => c,
            None => self.connect()?,
        };
        // The timer is the connection runtime's: the caller may be on any thread.
        let _context = self.handle()?.enter();
        let outcome =
            futures::executor::block_on(tokio::time::timeout(CALL_TIMEOUT, f(&mut client)));
        match outcome {
            Ok(result) => {
                if !client.is_closed() {
                    self.idle.locked().push(client);
                }
                result
            }
            // Dropped mid-call: its connection ends with it.
            Err(_) => Err(DatabaseError::Timeout(CALL_TIMEOUT).into()),
        }
    }

    /// The one line that says this node took the coordinating node's lock, at start or later.
    fn say_coordinating(&self) {
        tracing::info!("this node is the coordinating node of {}", self.describe());
    }

    /// Makes this node the coordinating node as soon as no other is: a session lock held on a
    /// connection of its own, tried at once and then every second. The returned watch turns
    /// `true` when this node coordinates; until then it serves its sessions and works jobs.
    ///
    /// The lock dies with its session: a node killed, or cut off for longer than the
    /// connection's keepalive (about 20 seconds), leaves it to another node. While this node's
    /// own lock connection is broken it does not coordinate ([`Database::coordinates`]); it takes
    /// the lock again when the database answers, and should another node have taken it meanwhile,
    /// this one stops (`shutdown`, and [`Database::lost`]) rather than coordinate beside it.
    ///
    /// The same session holds this node's name for the node's life: a node whose name another
    /// running node has is refused ([`DatabaseError::NameInUse`]).
    pub fn hold_for_node(
        self: &Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<tokio::sync::watch::Receiver<bool>, DatabaseError> {
        let holder = self.connect()?;
        let named = self.with_client(&holder, async |c: &Client| {
            keep_alive(c).await?;
            try_name_lock(c, &self.node).await
        })?;
        if !named {
            let holder = self
                .with(async |c: &mut Client| -> Result<_, DatabaseError> {
                    lock_holder(c, Held::Name(&self.node)).await
                })
                .unwrap_or_default();
            return Err(DatabaseError::NameInUse {
                node: self.node.clone(),
                database: self.describe(),
                holder,
            });
        }
        let taken = self.with_client(&holder, try_node_lock)?;
        let (tx, rx) = tokio::sync::watch::channel(taken);
        self.leading
            .store(taken, std::sync::atomic::Ordering::Release);
        if !taken {
            let who = self
                .with(async |c: &mut Client| -> Result<_, DatabaseError> {
                    lock_holder(c, Held::Coordination).await
                })
                .unwrap_or_default();
            tracing::info!(
                "another node{who} is the coordinating node of {}: this node serves its sessions and works the jobs it claims, and stands by to coordinate",
                self.describe()
            );
        } else {
            self.say_coordinating();
        }
        let db = Arc::downgrade(self);
        self.handle()?.spawn(async move {
            let mut holder = Some(holder);
            let mut led = taken;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(db) = db.upgrade() else { return };
                if holder.as_ref().is_some_and(Client::is_closed) {
                    holder = None;
                    db.leading.store(false, std::sync::atomic::Ordering::Release);
                }
                if holder.is_none() {
                    match reconnect(db.config.clone(), db.tls.clone()).await {
                        Ok(c) if keep_alive(&c).await.is_ok() => {
                            match try_name_lock(&c, &db.node).await {
                                Ok(true) => holder = Some(c),
                                Ok(false) => {
                                    tracing::error!(
                                        node = db.node,
                                        "another node of this node's name started while this one's connection was broken: this node stops"
                                    );
                                    *db.lost.locked() = Some(Lost::Name);
                                    shutdown.cancel();
                                    return;
                                }
                                Err(_) => continue,
                            }
                        }
                        Ok(_) => continue,
                        Err(e) => {
                            tracing::debug!(error = %crate::error::Chain(&e), "connecting for the coordinating node's lock");
                            continue;
                        }
                    }
                }
                if db.coordinates() {
                    continue;
                }
                let Some(c) = &holder else { continue };
                match try_node_lock(c).await {
                    Ok(true) => {
                        db.say_coordinating();
                        led = true;
                        db.leading.store(true, std::sync::atomic::Ordering::Release);
                        let _ = tx.send(true);
                    }
                    Ok(false) if led => {
                        tracing::error!(
                            "another node became the coordinating node while this one's connection was broken: this node stops"
                        );
                        *db.lost.locked() = Some(Lost::Coordination);
                        shutdown.cancel();
                        return;
                    }
                    Ok(false) => {}
                    Err(e) => tracing::debug!(error = %crate::error::Chain(&e), "taking the coordinating node's lock"),
                }
            }
        });
        Ok(rx)
    }

    /// Whether this node coordinates now: it holds the coordinating node's lock on a live
    /// connection.
    pub fn coordinates(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Why this node stopped itself, if it did: another node took the coordination, or this
    /// node's name, while its connection was broken.
    pub fn lost(&self) -> Option<DatabaseError> {
        (*self.lost.locked()).map(|lost| match lost {
            Lost::Coordination => DatabaseError::Taken(self.describe()),
            Lost::Name => DatabaseError::NameInUse {
                node: self.node.clone(),
                database: self.describe(),
                holder: String::new(),
            },
        })
    }

    fn with_client<T>(
        &self,
        client: &Client,
        f: impl AsyncFnOnce(&Client) -> Result<T, DatabaseError>,
    ) -> Result<T, DatabaseError> {
        let _context = self.handle()?.enter();
        futures::executor::block_on(tokio::time::timeout(CALL_TIMEOUT, f(client)))
            .map_err(|_| DatabaseError::Timeout(CALL_TIMEOUT))?
    }

    /// Whether the database answers now; the answer is kept for [`Database::health`].
    pub fn ping(&self) -> Result<(), DatabaseError> {
        let result = self.with(async |c: &mut Client| -> Result<(), DatabaseError> {
            c.simple_query("SELECT 1").await?;
            Ok(())
        });
        *self.health.locked() = Some(
            result
                .as_ref()
                .map(drop)
                .map_err(|e| crate::error::Chain(e).to_string()),
        );
        result
    }

    /// What the last [`Database::ping`] found (`None` before the first).
    pub fn health(&self) -> Option<Result<(), String>> {
        self.health.locked().clone()
    }

    /// The schema version the database is at (0: never migrated).
    pub fn schema_version(&self) -> Result<i32, DatabaseError> {
        self.with(async |c: &mut Client| {
            let exists: bool = c
                .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
                .await?
                .get(0);
            if !exists {
                return Ok(0);
            }
            latest_applied(c).await
        })
    }

    /// Fails unless the database's schema is the one this gateway works with: a node never
    /// runs on a schema it does not know.
    pub fn check_schema(&self) -> Result<(), DatabaseError> {
        let found = self.schema_version()?;
        if found != SCHEMA_VERSION {
            return Err(DatabaseError::Schema {
                found,
                wanted: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// Applies the migrations the database has not had, each in its own transaction; nodes
    /// migrating at once take turns. Returns the versions applied.
    pub fn migrate(&self) -> Result<Vec<i32>, DatabaseError> {
        self.with(async |c: &mut Client| {
            let mut applied = Vec::new();
            for (version, sql) in MIGRATIONS {
                let tx = c.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&locks::MIGRATE])
                    .await?;
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (
                         version    INTEGER PRIMARY KEY,
                         applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                     )",
                )
                .await?;
                let done = tx
                    .query_opt(
                        "SELECT 1 FROM schema_migrations WHERE version = $1",
                        &[version],
                    )
                    .await?
                    .is_some();
                if done {
                    continue;
                }
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[version],
                )
                .await?;
                tx.commit().await?;
                applied.push(*version);
            }
            let found = latest_applied(c).await?;
            if found > SCHEMA_VERSION {
                return Err(DatabaseError::Schema {
                    found,
                    wanted: SCHEMA_VERSION,
                });
            }
            Ok(applied)
        })
    }
}

/// Connects a client; its connection is driven on the runtime this runs on.
async fn reconnect(
    config: tokio_postgres::Config,
    tls: Tls,
) -> Result<Client, tokio_postgres::Error> {
    Ok(match tls {
        Tls::Off => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(drive(connection));
            client
        }
        Tls::On(tls) => {
            let (client, connection) = config.connect(tls).await?;
            tokio::spawn(drive(connection));
            client
        }
    })
}

/// Has the server notice within about 20 seconds that the node on the other end of `c` is gone
/// (a machine that died sends nothing), so that its session lock passes to another node.
async fn keep_alive(c: &Client) -> Result<(), DatabaseError> {
    c.batch_execute(
        "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3",
    )
    .await?;
    Ok(())
}

async fn try_node_lock(c: &Client) -> Result<bool, DatabaseError> {
    Ok(
        c.query_one("SELECT pg_try_advisory_lock($1)", &[&locks::NODE])
            .await?
            .get(0),
    )
}

/// A session lock this gateway takes, to name who holds it ([`lock_holder`]).
enum Held<'a> {
    /// The coordinating node's.
    Coordination,
    /// A node's name.
    Name(&'a str),
}

/// Who holds a lock, as the database knows the session: ` (connected from HOST, database
/// session N)`, or nothing when nobody does.
async fn lock_holder(c: &Client, held: Held<'_>) -> Result<String, DatabaseError> {
    const HOLDERS: &str = "SELECT COALESCE(host(a.client_addr), 'local socket'), a.pid \
        FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
        WHERE l.locktype = 'advisory' AND l.granted AND ";
    let row = match held {
        Held::Coordination => {
            let sql = format!(
                "{HOLDERS} l.objsubid = 1 AND ((l.classid::bigint << 32) | l.objid::bigint) = $1"
            );
            c.query_opt(&sql, &[&locks::NODE]).await?
        }
        Held::Name(node) => {
            let sql = format!(
                "{HOLDERS} l.objsubid = 2 AND l.classid::bigint = $1 \
                 AND l.objid::bigint = (hashtext($2)::bigint & 4294967295)"
            );
            c.query_opt(&sql, &[&i64::from(locks::NAMES), &node])
                .await?
        }
    };
    Ok(row
        .map(|r| {
            format!(
                " (connected from {}, database session {})",
                r.get::<_, String>(0),
                r.get::<_, i32>(1)
            )
        })
        .unwrap_or_default())
}

/// Takes this node's name for the life of `c`'s session.
async fn try_name_lock(c: &Client, node: &str) -> Result<bool, DatabaseError> {
    Ok(c.query_one(
        "SELECT pg_try_advisory_lock($1, hashtext($2))",
        &[&locks::NAMES, &node],
    )
    .await?
    .get(0))
}

async fn latest_applied(c: &mut Client) -> Result<i32, DatabaseError> {
    let v: Option<i32> = c
        .query_one("SELECT MAX(version) FROM schema_migrations", &[])
        .await?
        .get(0);
    Ok(v.unwrap_or(0))
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn drive<C>(connection: C)
where
    C: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(e) = connection.await {
        tracing::debug!(error = %crate::error::Chain(&e), "PostgreSQL connection ended");
    }
}

fn settings(key: &'static str, message: impl std::fmt::Display) -> DatabaseError {
    DatabaseError::Settings {
        key,
        message: message.to_string(),
    }
}

fn read_password(path: &Path) -> Result<String, DatabaseError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| DatabaseError::Password(path.into(), e))?;
    Ok(text.lines().next().unwrap_or("").to_owned())
}

fn is_local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

fn host_name(host: &Host) -> String {
    match host {
        Host::Tcp(name) => name.clone(),
        Host::Unix(path) => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(url: &str) -> Store {
        Store {
            backend: crate::config::StoreBackend::Postgres,
            url: Some(url.into()),
            password_file: None,
            tls_ca: None,
            node: None,
        }
    }

    /// Without TLS only a server on this machine is accepted, and a password never in the URL.
    #[test]
    fn settings_refuse_a_remote_server_in_clear_and_a_password_in_the_url() {
        assert!(Database::new(&store("postgres://handoff@127.0.0.1:5432/handoff")).is_ok());
        assert!(Database::new(&store("postgres://handoff@localhost/handoff")).is_ok());
        assert!(Database::new(&store("host=/run/postgresql user=handoff dbname=handoff")).is_ok());
        let remote = Database::new(&store("postgres://handoff@db.example.jp/handoff"))
            .err()
            .expect("refused");
        assert!(remote.to_string().contains("db.example.jp"), "{remote}");
        assert!(remote.to_string().contains("tls_ca"), "{remote}");
        let secret = Database::new(&store("postgres://handoff:hunter2@127.0.0.1/handoff"))
            .err()
            .expect("refused");
        assert!(secret.to_string().contains("password_file"), "{secret}");
        assert!(!secret.to_string().contains("hunter2"), "{secret}");
    }
}
