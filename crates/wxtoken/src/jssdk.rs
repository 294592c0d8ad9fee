//! JS-SDK signing (pure functions): the signature a page passes to `wx.config` /
//! `wx.agentConfig`, and the card signature for `wx.addCard`'s `cardExt`. See WECHAT.md.

use rand::Rng;
use rand::distr::Alphanumeric;
use sha1::{Digest, Sha1};

/// WeChat's examples use 16-character nonces.
const NONCE_LEN: usize = 16;

/// A fresh nonce from the thread's CSPRNG (ChaCha, reseeded from the OS).
pub fn nonce() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(NONCE_LEN)
        .map(char::from)
        .collect()
}

/// The URL as WeChat signs it: everything before `#`.
pub fn strip_fragment(url: &str) -> &str {
    url.split('#').next().unwrap_or(url)
}

/// Whether `url` can be a page WeChat signs for: an absolute http(s) URL.
pub fn is_page_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    rest.is_some_and(|r| {
        !r.is_empty() && !r.starts_with('#') && !url.chars().any(char::is_whitespace)
    })
}

/// sha1 hex of `jsapi_ticket=..&noncestr=..&timestamp=..&url=..` (fields sorted by name,
/// values unescaped, the URL without its fragment).
pub fn signature(ticket: &str, nonce: &str, timestamp: u64, url: &str) -> String {
    let url = strip_fragment(url);
    let plain = format!("jsapi_ticket={ticket}&noncestr={nonce}&timestamp={timestamp}&url={url}");
    hex::encode(Sha1::digest(plain.as_bytes()))
}

/// The `wx.addCard` card signature: sha1 hex of the values (api_ticket, timestamp,
/// card_id, code, openid, nonce_str) sorted as strings and concatenated.
pub fn card_signature(values: &[&str]) -> String {
    let mut sorted: Vec<&str> = values.to_vec();
    sorted.sort_unstable();
    hex::encode(Sha1::digest(sorted.concat().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICKET: &str =
        "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg";

    #[test]
    fn the_official_example_vector_signs() {
        assert_eq!(
            signature(
                TICKET,
                "Wm3WZYTPz0wzccnW",
                1414587457,
                "http://mp.weixin.qq.com?params=value"
            ),
            "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
        );
    }

    #[test]
    fn the_older_example_vector_signs() {
        assert_eq!(
            signature(
                TICKET,
                "Wm3WZYTPz0wzccnW",
                1414587457,
                "http://mp.weixin.qq.com"
            ),
            "f4d90daf4b3bca3078ab155816175ba34c443a7b"
        );
    }

    #[test]
    fn the_fragment_is_not_signed() {
        let plain = signature(TICKET, "n", 1, "https://shop.example/p?a=1");
        assert_eq!(
            signature(TICKET, "n", 1, "https://shop.example/p?a=1#/cart"),
            plain
        );
    }

    #[test]
    fn card_signature_sorts_values() {
        let a = card_signature(&["b", "a", "c"]);
        assert_eq!(a, hex::encode(Sha1::digest(b"abc")));
        assert_eq!(card_signature(&["c", "b", "a"]), a);
    }

    #[test]
    fn page_urls_are_absolute_http() {
        assert!(is_page_url("https://shop.example/p"));
        assert!(is_page_url("HTTP://shop.example"));
        assert!(!is_page_url(""));
        assert!(!is_page_url("ftp://shop.example"));
        assert!(!is_page_url("/relative"));
        assert!(!is_page_url("https://"));
        assert!(!is_page_url("https://shop example"));
    }

    #[test]
    fn nonces_are_fresh() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }
}
