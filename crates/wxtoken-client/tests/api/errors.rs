//! The server's errors, mapped to variants grouped by what the caller does next.

use wxtoken_client::{Client, Error};

use crate::helpers::*;

#[tokio::test]
async fn an_unknown_key_is_unauthenticated() {
    let server = spawn().await;
    let client = server.client_with_key("wxt_no_such_key_anywhere");
    let answer = client.token("shop").await;
    let Err(error) = answer else {
        panic!("an unknown key gets no token: {answer:?}");
    };
    assert!(matches!(error, Error::Unauthenticated { .. }), "{error:?}");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn an_unknown_app_is_app_not_found() {
    let server = spawn().await;
    let answer = server.client().token("nope").await;
    let Err(error) = answer else {
        panic!("no such app: {answer:?}");
    };
    assert!(
        matches!(&error, Error::AppNotFound { app } if app == "nope"),
        "{error:?}"
    );
    assert!(error.to_string().contains("`nope`"), "{error}");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn an_app_outside_the_keys_list_is_forbidden() {
    let server = spawn().await;
    let answer = server.client_with_key(READ_ONLY_KEY).token("hr").await;
    assert!(matches!(answer, Err(Error::Forbidden { .. })), "{answer:?}");
}

#[tokio::test]
async fn wechat_refusing_the_app_is_an_upstream_error_with_its_errcode() {
    let server = spawn().await;
    let answer = server.client().token("broken").await;
    let Err(error) = answer else {
        panic!("WeChat does not know this appid: {answer:?}");
    };
    assert!(matches!(error, Error::Upstream { .. }), "{error:?}");
    assert_eq!(error.wechat_errcode(), Some(40013), "{error:?}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn an_unknown_ticket_type_is_a_bad_request() {
    let server = spawn().await;
    let answer = server.client().ticket("shop", "agent_config").await;
    assert!(
        matches!(answer, Err(Error::BadRequest { .. })),
        "{answer:?}"
    );
}

#[tokio::test]
async fn a_server_that_is_down_is_a_transport_error_to_retry() {
    let client = Client::new(&dead_base().await, KEY).expect("client");
    let answer = client.token("shop").await;
    let Err(error) = answer else {
        panic!("nothing listens: {answer:?}");
    };
    assert!(matches!(error, Error::Transport(_)), "{error:?}");
    assert!(error.is_retryable());
    assert_eq!(client.stats().requests, 1);
}
