//! The `handoff` command: the daemon and the admin tools around it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use handoff::config::{self, ConfigError, LogFormat, live::LiveConfig};

#[derive(Parser)]
#[command(
    name = "handoff",
    version,
    about = "Secure file-transfer gateway between clinics and insurers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway daemon: SFTP and HTTPS drop boxes, the spool pipeline, receipts and
    /// metrics. Reloads the config when the file changes or on SIGHUP; stops on SIGTERM.
    Serve {
        /// The config file.
        #[arg(long, short, default_value = "/etc/handoff/handoff.toml")]
        config: PathBuf,
        /// Log format; overrides `gateway.log_format`.
        #[arg(long, value_parser = ["text", "json"])]
        log_format: Option<String>,
    },
    /// Validate a config file. Prints every error as FILE:LINE:COLUMN: MESSAGE and exits 1, or
    /// prints a summary of accounts and routes (and any warnings) and exits 0.
    CheckConfig {
        /// The config file.
        path: PathBuf,
    },
    /// Generate the gateway's secrets, each written with mode 0600 and never over an existing
    /// file: the SSH host keys (OpenSSH Ed25519, ECDSA P-256 and RSA 3072, each plus .pub), the
    /// receipt signing key (Ed25519 PKCS#8 PEM, plus .pub to hand to counterparts) and the
    /// master key (32 bytes, hex).
    Keygen {
        /// Directory to write ssh_host_{ed25519,ecdsa,rsa}_key, receipt.key and master.key into.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// List the accounts of a config: id, kind, number, expiry, status and auth methods.
    Accounts {
        /// The config file.
        #[arg(long, short, default_value = "/etc/handoff/handoff.toml")]
        config: PathBuf,
    },
    /// Read a password on standard input and print its argon2id hash for `password_hash`.
    HashPassword,
    /// List the bans in force (sources, and accounts banned from one source) as the running
    /// daemon last wrote them to the state directory; `unban` lifts one on the running daemon.
    Bans {
        #[arg(
            long,
            short,
            global = true,
            default_value = "/etc/handoff/handoff.toml"
        )]
        config: PathBuf,
        #[command(subcommand)]
        command: Option<BansCommand>,
    },
    /// Read the signed receipts the gateway issued (from the receipt ledger in the state
    /// directory), follow a file through its hops, and verify signatures and the chain.
    Receipts {
        #[command(subcommand)]
        command: ReceiptsCommand,
    },
    /// Seal standard input for one or more recipient certificates as CMS AuthEnvelopedData
    /// (AES-256-GCM; RSA-OAEP or ECDH P-256 for the key), DER, on standard output — what the gateway puts in
    /// outboxes; open it with `openssl cms -decrypt -inform DER -recip CERT -inkey KEY`.
    /// Standard input must be a file (`< file`): its length is needed up front.
    Seal {
        /// Recipient certificate (PEM or DER, RSA or EC P-256); repeat for several recipients.
        #[arg(long = "to", required = true)]
        to: Vec<PathBuf>,
    },
    /// Open a CMS message addressed to the gateway (DER or BER on standard input) with its private
    /// key and write the plaintext on standard output: AuthEnvelopedData (AES-GCM), or
    /// EnvelopedData (AES-CBC) with --allow-unauthenticated; RSA (PKCS#1 v1.5 or OAEP) or EC P-256
    /// (ECDH) keys. When standard input is a file (`< file`) the whole message, tag included, is
    /// checked before anything is written; from a pipe the plaintext streams out and a failed
    /// check at the end exits 1 — discard the output then.
    Open {
        /// Private key (PEM: PKCS#8, PKCS#1 or SEC1, unencrypted).
        #[arg(long)]
        key: PathBuf,
        /// The key's certificate: picks the recipient info meant for it by issuer and serial
        /// number (without it every recipient info of the key's kind is tried).
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Also open EnvelopedData, whose content has no integrity protection.
        #[arg(long)]
        allow_unauthenticated: bool,
    },
    /// Check the hash chain of the audit log (STATE/audit/audit.log, or --file); reports the
    /// first changed, removed or reordered line and exits 1.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Run the schema check on a checkup archive as if ACCOUNT had uploaded it, with the
    /// schema set and limits of the config. Prints each finding as
    /// `RULE FILE:LINE:COLUMN: MESSAGE` and exits 1, or prints the routing facts and exits 0.
    Validate {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
        /// The uploading counterpart's id, e.g. clinic-1312345679.
        #[arg(long = "as")]
        account: String,
        /// The archive (zip) to check; its file name is checked as the upload's name.
        archive: PathBuf,
        /// Language of the findings: ja or en (default: the account's `language`).
        #[arg(long)]
        lang: Option<handoff::config::Lang>,
    },
    /// Write a synthetic archive in the official format (invented content, no personal data): a
    /// valid one, or with --violate one that breaks exactly one rule of the check.
    Testdata(TestdataArgs),
    /// The official MHLW schema sets: install one into a schema directory, verify a directory
    /// against the pinned hashes, or list the pins.
    Schemas {
        #[command(subcommand)]
        command: SchemasCommand,
    },
}

#[derive(Subcommand)]
enum SchemasCommand {
    /// Install the official sets found in MHLW's download or an archive (a folder or a zip; the
    /// set may be nested, e.g. in an archive's XSD/ folder) into DIR/<set folder>/. Every pinned
    /// file must be there with its pinned sha256 (CRLF line ends are converted); otherwise
    /// nothing is installed.
    Install {
        /// The folder or zip holding the set.
        #[arg(long)]
        from: PathBuf,
        /// The schema directory (`schema_dir` of the config).
        #[arg(long)]
        to: PathBuf,
    },
    /// Hash and compile the sets of a schema directory; prints what check-config prints and
    /// exits 1 when the current set is missing or does not compile, or a file differs from its
    /// pin.
    Verify {
        /// The schema directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print the pinned sets: edition, namespace and `sha256  folder/file` of every file.
    List,
}

#[derive(Subcommand)]
enum BansCommand {
    /// Lift the bans of a source: an IPv4 address, or an IPv6 address or /64 prefix (every ban
    /// of that source, or with --account only that account's). Waits for the daemon to apply it;
    /// exits 1 if no such ban is listed or the daemon has not applied it within 5 seconds (the
    /// request then stays queued and is applied when the daemon runs).
    Unban {
        /// The source, e.g. 192.0.2.7 or 2001:db8:1:2::/64.
        source: String,
        /// Lift only the ban of this account from the source.
        #[arg(long)]
        account: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the audit log's hash chain.
    Verify {
        #[arg(long, short, default_value = "/etc/handoff/handoff.toml")]
        config: PathBuf,
        /// An audit log file to check instead of the configured one.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ReceiptsCommand {
    /// Print the latest receipts as JSON lines, oldest first.
    Tail {
        #[arg(long, short, default_value = "/etc/handoff/handoff.toml")]
        config: PathBuf,
        /// How many receipts.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Keep printing new receipts as they are issued.
        #[arg(long, short)]
        follow: bool,
    },
    /// Print one receipt (id `{file-id}.{hop}`), pretty.
    Show {
        #[arg(long, short, default_value = "/etc/handoff/handoff.toml")]
        config: PathBuf,
        id: String,
    },
    /// Every hop of one file, in order, with times and the time between hops.
    Trace {
        #[arg(long, short, default_value = "/etc/handoff/handoff.toml")]
        config: PathBuf,
        file_id: String,
    },
    /// Verify every signature and the whole chain; reports the first break and exits 1.
    /// With --from, verifies a JSON-lines file of receipts (e.g. from `export`) instead of the
    /// ledger; with --public-key, uses that SPKI PEM key instead of the configured one.
    Verify {
        #[arg(long, short, default_value = "/etc/handoff/handoff.toml")]
        config: PathBuf,
        #[arg(long)]
        from: Option<PathBuf>,
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Print receipts issued at or after a time (RFC 3339) as JSON lines.
    Export {
        #[arg(long, short, default_value = "/etc/handoff/handoff.toml")]
        config: PathBuf,
        #[arg(long)]
        since: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        end_quietly_on_closed_output();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("handoff: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// An admin command whose reader goes away (`handoff receipts export … | head`) ends as Unix
/// tools do, by SIGPIPE, instead of panicking in `println!` (Rust starts with SIGPIPE ignored).
/// The daemon keeps it ignored: a peer that closes a socket is an error to handle there.
fn end_quietly_on_closed_output() {
    // SAFETY: called before any thread is started; restores the default disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config, log_format } => serve(&config, log_format.as_deref()),
        Command::CheckConfig { path } => check_config(&path),
        Command::Keygen { dir } => keygen(&dir),
        Command::Accounts { config } => accounts(&config),
        Command::HashPassword => hash_password(),
        Command::Bans { config, command } => bans(&config, command),
        Command::Receipts { command } => receipts(command),
        Command::Seal { to } => seal(&to),
        Command::Open {
            key,
            cert,
            allow_unauthenticated,
        } => open(&key, cert.as_deref(), allow_unauthenticated),
        Command::Validate {
            config,
            account,
            archive,
            lang,
        } => validate(&config, &account, &archive, lang),
        Command::Testdata(args) => testdata(args),
        Command::Schemas { command } => schemas(command),
        Command::Audit {
            command: AuditCommand::Verify { config, file },
        } => {
            let path = match file {
                Some(f) => f,
                None => {
                    let loaded = config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
                    handoff::state::StateLayout::new(&loaded.config.gateway.state_dir)
                        .audit()
                        .join("audit.log")
                }
            };
            match handoff::audit::verify(&path) {
                Ok(n) => {
                    println!("OK: {n} audit lines, chain intact ({})", path.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("BROKEN: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// Prints config errors the way compilers do, one per line, and yields exit code 1.
fn config_failure(e: ConfigError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::FAILURE
}

fn serve(path: &Path, log_format: Option<&str>) -> anyhow::Result<ExitCode> {
    let live = match LiveConfig::load(path) {
        Ok(l) => l,
        Err(e) => return Ok(config_failure(e)),
    };
    let format = match log_format {
        Some("json") => LogFormat::Json,
        Some(_) => LogFormat::Text,
        None => live.snapshot().config.gateway.log_format,
    };
    init_logging(format);
    // A panic's message may quote the file being processed (personal data): the log gets only
    // where it happened; the file itself is kept in quarantine for investigation.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(at, "panic (its message is not logged: it may quote a file)");
    }));
    for w in &live.snapshot().warnings {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(handoff::daemon::serve(
        live,
        tokio_util::sync::CancellationToken::new(),
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HANDOFF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn check_config(path: &Path) -> anyhow::Result<ExitCode> {
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(e) => return Ok(config_failure(e)),
    };
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let c = &loaded.config;
    let count = |k| c.counterparts.iter().filter(|x| x.kind == k).count();
    println!(
        "{}: OK: {} clinics, {} insurers, {} maintainers, {} break-glass, {} noc",
        path.display(),
        count(config::CounterpartKind::Clinic),
        count(config::CounterpartKind::Insurer),
        c.maintainers.len(),
        c.break_glass.len(),
        c.noc.len()
    );
    println!("routes:");
    for cp in &c.counterparts {
        for r in &cp.routes {
            println!("  {} -> {}", cp.id, r);
        }
    }
    print_ssh_algorithms(&c.gateway);
    let dir = &c.gateway.schema_dir;
    match handoff::validate::schemas::Catalog::load(dir) {
        Ok(catalog) => {
            print!("{}", catalog.report());
            for w in catalog.report().warnings() {
                eprintln!("{}: warning: schema_dir: {w}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "{}: schema_dir: the official schemas cannot be used: {e}",
                path.display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The SSH algorithms `[gateway.ssh]` puts in force, by preference; host key algorithms only
/// where a key in `host_keys` signs with them.
fn print_ssh_algorithms(g: &config::Gateway) {
    use handoff::transport::sftp::algorithms::Effective;
    if g.sftp_listen.is_none() {
        return;
    }
    // The config has been checked: the lists resolve.
    let Ok(e) = Effective::of(&g.ssh) else {
        return;
    };
    let keys: Vec<_> = g
        .host_keys
        .iter()
        .filter_map(|p| handoff::keys::load_host_key(p).ok())
        .map(|k| k.algorithm())
        .collect();
    println!("ssh algorithms (gateway.ssh), by preference:");
    println!(
        "  kex: {}, ext-info-s, kex-strict-s-v00@openssh.com",
        e.kex.join(", ")
    );
    println!("  ciphers: {}", e.ciphers.join(", "));
    println!("  macs: {}", e.macs.join(", "));
    println!(
        "  host_key_algorithms: {}",
        e.host_keys_for(&keys).join(", ")
    );
}

fn schemas(command: SchemasCommand) -> anyhow::Result<ExitCode> {
    use handoff::validate::schemas::{self, Catalog, SETS};
    match command {
        SchemasCommand::Install { from, to } => match schemas::install(&from, &to) {
            Ok(installed) => {
                for i in installed {
                    let mut line = format!(
                        "installed {} ({} edition, {} files, all as pinned) from {}",
                        i.set.folder,
                        i.set.edition.name_en(),
                        i.files,
                        from.display()
                    );
                    if !i.source.is_empty() {
                        line.push_str(&format!(":{}", i.source));
                    }
                    line.push_str(&format!(" into {}", i.dir.display()));
                    if i.replaced {
                        line.push_str(", replaced the previous installation");
                    }
                    if !i.converted.is_empty() {
                        line.push_str(&format!(
                            "; CRLF line ends converted in {}",
                            i.converted.join(", ")
                        ));
                    }
                    println!("{line}");
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("handoff: schemas install: {e}");
                Ok(ExitCode::FAILURE)
            }
        },
        SchemasCommand::Verify { dir } => match Catalog::load(&dir) {
            Ok(catalog) => {
                print!("{}", catalog.report());
                if catalog.report().warnings().is_empty() {
                    Ok(ExitCode::SUCCESS)
                } else {
                    Ok(ExitCode::FAILURE)
                }
            }
            Err(e) => {
                print!("{}", schemas::Report::of(&dir));
                eprintln!("handoff: schemas verify: {e}");
                Ok(ExitCode::FAILURE)
            }
        },
        SchemasCommand::List => {
            for set in SETS {
                println!(
                    "# {}: {} edition ({}), namespace {}{}",
                    set.folder,
                    set.edition.name_en(),
                    set.edition.name_ja(),
                    set.namespace,
                    if set.required { ", required" } else { "" }
                );
                for pin in set.files {
                    println!("{}  {}/{}", pin.sha256, set.folder, pin.path);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn keygen(dir: &Path) -> anyhow::Result<ExitCode> {
    use handoff::keys;
    let mut written = Vec::new();
    for kind in keys::HostKeyType::ALL {
        let host = dir.join(kind.file_name());
        keys::generate_host_key(&host, kind)?;
        written.push(host);
    }
    let receipt = dir.join("receipt.key");
    let master = dir.join("master.key");
    keys::generate_receipt_key(&receipt)?;
    keys::generate_master_key(&master)?;
    written.extend([receipt, master]);
    for p in &written {
        println!("wrote {} (0600)", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn accounts(path: &Path) -> anyhow::Result<ExitCode> {
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(e) => return Ok(config_failure(e)),
    };
    let dir = handoff::accounts::Directory::from_config(&loaded.config);
    let now = time::OffsetDateTime::now_utc();
    println!(
        "{:<28} {:<11} {:<11} {:<26} {:<9} AUTH",
        "ID", "KIND", "NUMBER", "EXPIRES", "STATUS"
    );
    for a in dir.iter() {
        let status = match a.check_active(now) {
            Ok(()) => "active".to_owned(),
            Err(r) => match r {
                handoff::accounts::Refusal::Expired => "expired".to_owned(),
                handoff::accounts::Refusal::Disabled => "disabled".to_owned(),
            },
        };
        let expires = a.expires.map_or("-".to_owned(), |t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| t.to_string())
        });
        println!(
            "{:<28} {:<11} {:<11} {:<26} {:<9} {}",
            a.id,
            a.role.to_string(),
            a.number.as_deref().unwrap_or("-"),
            expires,
            status,
            a.auth_methods().join(",")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Unix seconds as RFC 3339 UTC, for the ban list.
fn unix_time(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

fn bans(path: &Path, command: Option<BansCommand>) -> anyhow::Result<ExitCode> {
    use handoff::transport::bans::{self, BanEntry, UnbanRequest};
    use handoff::transport::limits::Source;
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(e) => return Ok(config_failure(e)),
    };
    let layout = handoff::state::StateLayout::new(&loaded.config.gateway.state_dir);
    let list = || -> anyhow::Result<Vec<BanEntry>> {
        let now = std::time::SystemTime::now();
        match bans::read_list(&layout.ban_list()) {
            Ok(l) => Ok(l.into_iter().filter(|b| b.until() > now).collect()),
            Err(bans::BanFileError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Vec::new())
            }
            Err(e) => Err(e.into()),
        }
    };
    match command {
        None => {
            let list = list()?;
            if list.is_empty() {
                println!("no bans in force");
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<28} {:<28} {:<21} {:<21} SCORE",
                "SOURCE", "ACCOUNT", "SINCE", "UNTIL"
            );
            for b in list {
                println!(
                    "{:<28} {:<28} {:<21} {:<21} {}",
                    b.source,
                    b.account.as_deref().unwrap_or("-"),
                    unix_time(b.since),
                    unix_time(b.until),
                    b.score
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(BansCommand::Unban { source, account }) => {
            let source: Source = source.parse()?;
            let hit = |b: &BanEntry| {
                b.key().source() == source
                    && account
                        .as_ref()
                        .is_none_or(|a| b.account.as_ref() == Some(a))
            };
            if !list()?.iter().any(hit) {
                eprintln!("no ban of {source} is in force");
                return Ok(ExitCode::FAILURE);
            }
            let request = UnbanRequest {
                source: source.to_string(),
                account: account.clone(),
            };
            let pending = bans::request_unban(&layout.unban_requests(), &request)?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while pending.exists() {
                if std::time::Instant::now() >= deadline {
                    eprintln!(
                        "the daemon has not applied the request (is it running?); it stays queued in {} and is applied when the daemon runs",
                        layout.unban_requests().display()
                    );
                    return Ok(ExitCode::FAILURE);
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            if list()?.iter().any(hit) {
                eprintln!("the daemon applied the request, but a ban of {source} is still listed");
                return Ok(ExitCode::FAILURE);
            }
            println!("lifted the bans of {source}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn hash_password() -> anyhow::Result<ExitCode> {
    use argon2::PasswordHasher;
    let mut input = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the password")?;
    let password = input.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!password.is_empty(), "empty password");
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
    println!("{hash}");
    Ok(ExitCode::SUCCESS)
}

fn ledger_of(config: &Path) -> anyhow::Result<(handoff::receipts::ledger::Ledger, config::Loaded)> {
    let loaded = config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = handoff::state::StateLayout::new(&loaded.config.gateway.state_dir)
        .store()
        .join("receipts.db");
    anyhow::ensure!(path.exists(), "no receipt ledger at {} yet", path.display());
    let ledger = handoff::receipts::ledger::Ledger::open_read_only(&path)?;
    Ok((ledger, loaded))
}

fn receipts(command: ReceiptsCommand) -> anyhow::Result<ExitCode> {
    use handoff::receipts::{Receipt, verify_chain};
    match command {
        ReceiptsCommand::Tail {
            config,
            lines,
            follow,
        } => {
            let (ledger, _) = ledger_of(&config)?;
            let mut last = 0;
            for r in ledger.last(lines)? {
                println!("{}", r.to_canonical_json());
                last = r.seq;
            }
            if !follow {
                return Ok(ExitCode::SUCCESS);
            }
            loop {
                std::thread::sleep(std::time::Duration::from_millis(500));
                for r in ledger.after(last)? {
                    println!("{}", r.to_canonical_json());
                    last = r.seq;
                }
            }
        }
        ReceiptsCommand::Show { config, id } => {
            let (ledger, _) = ledger_of(&config)?;
            let r = ledger
                .by_id(&id)?
                .ok_or_else(|| anyhow::anyhow!("no receipt {id}"))?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        ReceiptsCommand::Trace { config, file_id } => {
            let (ledger, _) = ledger_of(&config)?;
            let hops = ledger.trace(&file_id)?;
            anyhow::ensure!(!hops.is_empty(), "no receipts for file {file_id}");
            print_trace(&ledger, &hops, "")?;
        }
        ReceiptsCommand::Verify {
            config,
            from,
            public_key,
        } => {
            let key = match &public_key {
                Some(p) => {
                    use ed25519_dalek::pkcs8::DecodePublicKey;
                    let pem = std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    ed25519_dalek::VerifyingKey::from_public_key_pem(&pem)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
                }
                None => {
                    let loaded = config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
                    handoff::keys::load_receipt_key(&loaded.config.gateway.receipt_key)?
                        .verifying_key()
                }
            };
            let receipts: Vec<Receipt> = match &from {
                Some(file) => std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .enumerate()
                    .map(|(i, l)| {
                        serde_json::from_str(l)
                            .with_context(|| format!("{}:{}: not a receipt", file.display(), i + 1))
                    })
                    .collect::<anyhow::Result<_>>()?,
                None => ledger_of(&config)?.0.all()?,
            };
            match verify_chain(&receipts, &key) {
                Ok(n) => println!("OK: {n} receipts, signatures and chain verified"),
                Err(e) => {
                    eprintln!("BROKEN: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        ReceiptsCommand::Export { config, since } => {
            let since =
                time::OffsetDateTime::parse(&since, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        anyhow::anyhow!("--since must be RFC 3339, e.g. 2026-11-25T00:00:00Z")
                    })?;
            let (ledger, _) = ledger_of(&config)?;
            for r in ledger.since(since)? {
                println!("{}", r.to_canonical_json());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn seal(to: &[PathBuf]) -> anyhow::Result<ExitCode> {
    use std::os::fd::AsFd;
    let recipients = to
        .iter()
        .map(|p| handoff::seal::Recipient::from_file(p).with_context(|| format!("{}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let stdin = std::io::stdin();
    let file = std::fs::File::from(stdin.as_fd().try_clone_to_owned()?);
    let meta = file.metadata()?;
    anyhow::ensure!(
        meta.is_file(),
        "standard input must be a file (use < file): the length is needed before sealing"
    );
    let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let sealed = handoff::seal::seal_for(
        &recipients,
        meta.len(),
        std::io::BufReader::with_capacity(1 << 20, file),
        out,
    )?;
    eprintln!(
        "sealed {} bytes for {} recipient(s); sha256 {}",
        sealed.len,
        recipients.len(),
        sealed.sha256
    );
    Ok(ExitCode::SUCCESS)
}

fn validate(
    config_path: &Path,
    account: &str,
    archive: &Path,
    lang: Option<handoff::config::Lang>,
) -> anyhow::Result<ExitCode> {
    use handoff::validate::{self, Checked, Expect, archive::Limits};
    let loaded = config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = &loaded.config;
    let sender = config.counterpart(account).with_context(|| {
        format!(
            "{account} is not a counterpart of {}",
            config_path.display()
        )
    })?;
    let file = std::fs::File::open(archive).with_context(|| archive.display().to_string())?;
    let file_name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let expect = Expect {
        sender,
        config,
        today: validate::today(config.gateway.utc_offset()),
        file_name,
    };
    let checked = validate::check_archive(
        std::io::BufReader::new(file),
        Limits::from(&config.gateway.archive),
        &config.gateway.schema_dir,
        &expect,
        lang.unwrap_or(sender.language),
    )?;
    let print = |findings: &[handoff::events::Finding]| {
        for f in findings {
            let mut place = f.file.clone().unwrap_or_else(|| "-".into());
            if let Some(line) = f.line {
                place.push_str(&format!(":{line}"));
                if let Some(col) = f.column {
                    place.push_str(&format!(":{col}"));
                }
            }
            let severity = if f.warning { "warn" } else { "reject" };
            println!("{severity} {} {place}: {}", f.rule, f.message);
        }
    };
    match checked {
        Checked::Valid { header, warnings } => {
            let show = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            print(&warnings);
            println!(
                "valid: interaction type {}, sender {}, receiver {}, service event {}, {} files",
                show(header.interaction_type.map(|c| c.to_string())),
                show(header.sender.as_ref().map(ToString::to_string)),
                show(header.receiver.as_ref().map(|(_, n)| n.to_string())),
                show(header.service_event.map(|c| c.to_string())),
                header.record_count.unwrap_or(0)
            );
            Ok(ExitCode::SUCCESS)
        }
        Checked::Invalid(findings) => {
            print(&findings);
            eprintln!("{} finding(s)", findings.len());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// What `handoff testdata` writes.
#[derive(clap::Args)]
struct TestdataArgs {
    /// The zip to write, or a directory to write it into under its official name (default:
    /// the official name in the current directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Persons (one document, and one claim, each) in the archive.
    #[arg(long, default_value_t = 10)]
    persons: usize,
    /// The sender's number: a 10-digit institution number (clinic) or 8-digit insurer number.
    #[arg(long, default_value = "1312345679")]
    sender: String,
    /// The receiver's number: an insurer's (8 digits), an agency's (8, with
    /// --interaction-type 1) or an institution's (10).
    #[arg(long, default_value = "06130017")]
    receiver: String,
    /// The persons' insurers, in turn (default: the receiver, or 06130017 for an agency).
    #[arg(long, value_delimiter = ',')]
    insurers: Vec<String>,
    /// 種別 of the index (default: 6 institution → insurer, 1 institution → agency, …).
    #[arg(long)]
    interaction_type: Option<u8>,
    /// Guidance results (hg08, gc08) instead of checkup results (hc08, cc08).
    #[arg(long)]
    guidance: bool,
    /// Creation date YYYYMMDD (default: yesterday, so it is never in the future).
    #[arg(long)]
    date: Option<String>,
    /// N of the names: the same day's send count, 0–9.
    #[arg(long, default_value_t = 0)]
    send_count: u8,
    /// Without CLAIMS/ and su08_V08.xml.
    #[arg(long)]
    no_claims: bool,
    /// Edition of the claims and the summary: current, intermediate or 2007.
    #[arg(long, default_value = "current")]
    edition: String,
    /// Copy the XSD/ folder from DIR/mhlw-v08 (the installed schema sets).
    #[arg(long, value_name = "DIR")]
    schema_dir: Option<PathBuf>,
    /// Seed of the invented content: the same seed writes the same archive.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Break one rule, by name (see --list).
    #[arg(long)]
    violate: Option<String>,
    /// List the violations --violate accepts, with the rule each breaks, and exit.
    #[arg(long)]
    list: bool,
}

fn testdata(a: TestdataArgs) -> anyhow::Result<ExitCode> {
    use handoff::config::CounterpartKind;
    use handoff::validate::format::{DocKind, Party, interaction_parties};
    use handoff::validate::testdata::{self, Edition, Spec, Violation};
    if a.list {
        for v in Violation::ALL {
            println!("{:<24} {}", v.slug(), v.rule());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let created = match &a.date {
        Some(d) => time::Date::parse(d, time::macros::format_description!("[year][month][day]"))
            .with_context(|| format!("--date {d}: expected YYYYMMDD"))?,
        None => time::OffsetDateTime::now_utc()
            .date()
            .previous_day()
            .context("date")?,
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let sender_kind = match a.sender.len() {
        10 if digits(&a.sender) => CounterpartKind::Clinic,
        8 if digits(&a.sender) => CounterpartKind::Insurer,
        _ => anyhow::bail!("--sender must be a 10-digit institution or 8-digit insurer number"),
    };
    let receiver_party = match (
        a.receiver.len(),
        a.interaction_type.and_then(interaction_parties),
    ) {
        _ if !digits(&a.receiver) => anyhow::bail!("--receiver must be digits"),
        (10, _) => Party::Institution,
        (8, Some((_, to))) if to != Party::Institution => to,
        (8, _) => Party::Insurer,
        _ => anyhow::bail!("--receiver must be an 8-digit or 10-digit number"),
    };
    let mut spec = Spec::example(a.persons, created);
    spec.sender = a.sender;
    spec.sender_kind = sender_kind;
    spec.receiver = a.receiver;
    spec.receiver_party = receiver_party;
    spec.interaction_type = a
        .interaction_type
        .unwrap_or_else(|| testdata::default_interaction_type(spec.sender_party(), receiver_party));
    spec.insurers = match (a.insurers.is_empty(), receiver_party) {
        (false, _) => a.insurers,
        (true, Party::Insurer) => vec![spec.receiver.clone()],
        (true, _) => vec!["06130017".into()],
    };
    if a.guidance {
        spec.kind = DocKind::Guidance;
    }
    anyhow::ensure!(a.send_count <= 9, "--send-count must be 0–9");
    spec.send_count = a.send_count;
    spec.claims = !a.no_claims;
    let edition = Edition::from_id(&a.edition).with_context(|| {
        format!(
            "--edition {}: expected current, intermediate or 2007",
            a.edition
        )
    })?;
    spec.editions.claims = edition;
    spec.editions.summary = edition;
    spec.xsd_from = a.schema_dir.map(|d| d.join("mhlw-v08"));
    spec.seed = a.seed;
    let violation = match &a.violate {
        None => None,
        Some(slug) => Some(
            Violation::from_slug(slug)
                .with_context(|| format!("--violate {slug}: unknown (see --list)"))?,
        ),
    };
    let name = match violation {
        Some(v) => v.file_name(&spec),
        None => spec.archive_name().file_name(),
    };
    // A folder (existing, or named with a trailing slash) gets the archive under its official name.
    let out_path = match a.out {
        Some(p) if p.is_dir() || p.as_os_str().to_string_lossy().ends_with('/') => {
            std::fs::create_dir_all(&p).with_context(|| p.display().to_string())?;
            p.join(&name)
        }
        Some(p) => p,
        None => PathBuf::from(&name),
    };
    let out = std::io::BufWriter::new(
        std::fs::File::create(&out_path).with_context(|| out_path.display().to_string())?,
    );
    match violation {
        None => {
            testdata::write_valid(&spec, out)
                .with_context(|| out_path.display().to_string())?
                .into_inner()
                .map_err(|e| e.into_error())?;
            eprintln!("a valid archive of {} persons", spec.persons);
        }
        Some(v) => {
            let limits = handoff::validate::archive::Limits::from(
                &handoff::config::ArchiveLimits::default(),
            );
            let (w, expected) = testdata::write_violation(&spec, v, &limits, out)
                .with_context(|| out_path.display().to_string())?;
            w.into_inner().map_err(|e| e.into_error())?;
            eprintln!(
                "breaking {} (expected at {}{})",
                expected.rule,
                expected.file.as_deref().unwrap_or("-"),
                expected.line.map(|l| format!(":{l}")).unwrap_or_default()
            );
        }
    }
    println!("{}", out_path.display());
    Ok(ExitCode::SUCCESS)
}

fn open(key: &Path, cert: Option<&Path>, allow_unauthenticated: bool) -> anyhow::Result<ExitCode> {
    use std::os::fd::AsFd;
    let opening = handoff::seal::OpeningKey::from_files(key, cert).with_context(|| match cert {
        Some(c) => format!("{} with {}", key.display(), c.display()),
        None => key.display().to_string(),
    })?;
    let options = handoff::seal::OpenOptions {
        allow_unauthenticated,
        ..Default::default()
    };
    let stdin = std::io::stdin();
    let file = std::fs::File::from(stdin.as_fd().try_clone_to_owned()?);
    let checked_first = file.metadata()?.is_file();
    let input = std::io::BufReader::with_capacity(1 << 20, file);
    let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let result = if checked_first {
        handoff::seal::open_verified(&opening, options, input, out)
    } else {
        handoff::seal::open(&opening, options, input, out)
    };
    match result {
        Ok(opened) => {
            eprintln!(
                "opened {} bytes{}",
                opened.len,
                if opened.authenticated {
                    ", authenticated"
                } else {
                    " (EnvelopedData: NOT authenticated)"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if checked_first => {
            eprintln!("handoff: cannot open: {e}; nothing was written");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!(
                "handoff: cannot open: {e}; DISCARD what was written: it is incomplete or not authentic"
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Prints every hop of a file with times and time between hops; a split parent's children
/// follow its `split` hop, indented, each with its own hops down to its retrieval.
fn print_trace(
    ledger: &handoff::receipts::ledger::Ledger,
    hops: &[handoff::receipts::Receipt],
    indent: &str,
) -> anyhow::Result<()> {
    let Some(first) = hops.first() else {
        return Ok(());
    };
    println!(
        "{indent}file {}  {:?}  {} bytes  sha256 {}",
        first.file_id, first.original_name, first.size, first.sha256
    );
    let parent = first
        .parent
        .as_deref()
        .map(|p| format!("  (sorted out of {p})"))
        .unwrap_or_default();
    println!(
        "{indent}from {} to {}{parent}",
        first.sender,
        hops.iter()
            .rev()
            .find_map(|r| r.recipient.clone())
            .unwrap_or_else(|| "-".into())
    );
    let parse = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    };
    let start = parse(&first.time);
    let mut prev = start;
    for r in hops {
        let at = parse(&r.time);
        let since_prev = match (prev, at) {
            (Some(p), Some(a)) => format!("+{:.3}s", (a - p).as_seconds_f64()),
            _ => "-".into(),
        };
        let total = match (start, at) {
            (Some(s), Some(a)) => format!("{:.3}s", (a - s).as_seconds_f64()),
            _ => "-".into(),
        };
        let extra = match (&r.summary, &r.sealed_sha256) {
            (Some(s), _) => format!("  {s}"),
            (None, Some(h)) => format!("  sealed sha256 {h}"),
            _ if !r.children.is_empty() => format!("  into {} archives", r.children.len()),
            _ => String::new(),
        };
        println!(
            "{indent}  #{:<6} {:<10} {}  {:>10}  (total {}){}",
            r.seq,
            r.hop.as_str(),
            r.time,
            since_prev,
            total,
            extra
        );
        prev = at;
        for c in &r.children {
            println!(
                "{indent}    └ {} insurer {} ({}), {} persons, sha256 {}",
                c.file_id, c.insurer, c.recipient, c.persons, c.sha256
            );
            let child = ledger.trace(&c.file_id)?;
            print_trace(ledger, &child, &format!("{indent}      "))?;
        }
    }
    Ok(())
}
