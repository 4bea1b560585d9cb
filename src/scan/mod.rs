//! The virus scanner: ClamAV's clamd over a Unix or TCP socket, one clamd or a pool of them.
//!
//! Files are streamed with `zINSTREAM` in chunks. Fail closed: anything but a clean `OK` reply
//! is either a finding (the file is quarantined and rejected) or an error (the job waits and is
//! retried). Over clamd's `StreamMaxLength` clamd replies `INSTREAM size limit exceeded` and
//! closes the socket mid-stream, so the reply is read even after a broken pipe. Files over
//! `MaxFileSize`/`MaxScanSize` come back as `Heuristics.Limits.Exceeded.*` with
//! `AlertExceedsMax yes` (required, docs/scanning.md) and count as findings.
//!
//! [`ClamdPool`] holds every clamd of `gateway.clamd` with its health, so that one scanner dying
//! holds up no file while another answers: scans go to the endpoints that are up, in turn, and a
//! scan that fails on one is tried on the next. Only when no endpoint gives a verdict does the file
//! wait; it is never rejected for want of a scanner.

use std::io::{self, Read, Seek, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::ClamdAddress;
use crate::error::Chain;
use crate::sync::Recover;

/// Bytes per INSTREAM chunk.
const CHUNK: usize = 64 * 1024;
/// How long one clamd exchange may take before it counts as an error.
const TIMEOUT: Duration = Duration::from_secs(120);
/// How long a health check may wait for `PONG`: a clamd that accepts connections but does not
/// answer (hung, or every thread busy for long) must count as down within seconds, so that scans
/// go to another endpoint rather than wait on it for [`TIMEOUT`].
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long opening a TCP connection to clamd may take: an unreachable host must count as down
/// within seconds, not the system's two minutes, so a scan moves on to the next endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// No endpoint of the pool is up: none has answered a health check since it was last found
    /// down (by a check or a scan), or none has been checked yet.
    #[error("no clamd is up")]
    NoneUp,
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

    pub fn address(&self) -> &ClamdAddress {
        &self.addr
    }

    fn io_err(&self, source: io::Error) -> ScanError {
        ScanError::Io {
            addr: self.addr.to_string(),
            source,
        }
    }

    /// Connects with `timeout` for every read and write of the exchange.
    fn connect(&self, timeout: Duration) -> Result<Box<dyn Conn>, ScanError> {
        let conn: Box<dyn Conn> = match &self.addr {
            ClamdAddress::Unix(p) => {
                let s = UnixStream::connect(p).map_err(|e| self.io_err(e))?;
                s.set_read_timeout(Some(timeout))
                    .map_err(|e| self.io_err(e))?;
                s.set_write_timeout(Some(timeout))
                    .map_err(|e| self.io_err(e))?;
                Box::new(s)
            }
            ClamdAddress::Tcp(a) => {
                let s = connect_tcp(a).map_err(|e| self.io_err(e))?;
                s.set_read_timeout(Some(timeout))
                    .map_err(|e| self.io_err(e))?;
                s.set_write_timeout(Some(timeout))
                    .map_err(|e| self.io_err(e))?;
                Box::new(s)
            }
        };
        Ok(conn)
    }

    /// `zPING`: whether clamd answers `PONG` within ten seconds.
    pub fn ping(&self) -> Result<(), ScanError> {
        let mut conn = self.connect(PING_TIMEOUT)?;
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
        let mut conn = self.connect(TIMEOUT)?;
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
            // Closed without a word after the whole stream: clamd went away (it answers
            // everything it reads, an error included).
            (Ok(_), Ok(())) => {
                return Err(self.io_err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed the connection without a reply",
                )));
            }
            (Err(e), Ok(())) => return Err(self.io_err(e)),
        };
        parse_reply(&reply)
    }
}

/// Opens a TCP connection to `host:port`, trying each address the name resolves to for at most
/// [`CONNECT_TIMEOUT`].
fn connect_tcp(addr: &str) -> io::Result<TcpStream> {
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address")
    }))
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

/// Whether one clamd answered its last health check; shared with the NOC status.
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

/// One clamd of the pool and its health.
#[derive(Debug)]
pub struct Endpoint {
    clamd: Clamd,
    health: ScanHealth,
}

impl Endpoint {
    pub fn clamd(&self) -> &Clamd {
        &self.clamd
    }

    pub fn health(&self) -> &ScanHealth {
        &self.health
    }
}

/// The clamd endpoints of `gateway.clamd`, each with its health: the pipeline scans through the
/// pool and checks each endpoint, the NOC status shows them.
///
/// An endpoint is up once its health check has answered and until a check or a scan fails on
/// it; until its first check it counts as down, so a scan never waits on an endpoint nobody has
/// heard from.
#[derive(Debug)]
pub struct ClamdPool {
    endpoints: Vec<Arc<Endpoint>>,
    /// Scans started so far: the round robin over the endpoints that are up.
    turn: AtomicUsize,
}

impl ClamdPool {
    pub fn new(addresses: &[ClamdAddress]) -> ClamdPool {
        ClamdPool {
            endpoints: addresses
                .iter()
                .map(|a| {
                    Arc::new(Endpoint {
                        clamd: Clamd::new(a.clone()),
                        health: ScanHealth::default(),
                    })
                })
                .collect(),
            turn: AtomicUsize::new(0),
        }
    }

    /// The endpoints, in the order of the config.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Whether at least one endpoint is up: files can be scanned.
    pub fn is_up(&self) -> bool {
        self.endpoints.iter().any(|e| e.health.is_up())
    }

    /// While no endpoint is up, why: the last error of each (each names its clamd).
    pub fn last_error(&self) -> Option<String> {
        if self.is_up() {
            return None;
        }
        let errors: Vec<String> = self
            .endpoints
            .iter()
            .filter_map(|e| e.health.last_error())
            .collect();
        (!errors.is_empty()).then(|| errors.join("; "))
    }

    /// Streams `src` to the endpoints that are up, starting with the next in turn, until one
    /// gives a verdict. An endpoint that fails with an I/O error is marked down (its next
    /// successful health check brings it back); one that answers with an error keeps its
    /// health, and the next is tried all the same. The error is the last endpoint's, or
    /// [`ScanError::NoneUp`]; reading `src` failing ends the scan at once, as no endpoint is to
    /// blame.
    pub fn scan(&self, src: &mut (impl Read + Seek)) -> Result<Verdict, ScanError> {
        let up: Vec<&Endpoint> = self
            .endpoints
            .iter()
            .map(|e| &**e)
            .filter(|e| e.health.is_up())
            .collect();
        if up.is_empty() {
            return Err(ScanError::NoneUp);
        }
        let first = self.turn.fetch_add(1, Ordering::Relaxed) % up.len();
        let mut last = ScanError::NoneUp;
        for endpoint in up.iter().cycle().skip(first).take(up.len()) {
            src.rewind().map_err(ScanError::Source)?;
            let error = match endpoint.clamd.scan(&mut *src) {
                Ok(verdict) => return Ok(verdict),
                Err(e @ ScanError::Source(_)) => return Err(e),
                Err(e) => e,
            };
            let why = Chain(&error).to_string();
            if matches!(error, ScanError::Io { .. }) {
                endpoint.health.set_down(why.clone());
            }
            let address = endpoint.clamd.addr.to_string();
            tracing::warn!(
                endpoint = address.as_str(),
                error = why,
                "clamd gave no verdict"
            );
            last = error;
        }
        Err(last)
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
