//! The virus scanner: ClamAV's clamd over a Unix or TCP socket.
//!
//! Files are streamed with `zINSTREAM` in chunks. Fail closed: anything but a clean `OK` reply
//! is either a finding (the file is quarantined and rejected) or an error (the job waits and is
//! retried). Over clamd's `StreamMaxLength` clamd replies `INSTREAM size limit exceeded` and
//! closes the socket mid-stream, so the reply is read even after a broken pipe. Files over
//! `MaxFileSize`/`MaxScanSize` come back as `Heuristics.Limits.Exceeded.*` with
//! `AlertExceedsMax yes` (required, docs/scanning.md) and count as findings.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::ClamdAddress;
use crate::error::Chain;
use crate::sync::Recover;

/// Bytes per INSTREAM chunk.
const CHUNK: usize = 64 * 1024;
/// How long one clamd exchange may take before it counts as an error.
const TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("clamd at {addr}")]
    Io { addr: String, source: io::Error },
    #[error("clamd refused the stream: {0}")]
    Refused(String),
    #[error("clamd answered {0:?}")]
    Unexpected(String),
    #[error("reading the file to scan")]
    Source(#[source] io::Error),
}

/// What clamd said about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// A signature matched (including `Heuristics.Limits.Exceeded.*`): not clean.
    Found(String),
}

/// A clamd client. Each call opens its own connection, so calls may run in parallel.
#[derive(Debug, Clone)]
pub struct Clamd {
    addr: ClamdAddress,
}

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

impl Clamd {
    pub fn new(addr: ClamdAddress) -> Clamd {
        Clamd { addr }
    }

    fn describe(&self) -> String {
        match &self.addr {
            ClamdAddress::Unix(p) => format!("unix:{}", p.display()),
            ClamdAddress::Tcp(a) => format!("tcp:{a}"),
        }
    }

    fn io_err(&self, source: io::Error) -> ScanError {
        ScanError::Io {
            addr: self.describe(),
            source,
        }
    }

    fn connect(&self) -> Result<Box<dyn Conn>, ScanError> {
        let conn: Box<dyn Conn> = match &self.addr {
            ClamdAddress::Unix(p) => {
                let s = UnixStream::connect(p).map_err(|e| self.io_err(e))?;
                s.set_read_timeout(Some(TIMEOUT))
                    .map_err(|e| self.io_err(e))?;
                s.set_write_timeout(Some(TIMEOUT))
                    .map_err(|e| self.io_err(e))?;
                Box::new(s)
            }
            ClamdAddress::Tcp(a) => {
                let s = TcpStream::connect(a).map_err(|e| self.io_err(e))?;
                s.set_read_timeout(Some(TIMEOUT))
                    .map_err(|e| self.io_err(e))?;
                s.set_write_timeout(Some(TIMEOUT))
                    .map_err(|e| self.io_err(e))?;
                Box::new(s)
            }
        };
        Ok(conn)
    }

    /// `zPING`: whether clamd answers `PONG`.
    pub fn ping(&self) -> Result<(), ScanError> {
        let mut conn = self.connect()?;
        conn.write_all(b"zPING\0").map_err(|e| self.io_err(e))?;
        let reply = read_reply(&mut conn).map_err(|e| self.io_err(e))?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(ScanError::Unexpected(reply))
        }
    }

    /// Streams `src` to clamd and returns its verdict.
    pub fn scan(&self, mut src: impl Read) -> Result<Verdict, ScanError> {
        let mut conn = self.connect()?;
        let sent = (|| -> Result<(), ScanError> {
            conn.write_all(b"zINSTREAM\0").map_err(|e| self.io_err(e))?;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(ScanError::Source(e)),
                };
                let len = u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
                conn.write_all(&len).map_err(|e| self.io_err(e))?;
                conn.write_all(&buf[..n]).map_err(|e| self.io_err(e))?;
            }
            conn.write_all(&[0, 0, 0, 0]).map_err(|e| self.io_err(e))
        })();
        // clamd may have closed mid-stream (size limit): its reply says why.
        let reply = match (read_reply(&mut conn), sent) {
            (Ok(reply), _) if !reply.is_empty() => reply,
            (_, Err(e)) => return Err(e),
            (Ok(reply), Ok(())) => return Err(ScanError::Unexpected(reply)),
            (Err(e), Ok(())) => return Err(self.io_err(e)),
        };
        parse_reply(&reply)
    }
}

/// Reads a NUL- (or EOF-) terminated reply.
fn read_reply(conn: &mut dyn Conn) -> io::Result<String> {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match conn.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == 0 => break,
            Ok(_) => out.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if out.len() > 4096 {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

/// Reads `stream: OK`, `stream: NAME FOUND`, or an error reply.
pub fn parse_reply(reply: &str) -> Result<Verdict, ScanError> {
    let body = reply.strip_prefix("stream:").map(str::trim);
    match body {
        Some("OK") => Ok(Verdict::Clean),
        Some(b) if b.ends_with(" FOUND") => {
            let name = b.trim_end_matches(" FOUND").trim();
            Ok(Verdict::Found(name.to_owned()))
        }
        _ if reply.ends_with("ERROR") => Err(ScanError::Refused(reply.to_owned())),
        _ => Err(ScanError::Unexpected(reply.to_owned())),
    }
}

/// Whether clamd answered its last health check; shared with the NOC status.
#[derive(Debug, Default)]
pub struct ScanHealth {
    up: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl ScanHealth {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Why the last check failed, while it is down.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.locked().clone()
    }

    pub fn record(&self, result: &Result<(), ScanError>) {
        match result {
            Ok(()) => self.set_up(),
            Err(e) => self.set_down(Chain(e).to_string()),
        }
    }

    pub fn set_up(&self) {
        self.up.store(true, Ordering::Relaxed);
        *self.last_error.locked() = None;
    }

    pub fn set_down(&self, why: String) {
        self.up.store(false, Ordering::Relaxed);
        *self.last_error.locked() = Some(why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_fail_closed() {
        assert_eq!(parse_reply("stream: OK").unwrap(), Verdict::Clean);
        assert_eq!(
            parse_reply("stream: Eicar-Test.UNOFFICIAL FOUND").unwrap(),
            Verdict::Found("Eicar-Test.UNOFFICIAL".into())
        );
        assert_eq!(
            parse_reply("stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND").unwrap(),
            Verdict::Found("Heuristics.Limits.Exceeded.MaxFileSize".into())
        );
        assert!(parse_reply("INSTREAM size limit exceeded. ERROR").is_err());
        assert!(parse_reply("").is_err());
        assert!(parse_reply("stream: something odd").is_err());
    }
}
