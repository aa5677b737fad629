//! Sealing with XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`): a random 24-byte nonce per
//! value (large enough that random nonces never repeat in practice) and the setting's name as
//! associated data, so a sealed value opens only as the setting it was sealed for.

use std::sync::Arc;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretBox, SecretString};

use super::SettingsError;

/// Length of a nonce (XChaCha20-Poly1305: 192 bits).
pub const NONCE_LEN: usize = 24;

/// The 32-byte key every stored setting is sealed under (`KASSA_MASTER_KEY`). `Debug` never
/// shows it.
#[derive(Clone)]
pub struct MasterKey(Arc<SecretBox<[u8; 32]>>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

impl MasterKey {
    /// Reads a key written as 64 hex digits or as base64 of 32 bytes (surrounding whitespace,
    /// such as a file's last newline, is ignored).
    pub fn parse(text: &SecretString) -> Result<MasterKey, SettingsError> {
        let text = text.expose_secret().trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Zeroizing::new(hex::decode(text).map_err(|_| SettingsError::BadMasterKey)?)
        } else {
            Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| SettingsError::BadMasterKey)?,
            )
        };
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SettingsError::BadMasterKey)?;
        Ok(MasterKey(Arc::new(SecretBox::new(Box::new(key)))))
    }

    /// A fresh random key, written in base64 (what `kassa settings new-master-key` prints).
    pub fn generate() -> SecretString {
        let key = Zeroizing::new(rand::random::<[u8; 32]>());
        SecretString::from(base64::engine::general_purpose::STANDARD.encode(key.as_slice()))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(self.0.expose_secret()))
    }
}

/// A sealed value: ciphertext with its tag, and the nonce it was sealed with.
pub struct Sealed {
    /// Ciphertext followed by the 16-byte Poly1305 tag.
    pub ciphertext: Vec<u8>,
    /// The value's own random nonce.
    pub nonce: [u8; NONCE_LEN],
}

/// Seals `value` as the setting `name` under `key`, with a fresh random nonce.
pub fn seal(key: &MasterKey, name: &str, value: &SecretString) -> Sealed {
    let nonce: [u8; NONCE_LEN] = rand::random();
    let ciphertext = key
        .cipher()
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: value.expose_secret().as_bytes(),
                aad: name.as_bytes(),
            },
        )
        // Encryption fails only for messages of more than 256 GiB.
        .unwrap_or_default();
    Sealed { ciphertext, nonce }
}

/// Opens the value sealed as the setting `name`: fails, naming the setting, under another key,
/// with another name, or after any change to the ciphertext or nonce.
pub fn open(
    key: &MasterKey,
    name: &str,
    ciphertext: &[u8],
    nonce: &[u8],
) -> Result<SecretString, SettingsError> {
    let cannot_open = || SettingsError::CannotOpen {
        name: name.to_owned(),
    };
    if nonce.len() != NONCE_LEN {
        return Err(cannot_open());
    }
    let plain = key
        .cipher()
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: name.as_bytes(),
            },
        )
        .map_err(|_| cannot_open())?;
    let text = String::from_utf8(plain).map_err(|_| cannot_open())?;
    Ok(SecretString::from(text))
}

/// A value as listings show it: its kind prefix (`sk_live_`, `whsec_`, `smtps://`) and its last
/// four characters when it is long enough that they give nothing away (`sk_live_…4f2a`).
pub fn mask(value: &str) -> String {
    const PREFIXES: [&str; 10] = [
        "sk_test_", "sk_live_", "rk_test_", "rk_live_", "pk_test_", "pk_live_", "whsec_",
        "smtps://", "smtp://", "",
    ];
    let prefix = PREFIXES
        .iter()
        .find(|p| value.starts_with(*p))
        .copied()
        .unwrap_or_default();
    let rest: Vec<char> = value[prefix.len()..].chars().collect();
    if rest.len() >= 12 {
        let last: String = rest[rest.len() - 4..].iter().collect();
        format!("{prefix}…{last}")
    } else {
        format!("{prefix}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::parse(&SecretString::from(hex::encode([byte; 32]))).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_under_its_key_and_name_only() {
        let value = SecretString::from("sk_live_51Hsecretvalue4f2a".to_owned());
        let sealed = seal(&key(1), "KASSA_STRIPE_API_KEY", &value);
        assert!(!sealed.ciphertext.windows(8).any(|w| w == b"sk_live_"));
        let opened = open(
            &key(1),
            "KASSA_STRIPE_API_KEY",
            &sealed.ciphertext,
            &sealed.nonce,
        )
        .unwrap();
        assert_eq!(opened.expose_secret(), value.expose_secret());
        let moved = open(
            &key(1),
            "KASSA_ADMIN_TOKEN",
            &sealed.ciphertext,
            &sealed.nonce,
        );
        assert!(
            matches!(moved, Err(SettingsError::CannotOpen { ref name }) if name == "KASSA_ADMIN_TOKEN")
        );
        let wrong_key = open(
            &key(2),
            "KASSA_STRIPE_API_KEY",
            &sealed.ciphertext,
            &sealed.nonce,
        );
        assert!(matches!(wrong_key, Err(SettingsError::CannotOpen { .. })));
    }

    #[test]
    fn every_value_gets_its_own_nonce() {
        let value = SecretString::from("whsec_same".to_owned());
        let a = seal(&key(1), "KASSA_STRIPE_WEBHOOK_SECRETS", &value);
        let b = seal(&key(1), "KASSA_STRIPE_WEBHOOK_SECRETS", &value);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn master_keys_are_read_in_hex_or_base64_of_32_bytes() {
        let hex_key = hex::encode([7u8; 32]);
        assert!(MasterKey::parse(&SecretString::from(format!("{hex_key}\n"))).is_ok());
        let generated = MasterKey::generate();
        assert!(MasterKey::parse(&generated).is_ok());
        assert!(matches!(
            MasterKey::parse(&SecretString::from("c2hvcnQ=".to_owned())),
            Err(SettingsError::BadMasterKey)
        ));
        assert!(MasterKey::parse(&SecretString::from("not a key".to_owned())).is_err());
    }

    #[test]
    fn masks_keep_the_kind_and_the_last_four_characters() {
        assert_eq!(mask("sk_live_51Habcdefghij4f2a"), "sk_live_…4f2a");
        assert_eq!(mask("whsec_short"), "whsec_…");
        assert_eq!(mask("SECRETadmintoken1234"), "…1234");
    }
}
