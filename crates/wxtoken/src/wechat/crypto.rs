//! WeChat's message crypto (WXBizMsgCrypt), as third-party platforms receive their
//! pushes (component_verify_ticket, authorization events):
//!
//! - the key is `base64(EncodingAESKey + "=")`, 43 characters giving 32 bytes (WeChat's
//!   keys are random, so the last character may carry trailing bits: they are allowed);
//! - AES-256-CBC with the key's first 16 bytes as IV, PKCS#7 padding to 32-byte blocks;
//! - plaintext = 16 random bytes, the message length (4 bytes, big-endian), the message,
//!   the appid (checked);
//! - `msg_signature` = sha1 hex of token, timestamp, nonce and the ciphertext, sorted and
//!   concatenated, compared in constant time.
//!
//! The envelope and the event inside are flat XML read by quick-xml with a size bound;
//! a document type declaration (the door to entity expansion) is refused outright.
//! Checked against vectors made by wechatpy (tests/data/msg_crypto_vectors.json,
//! scripts/crypto-vectors.py).

use std::collections::BTreeMap;

use aes::Aes256;
use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use quick_xml::Reader;
use quick_xml::events::Event;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// No push WeChat sends is near this size; anything larger is refused unread.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// PKCS#7 padding in WeChat's scheme pads to 32 bytes, not AES's 16.
const PAD_BLOCK: usize = 32;

/// Base64 as WeChat's keys need it: standard alphabet, trailing bits allowed.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Why a message was refused; nothing of it may be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the EncodingAESKey must be 43 base64 characters")]
    BadKey,
    #[error("msg_signature does not match")]
    Signature,
    #[error("the ciphertext is not base64")]
    Base64,
    #[error("the ciphertext is not a whole number of AES blocks")]
    Length,
    #[error("the padding is not PKCS#7 to 32 bytes")]
    Padding,
    #[error("the plaintext is not WeChat's framing (random, length, message, appid)")]
    Framing,
    #[error("the message is for appid `{0}`, not this one")]
    AppId(String),
    #[error("the message is not UTF-8")]
    Utf8,
    #[error("the message is larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("not the XML WeChat sends: {0}")]
    Xml(String),
}

/// One component's message crypto: its token, key and appid.
#[derive(Clone)]
pub struct MsgCrypt {
    token: String,
    key: [u8; 32],
    appid: String,
}

impl std::fmt::Debug for MsgCrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgCrypt")
            .field("appid", &self.appid)
            .finish_non_exhaustive()
    }
}

impl MsgCrypt {
    pub fn new(token: &str, encoding_aes_key: &str, appid: &str) -> Result<Self, CryptoError> {
        if encoding_aes_key.len() != 43 {
            return Err(CryptoError::BadKey);
        }
        let key = LENIENT
            .decode(format!("{encoding_aes_key}="))
            .map_err(|_| CryptoError::BadKey)?;
        let key: [u8; 32] = key.try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(Self {
            token: token.to_owned(),
            key,
            appid: appid.to_owned(),
        })
    }

    /// sha1 hex of the sorted, concatenated token, timestamp, nonce and ciphertext.
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        let mut parts = [self.token.as_str(), timestamp, nonce, encrypt];
        parts.sort_unstable();
        hex::encode(Sha1::digest(parts.concat().as_bytes()))
    }

    /// Whether `msg_signature` signs this ciphertext (constant-time comparison).
    pub fn verify(&self, timestamp: &str, nonce: &str, encrypt: &str, msg_signature: &str) -> bool {
        let expected = self.signature(timestamp, nonce, encrypt);
        bool::from(
            expected
                .as_bytes()
                .ct_eq(msg_signature.to_ascii_lowercase().as_bytes()),
        )
    }

    /// The message inside `encrypt` (base64), after checking padding, framing and appid.
    pub fn decrypt(&self, encrypt: &str) -> Result<String, CryptoError> {
        if encrypt.len() > MAX_MESSAGE_BYTES * 2 {
            return Err(CryptoError::TooLarge);
        }
        let mut data = LENIENT.decode(encrypt).map_err(|_| CryptoError::Base64)?;
        if data.is_empty() || data.len() % 16 != 0 {
            return Err(CryptoError::Length);
        }
        let iv: [u8; 16] = self.key[..16].try_into().map_err(|_| CryptoError::BadKey)?;
        let plain = cbc::Decryptor::<Aes256>::new(&self.key.into(), &iv.into())
            .decrypt_padded_mut::<NoPadding>(&mut data)
            .map_err(|_| CryptoError::Length)?;
        let pad = usize::from(*plain.last().ok_or(CryptoError::Padding)?);
        if !(1..=PAD_BLOCK).contains(&pad)
            || pad > plain.len()
            || plain[plain.len() - pad..]
                .iter()
                .any(|b| usize::from(*b) != pad)
        {
            return Err(CryptoError::Padding);
        }
        let content = &plain[..plain.len() - pad];
        let framed = content.get(16..20).ok_or(CryptoError::Framing)?;
        let len = u32::from_be_bytes(framed.try_into().map_err(|_| CryptoError::Framing)?) as usize;
        if len > MAX_MESSAGE_BYTES {
            return Err(CryptoError::TooLarge);
        }
        let message = content.get(20..20 + len).ok_or(CryptoError::Framing)?;
        let appid = &content[20 + len..];
        if appid != self.appid.as_bytes() {
            return Err(CryptoError::AppId(
                String::from_utf8_lossy(appid).chars().take(64).collect(),
            ));
        }
        String::from_utf8(message.to_vec()).map_err(|_| CryptoError::Utf8)
    }

    /// `message` framed with `random` and this appid, padded and encrypted, as base64:
    /// what WeChat sends (the emulator and tests use it).
    pub fn encrypt(&self, message: &str, random: [u8; 16]) -> String {
        let mut plain = Vec::with_capacity(message.len() + self.appid.len() + 20 + PAD_BLOCK);
        plain.extend_from_slice(&random);
        plain.extend_from_slice(&(message.len() as u32).to_be_bytes());
        plain.extend_from_slice(message.as_bytes());
        plain.extend_from_slice(self.appid.as_bytes());
        let pad = PAD_BLOCK - plain.len() % PAD_BLOCK;
        plain.extend(std::iter::repeat_n(pad as u8, pad));
        let len = plain.len();
        let iv: [u8; 16] = self.key[..16]
            .try_into()
            .expect("a 32-byte key has 16 bytes of IV");
        let cipher = cbc::Encryptor::<Aes256>::new(&self.key.into(), &iv.into())
            .encrypt_padded_mut::<NoPadding>(&mut plain, len)
            .expect("the plaintext is padded to whole blocks");
        LENIENT.encode(cipher)
    }
}

/// A push as WeChat sends it, opened: the envelope's `Encrypt` checked against
/// `msg_signature`, decrypted (padding, framing, appid) and the event inside read into
/// its fields. The one path from untrusted bytes to an event; nothing is trusted before
/// it returns `Ok`. [`CryptoError::Signature`] means the sender is not WeChat (401);
/// every other error, a broken message (400).
pub fn open(
    crypt: &MsgCrypt,
    timestamp: &str,
    nonce: &str,
    msg_signature: &str,
    body: &[u8],
) -> Result<BTreeMap<String, String>, CryptoError> {
    let envelope = parse_fields(body)?;
    let encrypt = envelope
        .get("Encrypt")
        .filter(|e| !e.is_empty())
        .ok_or_else(|| CryptoError::Xml("no <Encrypt> element".into()))?;
    if !crypt.verify(timestamp, nonce, encrypt, msg_signature) {
        return Err(CryptoError::Signature);
    }
    let inner = crypt.decrypt(encrypt)?;
    parse_fields(inner.as_bytes())
}

/// The children of a flat `<xml>...</xml>` document by element name (text or CDATA),
/// e.g. `AppId` and `Encrypt` of a push, or `InfoType` and
/// `ComponentVerifyTicket` of the event inside. Refuses oversized input, a document type
/// declaration, and anything that is not well-formed.
pub fn parse_fields(xml: &[u8]) -> Result<BTreeMap<String, String>, CryptoError> {
    if xml.len() > MAX_MESSAGE_BYTES {
        return Err(CryptoError::TooLarge);
    }
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut fields = BTreeMap::new();
    let mut path: Vec<String> = Vec::new();
    let mut root_seen = false;
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| CryptoError::Xml(e.to_string()))?;
        match event {
            Event::DocType(_) => {
                return Err(CryptoError::Xml("a document type declaration".into()));
            }
            Event::Start(start) => {
                let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                if path.is_empty() {
                    if root_seen || name != "xml" {
                        return Err(CryptoError::Xml(format!("root element `{name}`")));
                    }
                    root_seen = true;
                }
                path.push(name);
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Empty(empty) if path.len() == 1 => {
                let name = String::from_utf8_lossy(empty.name().as_ref()).into_owned();
                fields.entry(name).or_insert_with(String::new);
            }
            Event::Text(text) if path.len() == 2 => {
                let text = text
                    .xml_content()
                    .map_err(|e| CryptoError::Xml(e.to_string()))?;
                fields
                    .entry(path[1].clone())
                    .or_insert_with(String::new)
                    .push_str(&text);
            }
            Event::CData(data) if path.len() == 2 => {
                let text = String::from_utf8(data.into_inner().into_owned())
                    .map_err(|_| CryptoError::Utf8)?;
                fields
                    .entry(path[1].clone())
                    .or_insert_with(String::new)
                    .push_str(&text);
            }
            Event::GeneralRef(_) => {
                return Err(CryptoError::Xml("an entity reference".into()));
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !root_seen || !path.is_empty() {
        return Err(CryptoError::Xml("not a whole <xml> document".into()));
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Vector {
        token: String,
        encoding_aes_key: String,
        appid: String,
        random: String,
        message: String,
        timestamp: String,
        nonce: String,
        encrypt: String,
        msg_signature: String,
    }

    fn vectors() -> Vec<Vector> {
        #[derive(serde::Deserialize)]
        struct File {
            vectors: Vec<Vector>,
        }
        let text = include_str!("../../tests/data/msg_crypto_vectors.json");
        serde_json::from_str::<File>(text)
            .expect("vectors parse")
            .vectors
    }

    #[test]
    fn wechatpys_vectors_decrypt_verify_and_encrypt_alike() {
        for v in vectors() {
            let crypt = MsgCrypt::new(&v.token, &v.encoding_aes_key, &v.appid).expect("key");
            assert!(crypt.verify(&v.timestamp, &v.nonce, &v.encrypt, &v.msg_signature));
            assert_eq!(
                crypt.signature(&v.timestamp, &v.nonce, &v.encrypt),
                v.msg_signature
            );
            assert_eq!(crypt.decrypt(&v.encrypt).expect("decrypt"), v.message);
            let random: [u8; 16] = v.random.as_bytes().try_into().expect("16 bytes");
            assert_eq!(
                crypt.encrypt(&v.message, random),
                v.encrypt,
                "{}",
                v.message
            );
        }
    }

    #[test]
    fn tampering_of_any_kind_is_refused() {
        let v = &vectors()[0];
        let crypt = MsgCrypt::new(&v.token, &v.encoding_aes_key, &v.appid).expect("key");
        let mut signature = v.msg_signature.clone();
        signature.replace_range(0..1, if &signature[..1] == "0" { "1" } else { "0" });
        assert!(!crypt.verify(&v.timestamp, &v.nonce, &v.encrypt, &signature));
        assert!(!crypt.verify(&v.timestamp, "other", &v.encrypt, &v.msg_signature));

        let other = MsgCrypt::new(&v.token, &v.encoding_aes_key, "wx_someone_else").expect("key");
        assert!(matches!(
            other.decrypt(&v.encrypt),
            Err(CryptoError::AppId(_))
        ));

        // Truncated by one block, or not a whole block at all.
        let bytes = LENIENT.decode(&v.encrypt).expect("b64");
        let short = LENIENT.encode(&bytes[..bytes.len() - 16]);
        assert!(crypt.decrypt(&short).is_err());
        let ragged = LENIENT.encode(&bytes[..bytes.len() - 3]);
        assert_eq!(crypt.decrypt(&ragged), Err(CryptoError::Length));
        assert_eq!(crypt.decrypt("not base64 !"), Err(CryptoError::Base64));
        assert_eq!(crypt.decrypt(""), Err(CryptoError::Length));

        // A last block decrypting to bad padding: flip a bit of the IV-side block.
        let mut flipped = bytes.clone();
        let n = flipped.len();
        flipped[n - 17] ^= 0x01;
        assert_eq!(
            crypt.decrypt(&LENIENT.encode(&flipped)),
            Err(CryptoError::Padding)
        );

        let wrong_key = MsgCrypt::new(
            &v.token,
            "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
            &v.appid,
        )
        .expect("key");
        assert!(wrong_key.decrypt(&v.encrypt).is_err());
        assert!(MsgCrypt::new("t", "short", "wx").is_err());
        assert!(MsgCrypt::new("t", &"!".repeat(43), "wx").is_err());
    }

    #[test]
    fn flat_xml_is_read_and_anything_else_refused() {
        let push = b"<xml>\n<AppId><![CDATA[wx3a]]></AppId>\n<Encrypt><![CDATA[abc+/=]]></Encrypt>\n<Empty/></xml>";
        let fields = parse_fields(push).expect("push");
        assert_eq!(fields["AppId"], "wx3a");
        assert_eq!(fields["Encrypt"], "abc+/=");
        assert_eq!(fields["Empty"], "");
        let plain = parse_fields(b"<xml><CreateTime>1413192605</CreateTime></xml>").expect("text");
        assert_eq!(plain["CreateTime"], "1413192605");

        let bomb = br#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa">]><xml><Encrypt>&a;</Encrypt></xml>"#;
        assert!(parse_fields(bomb).is_err(), "a DOCTYPE is refused");
        assert!(parse_fields(b"<xml><A>&custom;</A></xml>").is_err());
        assert!(parse_fields(b"<html><A>1</A></html>").is_err());
        assert!(parse_fields(b"<xml><A>1</A>").is_err(), "unclosed");
        assert!(parse_fields(b"not xml at all").is_err());
        assert!(parse_fields(b"").is_err());
        let big = format!("<xml><A>{}</A></xml>", "x".repeat(MAX_MESSAGE_BYTES));
        assert_eq!(parse_fields(big.as_bytes()), Err(CryptoError::TooLarge));
    }

    #[test]
    fn a_push_round_trips_through_envelope_and_event() {
        let v = &vectors()[0];
        let crypt = MsgCrypt::new(&v.token, &v.encoding_aes_key, &v.appid).expect("key");
        let envelope = format!(
            "<xml><AppId><![CDATA[{}]]></AppId><Encrypt><![CDATA[{}]]></Encrypt></xml>",
            v.appid, v.encrypt
        );
        let outer = parse_fields(envelope.as_bytes()).expect("envelope");
        let inner = crypt.decrypt(&outer["Encrypt"]).expect("decrypt");
        let event = parse_fields(inner.as_bytes()).expect("event");
        assert_eq!(event["InfoType"], "component_verify_ticket");
        assert_eq!(event["ComponentVerifyTicket"], "ticket@@@abc");
    }
}
