//! Shared test support: a private copy of the example config pointing at a fresh state
//! directory, and helpers to run the `handoff` binary.
#![allow(dead_code)]

pub mod postgres;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Git keeps no file modes: make the example private keys 0600 once per test process.
pub fn fix_example_key_modes() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let status = Command::new(repo_root().join("certs-example/generate"))
            .arg("--modes")
            .status()
            .expect("run certs-example/generate --modes");
        assert!(status.success());
    });
}

/// A port that was free a moment ago, handed out once per test process and taken from below the
/// kernel's ephemeral range: a port from that range (what binding port 0 gives) can be taken by
/// an outgoing connection of a test running in parallel before the daemon binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let low = ephemeral_low.saturating_sub(12_000).max(1024);
    let span = ephemeral_low - low;
    let first = std::process::id().wrapping_mul(97);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (low + first.wrapping_add(n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {low}..{ephemeral_low}");
}

/// The example config rewritten for a test: absolute paths into the repository, a state
/// directory of its own, free ports, and clamd where the test says.
pub struct TestConfig {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub sftp_port: u16,
    pub https_port: u16,
    pub metrics_port: u16,
}

impl TestConfig {
    pub fn new() -> TestConfig {
        Self::with(|s| s)
    }

    /// Like `new`, with an edit applied to the config text before it is written.
    pub fn with(edit: impl FnOnce(String) -> String) -> TestConfig {
        fix_example_key_modes();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = repo_root();
        let (sftp_port, https_port, metrics_port) = (free_port(), free_port(), free_port());
        let text =
            std::fs::read_to_string(root.join("config/handoff.toml")).expect("example config");
        let text = text
            .replace(
                "\"../certs-example/",
                &format!("\"{}/certs-example/", root.display()),
            )
            .replace(
                "\"../var/schemas\"",
                &format!("\"{}/../shared/formats\"", root.display()),
            )
            .replace(
                "state_dir = \"../var/example-state\"",
                &format!("state_dir = \"{}/state\"", dir.path().display()),
            )
            .replace(
                "clamd = \"unix:../var/clamd/clamd.sock\"",
                &format!("clamd = \"unix:{}/clamd.sock\"", dir.path().display()),
            )
            .replace("127.0.0.1:2222", &format!("127.0.0.1:{sftp_port}"))
            .replace("127.0.0.1:8443", &format!("127.0.0.1:{https_port}"))
            .replace("127.0.0.1:9469", &format!("127.0.0.1:{metrics_port}"));
        let text = edit(text);
        let path = dir.path().join("handoff.toml");
        std::fs::write(&path, text).expect("write config");
        TestConfig {
            dir,
            path,
            sftp_port,
            https_port,
            metrics_port,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.path).expect("read config")
    }

    /// Replaces the config file atomically (as config management does).
    pub fn rewrite(&self, text: &str) {
        let tmp = self.dir.path().join("handoff.toml.new");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &self.path).expect("rename config");
    }
}

/// Debian's Python, where scripts/install-deps puts python3-cryptography (for
/// docs/verify-receipt.py) and python3-paramiko; a `python3` on the PATH where there is none.
pub fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// The `handoff` binary built for this test run.
pub fn handoff_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_handoff"))
}

/// Runs a command to its end and asserts it succeeded, showing its stderr if not.
pub fn output_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Removes the `[[kind]]` table whose `id = "<id>"` line matches, from the config text.
pub fn remove_account(text: &str, kind: &str, id: &str) -> String {
    let header = format!("[[{kind}]]");
    let id_line = format!("id = \"{id}\"");
    // Split into tables: each starts at a line beginning with '['.
    let mut blocks: Vec<Vec<&str>> = vec![Vec::new()];
    for line in text.lines() {
        if line.starts_with('[') {
            blocks.push(Vec::new());
        }
        blocks.last_mut().unwrap().push(line);
    }
    blocks
        .into_iter()
        .filter(|b| !(b.first() == Some(&header.as_str()) && b.iter().any(|l| l.trim() == id_line)))
        .flatten()
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A `handoff serve` child process; killed on drop. Its stderr (logs and audit lines) goes to
/// `log` in the test's directory.
pub struct Daemon {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts the daemon on `tc` and waits until the SFTP port accepts connections.
    pub fn start(tc: &TestConfig) -> Daemon {
        Self::start_with_env(tc, &[])
    }

    pub fn start_with_env(tc: &TestConfig, env: &[(&str, &str)]) -> Daemon {
        let log = tc.dir.path().join(format!("daemon-{}.log", free_port()));
        let err = std::fs::File::create(&log).expect("create log");
        let child = Command::new(handoff_bin())
            .args(["serve", "--config"])
            .arg(&tc.path)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start handoff serve");
        let daemon = Daemon { child, log };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", tc.sftp_port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "daemon did not start:\n{}",
                daemon.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        daemon
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Audit lines of one event name seen so far.
    pub fn audit_lines(&self, event: &str) -> Vec<String> {
        let needle = format!("event=\"{event}\"");
        let json_needle = format!("\"event\":\"{event}\"");
        self.log_text()
            .lines()
            .filter(|l| l.contains(&needle) || l.contains(&json_needle))
            .map(str::to_owned)
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The OpenSSH `sftp` client for an example account with its example key; `extra` options go
/// before the destination.
pub fn sftp_command(port: u16, account: &str, key: &str, extra: &[&str]) -> Command {
    let key_path = repo_root().join("certs-example/ssh").join(key);
    let mut cmd = Command::new("sftp");
    cmd.args(["-P", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg("-i")
        .arg(key_path)
        .args(extra)
        .arg(format!("{account}@127.0.0.1"));
    cmd
}

/// Runs an sftp batch (commands prefixed with `-` may fail without ending the batch).
pub fn sftp_batch(port: u16, account: &str, key: &str, batch: &str) -> std::process::Output {
    sftp_batch_with(port, account, key, batch, &[])
}

/// As [`sftp_batch`], with extra client options before the batch.
pub fn sftp_batch_with(
    port: u16,
    account: &str,
    key: &str,
    batch: &str,
    extra: &[&str],
) -> std::process::Output {
    let file = tempfile::NamedTempFile::new().expect("batch file");
    std::fs::write(file.path(), batch).expect("write batch");
    let batch_path = file.path().display().to_string();
    let args: Vec<&str> = extra.iter().copied().chain(["-b", &batch_path]).collect();
    let out = sftp_command(port, account, key, &args)
        .output()
        .expect("run sftp");
    drop(file);
    out
}

pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).expect("open");
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// A private clamd started with `scripts/clamd-test-instance DIR` (socket `DIR/clamd.sock`,
/// the path `TestConfig` points the gateway at when DIR is the test's directory). Stopped
/// with SIGTERM on drop.
pub struct ClamdInstance {
    child: std::process::Child,
    pub dir: PathBuf,
}

impl ClamdInstance {
    /// Starts clamd and waits until its socket answers PING.
    pub fn start(dir: &Path) -> ClamdInstance {
        Self::start_with_env(dir, &[])
    }

    /// Like `start`, with environment for the script (e.g. `CLAMD_STREAM_MAX_LENGTH`).
    pub fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> ClamdInstance {
        let log = std::fs::File::create(dir.join("clamd.out")).expect("clamd log");
        let child = Command::new(repo_root().join("scripts/clamd-test-instance"))
            .arg(dir)
            .envs(env.iter().copied())
            .stdout(log.try_clone().expect("clamd log"))
            .stderr(log)
            .spawn()
            .expect("start scripts/clamd-test-instance");
        let clamd = ClamdInstance {
            child,
            dir: dir.to_path_buf(),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        while !clamd.answers_ping() {
            assert!(
                std::time::Instant::now() < deadline,
                "clamd did not answer PING:\n{}",
                std::fs::read_to_string(dir.join("clamd.out")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        clamd
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("clamd.sock")
    }

    fn answers_ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(self.socket()) else {
            return false;
        };
        let mut reply = String::new();
        s.write_all(b"PING\n").is_ok()
            && s.read_to_string(&mut reply).is_ok()
            && reply.trim() == "PONG"
    }

    /// Stops clamd (SIGTERM) and waits for it.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            use nix::sys::signal::{Signal, kill};
            let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.socket());
    }
}

impl Drop for ClamdInstance {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Hands a file to the pipeline as a transport does: written elsewhere, renamed into the
/// counterpart's inbox.
pub fn hand_off(tc: &TestConfig, counterpart: &str, name: &str, bytes: &[u8]) {
    let tmp = tc.dir.path().join(format!(".handoff-{name}"));
    std::fs::write(&tmp, bytes).expect("write hand-off file");
    let inbox = tc.state_dir().join("boxes").join(counterpart).join("inbox");
    std::fs::rename(&tmp, inbox.join(name)).expect("rename into inbox");
}

/// A counterpart id the test knows to be valid.
pub fn counterpart(id: &str) -> handoff::accounts::CounterpartId {
    handoff::accounts::CounterpartId::new(id).expect("a valid counterpart id")
}

/// An account id the test knows to be valid.
pub fn account(id: &str) -> handoff::accounts::AccountId {
    handoff::accounts::AccountId::new(id).expect("a valid account id")
}

/// The EICAR test file: every virus scanner detects it, and it is harmless.
pub fn eicar() -> Vec<u8> {
    let mut v = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$".to_vec();
    v.extend_from_slice(b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*");
    v
}

/// Waits up to `secs` for `cond`, polling.
pub fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Every file event in the job store so far, oldest first (none before the daemon made it).
pub fn events(tc: &TestConfig) -> Vec<handoff::events::FileEvent> {
    use handoff::events::EventLog;
    let Ok(store) = handoff::pipeline::jobs::SqliteStore::open(&tc.state_dir().join("store"))
    else {
        return Vec::new();
    };
    store
        .events_after(0, 100_000)
        .unwrap_or_default()
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

/// The event of the file first handed off as `name` at `hop`, if it got there.
pub fn event_of(
    tc: &TestConfig,
    name: &str,
    hop: handoff::events::Hop,
) -> Option<handoff::events::FileEvent> {
    events(tc)
        .into_iter()
        .find(|e| e.original_name == name && e.hop == hop)
}

/// `(name, sha256)` of every file the pipeline accepted from an inbox (it takes completed
/// uploads out of the inbox at once and records their SHA-256).
pub fn accepted_files(tc: &TestConfig) -> Vec<(String, String)> {
    events(tc)
        .into_iter()
        .filter(|e| e.hop == handoff::events::Hop::Accepted)
        .map(|e| (e.original_name, e.sha256.to_string()))
        .collect()
}

/// The SHA-256 the pipeline recorded when it accepted the hand-off file `name`.
pub fn accepted_sha256(tc: &TestConfig, name: &str) -> Option<String> {
    accepted_files(tc)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, sha)| sha)
}

/// Decrypts a sealed outbox file with `openssl cms` and the example key of `counterpart`.
pub fn openssl_decrypt(path: &Path, counterpart: &str) -> Vec<u8> {
    let certs = repo_root().join("certs-example");
    let out = Command::new("openssl")
        .args(["cms", "-decrypt", "-inform", "DER", "-in"])
        .arg(path)
        .arg("-recip")
        .arg(certs.join(format!("{counterpart}-enc.pem")))
        .arg("-inkey")
        .arg(certs.join(format!("{counterpart}-enc.key")))
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl cms -decrypt {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The pipeline's event log as receipts see it, kept in memory: for tests of what consumes the
/// log (an internal interface, not a peer).
pub struct MemoryLog {
    events: std::sync::Mutex<Vec<handoff::events::FileEvent>>,
    seq: tokio::sync::watch::Sender<u64>,
}

impl MemoryLog {
    pub fn new(events: Vec<handoff::events::FileEvent>) -> MemoryLog {
        let n = events.len() as u64;
        MemoryLog {
            events: std::sync::Mutex::new(events),
            seq: tokio::sync::watch::channel(n).0,
        }
    }

    pub fn push(&self, e: handoff::events::FileEvent) {
        let mut events = self.events.lock().unwrap();
        events.push(e);
        self.seq.send_replace(events.len() as u64);
    }
}

impl handoff::events::EventLog for MemoryLog {
    fn events_after(
        &self,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, handoff::events::FileEvent)>, handoff::events::EventLogError> {
        let events = self.events.lock().unwrap();
        Ok(events
            .iter()
            .enumerate()
            .skip(seq as usize)
            .take(limit)
            .map(|(i, e)| (i as u64 + 1, e.clone()))
            .collect())
    }

    fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.seq.subscribe()
    }
}

/// Writes `len` random bytes to `path`.
pub fn random_file(path: &Path, len: usize) {
    let mut data = vec![0u8; len];
    getrandom::fill(&mut data).expect("random bytes");
    std::fs::write(path, data).expect("write random file");
}

/// A valid checkup archive from the counterpart numbered `sender` to `receiver`, created
/// yesterday (so never in the future at the gateway's offset); `seed` varies the content.
pub fn checkup_archive(sender: &str, receiver: &str, persons: usize, seed: u64) -> Vec<u8> {
    checkup_archive_with(sender, receiver, persons, seed, Vec::new())
}

/// Like [`checkup_archive`], with `extra` files added as they are (e.g. under `XSD/`, which
/// the schema check ignores and the virus scanner reads).
pub fn checkup_archive_with(
    sender: &str,
    receiver: &str,
    persons: usize,
    seed: u64,
    extra: Vec<(String, Vec<u8>)>,
) -> Vec<u8> {
    use handoff::config::CounterpartKind;
    use handoff::validate::testdata::{Spec, write_valid};
    let today = handoff::validate::today(time::UtcOffset::from_hms(9, 0, 0).expect("offset"));
    let mut spec = Spec::example(persons, today.previous_day().expect("a date"));
    spec.sender = sender.to_owned();
    spec.sender_kind = if sender.len() == 10 {
        CounterpartKind::Clinic
    } else {
        CounterpartKind::Insurer
    };
    spec.receiver = receiver.to_owned();
    if receiver.len() == 10 {
        // An insurer's archive back to an institution: its own insured persons, no claims
        // (a claim names the institution that performed the checkup).
        spec.receiver_party = handoff::validate::format::Party::Institution;
        spec.insurers = vec![sender.to_owned()];
        spec.claims = false;
    } else {
        spec.insurers = vec![receiver.to_owned()];
    }
    spec.interaction_type = handoff::validate::testdata::default_interaction_type(
        spec.sender_party(),
        spec.receiver_party,
    );
    spec.seed = seed;
    spec.extra_files = extra;
    write_valid(&spec, Vec::new()).expect("generate an archive")
}

/// A self-signed P-384 certificate made by openssl in `dir` (`p384.pem`, key `p384.key`): an
/// EC key on a curve sealing does not support.
pub fn p384_certificate(dir: &Path) -> PathBuf {
    let cert = dir.join("p384.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
        ])
        .args(["-nodes", "-subj", "/CN=p384", "-days", "1", "-keyout"])
        .arg(dir.join("p384.key"))
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{made:?}");
    cert
}

/// The test daemon's Prometheus metrics as text; empty when they cannot be read.
pub fn metrics_text(tc: &TestConfig) -> String {
    let out = Command::new("curl")
        .args(["-sS"])
        .arg(format!("http://127.0.0.1:{}/metrics", tc.metrics_port))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `curl` over HTTPS to the test daemon with an example account's client certificate; the body,
/// or nothing with `out` (written there). Fails the test on any HTTP error.
pub fn curl_as(tc: &TestConfig, account: &str, path: &str, out: Option<&Path>) -> Vec<u8> {
    let certs = repo_root().join("certs-example");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--fail", "--cacert"])
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join(format!("{account}.pem")))
        .arg("--key")
        .arg(certs.join(format!("{account}.key")));
    if let Some(out) = out {
        cmd.arg("-o").arg(out);
    }
    cmd.arg(format!("https://localhost:{}{path}", tc.https_port));
    let got = cmd.output().expect("run curl");
    assert!(got.status.success(), "{got:?}");
    got.stdout
}

/// The names in an account's outbox, as its HTTPS listing gives them.
pub fn outbox_names(tc: &TestConfig, account: &str) -> Vec<String> {
    let body = curl_as(tc, account, "/outbox/", None);
    let list: serde_json::Value = serde_json::from_slice(&body).expect("a JSON listing");
    list["files"]
        .as_array()
        .map(|files| {
            files
                .iter()
                .filter_map(|f| f["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A raw SFTP session over russh as an example account with its example key: a client that sends
/// what a test needs (writes out of order, uploads left open), which OpenSSH's client never does.
pub struct RawSftp {
    pub sftp: russh_sftp::client::RawSftpSession,
    _ssh: russh::client::Handle<AnyHostKey>,
}

/// Trusts any host key: the daemon under test is on loopback.
pub struct AnyHostKey;

impl russh::client::Handler for AnyHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

impl RawSftp {
    /// Logs in as `account` with the example key `key` and starts SFTP.
    pub async fn connect(port: u16, account: &str, key: &str) -> RawSftp {
        let (channel, ssh) = Self::channel(port, account, key).await;
        let sftp = russh_sftp::client::RawSftpSession::new(channel.into_stream());
        sftp.init().await.expect("sftp init");
        RawSftp { sftp, _ssh: ssh }
    }

    /// Logs in and opens the `sftp` subsystem's channel, for a test that writes the bytes of
    /// the protocol itself.
    pub async fn channel(
        port: u16,
        account: &str,
        key: &str,
    ) -> (
        russh::Channel<russh::client::Msg>,
        russh::client::Handle<AnyHostKey>,
    ) {
        let config = std::sync::Arc::new(russh::client::Config::default());
        let mut ssh = russh::client::connect(config, ("127.0.0.1", port), AnyHostKey)
            .await
            .expect("ssh connect");
        let key =
            russh::keys::load_secret_key(repo_root().join("certs-example/ssh").join(key), None)
                .expect("example key");
        let hash = ssh.best_supported_rsa_hash().await.expect("hash").flatten();
        let auth = ssh
            .authenticate_publickey(
                account,
                russh::keys::PrivateKeyWithHashAlg::new(std::sync::Arc::new(key), hash),
            )
            .await
            .expect("authenticate");
        assert!(auth.success(), "{account} logs in");
        let channel = ssh.channel_open_session().await.expect("channel");
        channel
            .request_subsystem(true, "sftp")
            .await
            .expect("sftp subsystem");
        (channel, ssh)
    }

    /// Opens `path` for writing, as an upload.
    pub async fn create(&self, path: &str) -> String {
        use russh_sftp::protocol::{FileAttributes, OpenFlags};
        self.sftp
            .open(
                path,
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                FileAttributes::default(),
            )
            .await
            .expect("open for writing")
            .handle
    }
}

/// Connections in state ESTABLISHED whose local port is `port` (the server's side), from the
/// kernel's socket tables.
pub fn established_on(port: u16) -> usize {
    let local = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3 && f[1].ends_with(&local) && f[3] == "01"
                })
                .count()
        })
        .sum()
}
