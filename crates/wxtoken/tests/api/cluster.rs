//! A fleet on a real Redis Cluster: the same guarantees as on one Redis, and a master
//! killed mid-run (its replica promoted) loses no token.

use std::time::Duration;

use tokio::time::Instant;
use wechat_emulator::{Config as EmulatorConfig, TokenCheck};

use crate::fleet::{short_tokens_run, spawn_fleet_on};
use crate::redis_cluster::RedisCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_on_a_redis_cluster_fetches_once_per_period_and_never_serves_a_dead_token() {
    let cluster = RedisCluster::start().await;
    let fleet = short_tokens_run(&cluster.url(), "cluster = true").await;
    // Every instance heard of every value: the announcements cross the cluster.
    let token = fleet.token(0).await;
    for i in 1..fleet.instances.len() {
        assert_eq!(fleet.token(i).await, token, "instance {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_killed_mid_run_loses_no_token_and_costs_at_most_one_fetch() {
    let mut cluster = RedisCluster::start().await;
    let fleet = spawn_fleet_on(
        3,
        "classic",
        &cluster.url(),
        EmulatorConfig::default(),
        "cluster = true",
        "",
    )
    .await;
    let first = fleet.token(0).await;
    for i in 1..3 {
        assert_eq!(fleet.token(i).await, first);
    }
    assert_eq!(fleet.calls(), 1);

    // The master holding `{shop}` dies; clients keep asking throughout the failover.
    cluster.kill_master_of("{shop}").await;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        for i in 0..3 {
            let (status, body) = fleet.get(i, "/v1/apps/shop/access_token").await;
            assert_eq!(status, 200, "instance {i} during the failover: {body}");
            assert_eq!(body["access_token"], first.as_str());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.wait_ok().await;

    // After the failover the stored token is still there: a report refreshes once, and
    // every instance follows.
    let (status, response) = fleet.invalidate(1, &first).await;
    assert_eq!(status, 200, "{response}");
    let second = response["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{response}"))
        .to_owned();
    assert_ne!(second, first, "{response}");
    assert_eq!(
        fleet.emulator.emulator.check_token(&second),
        TokenCheck::Valid
    );
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(5);
        while fleet.token(i).await != second {
            assert!(Instant::now() < deadline, "instance {i} never followed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(
        fleet.calls() <= 3,
        "the first fetch, the report's, and at most one more: {}",
        fleet.calls()
    );
}
