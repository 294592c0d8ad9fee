//! `jssdk_config` and `agent_config`: signatures that check out against WeChat's ticket.

use sha1::Digest;
use wxtoken_client::Error;

use crate::helpers::*;

/// The JS-SDK signature, computed here independently of the server's code.
fn expected_signature(ticket: &str, nonce: &str, timestamp: u64, url: &str) -> String {
    let plain = format!("jsapi_ticket={ticket}&noncestr={nonce}&timestamp={timestamp}&url={url}");
    hex::encode(sha1::Sha1::digest(plain.as_bytes()))
}

#[tokio::test]
async fn a_jssdk_config_is_signed_with_the_apps_jsapi_ticket() {
    let server = spawn().await;
    let client = server.client();
    let config = client
        .jssdk_config("shop", "https://shop.example/p?a=1#/cart")
        .await
        .expect("config");

    assert_eq!(config.app_id, APPID);
    assert_eq!(config.url, "https://shop.example/p?a=1", "no fragment");
    let ticket = server
        .wechat()
        .current_ticket(APPID, "jsapi")
        .expect("a jsapi ticket was fetched");
    assert_eq!(
        config.signature,
        expected_signature(&ticket, &config.nonce_str, config.timestamp, &config.url)
    );
    let json = serde_json::to_value(&config).expect("json");
    assert_eq!(json["appId"], APPID, "ready for wx.config as is");
}

#[tokio::test]
async fn a_wecom_agent_config_is_signed_with_the_agent_config_ticket() {
    let server = spawn().await;
    let config = server
        .client()
        .agent_config("hr", "https://hr.example/leave")
        .await
        .expect("agent config");

    assert_eq!((config.corpid.as_str(), config.agentid), (CORPID, AGENTID));
    let key = wechat_emulator::wecom_key(CORPID, AGENTID);
    let ticket = server
        .wechat()
        .current_ticket(&key, "agent_config")
        .expect("an agent_config ticket was fetched");
    assert_eq!(
        config.signature,
        expected_signature(&ticket, &config.nonce_str, config.timestamp, &config.url)
    );
}

#[tokio::test]
async fn a_page_url_that_is_not_absolute_is_a_bad_request() {
    let server = spawn().await;
    let answer = server.client().jssdk_config("shop", "/p?a=1").await;
    assert!(
        matches!(answer, Err(Error::BadRequest { .. })),
        "{answer:?}"
    );
    let answer = server
        .client()
        .agent_config("shop", "https://shop.example/")
        .await;
    assert!(
        matches!(answer, Err(Error::BadRequest { .. })),
        "an official account has no agent_config: {answer:?}"
    );
}
