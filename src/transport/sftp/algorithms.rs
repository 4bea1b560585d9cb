//! The SSH algorithms the gateway offers, and what an operator may change in `[gateway.ssh]`.
//!
//! The defaults accept what OpenSSH 9's server accepts, less everything built on SHA-1, CBC or
//! 3DES: clinics reach the gateway with the software they already have (libssh2 before 1.11
//! has no ETM MAC and no AEAD cipher, the original JSch no Ed25519), while the fast AEAD
//! ciphers stay first. Each kind is one catalogue of names russh implements; a name outside it
//! is unknown, a name marked unsafe is refused, and the config check says which and why.

use russh::keys::Algorithm;
use russh::{cipher, kex, mac};

/// One kind of algorithm that `[gateway.ssh]` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Kex,
    Cipher,
    Mac,
    HostKey,
}

/// Whether a known name is offered unless the operator says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Offered by default, in catalogue order.
    Default,
    /// Safe, offered only when the operator lists it.
    Optional,
    /// Refused in the config, with the reason.
    Refused(&'static str),
}

use Status::{Default as D, Optional as O, Refused as R};

const SHA1: &str = "uses SHA-1";

/// Key exchange, by preference. DH group exchange is absent: the server would have to pick
/// groups itself, and every client that offers it also offers a fixed group.
const KEX: &[(&str, Status)] = &[
    ("mlkem768x25519-sha256", D),
    ("curve25519-sha256", D),
    ("curve25519-sha256@libssh.org", D),
    ("ecdh-sha2-nistp256", D),
    ("ecdh-sha2-nistp384", D),
    ("ecdh-sha2-nistp521", D),
    ("diffie-hellman-group16-sha512", D),
    ("diffie-hellman-group18-sha512", D),
    ("diffie-hellman-group14-sha256", D),
    ("diffie-hellman-group15-sha512", O),
    ("diffie-hellman-group17-sha512", O),
    ("diffie-hellman-group1-sha1", R(SHA1)),
    ("diffie-hellman-group14-sha1", R(SHA1)),
    ("diffie-hellman-group-exchange-sha1", R(SHA1)),
    ("ext-info-s", R("is always offered by the gateway")),
    (
        "kex-strict-s-v00@openssh.com",
        R("is always offered by the gateway (strict key exchange, CVE-2023-48795)"),
    ),
    ("none", R("is no key exchange")),
];

/// Ciphers: AEAD first (aes256-gcm, then chacha20, the fastest on most servers), then CTR,
/// which needs one of the MACs below.
const CIPHERS: &[(&str, Status)] = &[
    ("aes256-gcm@openssh.com", D),
    ("chacha20-poly1305@openssh.com", D),
    ("aes128-gcm@openssh.com", D),
    ("aes256-ctr", D),
    ("aes192-ctr", D),
    ("aes128-ctr", D),
    ("aes128-cbc", R("is CBC")),
    ("aes192-cbc", R("is CBC")),
    ("aes256-cbc", R("is CBC")),
    ("3des-cbc", R("is 3DES in CBC mode")),
    ("none", R("is no encryption")),
    ("clear", R("is no encryption")),
];

/// MACs, used with the CTR ciphers only: encrypt-then-MAC first; the non-ETM ones are for
/// clients without ETM (libssh2 before 1.11, older JSch and PuTTY).
const MACS: &[(&str, Status)] = &[
    ("hmac-sha2-512-etm@openssh.com", D),
    ("hmac-sha2-256-etm@openssh.com", D),
    ("hmac-sha2-512", D),
    ("hmac-sha2-256", D),
    ("hmac-sha1-etm@openssh.com", R(SHA1)),
    ("hmac-sha1", R(SHA1)),
    ("none", R("is no integrity protection")),
];

/// Host key signature algorithms; only those with a key in `host_keys` are offered.
const HOST_KEYS: &[(&str, Status)] = &[
    ("ssh-ed25519", D),
    ("ecdsa-sha2-nistp256", D),
    ("ecdsa-sha2-nistp384", D),
    ("ecdsa-sha2-nistp521", D),
    ("rsa-sha2-512", D),
    ("rsa-sha2-256", D),
    (
        "ssh-rsa",
        R("signs with SHA-1 (use rsa-sha2-512 or rsa-sha2-256)"),
    ),
    ("ssh-dss", R("is DSA, which signs with SHA-1")),
];

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Kex, Kind::Cipher, Kind::Mac, Kind::HostKey];

    /// The key of `[gateway.ssh]` that sets this kind.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Kex => "kex",
            Kind::Cipher => "ciphers",
            Kind::Mac => "macs",
            Kind::HostKey => "host_key_algorithms",
        }
    }

    fn catalogue(self) -> &'static [(&'static str, Status)] {
        match self {
            Kind::Kex => KEX,
            Kind::Cipher => CIPHERS,
            Kind::Mac => MACS,
            Kind::HostKey => HOST_KEYS,
        }
    }

    /// The names offered when the operator sets nothing, by preference.
    pub fn defaults(self) -> Vec<&'static str> {
        self.catalogue()
            .iter()
            .filter(|(_, s)| *s == D)
            .map(|(n, _)| *n)
            .collect()
    }

    /// Every name that may be configured.
    pub fn safe(self) -> Vec<&'static str> {
        self.catalogue()
            .iter()
            .filter(|(_, s)| !matches!(s, R(_)))
            .map(|(n, _)| *n)
            .collect()
    }
}

/// Why a configured list cannot be used; `index` is the entry at fault, if one is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ListError {
    pub index: Option<usize>,
    pub message: String,
}

/// The effective list of `kind` for a configured one: unset keeps the defaults; a list of
/// names replaces them (its order is the preference); a list of `+name` and `-name` entries
/// adds to the defaults (at the end) and removes from them, as OpenSSH's config does.
pub fn resolve(
    kind: Kind,
    configured: Option<&[String]>,
) -> Result<Vec<&'static str>, Vec<ListError>> {
    let Some(list) = configured else {
        return Ok(kind.defaults());
    };
    let mut errors = Vec::new();
    let edits = list.iter().any(|n| n.starts_with(['+', '-']));
    let mut names: Vec<&'static str> = if edits { kind.defaults() } else { Vec::new() };
    let mut seen: Vec<&str> = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let error = |message: String| ListError {
            index: Some(i),
            message,
        };
        let (op, name) = match entry.chars().next() {
            Some(c @ ('+' | '-')) => (Some(c), &entry[1..]),
            _ => (None, entry.as_str()),
        };
        if edits && op.is_none() {
            errors.push(error(format!(
                "{entry:?}: write every entry as +name or -name (to change the defaults), \
                 or none of them (to replace the defaults)"
            )));
            continue;
        }
        let Some((known, status)) = kind.catalogue().iter().find(|(n, _)| *n == name) else {
            errors.push(error(format!(
                "{name:?} is not a {} the gateway knows; known: {}",
                kind.noun(),
                kind.safe().join(", ")
            )));
            continue;
        };
        if let R(why) = status {
            errors.push(error(format!("{name:?} {why}: refused")));
            continue;
        }
        if seen.contains(&name) {
            errors.push(error(format!("{name:?} is listed twice")));
            continue;
        }
        seen.push(name);
        match op {
            Some('-') => names.retain(|n| n != known),
            _ if !names.contains(known) => names.push(known),
            _ => {}
        }
    }
    if errors.is_empty() && names.is_empty() {
        errors.push(ListError {
            index: None,
            message: format!("no {} is left to offer", kind.noun()),
        });
    }
    if errors.is_empty() {
        Ok(names)
    } else {
        Err(errors)
    }
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Kex => "key exchange",
            Kind::Cipher => "cipher",
            Kind::Mac => "MAC",
            Kind::HostKey => "host key algorithm",
        }
    }
}

/// A cipher that authenticates by itself; the others need a MAC.
pub fn is_aead(cipher: &str) -> bool {
    cipher.ends_with("-gcm@openssh.com") || cipher == "chacha20-poly1305@openssh.com"
}

/// The host key algorithms a key can sign with.
pub fn serves(key: &Algorithm, name: &str) -> bool {
    match key {
        Algorithm::Rsa { .. } => name.starts_with("rsa-sha2-"),
        other => other.as_str() == name,
    }
}

/// The lists in force for a `[gateway.ssh]`, by preference; host key algorithms before they
/// are matched against the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub kex: Vec<&'static str>,
    pub ciphers: Vec<&'static str>,
    pub macs: Vec<&'static str>,
    pub host_key_algorithms: Vec<&'static str>,
}

impl Effective {
    /// Resolves every kind; the errors name the kind and the entry at fault.
    pub fn of(ssh: &crate::config::Ssh) -> Result<Effective, Vec<(Kind, ListError)>> {
        let mut errors = Vec::new();
        let mut get = |kind: Kind| {
            resolve(kind, ssh.list(kind)).unwrap_or_else(|e| {
                errors.extend(e.into_iter().map(|e| (kind, e)));
                Vec::new()
            })
        };
        let effective = Effective {
            kex: get(Kind::Kex),
            ciphers: get(Kind::Cipher),
            macs: get(Kind::Mac),
            host_key_algorithms: get(Kind::HostKey),
        };
        if errors.is_empty() {
            Ok(effective)
        } else {
            Err(errors)
        }
    }

    /// The host key algorithms offered for keys of these types, by preference.
    pub fn host_keys_for(&self, keys: &[Algorithm]) -> Vec<&'static str> {
        self.host_key_algorithms
            .iter()
            .copied()
            .filter(|n| keys.iter().any(|k| serves(k, n)))
            .collect()
    }

    /// The four lists as russh takes them.
    pub fn to_russh(&self) -> Result<Russh, Unimplemented> {
        to_russh(
            &self.kex,
            &self.ciphers,
            &self.macs,
            &self.host_key_algorithms,
        )
    }
}

/// The four lists as russh takes them.
pub struct Russh {
    pub kex: Vec<kex::Name>,
    pub cipher: Vec<cipher::Name>,
    pub mac: Vec<mac::Name>,
    pub key: Vec<Algorithm>,
}

/// A catalogue name that russh does not know: a mismatch between this module and the crate.
#[derive(Debug, thiserror::Error)]
#[error("the SSH library does not implement {0:?}")]
pub struct Unimplemented(pub &'static str);

/// Turns resolved names into russh's values; the strict-kex marker and `ext-info-s` are added
/// to the key exchanges here, whatever the config says.
pub fn to_russh(
    kex_names: &[&'static str],
    ciphers: &[&'static str],
    macs: &[&'static str],
    host_keys: &[&'static str],
) -> Result<Russh, Unimplemented> {
    let mut kex = kex_names
        .iter()
        .map(|n| kex::Name::try_from(*n).map_err(|()| Unimplemented(n)))
        .collect::<Result<Vec<_>, _>>()?;
    kex.push(kex::EXTENSION_SUPPORT_AS_SERVER);
    kex.push(kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER);
    Ok(Russh {
        kex,
        cipher: ciphers
            .iter()
            .map(|n| cipher::Name::try_from(*n).map_err(|()| Unimplemented(n)))
            .collect::<Result<_, _>>()?,
        mac: macs
            .iter()
            .map(|n| mac::Name::try_from(*n).map_err(|()| Unimplemented(n)))
            .collect::<Result<_, _>>()?,
        key: host_keys
            .iter()
            .map(|n| Algorithm::new(n).map_err(|_| Unimplemented(n)))
            .collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_safe_name_is_implemented_by_russh() {
        let r = to_russh(
            &Kind::Kex.safe(),
            &Kind::Cipher.safe(),
            &Kind::Mac.safe(),
            &Kind::HostKey.safe(),
        )
        .unwrap();
        assert_eq!(
            r.kex.last(),
            Some(&kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER)
        );
        for (alg, name) in r.key.iter().zip(Kind::HostKey.safe()) {
            assert_eq!(alg.to_string(), name);
        }
    }

    #[test]
    fn defaults_keep_aead_first_and_nothing_unsafe() {
        let ciphers = Kind::Cipher.defaults();
        assert_eq!(
            &ciphers[..2],
            &["aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]
        );
        for kind in Kind::ALL {
            for name in kind.defaults() {
                assert!(!name.contains("sha1") && !name.contains("cbc"), "{name}");
            }
        }
        assert!(Kind::Mac.defaults().contains(&"hmac-sha2-256"));
    }

    #[test]
    fn a_list_replaces_and_edits_change_the_defaults() {
        let only = resolve(
            Kind::Cipher,
            Some(&list(&["aes128-ctr", "aes256-gcm@openssh.com"])),
        );
        assert_eq!(only.unwrap(), ["aes128-ctr", "aes256-gcm@openssh.com"]);
        let edited = resolve(
            Kind::Kex,
            Some(&list(&[
                "-mlkem768x25519-sha256",
                "+diffie-hellman-group15-sha512",
            ])),
        )
        .unwrap();
        assert!(!edited.contains(&"mlkem768x25519-sha256"));
        assert_eq!(edited.last(), Some(&"diffie-hellman-group15-sha512"));
    }

    #[test]
    fn unknown_unsafe_mixed_duplicate_and_empty_lists_are_refused() {
        let errors = resolve(
            Kind::Mac,
            Some(&list(&[
                "hmac-sha1",
                "umac-64@openssh.com",
                "hmac-sha2-256",
                "hmac-sha2-256",
            ])),
        )
        .unwrap_err();
        let at: Vec<Option<usize>> = errors.iter().map(|e| e.index).collect();
        assert_eq!(at, [Some(0), Some(1), Some(3)]);
        assert!(errors[0].message.contains("SHA-1"), "{errors:?}");
        let mixed = resolve(Kind::Cipher, Some(&list(&["+aes128-ctr", "aes256-ctr"]))).unwrap_err();
        assert_eq!(mixed[0].index, Some(1));
        let empty = resolve(Kind::HostKey, Some(&[])).unwrap_err();
        assert_eq!(empty[0].index, None);
        assert!(resolve(Kind::HostKey, Some(&list(&["ssh-rsa"]))).is_err());
        assert!(resolve(Kind::Kex, Some(&list(&["kex-strict-s-v00@openssh.com"]))).is_err());
    }

    #[test]
    fn rsa_keys_serve_both_sha2_signatures() {
        let rsa = Algorithm::Rsa { hash: None };
        assert!(serves(&rsa, "rsa-sha2-512") && serves(&rsa, "rsa-sha2-256"));
        assert!(!serves(&rsa, "ssh-ed25519"));
        assert!(serves(&Algorithm::Ed25519, "ssh-ed25519"));
    }
}
