//! [`Client`] (cheap to clone, one per process is enough), its [`ClientBuilder`], and
//! [`Stats`]. Each public call is a cache look-up or a request through the single-flight
//! cache in `cache`, over the wire in `transport`.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use reqwest::Url;
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};

use crate::Error;
use crate::cache::{Cache, Key, Step};
use crate::credential::{AgentConfig, Credential, JssdkConfig, Ticket, TicketType, Token};
use crate::transport::{Kind, Transport};
use crate::wechat::TokenRejection;

/// The near cache hands out a value only while it has more than this left, so a caller
/// never gets a token that dies during the WeChat call it is about to make. The server
/// refreshes 5-10 minutes ahead, so a minute costs no extra requests in normal running.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(60);

/// Whole-request timeout: above the server's default `min_ttl_wait_secs` (10 s) plus one
/// upstream call (its default `request_timeout_ms`, 10 s), so a cold token that the
/// server is still fetching is not given up on.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connect timeout: the server is normally on the same network; a slow connect means it
/// is down, and failing fast lets the caller retry elsewhere.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// An async client for one wxtoken server, holding one client key.
///
/// Cloning is cheap and clones share the near cache, the single-flight state and the
/// connection pool: create one per process and clone it where needed. `Debug` never
/// shows the key.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// In an `Arc` of its own so that request tasks can outlive the caller's future.
    transport: Arc<Transport>,
    cache: Arc<Cache>,
    /// The near cache's default margin ([`DEFAULT_MIN_TTL`] unless set).
    min_ttl: Duration,
    /// `with_token` calls made a second time after a token rejection.
    retries: AtomicU64,
}

/// Counters of one [`Client`] (and its clones) since it was built: what the near cache
/// and single flight saved, for tests and for a service's own metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// HTTP requests sent to the server, failed ones included.
    pub requests: u64,
    /// Token and ticket look-ups answered from the near cache (and reports of a token
    /// that was already reported and replaced).
    pub cache_hits: u64,
    /// Look-ups and reports that waited on a request another caller had started.
    pub coalesced: u64,
    /// [`Client::with_token`] closures called a second time after a token rejection.
    pub retries: u64,
}

impl Client {
    /// A client with the defaults ([`DEFAULT_MIN_TTL`], [`DEFAULT_TIMEOUT`],
    /// [`DEFAULT_CONNECT_TIMEOUT`]) for the server at `base_url` (e.g.
    /// `http://127.0.0.1:7200`), authenticating with `key`.
    ///
    /// Fails with [`Error::InvalidConfig`] when `base_url` is not an http(s) URL or the
    /// key is empty; nothing is sent until the first call.
    ///
    /// ```
    /// let client = wxtoken_client::Client::new("http://127.0.0.1:7200", "wxt_dev_only_plaintext")?;
    /// # Ok::<(), wxtoken_client::Error>(())
    /// ```
    pub fn new(base_url: &str, key: impl Into<SecretString>) -> Result<Client, Error> {
        Client::builder(base_url, key).build()
    }

    /// A [`ClientBuilder`] to set timeouts, the near cache's margin or an HTTP client.
    pub fn builder(base_url: &str, key: impl Into<SecretString>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.to_owned(),
            key: key.into(),
            min_ttl: DEFAULT_MIN_TTL,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            http: None,
        }
    }

    /// The access_token of `app` (the `id` of an `[[apps]]` entry on the server).
    ///
    /// Served from the near cache while it has more than the client's `min_ttl` left
    /// (by the server's `expires_in`, on this machine's monotonic clock); otherwise one
    /// request goes out, however many tasks ask at once, and they all get its answer
    /// or its error.
    pub async fn token(&self, app: &str) -> Result<Token, Error> {
        self.lookup(app, Kind::AccessToken, self.inner.min_ttl, None)
            .await
            .map(Token)
    }

    /// As [`Client::token`], for a caller that needs the token to live at least
    /// `min_ttl` more (a long job). When that is more than the client's default, the
    /// server is asked for it (`?min_ttl=`): it waits up to its `min_ttl_wait_secs` for a
    /// refresh, and answers [`Error::Unavailable`] if none comes. At most 7200 s.
    pub async fn token_with(&self, app: &str, min_ttl: Duration) -> Result<Token, Error> {
        let server_min_ttl = (min_ttl > self.inner.min_ttl).then(|| whole_seconds(min_ttl));
        self.lookup(app, Kind::AccessToken, min_ttl, server_min_ttl)
            .await
            .map(Token)
    }

    /// Reports `dead`, a token WeChat rejected (40001, 40014 or 42001), and returns the
    /// token to use instead. Needs the key's `invalidate` scope.
    ///
    /// The server refreshes only if `dead` is still its current token, so reports cost
    /// at most one upstream call. Here too, many tasks reporting the same token send one
    /// request, and a report of a token already reported and replaced is answered from
    /// the near cache. The cache takes the answer only if it is newer than what it holds.
    pub async fn invalidate(&self, app: &str, dead: &Token) -> Result<Token, Error> {
        self.report(app, Kind::AccessToken, &dead.0)
            .await
            .map(Token)
    }

    /// The ticket of type `kind` ([`TicketType::JSAPI`], `"wx_card"`...) of `app`, with
    /// the same near cache and single flight as [`Client::token`].
    pub async fn ticket(&self, app: &str, kind: impl Into<TicketType>) -> Result<Ticket, Error> {
        let kind = kind.into();
        let credential = self
            .lookup(app, Kind::Ticket(kind.clone()), self.inner.min_ttl, None)
            .await?;
        Ok(Ticket { kind, credential })
    }

    /// As [`Client::ticket`] with at least `min_ttl` left, as [`Client::token_with`].
    pub async fn ticket_with(
        &self,
        app: &str,
        kind: impl Into<TicketType>,
        min_ttl: Duration,
    ) -> Result<Ticket, Error> {
        let kind = kind.into();
        let server_min_ttl = (min_ttl > self.inner.min_ttl).then(|| whole_seconds(min_ttl));
        let credential = self
            .lookup(app, Kind::Ticket(kind.clone()), min_ttl, server_min_ttl)
            .await?;
        Ok(Ticket { kind, credential })
    }

    /// Reports a ticket that failed and returns the one to use instead, as
    /// [`Client::invalidate`] does for tokens.
    pub async fn invalidate_ticket(&self, app: &str, dead: &Ticket) -> Result<Ticket, Error> {
        let credential = self
            .report(app, Kind::Ticket(dead.kind.clone()), &dead.credential)
            .await?;
        Ok(Ticket {
            kind: dead.kind.clone(),
            credential,
        })
    }

    /// The signed `wx.config` of the page at `url` (absolute http(s); its `#fragment` is
    /// dropped), made by the server with the app's jsapi ticket. Never cached: each call
    /// has a fresh nonce and timestamp.
    pub async fn jssdk_config(&self, app: &str, url: &str) -> Result<JssdkConfig, Error> {
        self.inner
            .transport
            .jssdk_config(app, url, &TicketType::JSAPI)
            .await
    }

    /// The signed `wx.agentConfig` of the page at `url`, for a WeCom app (made with its
    /// agent_config ticket). An official account's app answers [`Error::BadRequest`].
    pub async fn agent_config(&self, app: &str, url: &str) -> Result<AgentConfig, Error> {
        self.inner
            .transport
            .jssdk_config(app, url, &TicketType::AGENT_CONFIG)
            .await
    }

    /// Calls `call` with the token of `app`; if the call fails with a token rejection
    /// ([`TokenRejection::is_token_rejected`], e.g. WeChat's 40001), reports the token
    /// ([`Client::invalidate`]) and calls once more with the fresh one, returning that
    /// second result whatever it is. WeChat's own advice, in one line.
    ///
    /// Errors getting or reporting the token come back through `E: From<Error>`; a
    /// report that fails replaces the rejection. [`CallError`](crate::CallError) is a
    /// ready-made `E` for closures that call WeChat with reqwest.
    ///
    /// ```no_run
    /// use wxtoken_client::{CallError, Client, WechatError};
    ///
    /// # async fn run(client: Client) -> Result<(), CallError> {
    /// let wechat = reqwest::Client::new();
    /// let wechat = &wechat; // each call's future borrows it
    /// let sent = client
    ///     .with_token("shop", |token| async move {
    ///         let answer: serde_json::Value = wechat
    ///             .post("https://api.weixin.qq.com/cgi-bin/message/custom/send")
    ///             .query(&[("access_token", token.value())])
    ///             .json(&serde_json::json!({"touser": "o123", "msgtype": "text",
    ///                                        "text": {"content": "hello"}}))
    ///             .send()
    ///             .await?
    ///             .json()
    ///             .await?;
    ///         Ok::<_, CallError>(WechatError::check(answer)?)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn with_token<T, E, F, Fut>(&self, app: &str, mut call: F) -> Result<T, E>
    where
        F: FnMut(Token) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: TokenRejection + From<Error>,
    {
        let token = self.token(app).await?;
        match call(token.clone()).await {
            Err(rejection) if rejection.is_token_rejected() => {
                let fresh = self.invalidate(app, &token).await?;
                self.inner.retries.fetch_add(1, Ordering::Relaxed);
                call(fresh).await
            }
            answer => answer,
        }
    }

    /// The counters since this client was built, its clones included.
    pub fn stats(&self) -> Stats {
        Stats {
            requests: self.inner.transport.requests.load(Ordering::Relaxed),
            cache_hits: self.inner.cache.hits.load(Ordering::Relaxed),
            coalesced: self.inner.cache.coalesced.load(Ordering::Relaxed),
            retries: self.inner.retries.load(Ordering::Relaxed),
        }
    }

    /// The server's base URL, as given to the builder.
    pub fn base_url(&self) -> &str {
        self.inner.transport.base.as_str()
    }

    async fn lookup(
        &self,
        app: &str,
        kind: Kind,
        margin: Duration,
        server_min_ttl: Option<u64>,
    ) -> Result<Credential, Error> {
        let key = Key {
            app: app.to_owned(),
            kind,
        };
        let transport = Arc::clone(&self.inner.transport);
        let (app, kind) = (key.app.clone(), key.kind.clone());
        let fetch =
            move || async move { transport.fetch(&app, &kind, server_min_ttl).await }.boxed();
        match self.inner.cache.get(&key, margin, server_min_ttl, fetch) {
            Step::Ready(credential) => Ok(credential),
            Step::Wait(flight) => flight.await,
        }
    }

    async fn report(&self, app: &str, kind: Kind, dead: &Credential) -> Result<Credential, Error> {
        let key = Key {
            app: app.to_owned(),
            kind,
        };
        let transport = Arc::clone(&self.inner.transport);
        let (app, kind, value) = (key.app.clone(), key.kind.clone(), dead.value.clone());
        let post = move || async move { transport.invalidate(&app, &kind, &value).await }.boxed();
        let margin = self.inner.min_ttl;
        match self.inner.cache.invalidate(&key, &dead.value, margin, post) {
            Step::Ready(credential) => Ok(credential),
            Step::Wait(flight) => flight.await,
        }
    }
}

/// `min_ttl` as the server takes it: whole seconds, rounded up so the promise holds.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url())
            .field("key", &"<redacted>")
            .field("min_ttl", &self.inner.min_ttl)
            .field("timeout", &self.inner.transport.timeout)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Settings for a [`Client`]; from [`Client::builder`]. `Debug` never shows the key.
#[derive(Debug)]
#[must_use = "a builder does nothing until .build()"]
pub struct ClientBuilder {
    base_url: String,
    key: SecretString,
    min_ttl: Duration,
    timeout: Duration,
    connect_timeout: Duration,
    http: Option<reqwest::Client>,
}

impl ClientBuilder {
    /// The near cache hands out a token or ticket only while it has more than this left
    /// (default [`DEFAULT_MIN_TTL`]); [`Client::token_with`] overrides it per call.
    pub fn min_ttl(mut self, min_ttl: Duration) -> Self {
        self.min_ttl = min_ttl;
        self
    }

    /// Gives up on a request after this long (default [`DEFAULT_TIMEOUT`]); applies to a
    /// client given with [`ClientBuilder::http_client`] too.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Gives up connecting after this long (default [`DEFAULT_CONNECT_TIMEOUT`]); not
    /// applied to a client given with [`ClientBuilder::http_client`], which keeps its
    /// own.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sends through this reqwest client (its pool, proxy, TLS roots) instead of a new
    /// one.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// The client, or [`Error::InvalidConfig`] naming what is wrong (the key itself is
    /// never in the message).
    pub fn build(self) -> Result<Client, Error> {
        let base = Url::parse(&self.base_url).map_err(|e| {
            Error::InvalidConfig(format!("base URL `{}` is not a URL: {e}", self.base_url))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(Error::InvalidConfig(format!(
                "base URL `{}` must be http:// or https://",
                self.base_url
            )));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(Error::InvalidConfig(format!(
                "base URL `{}` must not have a query or a fragment",
                self.base_url
            )));
        }
        let key = self.key.expose_secret();
        if key.trim().is_empty() {
            return Err(Error::InvalidConfig("the client key is empty".into()));
        }
        if HeaderValue::from_str(&format!("Bearer {key}")).is_err() {
            return Err(Error::InvalidConfig(
                "the client key has characters an HTTP header cannot carry".into(),
            ));
        }
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .connect_timeout(self.connect_timeout)
                .build()
                .map_err(|e| {
                    Error::InvalidConfig(format!("could not build the HTTP client: {e}"))
                })?,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                transport: Arc::new(Transport {
                    http,
                    base,
                    key: self.key,
                    timeout: self.timeout,
                    requests: AtomicU64::new(0),
                }),
                cache: Arc::new(Cache::default()),
                min_ttl: self.min_ttl,
                retries: AtomicU64::new(0),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bases_and_keys_are_refused_without_showing_the_key() {
        for base in [
            "127.0.0.1:7200",
            "ftp://host",
            "http://host/?a=1",
            "not a url",
        ] {
            let e = Client::new(base, "wxt_some_key").expect_err(base);
            assert!(matches!(e, Error::InvalidConfig(_)), "{base}: {e}");
        }
        assert!(Client::new("http://host", "  ").is_err());
        let e = Client::new("http://host", "wxt_bad\nkey").expect_err("newline");
        assert!(!e.to_string().contains("wxt_bad"), "{e}");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = "wxt_secret_key_0123456789";
        let builder = Client::builder("http://127.0.0.1:7200/", key);
        assert!(!format!("{builder:?}").contains(key));
        let client = builder.build().expect("valid");
        assert!(!format!("{client:?}").contains(key));
    }

    #[test]
    fn min_ttl_is_rounded_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_secs(600)), 600);
        assert_eq!(whole_seconds(Duration::from_millis(600_001)), 601);
    }
}
