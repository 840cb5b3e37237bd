//! AES-128 encrypted HLS (RFC 8216 `METHOD=AES-128`) for gated videos whose stream should be able to live
//! on public storage (IPFS, an open CDN): every media segment is encrypted whole with AES-128-CBC and
//! PKCS#7 padding under the video's key, with the segment's media sequence number as IV (the playlist
//! names no IV, so players derive the same one). Init segments hold no media and stay clear, declared
//! before the key tag so that players read them as they are.

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockModeEncrypt, KeyIvInit};

/// Where encrypted copies live, below the video's media prefix.
pub const FOLDER: &str = "aes";

/// One segment encrypted as players expect for media sequence number `sequence`.
pub fn encrypt_segment(key: &[u8; 16], sequence: u64, clear: &[u8]) -> Vec<u8> {
    let iv = u128::from(sequence).to_be_bytes();
    cbc::Encryptor::<aes::Aes128>::new(key.into(), &iv.into()).encrypt_padded_vec::<Pkcs7>(clear)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::BlockModeDecrypt;

    #[test]
    fn segments_decrypt_with_their_sequence_number_as_iv() {
        let key = [7u8; 16];
        let clear: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let sealed = encrypt_segment(&key, 3, &clear);
        assert_eq!(sealed.len(), 1008, "padded to whole blocks");
        assert_ne!(sealed[..16], clear[..16]);
        let iv = u128::from(3u64).to_be_bytes();
        let opened = cbc::Decryptor::<aes::Aes128>::new(&key.into(), &iv.into())
            .decrypt_padded_vec::<Pkcs7>(&sealed)
            .expect("decrypts");
        assert_eq!(opened, clear);
        assert_ne!(encrypt_segment(&key, 4, &clear), sealed, "another segment, another IV");
        assert_eq!(
            encrypt_segment(&key, 3, &clear),
            sealed,
            "deterministic, so a rerun writes the same"
        );
    }
}
