//! WeChat's quota APIs: `openapi/quota/get` (an app's daily figures for one API),
//! `clear_quota` (with the app's token) and `clear_quota/v2` (with its AppSecret).
//!
//! Both clears reset the app's daily counters and share one budget of
//! [`Config::clear_quota_monthly`] clears per app per month, Beijing time (WeChat:
//! 10, shared with the console); over it they answer 48006 and clear nothing.

use tokio::time::Instant;

use super::{Family, State, TokenCheck};
use crate::Config;
use crate::failure::WxError;

/// An app's figures for one API today, as `quota/get` answers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quota {
    pub daily_limit: u64,
    pub used: u64,
    pub remain: u64,
}

/// How a clear proves who is asking.
#[derive(Debug)]
pub(crate) enum ClearAuth<'a> {
    /// `clear_quota?access_token=T` with `{"appid"}`: T must be the app's own token.
    Token {
        token: Option<&'a str>,
        appid: Option<&'a str>,
    },
    /// `clear_quota/v2` with `appid` and `appsecret`.
    Secret {
        appid: Option<&'a str>,
        secret: Option<&'a str>,
    },
}

/// This app's clears this month: `(month, count)`; a new month starts at zero.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Clears {
    month: u64,
    count: u64,
}

/// The month of a WeChat day (days since the epoch, Beijing time), as `year * 12 +
/// month - 1`: the civil calendar from the day number (Hinnant's `civil_from_days`).
pub(crate) fn month_of_day(day: u64) -> u64 {
    let z = day + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    year * 12 + month - 1
}

impl State {
    /// `quota/get` with `token` for `cgi_path`: the token's app's figures for
    /// `/cgi-bin/token` or `/cgi-bin/stable_token` today. Any other path: 76021.
    pub fn quota_get(
        &mut self,
        config: &Config,
        token: Option<&str>,
        cgi_path: Option<&str>,
        now: Instant,
        today: u64,
    ) -> Result<Quota, WxError> {
        let owner = self.official_owner(token, now);
        let Some(app) = owner.as_ref().ok().and_then(|o| self.apps.get_mut(o)) else {
            // A call with no valid token of an app is counted all the same.
            self.unknown.quota_get_calls += 1;
            return Err(owner.err().unwrap_or(WxError::INVALID_CREDENTIAL));
        };
        app.stats.quota_get_calls += 1;
        let daily = app.daily(today);
        let (used, daily_limit) = match cgi_path {
            Some("/cgi-bin/token") => (daily.classic, config.quota),
            Some("/cgi-bin/stable_token") => (daily.stable, config.stable_quota),
            Some(_) => return Err(WxError::CGI_PATH_NOT_FOUND),
            None => return Err(WxError::INVALID_ARGS),
        };
        // Calls refused for quota are charged before the refusal (see `admit`), so
        // `used` may pass the limit; `remain` never goes below zero.
        Ok(Quota {
            daily_limit,
            used,
            remain: daily_limit.saturating_sub(used),
        })
    }

    /// `clear_quota` or `clear_quota/v2`: resets the app's daily counters if this
    /// month's clears are below the budget.
    pub fn clear_quota(
        &mut self,
        config: &Config,
        auth: &ClearAuth<'_>,
        now: Instant,
        today: u64,
    ) -> Result<(), WxError> {
        let appid = match *auth {
            ClearAuth::Token { token, appid } => {
                let owner = self.official_owner(token, now);
                match owner.as_ref().ok().and_then(|o| self.apps.get_mut(o)) {
                    Some(app) => app.stats.clear_quota_calls += 1,
                    None => self.unknown.clear_quota_calls += 1,
                }
                let owner = owner?;
                let appid = appid
                    .filter(|a| !a.is_empty())
                    .ok_or(WxError::APPID_MISSING)?;
                // The appid must be the token's own account.
                if appid != owner {
                    return Err(WxError::INVALID_APPID);
                }
                owner
            }
            ClearAuth::Secret { appid, secret } => {
                let appid = appid.filter(|a| !a.is_empty());
                let counted = appid.and_then(|a| self.apps.get_mut(a));
                match counted {
                    Some(app) => app.stats.clear_quota_calls += 1,
                    None => self.unknown.clear_quota_calls += 1,
                }
                let appid = appid.ok_or(WxError::APPID_MISSING)?;
                let secret = secret
                    .filter(|s| !s.is_empty())
                    .ok_or(WxError::SECRET_MISSING)?;
                let app = self.apps.get(appid).ok_or(WxError::INVALID_APPID)?;
                if app.secret != secret {
                    return Err(WxError::INVALID_APPSECRET);
                }
                appid.to_owned()
            }
        };
        let app = self.apps.get_mut(&appid).ok_or(WxError::INVALID_APPID)?;
        let month = month_of_day(today);
        if app.clears.month != month {
            app.clears = Clears { month, count: 0 };
        }
        if app.clears.count >= config.clear_quota_monthly {
            return Err(WxError::CLEAR_QUOTA_LIMIT);
        }
        app.clears.count += 1;
        app.stats.quota_clears += 1;
        // Only the API counters reset; the force-refresh limit is a separate rule.
        let daily = app.daily(today);
        daily.classic = 0;
        daily.stable = 0;
        daily.tickets = 0;
        Ok(())
    }

    /// The appid of a valid official token; an authorizer or WeCom token, or a dead
    /// one, is refused in WeChat's words.
    fn official_owner(&self, token: Option<&str>, now: Instant) -> Result<String, WxError> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(WxError::TOKEN_MISSING)?;
        let entry = self.tokens.get(token).ok_or(WxError::INVALID_CREDENTIAL)?;
        match entry.check(now) {
            TokenCheck::Valid if entry.family == Family::Official => Ok(entry.owner.to_string()),
            TokenCheck::Expired => Err(WxError::TOKEN_EXPIRED),
            _ => Err(WxError::INVALID_CREDENTIAL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_follow_the_civil_calendar() {
        // 1970-01-01 is day 0: January 1970.
        assert_eq!(month_of_day(0), 1970 * 12);
        // 2024-02-29 is day 19782, 2024-03-01 day 19783.
        assert_eq!(month_of_day(19_782), 2024 * 12 + 1);
        assert_eq!(month_of_day(19_783), 2024 * 12 + 2);
        // 2026-12-31 is day 20818, 2027-01-01 day 20819.
        assert_eq!(month_of_day(20_818), 2026 * 12 + 11);
        assert_eq!(month_of_day(20_819), 2027 * 12);
    }
}
