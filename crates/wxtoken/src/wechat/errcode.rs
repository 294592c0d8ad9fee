//! WeChat's error codes, sorted by what the caller does next (see WECHAT.md).

/// What to do about a failed upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The token used was dead (40001/40014/42001 from an ordinary API): refresh, retry once.
    Refresh,
    /// WeChat was busy, the network failed, or it timed out: retry with backoff.
    Transient,
    /// A per-minute or concurrency limit (45011, 45033): wait, then retry.
    RateLimited,
    /// The daily quota is gone (45009): stop fetching until it resets or is cleared.
    QuotaExhausted,
    /// Wrong appid/secret, IP not whitelisted, frozen secret...: a human must act, so
    /// retry only every few minutes.
    Configuration,
}

impl ErrorClass {
    /// The stable name shown in status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Refresh => "refresh",
            ErrorClass::Transient => "transient",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::QuotaExhausted => "quota_exhausted",
            ErrorClass::Configuration => "configuration",
        }
    }
}

/// Classifies an errcode returned by a token endpoint (/cgi-bin/token,
/// /cgi-bin/stable_token). There 40001 means a wrong secret, not a dead token.
pub fn classify_token_endpoint(errcode: i64) -> ErrorClass {
    match errcode {
        -1 => ErrorClass::Transient,
        45009 => ErrorClass::QuotaExhausted,
        45011 | 45033 => ErrorClass::RateLimited,
        // 40001 wrong secret, 40002 grant_type, 40013 appid, 40125 secret, 40164 IP
        // whitelist, 40243 frozen secret, 41002/41004 missing appid/secret, 43002 needs
        // POST, 47001 bad body, 61024 component appid, 89501/89503/89506/89507 risky-IP
        // confirmation by a human. Codes we do not know are treated the same way: a
        // slow retry costs little, a fast one against an unknown refusal can burn quota.
        _ => ErrorClass::Configuration,
    }
}

/// Classifies an errcode returned by WeCom's /cgi-bin/gettoken. 40001 (wrong secret),
/// 40013 (corpid), 40091 (secret of another corp), 60020 (IP not allowed) and 48002 (no
/// permission) need a human; 45033 (too many concurrent calls) and -1 clear on their own.
pub fn classify_wecom_token_endpoint(errcode: i64) -> ErrorClass {
    classify_token_endpoint(errcode)
}

/// Classifies an errcode returned by an ordinary API called with a token (tickets too):
/// there 40001/40014/42001 mean the token is dead.
pub fn classify_api(errcode: i64) -> ErrorClass {
    match errcode {
        40001 | 40014 | 42001 => ErrorClass::Refresh,
        other => classify_token_endpoint(other),
    }
}

/// Splits WeChat's request id off an errmsg: `"invalid appid rid: 6746-..."` (current)
/// or `"invalid appid hint: [AbCdE]"` (older).
pub fn split_rid(errmsg: &str) -> (String, Option<String>) {
    if let Some(at) = errmsg.find(" rid: ") {
        let rid = errmsg[at + 6..].trim();
        return (
            errmsg[..at].trim().to_owned(),
            (!rid.is_empty()).then(|| rid.to_owned()),
        );
    }
    if let Some(at) = errmsg.find(" hint: [") {
        let rest = &errmsg[at + 8..];
        let rid = rest.split(']').next().unwrap_or("").trim();
        return (
            errmsg[..at].trim().to_owned(),
            (!rid.is_empty()).then(|| rid.to_owned()),
        );
    }
    (errmsg.trim().to_owned(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_endpoint_40001_is_a_configuration_error() {
        assert_eq!(classify_token_endpoint(40001), ErrorClass::Configuration);
        assert_eq!(classify_api(40001), ErrorClass::Refresh);
        assert_eq!(classify_api(42001), ErrorClass::Refresh);
        assert_eq!(classify_token_endpoint(-1), ErrorClass::Transient);
        assert_eq!(classify_token_endpoint(45009), ErrorClass::QuotaExhausted);
        assert_eq!(classify_token_endpoint(45011), ErrorClass::RateLimited);
        assert_eq!(classify_token_endpoint(40164), ErrorClass::Configuration);
        for code in [40001, 40013, 40091, 60020, 48002] {
            assert_eq!(
                classify_wecom_token_endpoint(code),
                ErrorClass::Configuration
            );
        }
        assert_eq!(
            classify_wecom_token_endpoint(45033),
            ErrorClass::RateLimited
        );
        assert_eq!(classify_api(40014), ErrorClass::Refresh);
    }

    #[test]
    fn rid_is_split_off_both_forms() {
        assert_eq!(
            split_rid("invalid appid rid: 6746a1b2-3c4d5e6f-7a8b9c0d"),
            (
                "invalid appid".to_owned(),
                Some("6746a1b2-3c4d5e6f-7a8b9c0d".to_owned())
            )
        );
        assert_eq!(
            split_rid("invalid appid hint: [XyZ12]"),
            ("invalid appid".to_owned(), Some("XyZ12".to_owned()))
        );
        assert_eq!(split_rid("system error"), ("system error".to_owned(), None));
    }
}
