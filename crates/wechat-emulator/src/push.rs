//! Pushes to a third-party platform's callback URL, as WeChat makes them: the message
//! (verify ticket or authorization event) encrypted and signed with the emulator's own
//! [`MsgCrypt`], POSTed as `<xml><AppId/><Encrypt/></xml>` to
//! `{callback_url}?signature&timestamp&nonce&encrypt_type=aes&msg_signature`, and
//! counted as delivered only if the answer is HTTP 2xx with the body `success`.
//!
//! Owns the push client (one per emulator, built on first use, 5 s timeout like
//! WeChat's), the limit on concurrent pushes (so that onboarding 100,000 authorizers
//! does not open 100,000 connections at once), and the inner messages' XML.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::crypto::MsgCrypt;
use crate::state::{AUTH_CODE_EXPIRES_IN, AuthorizeOutcome};
use crate::{Emulator, unix_now};

/// How long WeChat waits for a callback to answer.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Pushes in flight at once, across all platforms; more wait their turn.
const MAX_CONCURRENT_PUSHES: usize = 32;
/// How much of an unexpected answer a push error quotes.
const QUOTED_BODY: usize = 200;

/// The push client and the concurrency limit.
#[derive(Debug)]
pub(crate) struct Pusher {
    client: OnceLock<Result<reqwest::Client, String>>,
    permits: Semaphore,
}

impl Default for Pusher {
    fn default() -> Self {
        Self {
            client: OnceLock::new(),
            permits: Semaphore::new(MAX_CONCURRENT_PUSHES),
        }
    }
}

impl Pusher {
    fn client(&self) -> Result<&reqwest::Client, String> {
        self.client
            .get_or_init(|| {
                reqwest::Client::builder()
                    .timeout(PUSH_TIMEOUT)
                    .build()
                    .map_err(|e| format!("cannot build the push client: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl Emulator {
    /// Mints a verify ticket for `component` and pushes it; the ticket, or why the push
    /// failed.
    pub(crate) async fn push_ticket(&self, component: &str) -> Result<String, String> {
        let Some(credentials) = self.config().component(component) else {
            return Err(format!("unknown component {component:?}"));
        };
        if credentials.callback_url.is_none() {
            return Err(format!("component {component:?} has no callback_url"));
        }
        let ticket = self
            .verify_ticket(component)
            .ok_or_else(|| format!("unknown component {component:?}"))?;
        let message = verify_ticket_message(component, &ticket, unix_now());
        self.push(component, &message).await?;
        Ok(ticket)
    }

    /// Pushes `message` to `component`'s callback URL in the background, if it has
    /// one and a tokio runtime is running; a failure is logged.
    pub(crate) fn push_in_background(&self, component: &str, message: String) {
        let has_callback = self
            .config()
            .component(component)
            .is_some_and(|c| c.callback_url.is_some());
        if !has_callback {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(component, "no tokio runtime: the event is not pushed");
            return;
        };
        let emulator = self.clone();
        let component = component.to_owned();
        runtime.spawn(async move {
            if let Err(err) = emulator.push(&component, &message).await {
                tracing::warn!(component, %err, "event push failed");
            }
        });
    }

    /// Encrypts, signs and POSTs `message` to `component`'s callback URL, and counts
    /// the outcome.
    async fn push(&self, component: &str, message: &str) -> Result<(), String> {
        let Some(credentials) = self.config().component(component) else {
            return Err(format!("unknown component {component:?}"));
        };
        let Some(url) = credentials.callback_url.as_deref() else {
            return Err(format!("component {component:?} has no callback_url"));
        };
        let crypt = MsgCrypt::new(
            &credentials.token,
            &credentials.encoding_aes_key,
            &credentials.appid,
        )?;
        let timestamp = unix_now().to_string();
        let nonce = rand::random::<u32>().to_string();
        let sealed = crypt.seal(message, &timestamp, &nonce);
        let body = format!(
            "<xml><AppId>{}</AppId><Encrypt>{}</Encrypt></xml>",
            cdata(component),
            cdata(&sealed.encrypt)
        );
        let separator = if url.contains('?') { '&' } else { '?' };
        let target = format!(
            "{url}{separator}signature={}&timestamp={}&nonce={}&encrypt_type=aes&msg_signature={}",
            sealed.signature, sealed.timestamp, sealed.nonce, sealed.msg_signature
        );
        let outcome = self.send(url, &target, body).await;
        self.lock().record_push(component, outcome.is_ok());
        outcome
    }

    /// One POST, waiting for a free slot first.
    async fn send(&self, url: &str, target: &str, body: String) -> Result<(), String> {
        let pusher = &self.shared.pusher;
        let _permit = pusher
            .permits
            .acquire()
            .await
            .map_err(|_| "the push limiter is closed".to_owned())?;
        let response = pusher
            .client()?
            .post(target)
            .header(reqwest::header::CONTENT_TYPE, "text/xml")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {}", describe(&e)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("reading the answer of {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{url} answered HTTP {status}: {:?}", quoted(&text)));
        }
        if text != "success" {
            return Err(format!(
                "{url} answered {:?}, not \"success\"",
                quoted(&text)
            ));
        }
        Ok(())
    }
}

/// The verify ticket push WeChat sends every 10 minutes.
pub(crate) fn verify_ticket_message(component: &str, ticket: &str, now: u64) -> String {
    format!(
        "<xml><AppId>{}</AppId><CreateTime>{now}</CreateTime>\
         <InfoType><![CDATA[component_verify_ticket]]></InfoType>\
         <ComponentVerifyTicket>{}</ComponentVerifyTicket></xml>",
        cdata(component),
        cdata(ticket)
    )
}

/// The `authorized` (or, for an account authorized already, `updateauthorized`)
/// event. Without a pre-auth code from the test, a fresh one stands in for the one
/// the merchant's authorization page was opened with.
pub(crate) fn authorized_message(
    component: &str,
    authorizer: &str,
    outcome: &AuthorizeOutcome,
    pre_auth_code: Option<&str>,
    now: u64,
) -> String {
    let info_type = if outcome.updated {
        "updateauthorized"
    } else {
        "authorized"
    };
    let pre_auth_code = pre_auth_code.map_or_else(
        || format!("preauthcode@@@{:016x}", rand::random::<u64>()),
        str::to_owned,
    );
    format!(
        "<xml><AppId>{}</AppId><CreateTime>{now}</CreateTime>\
         <InfoType>{}</InfoType><AuthorizerAppid>{}</AuthorizerAppid>\
         <AuthorizationCode>{}</AuthorizationCode>\
         <AuthorizationCodeExpiredTime>{}</AuthorizationCodeExpiredTime>\
         <PreAuthCode>{}</PreAuthCode></xml>",
        cdata(component),
        cdata(info_type),
        cdata(authorizer),
        cdata(&outcome.authorization_code),
        now + AUTH_CODE_EXPIRES_IN,
        cdata(&pre_auth_code)
    )
}

/// The `unauthorized` event.
pub(crate) fn unauthorized_message(component: &str, authorizer: &str, now: u64) -> String {
    format!(
        "<xml><AppId>{}</AppId><CreateTime>{now}</CreateTime>\
         <InfoType><![CDATA[unauthorized]]></InfoType>\
         <AuthorizerAppid>{}</AuthorizerAppid></xml>",
        cdata(component),
        cdata(authorizer)
    )
}

/// `text` as a CDATA section; a `]]>` inside is split across two sections.
fn cdata(text: &str) -> String {
    format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>"))
}

/// What went wrong with a request, causes included, without reqwest's rendering of
/// the whole URL (query string and all).
fn describe(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    }
    .to_owned();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The start of an unexpected answer, for an error message.
fn quoted(text: &str) -> &str {
    match text.char_indices().nth(QUOTED_BODY) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::xml_field;

    #[test]
    fn messages_have_wechats_fields() {
        let ticket = verify_ticket_message("wxc", "ticket@@@abc", 1_700_000_000);
        assert_eq!(
            ticket,
            "<xml><AppId><![CDATA[wxc]]></AppId><CreateTime>1700000000</CreateTime>\
             <InfoType><![CDATA[component_verify_ticket]]></InfoType>\
             <ComponentVerifyTicket><![CDATA[ticket@@@abc]]></ComponentVerifyTicket></xml>"
        );
        let outcome = AuthorizeOutcome {
            authorization_code: "queryauthcode@@@x".to_owned(),
            expires_in: 3600,
            updated: false,
        };
        let event = authorized_message("wxc", "wxa", &outcome, Some("preauthcode@@@p"), 100);
        assert_eq!(xml_field(&event, "InfoType"), Some("authorized"));
        assert_eq!(xml_field(&event, "AuthorizerAppid"), Some("wxa"));
        assert_eq!(
            xml_field(&event, "AuthorizationCode"),
            Some("queryauthcode@@@x")
        );
        assert_eq!(
            xml_field(&event, "AuthorizationCodeExpiredTime"),
            Some("3700")
        );
        assert_eq!(xml_field(&event, "PreAuthCode"), Some("preauthcode@@@p"));
        let updated = AuthorizeOutcome {
            updated: true,
            ..outcome
        };
        let event = authorized_message("wxc", "wxa", &updated, None, 100);
        assert_eq!(xml_field(&event, "InfoType"), Some("updateauthorized"));
        assert!(xml_field(&event, "PreAuthCode").is_some_and(|p| p.starts_with("preauthcode@@@")));
        let gone = unauthorized_message("wxc", "wxa", 100);
        assert_eq!(xml_field(&gone, "InfoType"), Some("unauthorized"));
        assert_eq!(xml_field(&gone, "AuthorizerAppid"), Some("wxa"));
    }

    #[test]
    fn cdata_survives_its_terminator() {
        assert_eq!(cdata("a]]>b"), "<![CDATA[a]]]]><![CDATA[>b]]>");
        assert_eq!(quoted(&"x".repeat(500)).len(), QUOTED_BODY);
    }
}
