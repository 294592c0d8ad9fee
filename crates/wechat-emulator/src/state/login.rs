//! The calls that carry the app secret rather than a token (mini program login
//! `/sns/jscode2session`, web OAuth `/sns/oauth2/access_token`), and what media uploads
//! leave behind.
//!
//! A login code works once (40163 after), as WeChat's do; any other non-empty code is
//! accepted, except one starting with `invalid`, which answers 40029 so that tests can
//! provoke it. The openid is derived from the appid and the code, so a test can predict
//! it; user tokens from OAuth are not app tokens, and no ordinary API accepts them.

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

/// WeChat's per-type upload limits, in bytes (MB = 1024 × 1024).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MediaLimits {
    pub min: u64,
    pub max: u64,
}

const MB: u64 = 1024 * 1024;

impl MediaLimits {
    /// The limits of `kind` for a WeCom (`wecom`) or official token; `None` for a type
    /// that family does not take.
    pub fn of(kind: &str, wecom: bool) -> Option<Self> {
        let max = match (kind, wecom) {
            ("image", _) => 10 * MB,
            ("voice", _) => 2 * MB,
            ("video", _) => 10 * MB,
            ("thumb", false) => 64 * 1024,
            ("file", true) => 20 * MB,
            _ => return None,
        };
        // WeCom refuses files of 5 bytes or fewer.
        let min = if wecom { 6 } else { 1 };
        Some(Self { min, max })
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
        if !self.used_codes.insert(format!("{kind:?}:{appid}:{code}")) {
            return Err(WxError::CODE_USED);
        }
        let openid = format!("o{}", &hex_of(&format!("{appid}:{code}"))[..27]);
        Ok(match kind {
            LoginKind::MiniProgram => Login {
                openid,
                key: random(24),
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
    pub fn record_upload(&mut self, token: &str, bytes: u64) {
        let owner = self
            .tokens
            .get(token)
            .filter(|entry| entry.check(Instant::now()) == TokenCheck::Valid)
            .map(|entry| (entry.family, entry.owner.clone()));
        let stats = self.stats_mut(owner.as_ref().map(|(f, o)| (*f, &**o)));
        stats.media_uploads += 1;
        stats.media_bytes += bytes;
    }
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
