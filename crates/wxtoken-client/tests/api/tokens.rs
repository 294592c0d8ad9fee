//! The near cache: what is served from memory, and what makes a request.

use std::time::{Duration, SystemTime};

use wechat_emulator::TokenCheck;
use wxtoken_client::{Client, TicketType};

use crate::helpers::*;

#[tokio::test]
async fn a_second_token_is_served_from_the_near_cache() {
    let server = spawn().await;
    let client = server.client();
    let first = client.token("shop").await.expect("token");
    let upstream = server.upstream_calls();

    let second = client.token("shop").await.expect("token");
    let from_a_clone = client.clone().token("shop").await.expect("token");

    assert_eq!(second.value(), first.value());
    assert_eq!(from_a_clone.value(), first.value());
    let stats = client.stats();
    assert_eq!(stats.requests, 1, "{stats:?}");
    assert_eq!(stats.cache_hits, 2, "{stats:?}");
    assert_eq!(server.upstream_calls(), upstream);
    assert_eq!(
        server.wechat().check_token(first.value()),
        TokenCheck::Valid
    );
}

#[tokio::test]
async fn a_token_carries_the_servers_expiry() {
    let server = spawn().await;
    let token = server.client().token("shop").await.expect("token");
    assert!(token.expires_in() > Duration::from_secs(7100), "{token:?}");
    assert!(token.expires_in() <= Duration::from_secs(7200), "{token:?}");
    let until = token
        .expires_at()
        .duration_since(SystemTime::now())
        .expect("in the future");
    assert!(until > Duration::from_secs(7100), "{token:?}");
}

#[tokio::test]
async fn a_caller_needing_more_than_the_cache_holds_makes_a_request_with_min_ttl() {
    // Every stable_token call renews, so the server can meet any min_ttl by refreshing.
    let server = spawn_with(wechat_with(|c| c.overlap = Duration::from_secs(7200))).await;
    let client = server.client();
    client.token("shop").await.expect("token");

    let long = client
        .token_with("shop", Duration::from_secs(7199))
        .await
        .expect("the server meets min_ttl");

    assert_eq!(client.stats().requests, 2);
    assert!(long.expires_in() >= Duration::from_secs(7190), "{long:?}");
    assert_eq!(server.wechat().check_token(long.value()), TokenCheck::Valid);
    // The long-lived token is now what the cache serves.
    let cached = client.token("shop").await.expect("token");
    assert_eq!(cached.value(), long.value());
    assert_eq!(client.stats().requests, 2);
}

#[tokio::test]
async fn a_token_with_less_than_the_margin_left_is_never_served_from_the_cache() {
    let server = spawn_with(wechat_with(|c| c.expires_in = 30)).await;
    let client = server.client();
    client.token("shop").await.expect("token");
    client.token("shop").await.expect("token");
    let stats = client.stats();
    assert_eq!((stats.requests, stats.cache_hits), (2, 0), "{stats:?}");

    // A caller content with less is served from the cache.
    let lenient = Client::builder(&server.base, KEY)
        .min_ttl(Duration::from_secs(5))
        .build()
        .expect("client");
    lenient.token("shop").await.expect("token");
    lenient.token("shop").await.expect("token");
    assert_eq!(lenient.stats().requests, 1);
}

#[tokio::test]
async fn a_ticket_is_cached_like_a_token_and_valid_at_wechat() {
    let server = spawn().await;
    let client = server.client();
    let ticket = client
        .ticket("shop", TicketType::JSAPI)
        .await
        .expect("ticket");
    let again = client.ticket("shop", "jsapi").await.expect("ticket");

    assert_eq!(ticket.kind(), &TicketType::JSAPI);
    assert_eq!(again.value(), ticket.value());
    assert_eq!(client.stats().requests, 1);
    assert_eq!(
        server.wechat().check_ticket(ticket.value()),
        TokenCheck::Valid
    );
    assert!(ticket.expires_in() > Duration::from_secs(7000));
    // The token and the ticket are separate slots.
    client.token("shop").await.expect("token");
    assert_eq!(client.stats().requests, 2);
}

/// The emulator of [`wechat`] with `change` applied.
fn wechat_with(change: impl FnOnce(&mut wechat_emulator::Config)) -> wechat_emulator::Config {
    let mut config = wechat();
    change(&mut config);
    config
}
