//! The gateway's own secrets: the SSH host keys, the receipt signing key and the master key.
//!
//! Secrets are created with mode 0600 at `open` time (never chmod-ed afterwards) and never
//! overwritten; loading refuses files that others can read, as config validation does.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{
    DecodePrivateKey, EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding,
};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: already exists; refusing to overwrite a key", .0.display())]
    Exists(PathBuf),
    #[error("{}: readable by group or others (mode {mode:04o}); run chmod 600", path.display())]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{}: not a valid {what}", path.display())]
    Malformed { path: PathBuf, what: &'static str },
    #[error("the system random source failed: {0}")]
    Random(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, KeyError> {
    let mut buf = Zeroizing::new([0u8; N]);
    getrandom::fill(buf.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(buf)
}

/// Writes a new file with the given mode; refuses to replace an existing one.
fn write_new(path: &Path, mode: u32, bytes: &[u8]) -> Result<(), KeyError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists(path.to_path_buf())
            } else {
                KeyError::Io {
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        })?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Reads a secret file, refusing one that group or others may read.
fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    fs::read(path).map(Zeroizing::new).map_err(io(path))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// The SSH host key types `handoff keygen` writes, with their file names: Ed25519 for current
/// clients, ECDSA P-256 and RSA for clients without Ed25519 (the original JSch, libssh2 built
/// without it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyType {
    Ed25519,
    EcdsaP256,
    /// 3072 bits, OpenSSH's default size; it signs with SHA-2 only (`rsa-sha2-512/256`).
    Rsa,
}

impl HostKeyType {
    pub const ALL: [HostKeyType; 3] = [
        HostKeyType::Ed25519,
        HostKeyType::EcdsaP256,
        HostKeyType::Rsa,
    ];

    /// The file name OpenSSH gives a host key of this type.
    pub fn file_name(self) -> &'static str {
        match self {
            HostKeyType::Ed25519 => "ssh_host_ed25519_key",
            HostKeyType::EcdsaP256 => "ssh_host_ecdsa_key",
            HostKeyType::Rsa => "ssh_host_rsa_key",
        }
    }
}

/// Generates an SSH host key in OpenSSH format, and `PATH.pub` beside it.
pub fn generate_host_key(path: &Path, kind: HostKeyType) -> Result<(), KeyError> {
    use russh::keys::ssh_key::private::{EcdsaKeypair, Ed25519Keypair, RsaKeypair};
    let malformed = || KeyError::Malformed {
        path: path.to_path_buf(),
        what: "OpenSSH key",
    };
    let key = match kind {
        HostKeyType::Ed25519 => {
            let seed = random::<32>()?;
            russh::keys::PrivateKey::from(Ed25519Keypair::from_seed(&seed))
        }
        HostKeyType::EcdsaP256 => russh::keys::PrivateKey::from(
            EcdsaKeypair::random(&mut rand::rng(), russh::keys::EcdsaCurve::NistP256)
                .map_err(|e| KeyError::Random(e.to_string()))?,
        ),
        HostKeyType::Rsa => russh::keys::PrivateKey::from(
            RsaKeypair::random(&mut rand::rng(), 3072)
                .map_err(|e| KeyError::Random(e.to_string()))?,
        ),
    };
    let text = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(|_| malformed())?;
    let public = key.public_key().to_openssh().map_err(|_| malformed())?;
    write_new(path, 0o600, text.as_bytes())?;
    write_new(
        &with_suffix(path, ".pub"),
        0o644,
        format!("{public}\n").as_bytes(),
    )
}

/// Generates the Ed25519 receipt signing key (PKCS#8 PEM) and `PATH.pub` (SPKI PEM), the
/// public half that counterparts use to verify receipts.
pub fn generate_receipt_key(path: &Path) -> Result<(), KeyError> {
    let seed = random::<32>()?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| KeyError::Malformed {
            path: path.to_path_buf(),
            what: "PKCS#8 key",
        })?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|_| KeyError::Malformed {
            path: path.to_path_buf(),
            what: "public key",
        })?;
    write_new(path, 0o600, pem.as_bytes())?;
    write_new(&with_suffix(path, ".pub"), 0o644, public.as_bytes())
}

/// Generates the master key: 32 random bytes, written as one line of hex.
pub fn generate_master_key(path: &Path) -> Result<(), KeyError> {
    let key = random::<32>()?;
    let line = Zeroizing::new(format!("{}\n", hex::encode(key.as_ref())));
    write_new(path, 0o600, line.as_bytes())
}

/// Loads the receipt signing key.
pub fn load_receipt_key(path: &Path) -> Result<ed25519_dalek::SigningKey, KeyError> {
    let bytes = read_secret(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::Malformed {
        path: path.to_path_buf(),
        what: "PKCS#8 PEM Ed25519 key",
    })?;
    ed25519_dalek::SigningKey::from_pkcs8_pem(text).map_err(|_| KeyError::Malformed {
        path: path.to_path_buf(),
        what: "PKCS#8 PEM Ed25519 key",
    })
}

/// The gateway's master key, from which per-file keys are derived.
pub struct MasterKey {
    /// Names the key in sealed headers so a key can be rotated: the first 8 bytes of
    /// SHA-256 over the key.
    pub id: [u8; 8],
    pub key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", hex::encode(self.id))
    }
}

impl MasterKey {
    pub fn from_bytes(key: [u8; 32]) -> MasterKey {
        let digest = Sha256::digest(key);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        MasterKey {
            id,
            key: Zeroizing::new(key),
        }
    }
}

/// Loads the master key.
pub fn load_master_key(path: &Path) -> Result<MasterKey, KeyError> {
    let bytes = read_secret(path)?;
    let malformed = || KeyError::Malformed {
        path: path.to_path_buf(),
        what: "master key (64 hex digits)",
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| malformed())?.trim();
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text, key.as_mut()).map_err(|_| malformed())?;
    Ok(MasterKey::from_bytes(*key))
}

/// Loads an SSH host key.
pub fn load_host_key(path: &Path) -> Result<russh::keys::PrivateKey, KeyError> {
    read_secret(path)?;
    russh::keys::load_secret_key(path, None).map_err(|_| KeyError::Malformed {
        path: path.to_path_buf(),
        what: "OpenSSH private key",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn keygen_writes_owner_only_files_that_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let receipt = dir.path().join("receipt.key");
        let master = dir.path().join("master.key");
        for kind in HostKeyType::ALL {
            let host = dir.path().join(kind.file_name());
            generate_host_key(&host, kind).unwrap();
            assert_eq!(mode(&host), 0o600, "{}", host.display());
            let key = load_host_key(&host).unwrap();
            let expected = match kind {
                HostKeyType::Ed25519 => "ssh-ed25519",
                HostKeyType::EcdsaP256 => "ecdsa-sha2-nistp256",
                HostKeyType::Rsa => "ssh-rsa",
            };
            assert_eq!(key.algorithm().as_str(), expected);
        }
        generate_receipt_key(&receipt).unwrap();
        generate_master_key(&master).unwrap();
        for p in [&receipt, &master] {
            assert_eq!(mode(p), 0o600, "{}", p.display());
        }
        load_receipt_key(&receipt).unwrap();
        let m = load_master_key(&master).unwrap();
        assert_ne!(m.key.as_ref(), &[0u8; 32]);
    }

    #[test]
    fn keygen_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let master = dir.path().join("master.key");
        generate_master_key(&master).unwrap();
        let before = fs::read(&master).unwrap();
        assert!(matches!(
            generate_master_key(&master),
            Err(KeyError::Exists(_))
        ));
        assert_eq!(fs::read(&master).unwrap(), before);
    }

    #[test]
    fn loading_refuses_group_readable_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let master = dir.path().join("master.key");
        generate_master_key(&master).unwrap();
        fs::set_permissions(&master, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            load_master_key(&master),
            Err(KeyError::Permissions { mode: 0o640, .. })
        ));
    }
}
