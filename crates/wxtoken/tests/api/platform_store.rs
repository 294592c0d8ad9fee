//! The third-party platform's durable state, the same contract on both stores (a real
//! SQLite file and a real redis-server): verify tickets keep the newest, authorizer
//! records never go back a version, listings page in appid order, authorizer tokens are
//! kept apart from their component's and loaded in bulk.

use std::time::Duration;

use wxtoken::credential::{CredentialKey, CredentialKind, Token};
use wxtoken::store::{AuthorizerRecord, AuthorizerState, SqliteStore, Store, Update, VerifyTicket};

use crate::redis_server::RedisServer;

fn record(appid: &str, refresh: &str, version: u64) -> AuthorizerRecord {
    AuthorizerRecord {
        appid: appid.into(),
        refresh_token: refresh.into(),
        state: AuthorizerState::Ok,
        func_info: vec![1, 15],
        authorized_at_ms: 1_700_000_000_000,
        version,
    }
}

fn token(value: &str, generation: u64) -> Token {
    Token {
        value: value.into(),
        expires_at_ms: 4_102_444_800_000,
        fetched_at_ms: 0,
        lifetime_secs: 7200,
        generation,
    }
}

async fn contract(store: &dyn Store) {
    // Verify tickets: the newest CreateTime wins, whatever the order of arrival.
    let ticket = |value: &str, created_at| VerifyTicket {
        value: value.into(),
        created_at,
    };
    assert_eq!(
        store
            .load_verify_ticket("platform".into())
            .await
            .expect("load"),
        None
    );
    assert!(
        store
            .save_verify_ticket("platform".into(), ticket("t2", 200))
            .await
            .expect("save")
    );
    assert!(
        !store
            .save_verify_ticket("platform".into(), ticket("t1", 100))
            .await
            .expect("save")
    );
    assert!(
        store
            .save_verify_ticket("platform".into(), ticket("t3", 300))
            .await
            .expect("save")
    );
    assert_eq!(
        store
            .load_verify_ticket("platform".into())
            .await
            .expect("load"),
        Some(ticket("t3", 300))
    );
    assert_eq!(
        store
            .load_verify_ticket("other".into())
            .await
            .expect("load"),
        None
    );

    // Records: a write never goes back a version, and the same version is not rewritten.
    assert!(
        store
            .save_authorizer("platform".into(), record("wxb", "r1", 1))
            .await
            .expect("save")
    );
    assert!(
        store
            .save_authorizer("platform".into(), record("wxb", "r2", 2))
            .await
            .expect("save")
    );
    assert!(
        !store
            .save_authorizer("platform".into(), record("wxb", "stale", 1))
            .await
            .expect("save")
    );
    assert!(
        !store
            .save_authorizer("platform".into(), record("wxb", "same", 2))
            .await
            .expect("save")
    );
    let mut marked = record("wxb", "r2", 3);
    marked.state = AuthorizerState::NeedsReauthorization;
    assert!(
        store
            .save_authorizer("platform".into(), marked.clone())
            .await
            .expect("save")
    );
    assert_eq!(
        store
            .load_authorizer("platform".into(), "wxb".into())
            .await
            .expect("load"),
        Some(marked)
    );
    assert_eq!(
        store
            .load_authorizer("other".into(), "wxb".into())
            .await
            .expect("load"),
        None
    );

    // Listing: appid order, pages after a cursor.
    for appid in ["wxe", "wxa", "wxd", "wxc"] {
        store
            .save_authorizer("platform".into(), record(appid, "r", 1))
            .await
            .expect("save");
    }
    store
        .save_authorizer("other".into(), record("wxz", "r", 1))
        .await
        .expect("save");
    let page = |after: Option<&str>, limit| {
        let after = after.map(str::to_owned);
        async move {
            store
                .list_authorizers("platform".into(), after, limit)
                .await
                .expect("list")
                .into_iter()
                .map(|r| r.appid)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(None, 2).await, ["wxa", "wxb"]);
    assert_eq!(page(Some("wxb"), 2).await, ["wxc", "wxd"]);
    assert_eq!(page(Some("wxd"), 2).await, ["wxe"]);
    assert!(page(Some("wxe"), 2).await.is_empty());

    // An authorizer's token is its own credential, not its component's.
    let key =
        |appid: &str| CredentialKey::of_authorizer("platform", appid, CredentialKind::AccessToken);
    let component = CredentialKey::access_token("platform");
    assert!(
        store
            .save(component.clone(), token("COMPONENT", 1))
            .await
            .expect("save")
    );
    assert!(store.save(key("wxa"), token("A", 4)).await.expect("save"));
    assert!(store.save(key("wxb"), token("B", 1)).await.expect("save"));
    assert!(!store.save(key("wxa"), token("OLD", 3)).await.expect("save"));
    let many = store
        .load_many(vec![key("wxa"), key("wxnone"), key("wxb"), component])
        .await
        .expect("load many");
    let values: Vec<Option<String>> = many.into_iter().map(|t| t.map(|t| t.value)).collect();
    assert_eq!(
        values,
        [
            Some("A".into()),
            None,
            Some("B".into()),
            Some("COMPONENT".into())
        ]
    );
}

#[tokio::test]
async fn sqlite_keeps_the_platform_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("t.db")).expect("open");
    contract(&store).await;
    // Pruning keeps authorizers' tokens of a configured component.
    store
        .prune("2000-01-01".into(), vec!["platform".into()], 0)
        .await
        .expect("prune");
    let kept = store
        .load(CredentialKey::of_authorizer(
            "platform",
            "wxa",
            CredentialKind::AccessToken,
        ))
        .await
        .expect("load");
    assert!(kept.is_some(), "an authorizer's token survives the prune");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_the_platform_contract_and_announces_authorizers() {
    let redis = RedisServer::start().await;
    let store = redis.store().await;
    let mut updates = store.coordination().expect("redis").updates();
    // The subscription is live once an announcement of ours comes back.
    let mut probe = 0;
    let live = async {
        loop {
            probe += 1;
            let record = record("wxprobe", "r", probe);
            store
                .save_authorizer("probe".into(), record)
                .await
                .expect("save");
            match tokio::time::timeout(Duration::from_millis(100), updates.recv()).await {
                Ok(Ok(Update::Authorizer(component, _))) if component == "probe" => return,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), live)
        .await
        .expect("subscribed");
    contract(&store).await;
    let mut heard = Vec::new();
    while let Ok(Ok(update)) =
        tokio::time::timeout(Duration::from_millis(500), updates.recv()).await
    {
        if let Update::Authorizer(component, appid) = update {
            heard.push(format!("{component}/{appid}"));
        }
    }
    assert!(heard.contains(&"platform/wxb".to_owned()), "{heard:?}");
    assert!(heard.contains(&"other/wxz".to_owned()), "{heard:?}");
}
