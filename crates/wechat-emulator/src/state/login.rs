//! The calls that carry the app secret rather than a token (mini program login
//! `/sns/jscode2session`, web OAuth `/sns/oauth2/access_token`), and media uploads'
//! limits and counters.
//!
//! A login code works once (40163 after), as WeChat's do; any other non-empty code is
//! accepted, except one starting with `invalid`, which answers 40029 so that tests can
//! provoke it. The openid is derived from the appid and the code, so a test can predict
//! it; the `session_key` is 16 random bytes in base64, as WeChat's. User tokens from
//! OAuth are not app tokens, and no ordinary API accepts them.

use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::time::Instant;

use super::{Family, State};
use crate::TokenCheck;
use crate::failure::WxError;

/// Which login call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginKind {
    /// `/sns/jscode2session` (the code is `js_code`).
    MiniProgram,
    /// `/sns/oauth2/access_token` (the code is `code`).
    Oauth,
}

/// A login call's parameters as received (any may be missing).
#[derive(Debug, Default)]
pub(crate) struct LoginRequest<'a> {
    pub appid: Option<&'a str>,
    pub secret: Option<&'a str>,
    pub code: Option<&'a str>,
    pub grant_type: Option<&'a str>,
}

/// What a successful login hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Login {
    pub openid: String,
    /// `session_key` (mini program) or the user `access_token` (OAuth).
    pub key: String,
    /// OAuth only.
    pub refresh_token: String,
}

/// WeChat's limits for one upload type, in bytes (MB = 1024 × 1024, which WeChat
/// does not spell out), and the errors for a file outside them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MediaLimits {
    /// The smallest file accepted (WeCom: more than 5 bytes).
    pub min: u64,
    pub max: u64,
    /// The answer for a file over `max`.
    pub wrong_size: WxError,
}

const MB: u64 = 1024 * 1024;

impl MediaLimits {
    /// The limits of `kind` for a WeCom (`wecom`) or official token; `None` for a type
    /// that family does not take. Official accounts have been seen answering 40006 to
    /// an oversized image, whatever the type-specific codes of the global table say;
    /// WeCom's table names its own codes for images and videos.
    pub fn of(kind: &str, wecom: bool) -> Option<Self> {
        let (max, wrong_size) = match (kind, wecom) {
            ("image", false) => (10 * MB, WxError::INVALID_MEDIA_SIZE),
            ("voice", false) => (2 * MB, WxError::INVALID_MEDIA_SIZE),
            ("video", false) => (10 * MB, WxError::INVALID_MEDIA_SIZE),
            ("thumb", false) => (64 * 1024, WxError::INVALID_MEDIA_SIZE),
            ("image", true) => (10 * MB, WxError::WECOM_INVALID_IMAGE_SIZE),
            ("voice", true) => (2 * MB, WxError::WECOM_INVALID_FILE_SIZE),
            ("video", true) => (10 * MB, WxError::WECOM_INVALID_VIDEO_SIZE),
            ("file", true) => (20 * MB, WxError::WECOM_INVALID_FILE_SIZE),
            _ => return None,
        };
        // WeCom refuses files of 5 bytes or fewer (an empty one is 44001 for both).
        let min = if wecom { 6 } else { 1 };
        Some(Self {
            min,
            max,
            wrong_size,
        })
    }

    /// The error for a complete file of `bytes`, if its size is refused.
    pub fn check(&self, bytes: u64) -> Result<(), WxError> {
        match bytes {
            0 => Err(WxError::EMPTY_MEDIA),
            // Only WeCom has a minimum above one byte.
            b if b < self.min => Err(WxError::WECOM_INVALID_FILE_SIZE),
            b if b > self.max => Err(self.wrong_size),
            _ => Ok(()),
        }
    }
}

fn random(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

impl State {
    /// One login call, checked in WeChat's order and counted for its app.
    pub fn login_call(
        &mut self,
        kind: LoginKind,
        req: &LoginRequest<'_>,
        now: Instant,
    ) -> Result<Login, WxError> {
        let appid = req.appid.filter(|s| !s.is_empty());
        match appid.and_then(|id| self.apps.get_mut(id)) {
            Some(app) => app.stats.sns_calls += 1,
            None => self.unknown.sns_calls += 1,
        }
        let appid = appid.ok_or(WxError::APPID_MISSING)?;
        let secret = req
            .secret
            .filter(|s| !s.is_empty())
            .ok_or(WxError::SECRET_MISSING)?;
        let code = req
            .code
            .filter(|s| !s.is_empty())
            .ok_or(WxError::CODE_MISSING)?;
        if req.grant_type != Some("authorization_code") {
            return Err(WxError::INVALID_GRANT_TYPE);
        }
        let app = self.apps.get(appid).ok_or(WxError::INVALID_APPID)?;
        if app.secret != secret {
            return Err(WxError::INVALID_APPSECRET);
        }
        if code.starts_with("invalid") {
            return Err(WxError::INVALID_CODE);
        }
        self.maybe_prune(now);
        if self
            .used_codes
            .insert(format!("{kind:?}:{appid}:{code}"), now)
            .is_some()
        {
            return Err(WxError::CODE_USED);
        }
        let openid = format!("o{}", &hex_of(&format!("{appid}:{code}"))[..27]);
        Ok(match kind {
            LoginKind::MiniProgram => Login {
                openid,
                key: base64(&rand::random::<[u8; 16]>()),
                refresh_token: String::new(),
            },
            LoginKind::Oauth => Login {
                openid,
                key: random(64),
                refresh_token: random(64),
            },
        })
    }

    /// Checks `token` as an ordinary API does; on success says whether it is a WeCom
    /// token (uploads differ by family).
    pub fn use_token_of_family(&mut self, token: &str, now: Instant) -> Result<bool, WxError> {
        let wecom = self
            .tokens
            .get(token)
            .is_some_and(|entry| entry.family == Family::Wecom);
        self.use_token(token, now)?;
        Ok(wecom)
    }

    /// Counts an accepted upload of `bytes` for the owner of `token`.
    pub fn record_upload(&mut self, token: &str, bytes: u64, now: Instant) {
        let owner = self
            .tokens
            .get(token)
            .filter(|entry| entry.check(now) == TokenCheck::Valid)
            .map(|entry| entry.stats_key());
        let stats = self.stats_mut(owner.as_ref().map(|(f, o)| (*f, &**o)));
        stats.media_uploads += 1;
        stats.media_bytes += bytes;
    }
}

/// Standard padded base64, the encoding of WeChat's `session_key` (16 bytes, 24
/// characters); too small a need for a dependency.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A stable hex digest (FNV-1a, repeated) for deterministic openids.
fn hex_of(text: &str) -> String {
    let mut out = String::new();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for round in 0..2u8 {
        for byte in text.bytes().chain(std::iter::once(round)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{hash:016x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff; 16]).len(), 24);
    }

    #[test]
    fn media_sizes_are_checked_per_family() {
        let official = MediaLimits::of("thumb", false).expect("thumb");
        assert_eq!(official.check(0), Err(WxError::EMPTY_MEDIA));
        assert_eq!(official.check(1), Ok(()));
        assert_eq!(official.check(64 * 1024), Ok(()));
        assert_eq!(
            official.check(64 * 1024 + 1),
            Err(WxError::INVALID_MEDIA_SIZE)
        );
        let image = MediaLimits::of("image", true).expect("image");
        assert_eq!(image.check(5), Err(WxError::WECOM_INVALID_FILE_SIZE));
        assert_eq!(image.check(6), Ok(()));
        assert_eq!(
            image.check(10 * MB + 1),
            Err(WxError::WECOM_INVALID_IMAGE_SIZE)
        );
        assert!(MediaLimits::of("file", false).is_none());
        assert!(MediaLimits::of("thumb", true).is_none());
    }
}
