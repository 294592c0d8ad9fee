//! The JS-SDK ticket endpoints: official `GET /cgi-bin/ticket/getticket`, WeCom's
//! corp ticket `GET /cgi-bin/get_jsapi_ticket` and app ticket
//! `GET /cgi-bin/ticket/get?type=agent_config`.
//!
//! Owns query parsing and the success shape, the same on all three:
//! `{"errcode":0,"errmsg":"ok","ticket":"...","expires_in":E}`.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::deliver;
use crate::Emulator;
use crate::state::{Ticket, WecomTicket, wechat_day};

/// `GET /cgi-bin/ticket/getticket?access_token=T&type=jsapi|wx_card`.
pub(crate) async fn official(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let config = emulator.config();
    let today = wechat_day(SystemTime::now());
    let (token, kind) = (param(&params, "access_token"), param(&params, "type"));
    deliver(
        &emulator,
        |state| state.official_ticket(config, token, kind, Instant::now(), today),
        ticket_response,
    )
    .await
}

/// `GET /cgi-bin/get_jsapi_ticket?access_token=T` (WeCom corp ticket, wx.config).
pub(crate) async fn corp(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    wecom(&emulator, WecomTicket::Corp, &params).await
}

/// `GET /cgi-bin/ticket/get?access_token=T&type=agent_config` (WeCom app ticket,
/// wx.agentConfig).
pub(crate) async fn agent(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    wecom(&emulator, WecomTicket::Agent, &params).await
}

async fn wecom(
    emulator: &Emulator,
    endpoint: WecomTicket,
    params: &HashMap<String, String>,
) -> Response {
    let config = emulator.config();
    let (token, kind) = (param(params, "access_token"), param(params, "type"));
    deliver(
        emulator,
        |state| state.wecom_ticket(config, endpoint, token, kind, Instant::now()),
        ticket_response,
    )
    .await
}

fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params.get(name).map(String::as_str)
}

fn ticket_response(ticket: Ticket) -> Response {
    Json(serde_json::json!({
        "errcode": 0,
        "errmsg": "ok",
        "ticket": ticket.ticket,
        "expires_in": ticket.expires_in,
    }))
    .into_response()
}
