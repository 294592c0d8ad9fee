//! The wire to the wxtoken server: URLs, the bearer key, and one request's decoded
//! answer or [`Error`]. Knows nothing of caching; counts every request it sends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::header::RETRY_AFTER;
use reqwest::{RequestBuilder, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::Error;
use crate::credential::{Credential, TicketType};

/// What a cache slot holds: an app's access_token or one of its tickets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    AccessToken,
    Ticket(TicketType),
}

/// Sends requests to one wxtoken server with one key.
pub(crate) struct Transport {
    /// Shared connection pool; the caller's own when given to the builder.
    pub(crate) http: reqwest::Client,
    /// The server's base URL, checked to be http(s) with a path we can extend.
    pub(crate) base: Url,
    /// Exposed only on the line that sets the `Authorization` header.
    pub(crate) key: SecretString,
    /// Per request, so it also applies to a caller-supplied reqwest client.
    pub(crate) timeout: Duration,
    /// Every request sent, answered or not: what single flight and the cache save.
    pub(crate) requests: AtomicU64,
}

/// A token or ticket answer; refreshed (on invalidate) is not needed by the cache.
#[derive(Deserialize)]
struct Answer {
    #[serde(alias = "ticket")]
    access_token: String,
    expires_in: u64,
    expires_at: u64,
}

impl Transport {
    /// `{base}/v1/apps/{app}/{tail...}`, each segment percent-encoded.
    fn url(&self, app: &str, tail: &[&str]) -> Url {
        let mut url = self.base.clone();
        // The builder refused bases that cannot have a path, so this always applies.
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .extend(["v1", "apps", app])
                .extend(tail);
        }
        url
    }

    /// `GET .../access_token` or `.../ticket/{type}`, with `?min_ttl=` when given.
    pub(crate) async fn fetch(
        &self,
        app: &str,
        kind: &Kind,
        min_ttl: Option<u64>,
    ) -> Result<Credential, Error> {
        let mut url = match kind {
            Kind::AccessToken => self.url(app, &["access_token"]),
            Kind::Ticket(t) => self.url(app, &["ticket", t.as_str()]),
        };
        if let Some(secs) = min_ttl {
            url.query_pairs_mut()
                .append_pair("min_ttl", &secs.to_string());
        }
        // Taken before sending: the deadline then errs early, never late.
        let sent_at = Instant::now();
        let answer: Answer = self.send(app, self.http.get(url)).await?;
        Ok(credential(answer, sent_at))
    }

    /// `POST .../access_token/invalidate` or `.../ticket/{type}/invalidate`.
    pub(crate) async fn invalidate(
        &self,
        app: &str,
        kind: &Kind,
        dead: &str,
    ) -> Result<Credential, Error> {
        let (url, body) = match kind {
            Kind::AccessToken => (
                self.url(app, &["access_token", "invalidate"]),
                json!({ "access_token": dead }),
            ),
            Kind::Ticket(t) => (
                self.url(app, &["ticket", t.as_str(), "invalidate"]),
                json!({ "ticket": dead }),
            ),
        };
        let sent_at = Instant::now();
        let answer: Answer = self.send(app, self.http.post(url).json(&body)).await?;
        Ok(credential(answer, sent_at))
    }

    /// `POST .../jssdk/config` with `{"url", "ticket"}`.
    pub(crate) async fn jssdk_config<T: DeserializeOwned>(
        &self,
        app: &str,
        page_url: &str,
        ticket: &TicketType,
    ) -> Result<T, Error> {
        let url = self.url(app, &["jssdk", "config"]);
        let body: Value = json!({ "url": page_url, "ticket": ticket.as_str() });
        self.send(app, self.http.post(url).json(&body)).await
    }

    /// Sends with the key and timeout, and decodes a 2xx body as `T` or any other
    /// answer as an [`Error`].
    async fn send<T: DeserializeOwned>(
        &self,
        app: &str,
        request: RequestBuilder,
    ) -> Result<T, Error> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = request
            .bearer_auth(self.key.expose_secret())
            .timeout(self.timeout)
            .send()
            .await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await?;
        if !(200..300).contains(&status) {
            return Err(Error::from_response(status, &body, retry_after, app));
        }
        serde_json::from_slice(&body).map_err(|e| Error::Protocol {
            status,
            message: format!("the body is not the documented JSON: {e}"),
        })
    }
}

fn credential(answer: Answer, sent_at: Instant) -> Credential {
    Credential {
        value: answer.access_token.into(),
        expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(answer.expires_at),
        valid_until: sent_at + Duration::from_secs(answer.expires_in),
    }
}
