//! Recovering an authorizer's refresh token that WeChat refused (61023) from
//! `api_get_authorizer_list`, before the merchant is asked to authorize again.
//!
//! The usual cause is an `api_authorizer_token` call that WeChat processed (rotating the
//! refresh token) but whose answer never arrived: WeChat's list still holds the new
//! refresh token. The list is read at most once per [`SCAN_INTERVAL`] per component, and
//! authorizers refused meanwhile share the scan in flight (a platform with 100,000
//! authorizers has 200 pages of them). An authorizer refused after a scan, within the
//! interval, is answered from that scan if it began after the authorizer's first
//! refusal; otherwise its refresh is retried with backoff until the next scan may run,
//! rather than the merchant being asked to authorize again on a list read before the
//! refusal.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;
use tracing::warn;

use super::Ctx;
use super::platform::{AuthorizerLink, AuthorizerMap, ListPages};
use super::slot::Slot;
use crate::credential::Fingerprint;

/// A component's authorizer list is read at most once in this long: refused refresh
/// tokens arriving in a burst share one scan, and repeated refusals never turn into
/// repeated full scans (200 calls for 100,000 authorizers). A refusal within it, after
/// the scan, waits for the next one (see [`Lookup::Deferred`]).
pub(crate) const SCAN_INTERVAL: Duration = Duration::from_secs(600);

/// What one scan found: the authorizers known here whose listed refresh token differs
/// from the one held (those are the ones a scan can recover), or why it failed.
type Scan = Result<Arc<HashMap<String, String>>, String>;

/// One component's scans of its authorizer list.
pub(crate) struct Recovery {
    /// The component's authorizers, to compare the list with (weak: they hold this).
    authorizers: Weak<AuthorizerMap>,
    /// Held only to start or join a scan, never across an await.
    state: Mutex<ScanState>,
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct ScanState {
    /// When the last scan started (failed ones too).
    last_started: Option<Instant>,
    /// The scan in flight, which refusals meanwhile wait for.
    flight: Option<Arc<OnceCell<Scan>>>,
    /// Authorizers refused while the scan is in flight: their listed tokens are kept
    /// whatever they hold (their refusal may come after their page was read).
    waiting: HashSet<String>,
    /// What the last scan that succeeded found, and when it began.
    last: Option<(Instant, Arc<HashMap<String, String>>)>,
    /// Authorizers refused within the interval after a scan, with when they were first
    /// refused: a scan that began later answers for them.
    deferred: HashMap<String, Instant>,
}

/// What the list says of one refused authorizer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// A refresh token other than the refused one.
    Found(String),
    /// Not listed (no longer authorized), or listed with the refused token.
    NotListed,
    /// The list was read less than [`SCAN_INTERVAL`] ago, before this refusal: it may
    /// be read again in this long. The refresh is retried with backoff meanwhile; a
    /// retry after that reads it.
    Deferred(Duration),
    /// The scan failed.
    Failed(String),
}

impl Recovery {
    pub fn new(authorizers: Weak<AuthorizerMap>) -> Self {
        Self {
            authorizers,
            state: Mutex::new(ScanState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ScanState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What WeChat's list holds for `appid` instead of `refused`: from the scan in
    /// flight, from the last scan if it began after `appid` was first refused, or from a
    /// new one unless the last began less than [`SCAN_INTERVAL`] ago.
    pub async fn lookup(&self, ctx: &Ctx, component: &Slot, appid: &str, refused: &str) -> Lookup {
        let cell = {
            let mut state = self.state();
            let cell = match &state.flight {
                Some(cell) => cell.clone(),
                None => {
                    let now = Instant::now();
                    if let Some(at) = state
                        .last_started
                        .filter(|at| now.duration_since(*at) < SCAN_INTERVAL)
                    {
                        let first = *state.deferred.entry(appid.to_owned()).or_insert(now);
                        let answered = state
                            .last
                            .as_ref()
                            .filter(|(began, _)| *began >= first)
                            .map(|(_, listed)| listed.clone());
                        return match answered {
                            Some(listed) => {
                                state.deferred.remove(appid);
                                found_in(&listed, appid, refused)
                            }
                            None => Lookup::Deferred(SCAN_INTERVAL - now.duration_since(at)),
                        };
                    }
                    state.last_started = Some(now);
                    let cell = Arc::new(OnceCell::new());
                    state.flight = Some(cell.clone());
                    cell
                }
            };
            state.waiting.insert(appid.to_owned());
            cell
        };
        let scan = cell.get_or_init(|| self.scan(ctx, component)).await.clone();
        {
            let mut state = self.state();
            if state.flight.as_ref().is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                state.flight = None;
                state.waiting.clear();
                if let (Ok(listed), Some(began)) = (&scan, state.last_started) {
                    state.last = Some((began, listed.clone()));
                }
            }
            state.deferred.remove(appid);
        }
        match scan {
            Err(e) => Lookup::Failed(e),
            Ok(listed) => found_in(&listed, appid, refused),
        }
    }

    /// Reads the whole list, keeping the tokens of authorizers known here that differ
    /// from what they hold (or that are waiting for this scan).
    async fn scan(&self, ctx: &Ctx, component: &Slot) -> Scan {
        let mut pages = ListPages::default();
        let mut differing = HashMap::new();
        loop {
            let list = match pages.next(ctx, component).await {
                Ok(Some(list)) => list,
                Ok(None) => break,
                Err(e) => return Err(e.to_string()),
            };
            let Some(authorizers) = self.authorizers.upgrade() else {
                break;
            };
            let waiting = self.state().waiting.clone();
            let authorizers = authorizers.read().unwrap_or_else(|p| p.into_inner());
            for listed in list {
                let Some(known) = authorizers.get(&listed.appid) else {
                    continue;
                };
                let held = known.link().record().refresh_token != listed.refresh_token;
                if held || waiting.contains(&listed.appid) {
                    differing.insert(listed.appid, listed.refresh_token);
                }
            }
        }
        Ok(Arc::new(differing))
    }
}

/// What a scan's findings say of `appid`, refused with `refused`.
fn found_in(listed: &HashMap<String, String>, appid: &str, refused: &str) -> Lookup {
    match listed.get(appid) {
        Some(token) if token != refused => Lookup::Found(token.clone()),
        _ => Lookup::NotListed,
    }
}

/// What became of a refused refresh token.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Recovered {
    /// Another one was found and stored: retry the refresh with it at once.
    Yes,
    /// The list holds no other one (or could not be read): the merchant must authorize
    /// again.
    No,
    /// The list is read again after the scan interval: fail this round (its backoff
    /// retries it), without asking the merchant to authorize again.
    Later,
}

/// On a 61023 for the authorizer of `slot`: takes the refresh token WeChat's list holds
/// for it if that is not `refused` (stored like a rotated one).
pub(super) async fn recover(
    slot: &Slot,
    ctx: &Ctx,
    link: &AuthorizerLink,
    refused: &str,
) -> Recovered {
    let (Some(appid), Some(component)) = (slot.key.authorizer.as_deref(), slot.parent.as_ref())
    else {
        return Recovered::No;
    };
    let app = &slot.key.app;
    let found = match link.recovery.lookup(ctx, component, appid, refused).await {
        Lookup::Found(token) => token,
        Lookup::NotListed => {
            warn!(credential = %slot.key, refused = %Fingerprint(refused), "WeChat's authorizer list holds no other refresh token for the authorizer");
            return Recovered::No;
        }
        Lookup::Deferred(wait) => {
            warn!(credential = %slot.key, refused = %Fingerprint(refused), next_read_in_secs = wait.as_secs(), "WeChat's authorizer list was read before this refusal and may be read again later; retrying the refresh with backoff until then");
            return Recovered::Later;
        }
        Lookup::Failed(error) => {
            warn!(credential = %slot.key, refused = %Fingerprint(refused), error = %error, "could not read WeChat's authorizer list to recover the refresh token");
            return Recovered::No;
        }
    };
    warn!(
        credential = %slot.key,
        refused = %Fingerprint(refused),
        recovered = %Fingerprint(&found),
        "WeChat refused the authorizer's refresh token; recovered another from api_get_authorizer_list, retrying with it"
    );
    metrics::counter!("wxtoken_authorizer_refresh_token_recovered_total", "app" => app.clone())
        .increment(1);
    if let Err(e) = link.persist_refresh_token(ctx, app, &found).await {
        // Held in memory; the refresh about to be retried stores what WeChat rotates.
        warn!(credential = %slot.key, error = %e, "could not store the recovered refresh token");
    }
    Recovered::Yes
}
