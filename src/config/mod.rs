//! The gateway's configuration: one TOML file holding the gateway settings and every account.
//!
//! A config is only ever used whole and validated: [`load`] parses, resolves relative paths
//! against the file's directory, and runs every check, returning either a [`Config`] with its
//! warnings or all of its errors as `file:line:column` diagnostics. [`live`] keeps the config in
//! force and swaps in a new one on reload.

pub mod crl;
pub mod diagnostic;
pub mod live;
mod model;
mod size;
mod validate;

use std::fs;
use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, KeyPath, Severity};
pub use model::*;
pub use size::ByteSize;
pub use validate::{expiry_instant, normalize_fingerprint};

/// The route that lets a clinic send archives addressed to the gateway's agency number, to be
/// sorted by insurer (docs/sorting.md). Reserved: no counterpart may be called so.
pub const AGENCY_ROUTE: &str = "agency";

/// [`AGENCY_ROUTE`] as the recipient of a file addressed to the agency.
pub fn agency_route() -> crate::accounts::CounterpartId {
    crate::accounts::CounterpartId::new(AGENCY_ROUTE).expect("\"agency\" is a valid id")
}

/// A config that passed validation, with the warnings it produced.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
    /// The file it was read from.
    pub source: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where clamd listens: `unix:/run/clamav/clamd.ctl` or `tcp:127.0.0.1:3310`. Parsed when the
/// config is read, so the scanner is never handed an address it cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddress {
    Unix(PathBuf),
    Tcp(String),
}

impl ClamdAddress {
    pub fn parse(s: &str) -> Result<ClamdAddress, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            Ok(ClamdAddress::Unix(PathBuf::from(p)))
        } else if let Some(a) = s.strip_prefix("tcp:") {
            if !a.contains(':') {
                return Err(format!("tcp:{a} needs host:port"));
            }
            Ok(ClamdAddress::Tcp(a.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a clamd address: use unix:/path/to/clamd.ctl or tcp:host:port"
            ))
        }
    }
}

impl<'de> serde::Deserialize<'de> for ClamdAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Refused inside the visitor, so the error carries the span of this very string, also
        // when it is one element of a list.
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ClamdAddress;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a clamd address (unix:/path/to/clamd.ctl or tcp:host:port)")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ClamdAddress, E> {
                ClamdAddress::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

impl std::fmt::Display for ClamdAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClamdAddress::Unix(p) => write!(f, "unix:{}", p.display()),
            ClamdAddress::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// `gateway.clamd`: the clamd endpoints of the scanner pool, in the order written. A single
/// address is a pool of one, so a config naming one clamd reads as it always did. An empty list
/// or an address named twice is refused by validation, which can point at the line of each (a
/// repeated endpoint would look like redundancy and be none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClamdEndpoints(Vec<ClamdAddress>);

impl ClamdEndpoints {
    pub fn as_slice(&self) -> &[ClamdAddress] {
        &self.0
    }
}

impl From<ClamdAddress> for ClamdEndpoints {
    fn from(address: ClamdAddress) -> Self {
        ClamdEndpoints(vec![address])
    }
}

impl<'de> serde::Deserialize<'de> for ClamdEndpoints {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ClamdEndpoints;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a clamd address (unix:/path/to/clamd.ctl or tcp:host:port) or a list of them",
                )
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ClamdEndpoints, E> {
                ClamdAddress::parse(s)
                    .map(ClamdEndpoints::from)
                    .map_err(E::custom)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ClamdEndpoints, A::Error> {
                // Each element is read as an address, so a bad one is refused at its own place.
                let mut addresses = Vec::new();
                while let Some(address) = seq.next_element::<ClamdAddress>()? {
                    addresses.push(address);
                }
                Ok(ClamdEndpoints(addresses))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Gateway {
    pub fn utc_offset(&self) -> time::UtcOffset {
        self.time_zone
    }
}

impl Config {
    /// A counterpart by id.
    pub fn counterpart(&self, id: &str) -> Option<&Counterpart> {
        self.counterparts.iter().find(|c| c.id == id)
    }

    /// A counterpart by kind and number.
    pub fn counterpart_by_number(&self, number: &crate::numbers::Number) -> Option<&Counterpart> {
        self.counterparts
            .iter()
            .find(|c| c.kind.number_kind() == number.kind() && c.number == *number)
    }

    /// Whether `from` may send archives addressed to the agency (a route to [`AGENCY_ROUTE`])
    /// and the gateway has an agency number.
    pub fn may_send_to_agency(&self, from: &str) -> bool {
        self.gateway.agency_number.is_some() && self.route_allowed(from, AGENCY_ROUTE)
    }

    /// Whether `from` may send files to `to`.
    pub fn route_allowed(&self, from: &str, to: &str) -> bool {
        self.counterpart(from)
            .is_some_and(|c| c.routes.iter().any(|r| r == to))
    }

    /// The upload limit of one account.
    pub fn max_upload_size(&self, account: &str) -> ByteSize {
        self.counterpart(account)
            .and_then(|c| c.max_upload_size)
            .unwrap_or(self.gateway.limits.max_upload_size)
    }
}

/// Reads, resolves and validates a config file.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Validates config text as if read from `path` (relative paths resolve against its directory).
pub fn parse(path: &Path, text: &str) -> Result<Loaded, ConfigError> {
    let map = diagnostic::SourceMap::new(path, text);
    let mut config: Config = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        // A value refused while it was read (a number, an address) is named by its key path.
        let message = match e.span().and_then(|s| map.path_of_value_at(s.start)) {
            Some(path) => format!("{path}: {}", e.message().trim()),
            None => e.message().trim().to_owned(),
        };
        ConfigError::Invalid(vec![map.at_offset(offset, Severity::Error, message)])
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    resolve_paths(&mut config, base);
    let mut diags: Vec<Diagnostic> = validate::validate(&config)
        .into_iter()
        .map(|f| map.at_path(&f.path, f.severity, f.message))
        .collect();
    diags.sort_by_key(|d| (d.line, d.column));
    if diags.iter().any(|d| d.severity == Severity::Error) {
        return Err(ConfigError::Invalid(diags));
    }
    Ok(Loaded {
        config,
        warnings: diags,
        source: path.to_path_buf(),
    })
}

fn resolve_paths(config: &mut Config, base: &Path) {
    let fix = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    let g = &mut config.gateway;
    fix(&mut g.state_dir);
    fix(&mut g.receipt_key);
    fix(&mut g.master_key);
    g.inbound_key.iter_mut().for_each(fix);
    g.inbound_cert.iter_mut().for_each(fix);
    fix(&mut g.schema_dir);
    g.host_keys.iter_mut().for_each(fix);
    g.client_ca.iter_mut().for_each(fix);
    g.crl.iter_mut().for_each(fix);
    g.tls_cert.iter_mut().for_each(fix);
    g.tls_key.iter_mut().for_each(fix);
    for address in &mut g.clamd.0 {
        if let ClamdAddress::Unix(p) = address {
            fix(p);
        }
    }
    for c in &mut config.counterparts {
        c.encryption_cert.iter_mut().for_each(fix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Gateway {
        clamd: ClamdEndpoints,
    }

    fn read(text: &str) -> Result<Vec<ClamdAddress>, toml::de::Error> {
        toml::from_str::<Gateway>(text).map(|g| g.clamd.as_slice().to_vec())
    }

    #[test]
    fn one_address_is_a_pool_of_one() {
        assert_eq!(
            read("clamd = \"unix:/run/clamav/clamd.ctl\"").unwrap(),
            vec![ClamdAddress::Unix("/run/clamav/clamd.ctl".into())]
        );
    }

    #[test]
    fn a_list_is_read_in_its_order() {
        assert_eq!(
            read("clamd = [\"tcp:10.0.0.5:3310\", \"unix:/run/clamav/clamd.ctl\"]").unwrap(),
            vec![
                ClamdAddress::Tcp("10.0.0.5:3310".into()),
                ClamdAddress::Unix("/run/clamav/clamd.ctl".into()),
            ]
        );
        // Emptiness and repeats are validation's, which names their lines.
        assert_eq!(read("clamd = []").unwrap(), vec![]);
    }

    #[test]
    fn a_bad_address_in_a_list_is_refused_at_its_place() {
        let text = "clamd = [\"unix:/a.sock\", \"smb:x\"]";
        let e = read(text).unwrap_err();
        assert!(
            e.message().contains("\"smb:x\" is not a clamd address"),
            "{e}"
        );
        assert_eq!(e.span().map(|s| s.start), text.find("\"smb"));
    }

    #[test]
    fn neither_a_string_nor_a_list_is_refused() {
        let e = read("clamd = 3310").unwrap_err();
        assert!(
            e.message()
                .contains("expected a clamd address (unix:/path/to/clamd.ctl or tcp:host:port) or a list of them"),
            "{e}"
        );
    }
}
