//! Finding the recipient info meant for the opening key and unwrapping the content key from it
//! (RSA key transport, ECDH key agreement), so that what a failure reveals is decided in one
//! place: a wrong padding and a wrong tag must look the same to a sender probing the gateway.

use der::asn1::{AnyRef, BitStringRef, OctetStringRef};
use der::{Decode, Encode, Reader, SliceReader, Tag, TagNumber, Tagged};
use zeroize::Zeroizing;

use super::key::{CertName, OpeningKey, PrivateKey};
use super::{AlgorithmIdentifier, OpenOptions, decode_body, malformed};
use crate::seal::SealError;
use crate::seal::cms::{ID_MGF1, ID_RSAES_OAEP, RSA_ENCRYPTION};
use crate::seal::ecdh::{self, DigestAlg, KeyWrap};

#[derive(der::Sequence)]
struct IssuerAndSerialNumber<'a> {
    issuer: AnyRef<'a>,
    serial_number: AnyRef<'a>,
}

#[derive(der::Sequence)]
struct KeyTransRecipientInfo<'a> {
    version: u8,
    rid: AnyRef<'a>,
    key_encryption_algorithm: AlgorithmIdentifier<'a>,
    encrypted_key: &'a OctetStringRef,
}

#[derive(der::Sequence)]
struct KeyAgreeRecipientInfo<'a> {
    version: u8,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    originator: AnyRef<'a>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    ukm: Option<&'a OctetStringRef>,
    key_encryption_algorithm: AlgorithmIdentifier<'a>,
    recipient_encrypted_keys: Vec<RecipientEncryptedKey<'a>>,
}

#[derive(der::Sequence)]
struct RecipientEncryptedKey<'a> {
    rid: AnyRef<'a>,
    encrypted_key: &'a OctetStringRef,
}

#[derive(der::Sequence)]
struct OriginatorPublicKey<'a> {
    algorithm: AlgorithmIdentifier<'a>,
    public_key: BitStringRef<'a>,
}

#[derive(der::Sequence)]
struct OaepParameters<'a> {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<AlgorithmIdentifier<'a>>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mask_gen: Option<AlgorithmIdentifier<'a>>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    label: Option<AlgorithmIdentifier<'a>>,
}
/// Whether a recipient identifier names the opening key's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    /// It names the certificate given with the key.
    Us,
    /// It names another certificate.
    Other,
    /// No certificate was given: it may be ours.
    Unknown,
}

fn named(cert: Option<&CertName>, rid: AnyRef<'_>) -> Result<Named, SealError> {
    let Some(cert) = cert else {
        return Ok(Named::Unknown);
    };
    let ours = match rid.tag() {
        Tag::Sequence => {
            let ias: IssuerAndSerialNumber =
                decode_body(rid).map_err(malformed("issuer and serial number"))?;
            let issuer = ias.issuer.to_der().map_err(malformed("issuer"))?;
            issuer == cert.issuer_der && ias.serial_number.value() == cert.serial_raw
        }
        Tag::ContextSpecific {
            number: TagNumber(0),
            constructed,
        } => {
            // subjectKeyIdentifier [0] (KeyTrans), or rKeyId [0] { SKI, date?, other? }.
            let ski = if constructed {
                let mut r = SliceReader::new(rid.value()).map_err(malformed("rKeyId"))?;
                let ski: &OctetStringRef = r.decode().map_err(malformed("rKeyId"))?;
                ski.as_bytes()
            } else {
                rid.value()
            };
            cert.key_id.as_deref() == Some(ski)
        }
        _ => return Err(SealError::Malformed("recipient identifier")),
    };
    Ok(if ours { Named::Us } else { Named::Other })
}

/// What the search through the recipient infos found besides a key.
#[derive(Default)]
struct Search {
    /// A recipient info that may be ours uses an algorithm we do not support.
    unsupported: Option<&'static str>,
    /// A random content key, taken when a PKCS#1 v1.5 recipient info that may be ours did not
    /// unwrap: the tag then fails, so a bad padding and a bad tag give the one same error.
    fallback: Option<Zeroizing<Vec<u8>>>,
}

/// A random content key of `len` bytes, for a wrapped key that did not unwrap.
fn random_key(len: usize) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let mut k = Zeroizing::new(vec![0u8; len]);
    getrandom::fill(&mut k)
        .map_err(|_| SealError::Io(std::io::Error::other("random source failed")))?;
    Ok(k)
}

/// Finds the recipient info for `key` in the DER SET `recipient_infos` and unwraps the
/// content key.
pub(super) fn content_key(
    key: &OpeningKey,
    recipient_infos: &[u8],
    key_len: usize,
    options: OpenOptions,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let set = AnyRef::from_der(recipient_infos).map_err(malformed("recipient infos"))?;
    let mut reader = SliceReader::new(set.value()).map_err(malformed("recipient infos"))?;
    let mut search = Search::default();
    while !reader.is_finished() {
        let info: AnyRef = reader.decode().map_err(malformed("recipient info"))?;
        const KARI: Tag = Tag::ContextSpecific {
            number: TagNumber(1),
            constructed: true,
        };
        let found = match &key.key {
            PrivateKey::Rsa(rsa) if info.tag() == Tag::Sequence => {
                let ktri: KeyTransRecipientInfo =
                    decode_body(info).map_err(malformed("KeyTransRecipientInfo"))?;
                key_trans(rsa, key.cert.as_ref(), &ktri, key_len, options, &mut search)?
            }
            PrivateKey::P256(ec) if info.tag() == KARI => {
                let kari: KeyAgreeRecipientInfo =
                    decode_body(info).map_err(malformed("KeyAgreeRecipientInfo"))?;
                key_agree(ec, key.cert.as_ref(), &kari, key_len, &mut search)?
            }
            _ => None, // another kind of recipient (or key)
        };
        if let Some(cek) = found {
            return Ok(cek);
        }
    }
    if let Some(k) = search.fallback {
        return Ok(k);
    }
    Err(match search.unsupported {
        Some(what) => SealError::Unsupported(what),
        None => SealError::WrongKey,
    })
}

fn key_trans(
    key: &rsa::RsaPrivateKey,
    cert: Option<&CertName>,
    ktri: &KeyTransRecipientInfo<'_>,
    key_len: usize,
    options: OpenOptions,
    search: &mut Search,
) -> Result<Option<Zeroizing<Vec<u8>>>, SealError> {
    let named = named(cert, ktri.rid)?;
    if named == Named::Other {
        return Ok(None);
    }
    let alg = &ktri.key_encryption_algorithm;
    let wrapped = ktri.encrypted_key.as_bytes();
    let mut rng = rand::rng();
    let unwrapped = if alg.algorithm == RSA_ENCRYPTION {
        if !options.allow_rsa_pkcs1v15 {
            // Refused before any decryption: nothing about the padding is learnt.
            search.unsupported =
                Some("RSA PKCS#1 v1.5 key transport (encrypt with RSA-OAEP or to an EC key)");
            return Ok(None);
        }
        let cek = key.decrypt_blinded(&mut rng, rsa::Pkcs1v15Encrypt, wrapped);
        match cek {
            Ok(k) if k.len() == key_len => Some(Zeroizing::new(k)),
            // Go on with a random key (RFC 3218 §2.3.2), so that a bad padding and a bad tag
            // look the same (no padding oracle): at once for the named recipient, and when no
            // certificate names one, unless another recipient info unwraps.
            _ if named == Named::Us => Some(random_key(key_len)?),
            _ => {
                if search.fallback.is_none() {
                    search.fallback = Some(random_key(key_len)?);
                }
                None
            }
        }
    } else if alg.algorithm == ID_RSAES_OAEP {
        let Some(hash) = oaep_hash(alg)? else {
            search.unsupported = Some("RSA-OAEP parameters (label, or different hashes)");
            return Ok(None);
        };
        match oaep_decrypt(key, hash, wrapped) {
            Ok(k) if k.len() == key_len => Some(k),
            _ if named == Named::Us => return Err(SealError::Tampered),
            _ => None,
        }
    } else {
        search.unsupported = Some("key transport algorithm (only RSA PKCS#1 v1.5 and OAEP)");
        return Ok(None);
    };
    Ok(unwrapped)
}

/// The one hash OAEP uses for both the label and MGF1; `None` for combinations not supported.
fn oaep_hash(alg: &AlgorithmIdentifier<'_>) -> Result<Option<DigestAlg>, SealError> {
    let params: Option<OaepParameters> = alg.parameters_as(Tag::Sequence)?;
    let Some(params) = params else {
        return Ok(Some(DigestAlg::Sha1)); // all defaults: SHA-1, MGF1-SHA-1
    };
    if params.label.is_some() {
        return Ok(None);
    }
    let hash = match &params.hash {
        None => Some(DigestAlg::Sha1),
        Some(h) => DigestAlg::from_oid(&h.algorithm),
    };
    let mgf_hash = match &params.mask_gen {
        None => Some(DigestAlg::Sha1),
        Some(m) if m.algorithm == ID_MGF1 => {
            let inner: Option<AlgorithmIdentifier> = m.parameters_as(Tag::Sequence)?;
            match inner {
                None => Some(DigestAlg::Sha1),
                Some(h) => DigestAlg::from_oid(&h.algorithm),
            }
        }
        Some(_) => None,
    };
    Ok(match (hash, mgf_hash) {
        (Some(a), Some(b)) if a == b => Some(a),
        _ => None,
    })
}

fn oaep_decrypt(
    key: &rsa::RsaPrivateKey,
    hash: DigestAlg,
    wrapped: &[u8],
) -> rsa::Result<Zeroizing<Vec<u8>>> {
    use rsa::Oaep;
    let mut rng = rand::rng();
    let k = match hash {
        DigestAlg::Sha1 => key.decrypt_blinded(&mut rng, Oaep::<sha1::Sha1>::new(), wrapped),
        DigestAlg::Sha224 => key.decrypt_blinded(&mut rng, Oaep::<sha2::Sha224>::new(), wrapped),
        DigestAlg::Sha256 => key.decrypt_blinded(&mut rng, Oaep::<sha2::Sha256>::new(), wrapped),
        DigestAlg::Sha384 => key.decrypt_blinded(&mut rng, Oaep::<sha2::Sha384>::new(), wrapped),
        DigestAlg::Sha512 => key.decrypt_blinded(&mut rng, Oaep::<sha2::Sha512>::new(), wrapped),
    }?;
    Ok(Zeroizing::new(k))
}

fn key_agree(
    key: &p256::SecretKey,
    cert: Option<&CertName>,
    kari: &KeyAgreeRecipientInfo<'_>,
    key_len: usize,
    search: &mut Search,
) -> Result<Option<Zeroizing<Vec<u8>>>, SealError> {
    let mut candidates = Vec::new();
    for rek in &kari.recipient_encrypted_keys {
        let named = named(cert, rek.rid)?;
        if named != Named::Other {
            candidates.push((named, rek.encrypted_key.as_bytes()));
        }
    }
    if candidates.is_empty() {
        return Ok(None);
    }
    let originator = match kari.originator.tag() {
        Tag::ContextSpecific {
            number: TagNumber(1),
            constructed: true,
        } => decode_body::<OriginatorPublicKey>(kari.originator)
            .map_err(malformed("originator key"))?,
        _ => {
            search.unsupported = Some("key agreement originator (only originatorKey)");
            return Ok(None);
        }
    };
    if originator.algorithm.algorithm != ecdh::ID_EC_PUBLIC_KEY {
        search.unsupported = Some("originator key type (only EC)");
        return Ok(None);
    }
    let point = originator
        .public_key
        .as_bytes()
        .ok_or(SealError::Malformed("originator key"))?;
    let Ok(originator_key) = p256::PublicKey::from_sec1_bytes(point) else {
        search.unsupported = Some("originator key (not a P-256 point)");
        return Ok(None);
    };
    let alg = &kari.key_encryption_algorithm;
    let Some(kdf) = DigestAlg::from_scheme(&alg.algorithm) else {
        search.unsupported = Some("key agreement scheme (only ECDH with an X9.63 KDF)");
        return Ok(None);
    };
    let wrap_alg: Option<AlgorithmIdentifier> = alg.parameters_as(Tag::Sequence)?;
    let Some(wrap) = wrap_alg.and_then(|w| KeyWrap::from_oid(&w.algorithm)) else {
        search.unsupported = Some("key wrap algorithm (only AES key wrap)");
        return Ok(None);
    };
    let shared = p256::ecdh::diffie_hellman(key.to_nonzero_scalar(), originator_key.as_affine());
    let ukm = kari.ukm.map(OctetStringRef::as_bytes);
    let kek = ecdh::kek(kdf, wrap, shared.raw_secret_bytes(), ukm)?;
    for (named, wrapped) in candidates {
        match wrap.unwrap(&kek, wrapped) {
            Some(cek) if cek.len() == key_len => return Ok(Some(cek)),
            _ if named == Named::Us => return Err(SealError::Tampered),
            _ => {}
        }
    }
    Ok(None)
}
