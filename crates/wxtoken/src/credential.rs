//! Domain types shared by the keeper, the store and the upstream client: what a
//! credential is called, what one fetched value looks like, and how fresh it is.
//!
//! This module imports nothing else of the crate, so every other layer can depend on it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What kind of credential a key names. A component's token and an authorizer's token
/// are access tokens too: the app's kind, and the key's authorizer, say which API
/// fetches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CredentialKind {
    /// The access_token of an official account, mini program or WeCom app.
    AccessToken,
    /// A ticket fetched with the app's access token.
    Ticket(TicketType),
}

/// The tickets WeChat issues for web pages: JS-SDK (`jsapi`, official and WeCom), card
/// (`wx_card`, official) and WeCom's `agent_config` (wx.agentConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TicketType {
    Jsapi,
    WxCard,
    AgentConfig,
}

impl TicketType {
    /// The name used in URLs and by WeChat.
    pub fn as_str(self) -> &'static str {
        match self {
            TicketType::Jsapi => "jsapi",
            TicketType::WxCard => "wx_card",
            TicketType::AgentConfig => "agent_config",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "jsapi" => Some(TicketType::Jsapi),
            "wx_card" => Some(TicketType::WxCard),
            "agent_config" => Some(TicketType::AgentConfig),
            _ => None,
        }
    }
}

impl CredentialKind {
    /// The stable name used in storage keys and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::AccessToken => "access_token",
            CredentialKind::Ticket(TicketType::Jsapi) => "ticket_jsapi",
            CredentialKind::Ticket(TicketType::WxCard) => "ticket_wx_card",
            CredentialKind::Ticket(TicketType::AgentConfig) => "ticket_agent_config",
        }
    }

    /// Parses the name written by [`CredentialKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "access_token" => Some(CredentialKind::AccessToken),
            other => other
                .strip_prefix("ticket_")
                .and_then(TicketType::parse)
                .map(CredentialKind::Ticket),
        }
    }
}

/// Names one credential: the configured app id (the `{app}` in URLs), for a third-party
/// platform's authorizer also the authorizer's appid, and what kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialKey {
    /// The configured app id, e.g. `shop`; not WeChat's appid. For an authorizer's
    /// credential, the component app's id.
    pub app: String,
    /// The authorizer's appid, for an authorizer's token or ticket.
    pub authorizer: Option<String>,
    pub kind: CredentialKind,
}

impl CredentialKey {
    pub fn access_token(app: impl Into<String>) -> Self {
        Self::new(app, CredentialKind::AccessToken)
    }

    pub fn ticket(app: impl Into<String>, ticket: TicketType) -> Self {
        Self::new(app, CredentialKind::Ticket(ticket))
    }

    pub fn new(app: impl Into<String>, kind: CredentialKind) -> Self {
        Self {
            app: app.into(),
            authorizer: None,
            kind,
        }
    }

    /// A credential of authorizer `appid` under component app `component`.
    pub fn of_authorizer(
        component: impl Into<String>,
        appid: impl Into<String>,
        kind: CredentialKind,
    ) -> Self {
        Self {
            app: component.into(),
            authorizer: Some(appid.into()),
            kind,
        }
    }

    /// Whose credential this is, as stores write it: the app id, or for an authorizer
    /// `component/appid` (app ids never contain `/`, so the two cannot collide).
    pub fn scope(&self) -> std::borrow::Cow<'_, str> {
        match &self.authorizer {
            None => std::borrow::Cow::Borrowed(&self.app),
            Some(appid) => std::borrow::Cow::Owned(format!("{}/{appid}", self.app)),
        }
    }

    /// The key a store wrote as `scope` (see [`CredentialKey::scope`]) and `kind`.
    pub fn from_scope(scope: &str, kind: CredentialKind) -> Self {
        match scope.split_once('/') {
            Some((app, appid)) => Self::of_authorizer(app, appid, kind),
            None => Self::new(scope, kind),
        }
    }
}

impl fmt::Display for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.scope(), self.kind.as_str())
    }
}

/// A number that only grows: each new value of a credential gets the next one, so
/// an old value can never overwrite a newer one and a client can tell them apart.
pub type Generation = u64;

/// One value WeChat issued, with its own freshness rule.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The secret value itself. Never logged whole: see [`Token::redacted`].
    pub value: String,
    /// Unix milliseconds after which WeChat no longer accepts it (from `expires_in`).
    pub expires_at_ms: u64,
    /// Unix milliseconds when it was fetched.
    pub fetched_at_ms: u64,
    /// The `expires_in` WeChat returned with it, in seconds: the lifetime the keeper
    /// plans refreshes from (a stable-mode repeat returns less than 7200).
    pub lifetime_secs: u64,
    pub generation: Generation,
}

impl Token {
    /// Milliseconds left at `now_ms`, zero once expired.
    pub fn remaining_ms(&self, now_ms: u64) -> u64 {
        self.expires_at_ms.saturating_sub(now_ms)
    }

    /// Whole seconds left at `now_ms`, what `expires_in` tells a client.
    pub fn expires_in_secs(&self, now_ms: u64) -> u64 {
        self.remaining_ms(now_ms) / 1000
    }

    /// Whether the token can still be handed out with at least `min_left_ms` to spare.
    pub fn usable(&self, now_ms: u64, min_left_ms: u64) -> bool {
        self.remaining_ms(now_ms) > min_left_ms
    }

    /// The first characters only, for logs.
    pub fn redacted(&self) -> Redacted<'_> {
        Redacted(&self.value)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &self.redacted())
            .field("expires_at_ms", &self.expires_at_ms)
            .field("fetched_at_ms", &self.fetched_at_ms)
            .field("lifetime_secs", &self.lifetime_secs)
            .field("generation", &self.generation)
            .finish()
    }
}

/// Shows at most the first 6 characters of a secret value.
pub struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head: String = self.0.chars().take(6).collect();
        write!(f, "{head}…")
    }
}

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Names a secret in logs without showing any of it: the first 8 hex digits of its
/// SHA-256. For values whose prefix is the same for all (WeChat's refresh tokens all
/// start `refreshtoken@@@`), where [`Redacted`] would tell none apart.
pub struct Fingerprint<'a>(pub &'a str);

impl fmt::Display for Fingerprint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.0.as_bytes());
        write!(
            f,
            "sha256:{:02x}{:02x}{:02x}{:02x}",
            digest[0], digest[1], digest[2], digest[3]
        )
    }
}

impl fmt::Debug for Fingerprint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Wall-clock unix milliseconds. Expiry is absolute so it survives restarts.
pub fn unix_now_ms() -> u64 {
    #[cfg(test)]
    if let Some(ms) = fake_wall::now_ms() {
        return ms;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// A wall clock for unit tests, per thread (a `#[tokio::test]` runs the keeper's tasks
/// on its own thread): it follows tokio's clock (paused and advanced by the test) from
/// the real time, and can be stepped like a wall clock an operator or NTP sets.
#[cfg(test)]
pub(crate) mod fake_wall {
    use std::cell::Cell;

    use tokio::time::Instant;

    thread_local! {
        /// (real unix ms at the start, tokio's instant then, step in ms).
        static CLOCK: Cell<Option<(u64, Instant, i64)>> = const { Cell::new(None) };
    }

    /// From now on this thread's wall clock moves with tokio's.
    pub fn follow_tokio() {
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64;
        CLOCK.set(Some((real, Instant::now(), 0)));
    }

    /// Steps the wall clock by `ms` (negative: back), as a clock reset does.
    pub fn step(ms: i64) {
        let (real, at, step) = CLOCK.get().expect("follow_tokio first");
        CLOCK.set(Some((real, at, step + ms)));
    }

    pub(super) fn now_ms() -> Option<u64> {
        let (real, at, step) = CLOCK.get()?;
        let ms = real as i64 + at.elapsed().as_millis() as i64 + step;
        Some(ms.max(0) as u64)
    }
}

/// The WeChat day (Beijing time, UTC+8) a unix-millisecond instant falls in, as
/// `YYYY-MM-DD`: WeChat's daily quotas reset at Beijing midnight.
pub fn wechat_day(unix_ms: u64) -> String {
    let offset = time::macros::offset!(+8);
    let at = time::OffsetDateTime::from_unix_timestamp((unix_ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(offset);
    let d = at.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Unix milliseconds of the next Beijing midnight after `unix_ms`.
pub fn next_wechat_midnight_ms(unix_ms: u64) -> u64 {
    const DAY_MS: u64 = 86_400_000;
    const OFFSET_MS: u64 = 8 * 3_600_000;
    ((unix_ms + OFFSET_MS) / DAY_MS + 1) * DAY_MS - OFFSET_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wechat_day_is_beijing_time() {
        // 2024-01-01T15:59:59Z is 23:59:59 in Beijing; one second later is the next day.
        assert_eq!(wechat_day(1_704_124_799_000), "2024-01-01");
        assert_eq!(wechat_day(1_704_124_800_000), "2024-01-02");
        assert_eq!(
            next_wechat_midnight_ms(1_704_124_799_000),
            1_704_124_800_000
        );
        assert_eq!(
            next_wechat_midnight_ms(1_704_124_800_000),
            1_704_211_200_000
        );
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in [
            CredentialKind::AccessToken,
            CredentialKind::Ticket(TicketType::Jsapi),
            CredentialKind::Ticket(TicketType::WxCard),
            CredentialKind::Ticket(TicketType::AgentConfig),
        ] {
            assert_eq!(CredentialKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(CredentialKind::parse("ticket_other"), None);
    }

    #[test]
    fn a_fingerprint_shows_none_of_the_value_and_tells_values_apart() {
        let a = Fingerprint("refreshtoken@@@abcdef").to_string();
        let b = Fingerprint("refreshtoken@@@abcdeg").to_string();
        assert_ne!(a, b);
        assert_eq!(a.len(), "sha256:".len() + 8);
        assert!(!a.contains("refresh"));
    }

    #[test]
    fn redacted_shows_only_a_prefix() {
        assert_eq!(Redacted("ACCESS_TOKEN_VALUE").to_string(), "ACCESS…");
        assert_eq!(Redacted("abc").to_string(), "abc…");
    }
}
