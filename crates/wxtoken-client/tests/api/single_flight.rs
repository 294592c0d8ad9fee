//! Single flight inside the client: one request per app however many tasks ask.

use std::collections::HashSet;

use futures::future::join_all;
use wxtoken_client::Error;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_calls_on_a_cold_client_make_one_request() {
    let server = spawn().await;
    let client = server.client();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.token("shop").await })
        })
        .collect();
    let mut values = HashSet::new();
    for task in tasks {
        let token = task.await.expect("task").expect("token");
        values.insert(token.value().to_owned());
    }

    assert_eq!(values.len(), 1);
    let stats = client.stats();
    assert_eq!(stats.requests, 1, "{stats:?}");
    // Tasks that started after the answer came found it in the cache.
    assert_eq!(stats.coalesced + stats.cache_hits, 99, "{stats:?}");
}

#[tokio::test]
async fn callers_waiting_on_a_failed_request_all_get_its_error() {
    let server = spawn().await;
    let client = server.client();
    let answers = join_all((0..20).map(|_| client.token("nope"))).await;
    for answer in &answers {
        assert!(
            matches!(answer, Err(Error::AppNotFound { app }) if app == "nope"),
            "{answer:?}"
        );
    }
    let stats = client.stats();
    assert_eq!((stats.requests, stats.coalesced), (1, 19), "{stats:?}");
    // An error is not cached: the next call asks again.
    assert!(client.token("nope").await.is_err());
    assert_eq!(client.stats().requests, 2);
}

#[tokio::test]
async fn apps_have_separate_flights() {
    let server = spawn().await;
    let client = server.client();
    let (shop, hr) = tokio::join!(client.token("shop"), client.token("hr"));
    assert_ne!(shop.expect("shop").value(), hr.expect("hr").value());
    assert_eq!(client.stats().requests, 2);
}
