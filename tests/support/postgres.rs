//! A private PostgreSQL for the tests of the shared store: `scripts/postgres-test-instance` on a
//! free port, with its data in a folder of its own (the server's user must be able to reach
//! it) and the password in the test's folder. Stopped on drop; `stop` and `start` again keep
//! the data, for the tests of a database that goes away.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::{free_port, repo_root};

pub struct Postgres {
    child: Option<Child>,
    /// The server's certificate and key, when it takes TLS connections.
    tls: Option<(PathBuf, PathBuf)>,
    pub data: tempfile::TempDir,
    pub port: u16,
    pub password_file: PathBuf,
    log: PathBuf,
}

impl Postgres {
    /// Starts a new cluster and waits until it takes connections; `dir` holds the password
    /// file and the server's log.
    pub fn start(dir: &Path) -> Postgres {
        Self::start_with(dir, None)
    }

    /// Like `start`, the server also taking TLS connections with this certificate and key.
    pub fn start_tls(dir: &Path, cert: &Path, key: &Path) -> Postgres {
        Self::start_with(dir, Some((cert.to_path_buf(), key.to_path_buf())))
    }

    fn start_with(dir: &Path, tls: Option<(PathBuf, PathBuf)>) -> Postgres {
        let data = tempfile::Builder::new()
            .prefix("handoff-pg-")
            .tempdir_in("/tmp")
            .expect("data folder");
        let password_file = dir.join("pg-password");
        std::fs::write(&password_file, format!("pw-{}\n", free_port())).expect("password file");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600))
            .expect("password file mode");
        let mut pg = Postgres {
            child: None,
            tls,
            data,
            port: free_port(),
            password_file,
            log: dir.join("postgres.log"),
        };
        pg.resume();
        pg
    }

    /// Starts the server again on the same data (after `stop`).
    pub fn resume(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("postgres log");
        let mut command = Command::new(repo_root().join("scripts/postgres-test-instance"));
        if let Some((cert, key)) = &self.tls {
            command.env("PG_TLS_CERT", cert).env("PG_TLS_KEY", key);
        }
        let child = command
            .arg(self.data.path())
            .arg(self.port.to_string())
            .arg(&self.password_file)
            .stdout(log.try_clone().expect("postgres log"))
            .stderr(log)
            .spawn()
            .expect("start scripts/postgres-test-instance");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self
            .log_text()
            .contains(&format!("ready on 127.0.0.1:{}", self.port))
            || !self.answers()
        {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn answers(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `[gateway.store]` table of a config using this database.
    pub fn store_table(&self) -> String {
        format!(
            "\n[gateway.store]\nbackend = \"postgres\"\nurl = \"postgres://handoff@127.0.0.1:{}/handoff\"\npassword_file = \"{}\"\n",
            self.port,
            self.password_file.display()
        )
    }

    /// Runs SQL with psql as the database's owner and returns what it printed (unaligned,
    /// tuples only).
    pub fn psql(&self, sql: &str) -> String {
        let bindir = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| d.filter_map(Result::ok).map(|e| e.path()).max())
            .map(|p| p.join("bin/psql"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("psql"));
        let password = std::fs::read_to_string(&self.password_file).expect("password");
        let out = Command::new(bindir)
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "handoff",
                "-d",
                "handoff",
                "-tAc",
                sql,
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .env("PGPASSWORD", password.trim())
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stops the server (a fast shutdown: sessions are cut) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                use nix::sys::signal::{Signal, kill};
                let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
            }
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.answers() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
