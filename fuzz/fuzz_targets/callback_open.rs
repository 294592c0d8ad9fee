//! Fuzzes the third-party-platform callback decode path, `wxtoken::wechat::crypto::open`:
//! untrusted query values and body in, an event's fields (or a refusal) out.
//!
//! One target, four modes; the first input byte picks the mode (`b % 4`, so the ASCII
//! digits `0`..`3` name them in the seeds) and the second picks one of the fixed
//! `MsgCrypt`s below (`(b - b'0') % N`, so `0`..`5` in the seeds):
//!
//! - `0` raw: `timestamp \n nonce \n msg_signature \n body`, all fuzz bytes. `open` must
//!   never panic, and must agree with its parts: the envelope's error if the envelope
//!   fails, `Signature` if the signature is wrong (before any decryption), else the
//!   decrypted message's fields.
//! - `1` round trip: `inject(1) random(16) message...`. The message (lossy UTF-8, plus
//!   spaces if `inject` >= 0x80, see `filler`) is encrypted with `MsgCrypt::encrypt`,
//!   wrapped in an envelope and signed with `MsgCrypt::signature`, so the fuzzer is past
//!   the signature check; `open` must give exactly what `parse_fields(message)` gives.
//!   `inject % 4` 1 or 2 puts a DOCTYPE in front of the message (must be refused), 3 puts
//!   one after its first `>`.
//! - `2` plaintext: `flags(1) plaintext...` (plus spaces if `flags` >= 0x80), encrypted
//!   with AES-256-CBC directly (the harness knows the keys), so the padding, length
//!   field, appid and UTF-8 checks all see fuzz bytes; `open` must agree with a model of
//!   WeChat's framing written out below. flags bit 0: append this crypt's appid; bit 1:
//!   write the right length field; bit 2: append right PKCS#7-to-32 padding (else
//!   zero-fill to whole AES blocks).
//! - `3` signature: `timestamp \n nonce \n signature \n encrypt`: a fuzz `Encrypt` (often
//!   not base64, not whole blocks) in an envelope; a wrong signature must give exactly
//!   `Err(Signature)`, the right one (any ASCII case) never `Signature`.
//!
//! Invariants everywhere: no panic; a body over `MAX_MESSAGE_BYTES` is never `Ok`; an
//! envelope or inner message with a document type declaration (where the XML reader sees
//! markup, i.e. not inside CDATA, a comment, a PI or a quoted attribute value) is never
//! `Ok`. A `<!DOCTYPE` *inside* a CDATA section is just text and may be accepted.

#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use aes::Aes256;
use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockEncryptMut, KeyIvInit};
use libfuzzer_sys::fuzz_target;
use wxtoken::wechat::crypto::{self, CryptoError, MAX_MESSAGE_BYTES, MsgCrypt};

type Opened = Result<BTreeMap<String, String>, CryptoError>;

/// Base64 as WeChat's keys need it (trailing bits allowed), as crypto.rs reads them.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// (token, EncodingAESKey, appid): the crypts of crates/wxtoken/tests/data/
/// msg_crypto_vectors.json, in its order (so the seeds made from vector N use crypt N),
/// and one with an empty token and appid.
const CRYPTS: [(&str, &str, &str); 6] = [
    (
        "wxtoken-token",
        "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        "wx3a2b1c0d9e8f7a6b",
    ),
    (
        "t",
        "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR",
        "wxcomponent0000001",
    ),
    (
        "token2",
        "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
        "wx1234567890abcdef",
    ),
    (
        "令牌",
        "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        "wx3a2b1c0d9e8f7a6b",
    ),
    (
        "t",
        "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        "wx3a2b1c0d9e8f7a6b",
    ),
    ("", "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR", ""),
];

struct Fixture {
    crypt: MsgCrypt,
    key: [u8; 32],
    appid: &'static str,
}

static FIXTURES: LazyLock<Vec<Fixture>> = LazyLock::new(|| {
    CRYPTS
        .iter()
        .map(|&(token, key, appid)| Fixture {
            crypt: MsgCrypt::new(token, key, appid).expect("the fixed keys are valid"),
            key: LENIENT
                .decode(format!("{key}="))
                .expect("base64 key")
                .try_into()
                .expect("32-byte key"),
            appid,
        })
        .collect()
});

/// `WXTOKEN_FUZZ_DEBUG=1` prints each input's mode and `open`'s result (for checking
/// seeds and reproducing artifacts: `target/.../callback_open ARTIFACT`).
static DEBUG: LazyLock<bool> = LazyLock::new(|| std::env::var_os("WXTOKEN_FUZZ_DEBUG").is_some());

fn debug(mode: &str, result: &Opened) {
    if *DEBUG {
        eprintln!("{mode}: {result:?}");
    }
}

fn fixture(selector: u8) -> &'static Fixture {
    &FIXTURES[usize::from(selector.wrapping_sub(b'0')) % FIXTURES.len()]
}

fuzz_target!(|data: &[u8]| {
    let (mode, selector, rest) = match data {
        [mode, selector, rest @ ..] => (*mode, *selector, rest),
        _ => return,
    };
    let fx = fixture(selector);
    match mode % 4 {
        0 => raw(fx, rest),
        1 => round_trip(fx, rest),
        2 => plaintext(fx, rest),
        _ => wrong_signature(fx, rest),
    }
});

/// Mode 0: everything from the fuzzer, signature almost always wrong.
fn raw(fx: &Fixture, data: &[u8]) {
    let (timestamp, data) = line(data);
    let (nonce, data) = line(data);
    let (signature, body) = line(data);
    let result = crypto::open(&fx.crypt, &timestamp, &nonce, &signature, body);
    debug("raw", &result);
    check_envelope(body, &result);
    assert_eq!(
        result,
        by_parts(fx, &timestamp, &nonce, &signature, body),
        "open disagrees with parse_fields/verify/decrypt/parse_fields"
    );
}

/// Mode 1: a fuzz message, properly encrypted and signed; open == parse_fields(message).
fn round_trip(fx: &Fixture, data: &[u8]) {
    let Some((&inject, data)) = data.split_first() else {
        return;
    };
    let mut random = [0u8; 16];
    let n = data.len().min(16);
    random[..n].copy_from_slice(&data[..n]);
    let mut message = String::from_utf8_lossy(&data[n..]).into_owned();
    message.push_str(&" ".repeat(filler(inject)));
    match inject % 4 {
        1 => message.insert_str(0, r#"<!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa">]>"#),
        2 => message.insert_str(0, r#"<?xml version="1.0"?><!doctype xml>"#),
        3 => {
            if let Some(at) = message.find('>') {
                message.insert_str(at + 1, "<!DOCTYPE xml>");
            }
        }
        _ => {}
    }

    let (timestamp, nonce) = ("1700000000", "nonce");
    let encrypt = fx.crypt.encrypt(&message, random);
    let body = envelope(fx.appid, &encrypt);
    let signature = fx.crypt.signature(timestamp, nonce, &encrypt);
    let result = crypto::open(&fx.crypt, timestamp, nonce, &signature, body.as_bytes());
    debug("round trip", &result);
    check_envelope(body.as_bytes(), &result);
    check_inner(message.as_bytes(), &result);
    if matches!(inject % 4, 1 | 2) {
        assert!(result.is_err(), "a DOCTYPE before the root was accepted");
    }

    if body.len() > MAX_MESSAGE_BYTES {
        assert_eq!(result, Err(CryptoError::TooLarge));
        return;
    }
    assert_eq!(
        fx.crypt.decrypt(&encrypt).as_deref(),
        Ok(message.as_str()),
        "decrypt(encrypt(m)) != m"
    );
    // The round trip: the fields `open` gives are exactly those of the message itself
    // (and a message parse_fields refuses is refused by `open` the same way).
    assert_eq!(result, crypto::parse_fields(message.as_bytes()));

    let wrong = flip_first_hex(&signature);
    assert_eq!(
        crypto::open(&fx.crypt, timestamp, nonce, &wrong, body.as_bytes()),
        Err(CryptoError::Signature)
    );
}

/// Mode 2: fuzz plaintext under real AES, so every decrypt check sees fuzz bytes.
fn plaintext(fx: &Fixture, data: &[u8]) {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let appid = fx.appid.as_bytes();
    let mut plain = data.to_vec();
    plain.resize(plain.len() + filler(flags), b' ');
    if flags & 1 != 0 {
        plain.extend_from_slice(appid);
    }
    if flags & 2 != 0 && plain.len() >= 20 {
        let len = plain.len().saturating_sub(20 + appid.len()) as u32;
        plain[16..20].copy_from_slice(&len.to_be_bytes());
    }
    if flags & 4 != 0 {
        let pad = 32 - plain.len() % 32;
        plain.extend(std::iter::repeat_n(pad as u8, pad));
    } else {
        plain.resize(plain.len().div_ceil(16) * 16, 0);
    }

    let encrypt = aes_cbc(&fx.key, &plain);
    let body = envelope(fx.appid, &encrypt);
    let (timestamp, nonce) = ("1700000002", "n");
    let signature = fx.crypt.signature(timestamp, nonce, &encrypt);
    let result = crypto::open(&fx.crypt, timestamp, nonce, &signature, body.as_bytes());
    debug("plaintext", &result);
    check_envelope(body.as_bytes(), &result);

    let expected = if body.len() > MAX_MESSAGE_BYTES {
        Err(CryptoError::TooLarge)
    } else if plain.is_empty() {
        Err(CryptoError::Xml("no <Encrypt> element".into()))
    } else {
        model_decrypt(&plain, appid).and_then(|m| {
            check_inner(m.as_bytes(), &result);
            crypto::parse_fields(m.as_bytes())
        })
    };
    assert_eq!(result, expected, "open disagrees with the framing model");
}

/// Mode 3: a fuzz `Encrypt`; a wrong signature is refused as such before decryption.
fn wrong_signature(fx: &Fixture, data: &[u8]) {
    let (timestamp, data) = line(data);
    let (nonce, data) = line(data);
    let (given, data) = line(data);
    let encrypt = String::from_utf8_lossy(data);
    let body = envelope(fx.appid, &encrypt);
    let body = body.as_bytes();
    let Ok(fields) = crypto::parse_fields(body) else {
        return; // `]]>` or the like in the fuzz Encrypt: mode 0 covers broken envelopes
    };
    let Some(encrypt) = fields.get("Encrypt").filter(|e| !e.is_empty()) else {
        return;
    };
    let right = fx.crypt.signature(&timestamp, &nonce, encrypt);
    let wrong = if given.is_empty() {
        flip_first_hex(&right)
    } else {
        given
    };
    if !wrong.eq_ignore_ascii_case(&right) {
        assert_eq!(
            crypto::open(&fx.crypt, &timestamp, &nonce, &wrong, body),
            Err(CryptoError::Signature),
            "a wrong signature was not refused as Signature"
        );
    }
    let result = crypto::open(&fx.crypt, &timestamp, &nonce, &right, body);
    debug("signature", &result);
    assert_ne!(
        result,
        Err(CryptoError::Signature),
        "the right signature refused"
    );
    assert_eq!(
        crypto::open(
            &fx.crypt,
            &timestamp,
            &nonce,
            &right.to_ascii_uppercase(),
            body
        ),
        result,
        "msg_signature is compared case-insensitively"
    );
    check_envelope(body, &result);
    assert_eq!(result, by_parts(fx, &timestamp, &nonce, &right, body));
}

/// Spaces to append to the message in modes 1 and 2, so that bodies near and over
/// `MAX_MESSAGE_BYTES` are tried from the first second rather than only once libFuzzer's
/// length limit has grown that far: none for a byte under 0x80 (all the ASCII seeds),
/// else bits 3..6 times 4 KiB (up to 60 KiB; about 48 KiB of message fills a body).
fn filler(byte: u8) -> usize {
    if byte & 0x80 == 0 {
        0
    } else {
        usize::from((byte >> 3) & 0x0f) * 4096
    }
}

/// What `open` must return, from its documented steps.
fn by_parts(fx: &Fixture, timestamp: &str, nonce: &str, signature: &str, body: &[u8]) -> Opened {
    let fields = crypto::parse_fields(body)?;
    let Some(encrypt) = fields.get("Encrypt").filter(|e| !e.is_empty()) else {
        return Err(CryptoError::Xml("no <Encrypt> element".into()));
    };
    if !fx.crypt.verify(timestamp, nonce, encrypt, signature) {
        return Err(CryptoError::Signature);
    }
    let inner = fx.crypt.decrypt(encrypt)?;
    let opened = crypto::parse_fields(inner.as_bytes());
    if opened.is_ok() {
        assert!(
            !has_markup_doctype(inner.as_bytes()),
            "inner DOCTYPE accepted"
        );
    }
    opened
}

/// Invariants on any body: bounded size, no DOCTYPE in the envelope.
fn check_envelope(body: &[u8], result: &Opened) {
    if body.len() > MAX_MESSAGE_BYTES {
        assert!(result.is_err(), "a body over MAX_MESSAGE_BYTES was opened");
    }
    if result.is_ok() {
        assert!(
            !has_markup_doctype(body),
            "an envelope with a DOCTYPE was opened"
        );
    }
}

/// Invariant on the decrypted message: no DOCTYPE in an accepted event.
fn check_inner(message: &[u8], result: &Opened) {
    if result.is_ok() {
        assert!(
            message.len() <= MAX_MESSAGE_BYTES,
            "an oversized message was opened"
        );
        assert!(
            !has_markup_doctype(message),
            "an event with a DOCTYPE was opened"
        );
    }
}

/// WeChat's framing, written from the description in crypto.rs's module doc: PKCS#7
/// padding to 32 bytes, 16 random bytes, a 4-byte big-endian length, the message, the
/// appid.
fn model_decrypt(plain: &[u8], appid: &[u8]) -> Result<String, CryptoError> {
    let pad = usize::from(*plain.last().ok_or(CryptoError::Length)?);
    if pad == 0 || pad > 32 || pad > plain.len() {
        return Err(CryptoError::Padding);
    }
    let (content, padding) = plain.split_at(plain.len() - pad);
    if padding.iter().any(|&b| usize::from(b) != pad) {
        return Err(CryptoError::Padding);
    }
    if content.len() < 20 {
        return Err(CryptoError::Framing);
    }
    let len = u32::from_be_bytes([content[16], content[17], content[18], content[19]]);
    let len = usize::try_from(len).expect("u32 fits usize");
    if len > MAX_MESSAGE_BYTES {
        return Err(CryptoError::TooLarge);
    }
    if content.len() - 20 < len {
        return Err(CryptoError::Framing);
    }
    let (message, rest) = content[20..].split_at(len);
    if rest != appid {
        return Err(CryptoError::AppId(
            String::from_utf8_lossy(rest).chars().take(64).collect(),
        ));
    }
    String::from_utf8(message.to_vec()).map_err(|_| CryptoError::Utf8)
}

/// Whether the XML has a `<!DOCTYPE` (any case, as quick-xml reads it) where a reader
/// sees markup: not inside a CDATA section, a comment, a processing instruction or a
/// quoted attribute value. Written independently of quick-xml, from the XML grammar and
/// quick-xml's documented end rules for each kind of markup.
fn has_markup_doctype(xml: &[u8]) -> bool {
    let mut i = 0;
    while let Some(off) = xml[i..].iter().position(|&b| b == b'<') {
        let at = i + off;
        let rest = &xml[at..];
        let end = if rest.starts_with(b"<![") {
            find(xml, at + 2, b"]]>").map(|p| p + 3)
        } else if rest.starts_with(b"<!-") {
            // `<!-->` and `<!--->` do not close a comment: `-->` must start after `<!--`.
            find(xml, at + 4, b"-->").map(|p| p + 3)
        } else if rest.len() >= 9 && rest[1..9].eq_ignore_ascii_case(b"!DOCTYPE") {
            return true;
        } else if rest.starts_with(b"<?") {
            // The `?` of `<?` may close it too: `<?>` is a whole (empty) PI.
            find(xml, at + 1, b"?>").map(|p| p + 2)
        } else {
            // A tag (or a stray `<!x`, an error anyway): to the first `>` outside quotes.
            let mut quote = None;
            xml[at + 1..]
                .iter()
                .position(|&b| match quote {
                    Some(q) => {
                        if b == q {
                            quote = None;
                        }
                        false
                    }
                    None if b == b'"' || b == b'\'' => {
                        quote = Some(b);
                        false
                    }
                    None => b == b'>',
                })
                .map(|p| at + 1 + p + 1)
        };
        match end {
            Some(end) => i = end,
            // Unterminated markup: the reader refuses the document anyway.
            None => return false,
        }
    }
    false
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// The bytes up to the first `\n` (lossy UTF-8, as query values arrive) and the rest.
fn line(data: &[u8]) -> (String, &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(at) => (
            String::from_utf8_lossy(&data[..at]).into_owned(),
            &data[at + 1..],
        ),
        None => (String::from_utf8_lossy(data).into_owned(), &[]),
    }
}

fn envelope(appid: &str, encrypt: &str) -> String {
    format!("<xml><AppId><![CDATA[{appid}]]></AppId><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>")
}

fn flip_first_hex(signature: &str) -> String {
    let mut wrong = signature.to_owned();
    let first = if wrong.starts_with('0') { "1" } else { "0" };
    wrong.replace_range(0..1, first);
    wrong
}

fn aes_cbc(key: &[u8; 32], plain: &[u8]) -> String {
    let mut buf = plain.to_vec();
    let len = buf.len();
    let iv: [u8; 16] = key[..16].try_into().expect("16 bytes");
    let cipher = cbc::Encryptor::<Aes256>::new(key.into(), &iv.into())
        .encrypt_padded_mut::<NoPadding>(&mut buf, len)
        .expect("whole blocks");
    LENIENT.encode(cipher)
}
