//! Reporting a dead token: one report, a fresh token that WeChat accepts.

use wechat_emulator::TokenCheck;
use wxtoken_client::{Error, TicketType};

use crate::helpers::*;

#[tokio::test]
async fn a_revoked_token_is_replaced_by_one_wechat_accepts() {
    let server = spawn().await;
    let client = server.client();
    let dead = client.token("shop").await.expect("token");
    server.wechat().revoke_token(dead.value());
    assert_eq!(
        server.wechat().check_token(dead.value()),
        TokenCheck::Invalid
    );

    let fresh = client.invalidate("shop", &dead).await.expect("invalidate");

    assert_ne!(fresh.value(), dead.value());
    assert_eq!(
        server.wechat().check_token(fresh.value()),
        TokenCheck::Valid
    );
    // The cache now serves the fresh token.
    let next = client.token("shop").await.expect("token");
    assert_eq!(next.value(), fresh.value());
    assert_eq!(client.stats().requests, 2, "one GET, one POST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_reports_of_the_same_dead_token_send_one_request() {
    let server = spawn().await;
    let client = server.client();
    let dead = client.token("shop").await.expect("token");
    server.wechat().revoke_token(dead.value());
    let upstream = server.upstream_calls();

    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (client, dead) = (client.clone(), dead.clone());
            tokio::spawn(async move { client.invalidate("shop", &dead).await })
        })
        .collect();
    let mut fresh = Vec::new();
    for task in tasks {
        fresh.push(task.await.expect("task").expect("invalidate"));
    }

    assert!(fresh.iter().all(|t| t.value() == fresh[0].value()));
    assert_eq!(
        server.wechat().check_token(fresh[0].value()),
        TokenCheck::Valid
    );
    assert_eq!(client.stats().requests, 2, "one GET, one POST");
    assert_eq!(server.upstream_calls(), upstream + 1);
    // A late report of the same token is answered from the cache too.
    let late = client.invalidate("shop", &dead).await.expect("invalidate");
    assert_eq!(late.value(), fresh[0].value());
    assert_eq!(client.stats().requests, 2);
}

#[tokio::test]
async fn a_ticket_can_be_reported_too() {
    let server = spawn().await;
    let client = server.client();
    let ticket = client
        .ticket("shop", TicketType::JSAPI)
        .await
        .expect("ticket");
    let answer = client
        .invalidate_ticket("shop", &ticket)
        .await
        .expect("invalidate");
    assert_eq!(answer.kind(), &TicketType::JSAPI);
    assert_eq!(
        server.wechat().check_ticket(answer.value()),
        TokenCheck::Valid
    );
    assert_eq!(client.stats().requests, 2);
}

#[tokio::test]
async fn reporting_needs_the_invalidate_scope() {
    let server = spawn().await;
    let client = server.client_with_key(READ_ONLY_KEY);
    let token = client.token("shop").await.expect("read is allowed");
    let answer = client.invalidate("shop", &token).await;
    assert!(matches!(answer, Err(Error::Forbidden { .. })), "{answer:?}");
    // A reported token is no longer handed out from memory, even when the report
    // failed: the next call asks the server, which still has it.
    let again = client.token("shop").await.expect("token");
    assert_eq!(again.value(), token.value());
    assert_eq!(client.stats().requests, 3);
}
