//! Local budgets for WeCom's ticket limits: per corp 400 and per app 100 ticket fetches
//! in any hour. Counting them here means a refresh storm is stopped before WeChat has to
//! refuse it (and before its refusal blocks every other app of the corp).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Ctx, Failure};
use crate::config::AppSettings;
use crate::credential::unix_now_ms;
use crate::wechat::{ErrorClass, UpstreamError};

/// WeCom: a corp may fetch tickets 400 times an hour.
pub const CORP_TICKETS_PER_HOUR: usize = 400;
/// WeCom: one app may fetch tickets 100 times an hour.
pub const APP_TICKETS_PER_HOUR: usize = 100;
const HOUR_MS: u64 = 3_600_000;

fn used_up(limit: usize, what: &str, whose: &str) -> Arc<Failure> {
    Arc::new(Failure::Upstream(UpstreamError {
        class: ErrorClass::RateLimited,
        errcode: None,
        message: format!(
            "WeCom allows {limit} ticket fetches an hour per {what}; {whose} hour's are used \
             up, so none was sent"
        ),
        rid: None,
    }))
}

/// Sliding one-hour windows of fetch times, by "corp:ID" and "app:ID".
#[derive(Debug, Default)]
pub(crate) struct TicketBudget {
    windows: Mutex<HashMap<String, VecDeque<u64>>>,
}

impl TicketBudget {
    /// Reserves one ticket fetch for `app` (a WeCom app) here and, with a shared store,
    /// in the fleet's budgets, or says which limit is used up. A store that does not
    /// answer leaves the local count in charge.
    pub async fn take(&self, ctx: &Ctx, app: &AppSettings) -> Result<(), Arc<Failure>> {
        self.take_local(app)?;
        let Some(coordination) = ctx.store.coordination() else {
            return Ok(());
        };
        let corp = format!("corp:{}", app.appid);
        for (scope, limit, what) in [
            (corp.as_str(), CORP_TICKETS_PER_HOUR, "corp"),
            (app.id.as_str(), APP_TICKETS_PER_HOUR, "app"),
        ] {
            match coordination
                .take_budget(
                    scope,
                    "tickets",
                    limit as u64,
                    Duration::from_millis(HOUR_MS),
                )
                .await
            {
                Ok(true) => {}
                Ok(false) => return Err(used_up(limit, what, "the fleet's")),
                Err(e) => {
                    tracing::debug!(error = %e, "the fleet's ticket budget could not be checked");
                }
            }
        }
        Ok(())
    }

    /// This instance's own sliding windows.
    fn take_local(&self, app: &AppSettings) -> Result<(), Arc<Failure>> {
        let now_ms = unix_now_ms();
        let corp = format!("corp:{}", app.appid);
        let own = format!("app:{}", app.id);
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        for (key, limit, what) in [
            (&corp, CORP_TICKETS_PER_HOUR, "corp"),
            (&own, APP_TICKETS_PER_HOUR, "app"),
        ] {
            let window = windows.entry(key.clone()).or_default();
            while window
                .front()
                .is_some_and(|t| now_ms.saturating_sub(*t) >= HOUR_MS)
            {
                window.pop_front();
            }
            if window.len() >= limit {
                return Err(used_up(limit, what, "this"));
            }
        }
        for key in [corp, own] {
            windows.entry(key).or_default().push_back(now_ms);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppKind;
    use secrecy::SecretString;

    fn app(id: &str) -> AppSettings {
        AppSettings {
            id: id.into(),
            kind: AppKind::Wecom { agentid: 1 },
            appid: "ww1".into(),
            secret: SecretString::from("s"),
            message: None,
            quota: Default::default(),
        }
    }

    #[test]
    fn an_app_gets_100_an_hour_and_a_corp_400() {
        let budget = TicketBudget::default();
        for i in 0..APP_TICKETS_PER_HOUR {
            budget
                .take_local(&app("a"))
                .unwrap_or_else(|_| panic!("fetch {i} is within budget"));
        }
        let refused = budget.take_local(&app("a")).expect_err("101st in an hour");
        assert_eq!(refused.class(), ErrorClass::RateLimited);
        for other in ["b", "c", "d"] {
            for _ in 0..APP_TICKETS_PER_HOUR {
                budget.take_local(&app(other)).expect("own budget");
            }
        }
        // 400 for the corp now used: a fifth app of it gets nothing.
        assert!(budget.take_local(&app("e")).is_err());
    }
}
