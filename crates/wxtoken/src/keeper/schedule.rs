//! Pure timing rules: when to refresh a token, how long to back off after a failure,
//! and how close to expiry a token may still be served. No I/O, so they are unit-tested
//! directly.

use std::time::Duration;

use rand::Rng;

use crate::config::KeeperSettings;
use crate::credential::Token;
use crate::wechat::ErrorClass;

/// A token is not handed out with less than this left: a client needs a moment to use it.
/// Short-lived tokens (tests, the emulator) use a quarter of their lifetime instead.
const MAX_SERVE_MARGIN: Duration = Duration::from_secs(1);

/// First retry after a transient failure; doubles per consecutive failure.
const TRANSIENT_BASE: Duration = Duration::from_millis(500);
/// Transient retries never wait longer than this: the still-valid token keeps being
/// served meanwhile, and WeChat's own hiccups last seconds, not minutes.
const TRANSIENT_CAP: Duration = Duration::from_secs(60);
/// Never retry sooner than this, whatever the token's lifetime.
const MIN_RETRY: Duration = Duration::from_millis(100);
/// 45011 is a per-minute limit, 45033 a concurrency limit: a minute clears both.
const RATE_LIMIT_BACKOFF: Duration = Duration::from_secs(60);
/// A configuration error needs a human; retrying every minute at first (then less often)
/// notices the fix soon without hammering WeChat.
const CONFIG_BASE: Duration = Duration::from_secs(60);
const CONFIG_CAP: Duration = Duration::from_secs(30 * 60);
/// With the daily quota gone (45009), probe this often in case someone cleared it.
const QUOTA_PROBE: Duration = Duration::from_secs(30 * 60);

/// A driver that panicked is restarted after this, doubling per restart...
const RESTART_BASE: Duration = Duration::from_secs(1);
/// ...up to this: a bug that panics every round must not spin, nor give up for good.
const RESTART_CAP: Duration = Duration::from_secs(60);

/// How long to wait before the `restarts`-th restart of a driver that panicked.
pub fn restart_delay(restarts: u32) -> Duration {
    let exp = restarts.saturating_sub(1).min(16);
    RESTART_BASE.saturating_mul(1 << exp).min(RESTART_CAP)
}

/// Which refresh rule a credential follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Stable-mode access tokens: call inside the last `stable_window`, where WeChat renews.
    StableWindow,
    /// Everything else (classic tokens, WeCom tokens, tickets): `refresh_ahead` early.
    RefreshAhead,
}

/// How long before expiry to refresh, before jitter: the configured window, shrunk to
/// half of the token's own lifetime so that short-lived tokens never refresh in a loop.
pub fn refresh_ahead(token: &Token, policy: Policy, settings: &KeeperSettings) -> Duration {
    let window = match policy {
        Policy::StableWindow => settings.stable_window,
        Policy::RefreshAhead => settings.refresh_ahead,
    };
    window.min(Duration::from_secs(token.lifetime_secs) / 2)
}

/// Milliseconds from `now_ms` until the next proactive refresh, jittered: somewhere in the
/// last 80-100% of the refresh-ahead window, so that many apps (and, later, instances) do
/// not refresh in lockstep, and a stable-mode call always lands inside WeChat's renewal
/// window.
pub fn refresh_delay(
    token: &Token,
    policy: Policy,
    settings: &KeeperSettings,
    now_ms: u64,
) -> Duration {
    let ahead = refresh_ahead(token, policy, settings).as_millis() as u64;
    let jittered = rand::rng().random_range(ahead * 8 / 10..=ahead);
    let at_ms = token.expires_at_ms.saturating_sub(jittered);
    Duration::from_millis(at_ms.saturating_sub(now_ms))
}

/// A token with this little left is treated as missing.
pub fn serve_margin(token: &Token) -> Duration {
    MAX_SERVE_MARGIN.min(Duration::from_secs(token.lifetime_secs) / 4)
}

/// Whether `token` may be handed out at `now_ms` to a caller who needs `min_left`.
pub fn serveable(token: &Token, now_ms: u64, min_left: Duration) -> bool {
    serveable_until(token, now_ms, min_left, false)
}

/// As [`serveable`]; `to_death`: WeChat handed this value back instead of renewing it,
/// so nothing better exists before it dies and it is served to its last moment rather
/// than held back for the margin.
pub fn serveable_until(token: &Token, now_ms: u64, min_left: Duration, to_death: bool) -> bool {
    let margin = if to_death {
        Duration::ZERO
    } else {
        serve_margin(token)
    };
    token.remaining_ms(now_ms) > margin.max(min_left).as_millis() as u64
}

/// How long to wait before the next attempt after `failures` consecutive failures,
/// the last of class `class`. `token_left` is how long the current token stays valid.
pub fn backoff(
    class: ErrorClass,
    failures: u32,
    token_left: Option<Duration>,
    until_quota_reset: Duration,
) -> Duration {
    let doubling = |base: Duration, cap: Duration| {
        let exp = failures.saturating_sub(1).min(16);
        base.saturating_mul(1 << exp).min(cap)
    };
    let wait = match class {
        ErrorClass::Transient | ErrorClass::Refresh => {
            // Full jitter in the upper half, and several tries before a valid token runs out.
            let base = doubling(TRANSIENT_BASE, TRANSIENT_CAP);
            let jittered = jitter(base);
            match token_left {
                Some(left) if !left.is_zero() => jittered.min(left / 4),
                _ => jittered,
            }
        }
        ErrorClass::RateLimited => jitter(RATE_LIMIT_BACKOFF),
        ErrorClass::Configuration => jitter(doubling(CONFIG_BASE, CONFIG_CAP)),
        ErrorClass::QuotaExhausted => until_quota_reset.min(QUOTA_PROBE),
    };
    wait.max(MIN_RETRY)
}

/// A random duration in [d/2, d].
fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(lifetime_secs: u64, expires_at_ms: u64) -> Token {
        Token {
            value: "t".into(),
            expires_at_ms,
            fetched_at_ms: expires_at_ms - lifetime_secs * 1000,
            lifetime_secs,
            generation: 1,
        }
    }

    #[test]
    fn real_tokens_refresh_inside_the_configured_window() {
        let s = KeeperSettings::default();
        let t = token(7200, 7_200_000);
        for _ in 0..100 {
            let stable = refresh_delay(&t, Policy::StableWindow, &s, 0).as_secs();
            assert!((6900..=6960).contains(&stable), "{stable}");
            let classic = refresh_delay(&t, Policy::RefreshAhead, &s, 0).as_secs();
            assert!((6600..=6720).contains(&classic), "{classic}");
        }
    }

    #[test]
    fn a_window_longer_than_the_lifetime_shrinks_to_half_of_it() {
        let s = KeeperSettings::default();
        let t = token(4, 4_000);
        for _ in 0..100 {
            let d = refresh_delay(&t, Policy::RefreshAhead, &s, 0).as_millis();
            assert!((2000..=2400).contains(&d), "{d}");
        }
        assert_eq!(serve_margin(&t), Duration::from_secs(1));
        assert_eq!(serve_margin(&token(2, 2_000)), Duration::from_millis(500));
    }

    #[test]
    fn backoff_grows_and_respects_the_token_left() {
        let day = Duration::from_secs(86_400);
        let b1 = backoff(ErrorClass::Transient, 1, None, day);
        assert!(b1 >= Duration::from_millis(250) && b1 <= Duration::from_millis(500));
        let b10 = backoff(ErrorClass::Transient, 10, None, day);
        assert!(b10 >= Duration::from_secs(30) && b10 <= TRANSIENT_CAP);
        let short = backoff(ErrorClass::Transient, 10, Some(Duration::from_secs(2)), day);
        assert!(short <= Duration::from_millis(500));
        assert!(backoff(ErrorClass::Configuration, 1, None, day) >= Duration::from_secs(30));
        assert!(backoff(ErrorClass::Configuration, 20, None, day) <= CONFIG_CAP);
        assert_eq!(
            backoff(ErrorClass::QuotaExhausted, 1, None, Duration::from_secs(60)),
            Duration::from_secs(60)
        );
    }
}
