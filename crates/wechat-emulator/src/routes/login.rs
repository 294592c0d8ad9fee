//! The login calls that carry the app secret: `GET /sns/jscode2session` (mini program
//! login: `{"session_key","openid"}`) and `GET /sns/oauth2/access_token` (web OAuth:
//! `{"access_token","expires_in","refresh_token","openid","scope"}`). Errors as WeChat
//! answers them (HTTP 200, errcode); checks live in `state::login`. Both wait out the
//! API latency, like the ordinary APIs: they are round trips to WeChat too.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::api_delay;
use crate::Emulator;
use crate::state::{LoginKind, LoginRequest};

/// `GET /sns/jscode2session?appid&secret&js_code&grant_type=authorization_code`
pub(crate) async fn jscode2session(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let req = request(&params, "js_code");
    api_delay(&emulator).await;
    let login = emulator
        .lock()
        .login_call(LoginKind::MiniProgram, &req, Instant::now());
    match login {
        Ok(login) => Json(serde_json::json!({
            "session_key": login.key,
            "openid": login.openid,
        }))
        .into_response(),
        Err(err) => err.into_response(),
    }
}

/// `GET /sns/oauth2/access_token?appid&secret&code&grant_type=authorization_code`
pub(crate) async fn oauth2_access_token(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let req = request(&params, "code");
    api_delay(&emulator).await;
    let login = emulator
        .lock()
        .login_call(LoginKind::Oauth, &req, Instant::now());
    match login {
        Ok(login) => Json(serde_json::json!({
            "access_token": login.key,
            "expires_in": 7200,
            "refresh_token": login.refresh_token,
            "openid": login.openid,
            "scope": "snsapi_base",
        }))
        .into_response(),
        Err(err) => err.into_response(),
    }
}

fn request<'a>(params: &'a HashMap<String, String>, code: &str) -> LoginRequest<'a> {
    LoginRequest {
        appid: params.get("appid").map(String::as_str),
        secret: params.get("secret").map(String::as_str),
        code: params.get(code).map(String::as_str),
        grant_type: params.get("grant_type").map(String::as_str),
    }
}
