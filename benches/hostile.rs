//! The attack loads of `bench/hostile`, thrown at a running `handoff serve` on loopback. Each
//! runs for a given time, spreads its connections over many loopback source addresses (all of
//! 127.0.0.0/8 is local: the per-address limits alone must not be what saves the daemon) and
//! prints one line of what happened to it.
//!
//!     hostile idle        PORT CONNECTIONS SECONDS
//!     hostile channels    PORT CONNECTIONS SECONDS KEY_DIR ACCOUNT...
//!     hostile out-of-order PORT CLIENTS SECONDS KEY_DIR ACCOUNT...
//!     hostile passwords   PORT PER_MINUTE SECONDS ACCOUNT
//!
//! `idle`: TCP connections that never say a word, reopened when the daemon closes them.
//! `channels`: SSH connections, logged in with an account's key, each opening session channels
//! without end (and never closing one). `out-of-order`: SFTP clients each writing uploads whose
//! first piece never comes, so every write waits in memory; a refused upload is given up and a
//! new one begun. `passwords`: password logins with a wrong password at a steady rate.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use russh::client;
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use tokio::net::{TcpSocket, TcpStream};

/// Bytes of one out-of-order write: OpenSSH's request size.
const PIECE: usize = 255 << 10;

/// The `n`th loopback source address: 127.1.x.y, never the legitimate client's 127.0.0.1.
fn source(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250 + 1) as u8))
}

async fn connect_from(src: IpAddr, port: u16) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src, 0))?;
    socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
}

/// Counts of what happened, printed at the end.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    refused: AtomicU64,
    other: AtomicU64,
}

impl Tally {
    fn add(&self, which: &AtomicU64) {
        which.fetch_add(1, Ordering::Relaxed);
    }
    fn get(&self, which: &AtomicU64) -> u64 {
        which.load(Ordering::Relaxed)
    }
}

struct AnyHostKey;

impl client::Handler for AnyHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

fn ssh_config() -> Arc<client::Config> {
    Arc::new(client::Config {
        inactivity_timeout: None,
        ..client::Config::default()
    })
}

/// An SSH connection from `src`, logged in as `account` with its key in `keys`.
async fn login(
    src: IpAddr,
    port: u16,
    keys: &std::path::Path,
    account: &str,
) -> Result<client::Handle<AnyHostKey>, String> {
    let stream = connect_from(src, port).await.map_err(|e| e.to_string())?;
    let mut ssh = client::connect_stream(ssh_config(), stream, AnyHostKey)
        .await
        .map_err(|e| e.to_string())?;
    let key = russh::keys::load_secret_key(keys.join(account), None).map_err(|e| e.to_string())?;
    let hash = ssh
        .best_supported_rsa_hash()
        .await
        .map_err(|e| e.to_string())?
        .flatten();
    let auth = ssh
        .authenticate_publickey(
            account,
            russh::keys::PrivateKeyWithHashAlg::new(Arc::new(key), hash),
        )
        .await
        .map_err(|e| e.to_string())?;
    if !auth.success() {
        return Err("login refused".into());
    }
    Ok(ssh)
}

/// Idle TCP connections: each slot holds one open, reopening it when the daemon closes it.
async fn idle(port: u16, n: usize, until: Instant) {
    let tally = Arc::new(Tally::default());
    let open = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (tally, open) = (tally.clone(), open.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                match connect_from(source(i / 20), port).await {
                    Ok(mut s) => {
                        tally.add(&tally.ok);
                        open.fetch_add(1, Ordering::Relaxed);
                        let mut buf = [0u8; 256];
                        // Read the banner and whatever follows, never answer, until closed.
                        loop {
                            let left = until.saturating_duration_since(Instant::now());
                            match tokio::time::timeout(
                                left,
                                tokio::io::AsyncReadExt::read(&mut s, &mut buf),
                            )
                            .await
                            {
                                Ok(Ok(0)) | Ok(Err(_)) => {
                                    tally.add(&tally.refused);
                                    break;
                                }
                                Ok(Ok(_)) => {}
                                Err(_) => break,
                            }
                        }
                        open.fetch_sub(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        tally.add(&tally.other);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }));
    }
    let mut peak_open = 0;
    while Instant::now() < until {
        peak_open = peak_open.max(open.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "idle: {n} slots; connections made {}, closed by the daemon {}, connect errors {}, most open at once {peak_open}",
        tally.get(&tally.ok),
        tally.get(&tally.refused),
        tally.get(&tally.other)
    );
}

/// SSH connections each opening channels without end.
async fn channels(port: u16, n: usize, until: Instant, keys: PathBuf, accounts: Vec<String>) {
    let logins = Arc::new(Tally::default());
    let opens = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for i in 0..n {
        let (logins, opens, keys) = (logins.clone(), opens.clone(), keys.clone());
        let account = accounts[i % accounts.len()].clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let ssh = match login(source(i / 20), port, &keys, &account).await {
                    Ok(ssh) => {
                        logins.add(&logins.ok);
                        ssh
                    }
                    Err(_) => {
                        logins.add(&logins.refused);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let mut held = Vec::new();
                while Instant::now() < until && !ssh.is_closed() {
                    let left = until.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, ssh.channel_open_session()).await {
                        Ok(Ok(ch)) => {
                            opens.add(&opens.ok);
                            held.push(ch);
                        }
                        Ok(Err(_)) => opens.add(&opens.refused),
                        Err(_) => break,
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "channels: {n} connections; logins {} (refused {}), channels opened {}, refused {}",
        logins.get(&logins.ok),
        logins.get(&logins.refused),
        opens.get(&opens.ok),
        opens.get(&opens.refused)
    );
}

/// SFTP clients writing uploads whose first piece never comes.
async fn out_of_order(port: u16, n: usize, until: Instant, keys: PathBuf, accounts: Vec<String>) {
    let logins = Arc::new(Tally::default());
    let writes = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for i in 0..n {
        let (logins, writes, keys) = (logins.clone(), writes.clone(), keys.clone());
        let account = accounts[i % accounts.len()].clone();
        tasks.push(tokio::spawn(async move {
            let piece = vec![0xa5u8; PIECE];
            let mut upload = 0u64;
            while Instant::now() < until {
                let ssh = match login(source(i / 20), port, &keys, &account).await {
                    Ok(ssh) => ssh,
                    Err(_) => {
                        logins.add(&logins.refused);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let Ok(channel) = ssh.channel_open_session().await else {
                    continue;
                };
                if channel.request_subsystem(true, "sftp").await.is_err() {
                    continue;
                }
                let sftp = RawSftpSession::new(channel.into_stream());
                if sftp.init().await.is_err() {
                    continue;
                }
                logins.add(&logins.ok);
                'session: while Instant::now() < until {
                    upload += 1;
                    let name = format!("/inbox/ooo-{i}-{upload}.bin");
                    let Ok(handle) = sftp
                        .open(
                            name,
                            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                            FileAttributes::default(),
                        )
                        .await
                    else {
                        break 'session;
                    };
                    let handle = handle.handle;
                    for k in 1u64.. {
                        if Instant::now() >= until {
                            break 'session;
                        }
                        match sftp.write(&handle, k * PIECE as u64, piece.clone()).await {
                            Ok(_) => writes.add(&writes.ok),
                            Err(_) => {
                                writes.add(&writes.refused);
                                let _ = sftp.close(&handle).await;
                                break;
                            }
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "out-of-order: {n} clients; sessions {} (refused {}), writes ahead of a gap taken {}, refused {}",
        logins.get(&logins.ok),
        logins.get(&logins.refused),
        writes.get(&writes.ok),
        writes.get(&writes.refused)
    );
}

/// Password logins with a wrong password, `per_minute` of them, each on a new connection.
async fn passwords(port: u16, per_minute: u64, until: Instant, account: String) {
    let tally = Arc::new(Tally::default());
    let every = Duration::from_secs(60) / u32::try_from(per_minute.max(1)).unwrap_or(u32::MAX);
    let mut ticker = tokio::time::interval(every);
    let mut tasks = Vec::new();
    let mut n = 0usize;
    while Instant::now() < until {
        ticker.tick().await;
        n += 1;
        let (tally, account) = (tally.clone(), account.clone());
        tasks.push(tokio::spawn(async move {
            let attempt = async {
                let stream = connect_from(source(n % 200), port).await.ok()?;
                let mut ssh = client::connect_stream(ssh_config(), stream, AnyHostKey)
                    .await
                    .ok()?;
                ssh.authenticate_password(&account, "not-the-password")
                    .await
                    .ok()
            };
            match tokio::time::timeout(Duration::from_secs(30), attempt).await {
                Ok(Some(r)) if !r.success() => tally.add(&tally.refused),
                Ok(Some(_)) => tally.add(&tally.ok),
                _ => tally.add(&tally.other),
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "passwords: {n} attempts at {per_minute}/min; answered wrong {}, cut off before an answer {}, let in {}",
        tally.get(&tally.refused),
        tally.get(&tally.other),
        tally.get(&tally.ok)
    );
}

fn usage() -> ! {
    eprintln!(
        "usage: hostile idle|channels|out-of-order|passwords PORT COUNT SECONDS [KEY_DIR ACCOUNT...|ACCOUNT]"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.len() < 4 {
        usage();
    }
    let (Ok(port), Ok(count), Ok(secs)) = (
        args[1].parse::<u16>(),
        args[2].parse::<usize>(),
        args[3].parse::<u64>(),
    ) else {
        usage()
    };
    let rest = args[4..].to_vec();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let until = Instant::now() + Duration::from_secs(secs);
        match args[0].as_str() {
            "idle" => idle(port, count, until).await,
            "channels" | "out-of-order" if rest.len() >= 2 => {
                let keys = PathBuf::from(&rest[0]);
                let accounts = rest[1..].to_vec();
                if args[0] == "channels" {
                    channels(port, count, until, keys, accounts).await
                } else {
                    out_of_order(port, count, until, keys, accounts).await
                }
            }
            "passwords" if rest.len() == 1 => {
                passwords(port, count as u64, until, rest[0].clone()).await
            }
            _ => usage(),
        }
    });
    // Connections still open end with the process.
    std::process::exit(0);
}
