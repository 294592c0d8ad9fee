//! Third-party platform routes against hostile and malformed input: the callback that
//! WeChat signs (tampered, wrong appid, truncated, bad padding, oversized, entities), and
//! the authorizer routes' parameters and scopes. Nothing refused is stored.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use wxtoken::wechat::crypto::{MAX_MESSAGE_BYTES, MsgCrypt};

use crate::helpers::*;
use crate::platform::*;

/// Posts a push body with the given query to the component's callback.
async fn post_push(app: &PlatformApp, query: &str, body: &str) -> (u16, String) {
    let response = app
        .http
        .post(format!("{}/v1/apps/platform/callback?{query}", app.base))
        .header("content-type", "text/xml")
        .body(body.to_owned())
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

fn query(push: &Push) -> String {
    format!(
        "timestamp={}&nonce={}&encrypt_type=aes&msg_signature={}",
        push.timestamp, push.nonce, push.signature
    )
}

/// A push whose Encrypt is `encrypt`, signed correctly.
fn signed(encrypt: &str) -> Push {
    let crypt = crypt();
    let (timestamp, nonce) = ("1700000001".to_owned(), "n0nce".to_owned());
    let signature = crypt.signature(&timestamp, &nonce, encrypt);
    Push {
        body: envelope(encrypt),
        timestamp,
        nonce,
        signature,
    }
}

async fn nothing_stored(app: &PlatformApp) {
    let (status, body) = app.get("/v1/apps/platform", ADMIN_KEY).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["component"]["verify_ticket_created_at"],
        Value::Null,
        "{body}"
    );
    assert_eq!(body["state"], "waiting_for_verify_ticket", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_refuses_every_broken_push_and_stores_nothing() {
    let app = spawn_platform(PlatformOptions::default()).await;
    let good = ticket_push("ticket@@@good", 1_700_000_000);

    // Signed by someone who does not know the token: 401, as the push is not WeChat's.
    let mut forged = good.clone();
    let last = if forged.signature.ends_with('0') {
        "1"
    } else {
        "0"
    };
    forged.signature = format!("{}{last}", &forged.signature[..39]);
    let (status, text) = post_push(&app, &query(&forged), &forged.body).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("bad_signature"), "{text}");

    // Encrypted for another appid, correctly signed: 400.
    let other = MsgCrypt::new(PUSH_TOKEN, AES_KEY, "wxsomeoneelse00001").expect("crypt");
    let inner = ticket_xml("ticket@@@other", 1_700_000_000);
    let wrong_appid = signed(&other.encrypt(&inner, [3; 16]));
    let (status, text) = post_push(&app, &query(&wrong_appid), &wrong_appid.body).await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("wxsomeoneelse00001"),
        "names the appid found: {text}"
    );

    // Truncated ciphertext (a block short) and a ragged one.
    let encrypt = crypt().encrypt(&inner, [4; 16]);
    let bytes = STANDARD.decode(&encrypt).expect("b64");
    for cut in [16, 5] {
        let short = signed(&STANDARD.encode(&bytes[..bytes.len() - cut]));
        let (status, text) = post_push(&app, &query(&short), &short.body).await;
        assert_eq!(status, 400, "cut {cut}: {text}");
    }

    // Bad padding: the last block decrypts to garbage.
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 17] ^= 0x01;
    let bad_padding = signed(&STANDARD.encode(&flipped));
    let (status, text) = post_push(&app, &query(&bad_padding), &bad_padding.body).await;
    assert_eq!(status, 400, "{text}");

    // Not XML outside, and not XML inside.
    let (status, text) = post_push(&app, &query(&good), "{\"json\": true}").await;
    assert_eq!(status, 400, "{text}");
    let not_xml = signed(&crypt().encrypt("plain words", [5; 16]));
    let (status, text) = post_push(&app, &query(&not_xml), &not_xml.body).await;
    assert_eq!(status, 400, "{text}");

    // A document type declaration with entities, outside and inside.
    let bomb = r#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><xml><Encrypt>&b;</Encrypt></xml>"#;
    let (status, text) = post_push(&app, &query(&good), bomb).await;
    assert_eq!(status, 400, "{text}");
    let inner_bomb = signed(&crypt().encrypt(
        r#"<!DOCTYPE xml [<!ENTITY t "ticket@@@evil">]><xml><InfoType>component_verify_ticket</InfoType><ComponentVerifyTicket>&t;</ComponentVerifyTicket></xml>"#,
        [6; 16],
    ));
    let (status, text) = post_push(&app, &query(&inner_bomb), &inner_bomb.body).await;
    assert_eq!(status, 400, "{text}");

    // Oversized: refused before any parsing, as 400.
    let huge = format!(
        "<xml><AppId>{COMPONENT_APPID}</AppId><Encrypt>{}</Encrypt></xml>",
        "A".repeat(MAX_MESSAGE_BYTES)
    );
    let (status, text) = post_push(&app, &query(&good), &huge).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("larger than"), "{text}");

    // Missing or wrong query parameters.
    for bad in [
        format!(
            "timestamp={}&nonce={}&encrypt_type=aes",
            good.timestamp, good.nonce
        ),
        format!(
            "timestamp={}&nonce={}&msg_signature={}",
            good.timestamp, good.nonce, good.signature
        ),
        format!(
            "timestamp={}&nonce={}&encrypt_type=raw&msg_signature={}",
            good.timestamp, good.nonce, good.signature
        ),
    ] {
        let (status, text) = post_push(&app, &bad, &good.body).await;
        assert_eq!(status, 400, "{bad}: {text}");
    }

    // Not a component.
    let response = app
        .http
        .post(format!(
            "{}/v1/apps/shop/callback?{}",
            app.base,
            query(&good)
        ))
        .body(good.body.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert_eq!(code(&body), "not_a_component");

    nothing_stored(&app).await;

    // The genuine push is taken.
    let (status, text) = post_push(&app, &query(&good), &good.body).await;
    assert_eq!((status, text.as_str()), (200, "success"));
    let (_, body) = app.get("/v1/apps/platform", ADMIN_KEY).await;
    assert_eq!(body["component"]["verify_ticket_created_at"], 1_700_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorizer_routes_check_their_input_and_scopes() {
    let app = spawn_platform(PlatformOptions::default()).await;
    let post = |path: &'static str, key: &'static str, body: Value| {
        let app = &app;
        async move { app.post(path, key, body.to_string()).await }
    };

    // Creating authorizers and authorization URLs needs `admin`.
    let (status, body) = post(
        "/v1/apps/platform/authorizers",
        KEY,
        json!({"authorization_code": "x"}),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let (status, body) = post(
        "/v1/apps/platform/authorizers/auth_url",
        KEY,
        json!({"redirect_uri": "https://a.example/cb"}),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");

    for (path, body, needle) in [
        (
            "/v1/apps/platform/authorizers",
            json!({}),
            "authorization_code",
        ),
        (
            "/v1/apps/platform/authorizers",
            json!({"authorization_code": ""}),
            "authorization_code",
        ),
        (
            "/v1/apps/platform/authorizers",
            json!({"authorization_code": "x", "extra": 1}),
            "extra",
        ),
        (
            "/v1/apps/platform/authorizers/auth_url",
            json!({"redirect_uri": "ftp://a.example"}),
            "redirect_uri",
        ),
        (
            "/v1/apps/platform/authorizers/auth_url",
            json!({"redirect_uri": "https://a.example/cb", "auth_type": 9}),
            "auth_type",
        ),
    ] {
        let (status, answer) = post(path, ADMIN_KEY, body.clone()).await;
        assert_eq!(
            (status, code(&answer)),
            (400, "bad_request"),
            "{body}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{body}: {message}");
    }

    for (path, status_code, error) in [
        ("/v1/apps/platform/authorizers?limit=0", 400, "bad_request"),
        (
            "/v1/apps/platform/authorizers?limit=1001",
            400,
            "bad_request",
        ),
        (
            "/v1/apps/platform/authorizers?limit=ten",
            400,
            "bad_request",
        ),
        (
            "/v1/apps/platform/authorizers?cursor=a%2Fb",
            400,
            "bad_request",
        ),
        ("/v1/apps/shop/authorizers", 404, "not_a_component"),
        ("/v1/apps/nope/authorizers", 404, "app_not_found"),
        (
            "/v1/apps/platform/authorizers/wxnobody0000001/access_token",
            404,
            "authorizer_not_found",
        ),
        (
            "/v1/apps/platform/authorizers/not%2Fan%2Fappid/access_token",
            404,
            "authorizer_not_found",
        ),
    ] {
        let (status, body) = app.get(path, ADMIN_KEY).await;
        assert_eq!(
            (status, code(&body)),
            (status_code, error),
            "{path}: {body}"
        );
    }
    let (status, body) = app.get("/v1/apps/platform/authorizers", KEY).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"authorizers": [], "next_cursor": null}));

    // The component's own token waits for a verify ticket, and says so.
    let (status, body) = app.get("/v1/apps/platform/access_token", KEY).await;
    assert_eq!(
        (status, code(&body)),
        (503, "waiting_for_verify_ticket"),
        "{body}"
    );
}
