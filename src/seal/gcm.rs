//! AES-GCM over a stream (NIST SP 800-38D with a 96-bit nonce), composed from AES-CTR and GHASH
//! so that a file of any size passes through one buffer. The `aes-gcm` crate needs the whole
//! message in memory; CMS puts the tag after the content, so sealing and opening both need the
//! incremental form. Opening can also check the tag without decrypting ([`StreamingGcm::absorb`]),
//! which lets a seekable input be verified before any plaintext is released.

use aes::cipher::{BlockCipherEncrypt, KeyInit, KeyIvInit, StreamCipher, consts::U16};
use ghash::GHash;
use ghash::universal_hash::UniversalHash;

/// Length of the nonce this implementation supports (the one RFC 5084 recommends).
pub(crate) const NONCE_LEN: usize = 12;
/// Length of a full GCM tag.
pub(crate) const TAG_LEN: usize = 16;

/// Incremental AES-GCM with an empty associated data string (CMS authenticates no attributes).
pub(crate) struct StreamingGcm<C: BlockCipherEncrypt<BlockSize = U16>> {
    ctr: ctr::Ctr32BE<C>,
    ghash: GHash,
    pending: Vec<u8>,
    len: u64,
    tag_mask: [u8; 16],
}

impl<C> StreamingGcm<C>
where
    C: BlockCipherEncrypt<BlockSize = U16> + KeyInit,
    ctr::Ctr32BE<C>: KeyIvInit + StreamCipher,
{
    /// `None` when the key length does not suit the cipher.
    pub(crate) fn new(key: &[u8], nonce: &[u8; NONCE_LEN]) -> Option<Self> {
        let aes = C::new_from_slice(key).ok()?;
        let mut h = [0u8; 16];
        aes.encrypt_block((&mut h).into());
        let mut j0 = [0u8; 16];
        j0[..NONCE_LEN].copy_from_slice(nonce);
        j0[15] = 1;
        let mut tag_mask = j0;
        aes.encrypt_block((&mut tag_mask).into());
        let mut iv = j0;
        iv[15] = 2;
        Some(StreamingGcm {
            ctr: ctr::Ctr32BE::<C>::new_from_slices(key, &iv).ok()?,
            ghash: GHash::new(&h.into()),
            pending: Vec::with_capacity(16),
            len: 0,
            tag_mask,
        })
    }
}

impl<C: BlockCipherEncrypt<BlockSize = U16>> StreamingGcm<C>
where
    ctr::Ctr32BE<C>: StreamCipher,
{
    fn hash(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.pending.is_empty() {
            let take = (16 - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == 16 {
                self.ghash.update_padded(&self.pending);
                self.pending.clear();
            }
        }
        let whole = data.len() / 16 * 16;
        self.ghash.update_padded(&data[..whole]);
        self.pending.extend_from_slice(&data[whole..]);
    }

    /// Encrypts `buf` in place and adds the ciphertext to the tag.
    pub(crate) fn encrypt(&mut self, buf: &mut [u8]) {
        self.ctr.apply_keystream(buf);
        self.hash(buf);
    }

    /// Adds the ciphertext in `buf` to the tag and decrypts it in place.
    pub(crate) fn decrypt(&mut self, buf: &mut [u8]) {
        self.hash(buf);
        self.ctr.apply_keystream(buf);
    }

    /// Adds ciphertext to the tag without decrypting it (a verifying pass).
    pub(crate) fn absorb(&mut self, ciphertext: &[u8]) {
        self.hash(ciphertext);
    }

    /// The full 16-byte tag over everything seen.
    pub(crate) fn finish(mut self) -> [u8; TAG_LEN] {
        self.ghash.update_padded(&self.pending);
        let mut lengths = [0u8; 16];
        lengths[8..].copy_from_slice(&(self.len * 8).to_be_bytes());
        self.ghash.update_padded(&lengths);
        let mut tag: [u8; TAG_LEN] = self.ghash.finalize().into();
        for (t, m) in tag.iter_mut().zip(self.tag_mask) {
            *t ^= m;
        }
        tag
    }
}

/// Decryption side, with the AES key size chosen at run time from the message.
pub(crate) trait GcmOpen {
    fn decrypt(&mut self, buf: &mut [u8]);
    fn absorb(&mut self, ciphertext: &[u8]);
    /// Whether `tag` (possibly truncated to 12..=16 bytes) matches, compared in constant time.
    fn verify(self: Box<Self>, tag: &[u8]) -> bool;
}

impl<C: BlockCipherEncrypt<BlockSize = U16>> GcmOpen for StreamingGcm<C>
where
    ctr::Ctr32BE<C>: StreamCipher,
{
    fn decrypt(&mut self, buf: &mut [u8]) {
        StreamingGcm::decrypt(self, buf);
    }

    fn absorb(&mut self, ciphertext: &[u8]) {
        StreamingGcm::absorb(self, ciphertext);
    }

    fn verify(self: Box<Self>, tag: &[u8]) -> bool {
        let ours = self.finish();
        if !(12..=TAG_LEN).contains(&tag.len()) {
            return false;
        }
        ours.iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::Aes256;
    use aes_gcm::aead::AeadInOut;

    #[test]
    fn streaming_gcm_matches_the_aes_gcm_crate() {
        let key = [7u8; 32];
        let nonce = [9u8; 12];
        for len in [0usize, 1, 15, 16, 17, 100, 4096 + 3] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut ours = plain.clone();
            let mut gcm = StreamingGcm::<Aes256>::new(&key, &nonce).unwrap();
            // Feed in uneven pieces.
            let (a, b) = ours.split_at_mut(len / 3);
            gcm.encrypt(a);
            gcm.encrypt(b);
            let tag = gcm.finish();
            let oracle = aes_gcm::Aes256Gcm::new_from_slice(&key).unwrap();
            let mut theirs = plain.clone();
            let their_tag = oracle
                .encrypt_inout_detached(&nonce.into(), b"", theirs.as_mut_slice().into())
                .unwrap();
            assert_eq!(ours, theirs, "len {len}");
            assert_eq!(&tag[..], &their_tag[..], "len {len}");

            let mut back = ours.clone();
            let mut open: Box<dyn GcmOpen> =
                Box::new(StreamingGcm::<Aes256>::new(&key, &nonce).unwrap());
            let (a, b) = back.split_at_mut(len / 2);
            open.decrypt(a);
            open.decrypt(b);
            assert!(open.verify(&tag), "len {len}");
            assert_eq!(back, plain, "len {len}");

            let mut check: Box<dyn GcmOpen> =
                Box::new(StreamingGcm::<Aes256>::new(&key, &nonce).unwrap());
            check.absorb(&ours);
            let mut bad = tag;
            bad[0] ^= 1;
            assert!(!check.verify(&bad), "len {len}");
        }
    }
}
