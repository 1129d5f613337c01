//! Spring's symmetric `{cipher}` scheme (`Encryptors.text(key, salt)`): AES-256-CBC with
//! PKCS#5 padding, the key derived by PBKDF2-HMAC-SHA1 (salt hex-decoded, 1024 rounds, 256
//! bits), output hex(16-byte random IV ‖ ciphertext). Values encrypted by Spring's tools
//! (`/encrypt`, the Spring CLI) open here and the other way round.

use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};

type Enc = cbc::Encryptor<aes::Aes256>;
type Dec = cbc::Decryptor<aes::Aes256>;

/// The prefix marking an encrypted value in a configuration file.
pub const PREFIX: &str = "{cipher}";

#[derive(Debug)]
pub enum Error {
    /// Not hex, too short, or not made with this key.
    Invalid,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the text was not encrypted with this key")
    }
}

impl std::error::Error for Error {}

/// A symmetric key, derived once.
#[derive(Clone)]
pub struct Cipher {
    key: [u8; 32],
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(..)")
    }
}

impl Cipher {
    /// `salt` is hex, as Spring's `encrypt.salt` (default `deadbeef`).
    pub fn new(password: &str, salt_hex: &str) -> Result<Self, String> {
        let salt =
            hex::decode(salt_hex).map_err(|_| format!("encrypt salt `{salt_hex}` is not hex"))?;
        let mut key = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password.as_bytes(), &salt, 1024, &mut key);
        Ok(Self { key })
    }

    pub fn encrypt(&self, plain: &str) -> String {
        let mut iv = [0u8; 16];
        // The system's randomness failing is not something to serve through.
        getrandom::getrandom(&mut iv).expect("the system's random source works");
        let body =
            Enc::new(&self.key.into(), &iv.into()).encrypt_padded_vec::<Pkcs7>(plain.as_bytes());
        let mut out = Vec::with_capacity(16 + body.len());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&body);
        hex::encode(out)
    }

    pub fn decrypt(&self, text: &str) -> Result<String, Error> {
        let raw = hex::decode(text.trim()).map_err(|_| Error::Invalid)?;
        if raw.len() < 32 || raw.len() % 16 != 0 {
            return Err(Error::Invalid);
        }
        let (iv, body) = raw.split_at(16);
        let iv: [u8; 16] = iv.try_into().map_err(|_| Error::Invalid)?;
        let plain = Dec::new(&self.key.into(), &iv.into())
            .decrypt_padded_vec::<Pkcs7>(body)
            .map_err(|_| Error::Invalid)?;
        String::from_utf8(plain).map_err(|_| Error::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by the JDK's own JCE (PBKDF2WithHmacSHA1 + AES/CBC/PKCS5Padding, as Spring
    /// Security's `AesBytesEncryptor` calls them), key `s3cret`, salt `deadbeef`: an
    /// implementation that shares no code with this one.
    const FROM_JAVA: &str = include_str!("../tests/data/java-cipher.txt");

    #[test]
    fn a_value_encrypted_by_java_opens() {
        let cipher = Cipher::new("s3cret", "deadbeef").unwrap();
        let (hex, plain) = FROM_JAVA.trim().split_once(' ').unwrap();
        assert_eq!(cipher.decrypt(hex).unwrap(), plain);
    }

    #[test]
    fn round_trip_random_iv_and_wrong_key() {
        let cipher = Cipher::new("s3cret", "deadbeef").unwrap();
        let a = cipher.encrypt("密码 p@ss");
        let b = cipher.encrypt("密码 p@ss");
        assert_ne!(a, b, "a fresh IV each time");
        assert_eq!(cipher.decrypt(&a).unwrap(), "密码 p@ss");
        let other = Cipher::new("other", "deadbeef").unwrap();
        assert!(other.decrypt(&a).is_err());
        assert!(cipher.decrypt("zz").is_err());
        assert!(cipher.decrypt(&a[..40]).is_err());
        assert!(Cipher::new("k", "nothex").is_err());
    }
}
