//! Ephemeral-static ECDH for CMS `KeyAgreeRecipientInfo` (RFC 5753 §3.1, RFC 5652 §6.2.2): the
//! shared secret goes through the ANSI X9.63 KDF with `ECC-CMS-SharedInfo` to a key-encryption
//! key, which wraps the content key with AES Key Wrap (RFC 3394). Sealing always uses
//! SHA-256 and AES-256 wrap; opening also accepts what OpenSSL chooses by default (a SHA-1 KDF,
//! and a wrap size that follows the content cipher).

use der::asn1::ObjectIdentifier;
use der::{Encode, Tag};
use sha2::Digest;
use zeroize::Zeroizing;

use super::SealError;
use super::cms::{context, oid, seq, tlv};

pub(crate) const ID_EC_PUBLIC_KEY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub(crate) const ID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

/// A hash function named in a message: of the X9.63 KDF (by the key agreement scheme's OID), or
/// of RSA-OAEP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DigestAlg {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// `dhSinglePass-stdDH-sha256kdf-scheme` (SEC 1 / RFC 5753), what sealing uses.
pub(crate) const STD_DH_SHA256_KDF: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.132.1.11.1");

impl DigestAlg {
    /// The standard (1.3.132.1.11.x, 1.3.133.16.840.63.0.2) and cofactor (1.3.132.1.14.x,
    /// 1.3.133.16.840.63.0.3) DH schemes; for P-256 the cofactor is 1, so both are the same.
    pub(crate) fn from_scheme(o: &ObjectIdentifier) -> Option<DigestAlg> {
        Some(match o.to_string().as_str() {
            "1.3.133.16.840.63.0.2" | "1.3.133.16.840.63.0.3" => DigestAlg::Sha1,
            "1.3.132.1.11.0" | "1.3.132.1.14.0" => DigestAlg::Sha224,
            "1.3.132.1.11.1" | "1.3.132.1.14.1" => DigestAlg::Sha256,
            "1.3.132.1.11.2" | "1.3.132.1.14.2" => DigestAlg::Sha384,
            "1.3.132.1.11.3" | "1.3.132.1.14.3" => DigestAlg::Sha512,
            _ => return None,
        })
    }

    /// A hash algorithm's own OID (as in RSAES-OAEP parameters).
    pub(crate) fn from_oid(o: &ObjectIdentifier) -> Option<DigestAlg> {
        Some(match o.to_string().as_str() {
            "1.3.14.3.2.26" => DigestAlg::Sha1,
            "2.16.840.1.101.3.4.2.4" => DigestAlg::Sha224,
            "2.16.840.1.101.3.4.2.1" => DigestAlg::Sha256,
            "2.16.840.1.101.3.4.2.2" => DigestAlg::Sha384,
            "2.16.840.1.101.3.4.2.3" => DigestAlg::Sha512,
            _ => return None,
        })
    }
}

/// AES Key Wrap of the content key under the key-encryption key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyWrap {
    Aes128,
    Aes192,
    Aes256,
}

impl KeyWrap {
    pub(crate) fn from_oid(o: &ObjectIdentifier) -> Option<KeyWrap> {
        Some(match o.to_string().as_str() {
            "2.16.840.1.101.3.4.1.5" => KeyWrap::Aes128,
            "2.16.840.1.101.3.4.1.25" => KeyWrap::Aes192,
            "2.16.840.1.101.3.4.1.45" => KeyWrap::Aes256,
            _ => return None,
        })
    }

    fn oid(self) -> ObjectIdentifier {
        ObjectIdentifier::new_unwrap(match self {
            KeyWrap::Aes128 => "2.16.840.1.101.3.4.1.5",
            KeyWrap::Aes192 => "2.16.840.1.101.3.4.1.25",
            KeyWrap::Aes256 => "2.16.840.1.101.3.4.1.45",
        })
    }

    fn key_len(self) -> usize {
        match self {
            KeyWrap::Aes128 => 16,
            KeyWrap::Aes192 => 24,
            KeyWrap::Aes256 => 32,
        }
    }

    /// AlgorithmIdentifier with absent parameters (RFC 3565 §2.3.2).
    pub(crate) fn algorithm(self) -> Result<Vec<u8>, SealError> {
        seq(&[&oid(self.oid())?])
    }

    pub(crate) fn wrap(self, kek: &[u8], cek: &[u8]) -> Result<Vec<u8>, SealError> {
        use aes::cipher::KeyInit;
        let mut out = vec![0u8; cek.len() + 8];
        let fail = |_| SealError::Malformed("AES key wrap");
        match self {
            KeyWrap::Aes128 => aes_kw::KwAes128::new_from_slice(kek)
                .map_err(|_| SealError::Malformed("KEK length"))?
                .wrap_key(cek, &mut out)
                .map_err(fail)?,
            KeyWrap::Aes192 => aes_kw::KwAes192::new_from_slice(kek)
                .map_err(|_| SealError::Malformed("KEK length"))?
                .wrap_key(cek, &mut out)
                .map_err(fail)?,
            KeyWrap::Aes256 => aes_kw::KwAes256::new_from_slice(kek)
                .map_err(|_| SealError::Malformed("KEK length"))?
                .wrap_key(cek, &mut out)
                .map_err(fail)?,
        };
        Ok(out)
    }

    /// `None` when the integrity check fails: the key-encryption key is not the one used.
    pub(crate) fn unwrap(self, kek: &[u8], wrapped: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        use aes::cipher::KeyInit;
        let mut out = Zeroizing::new(vec![0u8; wrapped.len().checked_sub(8)?]);
        let n = match self {
            KeyWrap::Aes128 => aes_kw::KwAes128::new_from_slice(kek)
                .ok()?
                .unwrap_key(wrapped, &mut out)
                .ok()?
                .len(),
            KeyWrap::Aes192 => aes_kw::KwAes192::new_from_slice(kek)
                .ok()?
                .unwrap_key(wrapped, &mut out)
                .ok()?
                .len(),
            KeyWrap::Aes256 => aes_kw::KwAes256::new_from_slice(kek)
                .ok()?
                .unwrap_key(wrapped, &mut out)
                .ok()?
                .len(),
        };
        out.truncate(n);
        Some(out)
    }
}

/// DER of `ECC-CMS-SharedInfo` (RFC 5753 §7.2): the wrap algorithm, the optional user keying
/// material, and the key-encryption key length in bits as a 4-byte big-endian number.
fn shared_info(wrap: KeyWrap, ukm: Option<&[u8]>) -> Result<Vec<u8>, SealError> {
    let bits = u32::try_from(wrap.key_len() * 8)
        .unwrap_or(256)
        .to_be_bytes();
    let supp_pub = context(2, true, &tlv(Tag::OctetString, &bits)?)?;
    let entity = match ukm {
        Some(u) => context(0, true, &tlv(Tag::OctetString, u)?)?,
        None => Vec::new(),
    };
    seq(&[&wrap.algorithm()?, &entity, &supp_pub])
}

/// ANSI X9.63 KDF: Hash(Z ‖ counter ‖ SharedInfo) for counter = 1, 2, … up to the KEK length.
pub(crate) fn kek(
    hash: DigestAlg,
    wrap: KeyWrap,
    z: &[u8],
    ukm: Option<&[u8]>,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let info = shared_info(wrap, ukm)?;
    let len = wrap.key_len();
    Ok(match hash {
        DigestAlg::Sha1 => x963::<sha1::Sha1>(z, &info, len),
        DigestAlg::Sha224 => x963::<sha2::Sha224>(z, &info, len),
        DigestAlg::Sha256 => x963::<sha2::Sha256>(z, &info, len),
        DigestAlg::Sha384 => x963::<sha2::Sha384>(z, &info, len),
        DigestAlg::Sha512 => x963::<sha2::Sha512>(z, &info, len),
    })
}

fn x963<D: Digest>(z: &[u8], info: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + 64));
    let mut counter = 1u32;
    while out.len() < len {
        let mut d = D::new();
        d.update(z);
        d.update(counter.to_be_bytes());
        d.update(info);
        out.extend_from_slice(&d.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// The key-encryption algorithm sealing writes: the SHA-256 KDF scheme with AES-256 wrap.
pub(crate) fn sealing_algorithm() -> Result<Vec<u8>, SealError> {
    seq(&[&oid(STD_DH_SHA256_KDF)?, &KeyWrap::Aes256.algorithm()?])
}

/// `OriginatorPublicKey` content for an ephemeral P-256 key: id-ecPublicKey with absent
/// parameters (the recipient's curve is implied, RFC 5753 §3.1.1) and the uncompressed point.
pub(crate) fn originator_key(point: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut bits = Vec::with_capacity(point.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(point);
    let alg = seq(&[&oid(ID_EC_PUBLIC_KEY)?])?;
    Ok([alg, tlv(Tag::BitString, &bits)?].concat())
}

/// Encodes an INTEGER for a small version number.
pub(crate) fn version(v: u8) -> Result<Vec<u8>, SealError> {
    v.to_der().map_err(|_| SealError::Malformed("INTEGER"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_info_is_the_rfc_5753_structure() {
        // SEQUENCE { SEQUENCE { OID aes256-wrap }, [2] { OCTET STRING 00000100 } }
        let der = shared_info(KeyWrap::Aes256, None).unwrap();
        assert_eq!(
            hex::encode(der),
            "3015300b060960864801650304012da206040400000100"
        );
    }

    #[test]
    fn key_wrap_round_trips_and_rejects_another_kek() {
        let cek = [5u8; 32];
        for w in [KeyWrap::Aes128, KeyWrap::Aes192, KeyWrap::Aes256] {
            let kek = vec![9u8; w.key_len()];
            let wrapped = w.wrap(&kek, &cek).unwrap();
            assert_eq!(w.unwrap(&kek, &wrapped).unwrap().as_slice(), &cek);
            assert!(w.unwrap(&vec![8u8; w.key_len()], &wrapped).is_none());
        }
    }
}
