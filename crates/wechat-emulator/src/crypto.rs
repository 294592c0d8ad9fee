//! The emulator's own WXBizMsgCrypt: how WeChat encrypts and signs what it pushes to a
//! third-party platform's callback URL (verify tickets, authorization events).
//!
//! Written independently of wxtoken's implementation, so that the two checking each
//! other means something. The scheme, from WeChat's docs and wechatpy:
//!
//! - key = base64 of `EncodingAESKey + "="` (43 characters give 32 bytes), IV = the
//!   key's first 16 bytes, AES-256-CBC;
//! - plaintext = 16 random bytes, the message length as a big-endian u32, the
//!   message, the appid; PKCS#7-padded to a multiple of **32** bytes (pad 1..=32);
//! - `Encrypt` = base64 of the ciphertext;
//! - `msg_signature` = sha1 hex of token, timestamp, nonce and `Encrypt`, sorted as
//!   strings and concatenated.
//!
//! Owns [`MsgCrypt`] (seal and open) and [`xml_field`], the small reader tests use to
//! take a push apart.

use std::fmt;

use aes::Aes256;
use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use sha1::{Digest, Sha1};

/// WXBizMsgCrypt pads to 32-byte blocks, twice AES's block size.
const PAD_BLOCK: usize = 32;
/// The random prefix of every plaintext.
const RANDOM_LEN: usize = 16;
/// AES's own block size: the ciphertext is a whole number of these.
const AES_BLOCK: usize = 16;

/// Standard base64 that, decoding, tolerates non-zero trailing bits: the 43rd character
/// of an EncodingAESKey carries 2 bits nobody checks.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

type Encryptor = cbc::Encryptor<Aes256>;
type Decryptor = cbc::Decryptor<Aes256>;

/// One platform's message crypto: its push token, AES key and appid.
#[derive(Clone)]
pub struct MsgCrypt {
    token: String,
    key: [u8; 32],
    appid: String,
}

// The token and key sign and encrypt pushes: they never reach a log.
impl fmt::Debug for MsgCrypt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MsgCrypt")
            .field("appid", &self.appid)
            .field("token", &"<redacted>")
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A message sealed for a push: what goes into the query string and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Unix seconds, as sent in `timestamp`.
    pub timestamp: String,
    /// The `nonce` query parameter.
    pub nonce: String,
    /// The base64 ciphertext, the envelope's `Encrypt`.
    pub encrypt: String,
    /// The `msg_signature` query parameter.
    pub msg_signature: String,
    /// The plain `signature` query parameter WeChat adds too: sha1 of token,
    /// timestamp and nonce only.
    pub signature: String,
}

impl MsgCrypt {
    /// The crypto of the platform `appid` with push `token` and `encoding_aes_key` (the
    /// 43 characters shown in the console). Fails if the key does not decode to 32
    /// bytes.
    pub fn new(token: &str, encoding_aes_key: &str, appid: &str) -> Result<Self, String> {
        let decoded = BASE64
            .decode(format!("{encoding_aes_key}="))
            .map_err(|e| format!("the EncodingAESKey is not base64: {e}"))?;
        let key: [u8; 32] = decoded.try_into().map_err(|bytes: Vec<u8>| {
            format!(
                "the EncodingAESKey must decode to 32 bytes (43 characters), got {}",
                bytes.len()
            )
        })?;
        Ok(Self {
            token: token.to_owned(),
            key,
            appid: appid.to_owned(),
        })
    }

    /// `message` encrypted with a fresh random prefix, as base64.
    pub fn encrypt(&self, message: &str) -> String {
        self.encrypt_with_random(&rand::random::<[u8; RANDOM_LEN]>(), message)
    }

    /// `message` encrypted with the given random prefix: deterministic, for checking
    /// against known vectors.
    pub fn encrypt_with_random(&self, random: &[u8; RANDOM_LEN], message: &str) -> String {
        let body_len = RANDOM_LEN + 4 + message.len() + self.appid.len();
        // Always 1..=32 bytes of padding, each holding the pad length.
        let pad = PAD_BLOCK - body_len % PAD_BLOCK;
        let mut plain = Vec::with_capacity(body_len + pad);
        plain.extend_from_slice(random);
        // Pushes are a few hundred bytes; anything beyond 4 GiB cannot be framed.
        let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
        plain.extend_from_slice(&len.to_be_bytes());
        plain.extend_from_slice(message.as_bytes());
        plain.extend_from_slice(self.appid.as_bytes());
        // pad <= 32, so the cast cannot truncate.
        plain.resize(body_len + pad, pad as u8);
        let total = plain.len();
        let cipher = Encryptor::new(&self.key.into(), &self.iv().into());
        match cipher.encrypt_padded_mut::<NoPadding>(&mut plain, total) {
            Ok(sealed) => BASE64.encode(sealed),
            // Unreachable: the buffer is a whole number of 32-byte blocks.
            Err(_) => String::new(),
        }
    }

    /// The plaintext message inside `encrypt`, after checking its padding, framing and
    /// that it was sealed for this appid.
    pub fn decrypt(&self, encrypt: &str) -> Result<String, String> {
        let mut data = BASE64
            .decode(encrypt.trim())
            .map_err(|e| format!("Encrypt is not base64: {e}"))?;
        if data.is_empty() || data.len() % AES_BLOCK != 0 {
            return Err(format!(
                "the ciphertext ({} bytes) is not whole AES blocks",
                data.len()
            ));
        }
        let cipher = Decryptor::new(&self.key.into(), &self.iv().into());
        let plain = cipher
            .decrypt_padded_mut::<NoPadding>(&mut data)
            .map_err(|_| "the ciphertext does not decrypt".to_owned())?;
        let pad = usize::from(*plain.last().unwrap_or(&0));
        if !(1..=PAD_BLOCK).contains(&pad)
            || pad > plain.len()
            || plain[plain.len() - pad..]
                .iter()
                .any(|&b| usize::from(b) != pad)
        {
            return Err("bad PKCS#7 padding".to_owned());
        }
        let body = &plain[..plain.len() - pad];
        let Some(framed) = body.get(RANDOM_LEN..) else {
            return Err("the plaintext is shorter than its random prefix".to_owned());
        };
        let (len, rest) = framed
            .split_first_chunk::<4>()
            .ok_or_else(|| "the plaintext has no length field".to_owned())?;
        let len = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
        if len > rest.len() {
            return Err("the length field runs past the plaintext".to_owned());
        }
        let (message, appid) = rest.split_at(len);
        if appid != self.appid.as_bytes() {
            return Err(format!(
                "sealed for appid {:?}, not {:?}",
                String::from_utf8_lossy(appid),
                self.appid
            ));
        }
        String::from_utf8(message.to_vec()).map_err(|_| "the message is not UTF-8".to_owned())
    }

    /// `msg_signature`: sha1 hex of token, timestamp, nonce and the ciphertext, sorted
    /// and concatenated.
    pub fn msg_signature(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        sorted_sha1(&[&self.token, timestamp, nonce, encrypt])
    }

    /// `signature`: the same over token, timestamp and nonce only (what a plain-text
    /// callback would be checked with).
    pub fn signature(&self, timestamp: &str, nonce: &str) -> String {
        sorted_sha1(&[&self.token, timestamp, nonce])
    }

    /// `message` encrypted and signed for a push at `timestamp` with `nonce`.
    pub fn seal(&self, message: &str, timestamp: &str, nonce: &str) -> Sealed {
        let encrypt = self.encrypt(message);
        Sealed {
            timestamp: timestamp.to_owned(),
            nonce: nonce.to_owned(),
            msg_signature: self.msg_signature(timestamp, nonce, &encrypt),
            signature: self.signature(timestamp, nonce),
            encrypt,
        }
    }

    /// The message inside a push's XML `body`, after checking `msg_signature` against
    /// the envelope's `Encrypt`: what a platform's callback does first.
    pub fn open(
        &self,
        timestamp: &str,
        nonce: &str,
        msg_signature: &str,
        body: &str,
    ) -> Result<String, String> {
        let encrypt = xml_field(body, "Encrypt").ok_or("the push has no <Encrypt>")?;
        if !self
            .msg_signature(timestamp, nonce, encrypt)
            .eq_ignore_ascii_case(msg_signature)
        {
            return Err("msg_signature does not match".to_owned());
        }
        self.decrypt(encrypt)
    }

    /// The platform's appid, appended to every plaintext.
    pub fn appid(&self) -> &str {
        &self.appid
    }

    fn iv(&self) -> [u8; AES_BLOCK] {
        let mut iv = [0; AES_BLOCK];
        iv.copy_from_slice(&self.key[..AES_BLOCK]);
        iv
    }
}

/// sha1 hex of `parts` sorted (bytewise) and concatenated.
fn sorted_sha1(parts: &[&str]) -> String {
    let mut parts = parts.to_vec();
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for part in parts {
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The text of the first `<name>` element of a flat WeChat XML message, CDATA or
/// plain; `None` if there is none. Enough for the emulator's own messages and tests,
/// not a general XML parser (no entities, no nesting).
pub fn xml_field<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    let inner = &xml[start..end];
    Some(
        inner
            .strip_prefix("<![CDATA[")
            .and_then(|rest| rest.strip_suffix("]]>"))
            .unwrap_or(inner),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors wxtoken's crypto is checked against too (made with wechatpy).
    const VECTORS: &str = include_str!("../tests/data/msg_crypto_vectors.json");

    fn vectors() -> Vec<serde_json::Value> {
        let file: serde_json::Value = serde_json::from_str(VECTORS).expect("vectors parse");
        file["vectors"].as_array().expect("a vectors array").clone()
    }

    fn field<'a>(v: &'a serde_json::Value, name: &str) -> &'a str {
        v[name].as_str().expect(name)
    }

    #[test]
    fn matches_wechatpy_vectors() {
        let vectors = vectors();
        assert!(vectors.len() >= 3, "{} vectors", vectors.len());
        for v in &vectors {
            let crypt = MsgCrypt::new(
                field(v, "token"),
                field(v, "encoding_aes_key"),
                field(v, "appid"),
            )
            .expect("key");
            let random: [u8; 16] = field(v, "random")
                .as_bytes()
                .try_into()
                .expect("16 random bytes");
            let encrypt = crypt.encrypt_with_random(&random, field(v, "message"));
            assert_eq!(encrypt, field(v, "encrypt"), "encrypt of {v}");
            assert_eq!(
                crypt.msg_signature(field(v, "timestamp"), field(v, "nonce"), &encrypt),
                field(v, "msg_signature"),
                "msg_signature of {v}"
            );
            assert_eq!(
                crypt.decrypt(field(v, "encrypt")).expect("decrypts"),
                field(v, "message")
            );
        }
    }

    #[test]
    fn seal_then_open_round_trips_and_checks_everything() {
        let crypt = MsgCrypt::new(
            "tok",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
            "wxcomponent",
        )
        .expect("key");
        for message in ["", "x", &"y".repeat(31), &"z".repeat(32), "<xml>中文</xml>"] {
            let sealed = crypt.seal(message, "1700000000", "42");
            let body = format!(
                "<xml><AppId><![CDATA[wxcomponent]]></AppId><Encrypt><![CDATA[{}]]></Encrypt></xml>",
                sealed.encrypt
            );
            let opened = crypt
                .open("1700000000", "42", &sealed.msg_signature, &body)
                .expect("opens");
            assert_eq!(opened, message);
            // A fresh random prefix every time.
            assert_ne!(
                crypt.seal(message, "1700000000", "42").encrypt,
                sealed.encrypt
            );
            assert!(
                crypt
                    .open("1700000000", "43", &sealed.msg_signature, &body)
                    .is_err()
            );
        }
        let other = MsgCrypt::new(
            "tok",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
            "wxother",
        )
        .expect("key");
        let err = other
            .decrypt(&crypt.encrypt("hello"))
            .expect_err("wrong appid");
        assert!(err.contains("wxcomponent"), "{err}");
    }

    #[test]
    fn bad_keys_are_refused_and_secrets_stay_out_of_debug() {
        assert!(MsgCrypt::new("t", "short", "wx").is_err());
        assert!(MsgCrypt::new("t", "!!!", "wx").is_err());
        let crypt = MsgCrypt::new(
            "the-token",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
            "wx",
        )
        .expect("key");
        let debug = format!("{crypt:?}");
        assert!(!debug.contains("the-token"), "{debug}");
    }

    #[test]
    fn xml_field_reads_cdata_and_plain_text() {
        let xml = "<xml><A><![CDATA[one]]></A><B>2</B><C></C></xml>";
        assert_eq!(xml_field(xml, "A"), Some("one"));
        assert_eq!(xml_field(xml, "B"), Some("2"));
        assert_eq!(xml_field(xml, "C"), Some(""));
        assert_eq!(xml_field(xml, "D"), None);
    }
}
