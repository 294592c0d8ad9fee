//! Request and response bodies on their way through the gateway: small request bodies
//! are held so a request can be sent twice, large ones stream through under a byte
//! limit; small answers are read whole so their errcode can be looked at, large ones
//! stream back untouched.

use axum::body::{Body, Bytes};
use futures::{StreamExt, TryStreamExt, stream};

/// An answer this small (or smaller) is read whole before it is passed on, to look for
/// a token errcode. WeChat's error answers are under 200 bytes; ordinary JSON answers
/// of a few kilobytes cost one more buffer, media downloads none.
pub const PEEK_BYTES: usize = 4096;

/// A request body as the gateway will send it.
#[derive(Debug)]
pub enum RequestBody {
    /// Read whole: it can be sent again.
    Held(Bytes),
    /// Larger than `gateway.retry_body_bytes`: what was read so far, then the rest of
    /// the client's stream, sent once.
    Streamed {
        body: reqwest::Body,
        /// The client's Content-Length, passed on so WeChat sees a sized upload.
        length: Option<u64>,
    },
}

/// Why a request body cannot be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than the gateway accepts ({limit} bytes)")]
    TooLarge { limit: u64 },
    #[error("could not read the request body: {0}")]
    Read(String),
    /// The part of the body held before forwarding did not arrive in time.
    #[error("the request body did not arrive within gateway.request_timeout_ms")]
    TimedOut,
}

/// Reads up to `hold` bytes of `body`: if it ends within them, it is held; otherwise it
/// is streamed on, and more than `max` bytes in all make the stream fail. A body
/// announced as larger than `max` is refused before anything is forwarded.
pub async fn read_request(
    body: Body,
    content_length: Option<u64>,
    hold: u64,
    max: u64,
) -> Result<RequestBody, BodyError> {
    let mut chunks = body.into_data_stream();
    if let Some(n) = content_length.filter(|n| *n > max) {
        // Read the body to its end (up to twice the limit) without keeping it, so the
        // client gets to read our 413 rather than a broken pipe mid-upload.
        if n <= max.saturating_mul(2) {
            while let Some(Ok(_)) = chunks.next().await {}
        }
        return Err(BodyError::TooLarge { limit: max });
    }
    let mut held: Vec<Bytes> = Vec::new();
    let mut total: u64 = 0;
    // A body announced as larger than `hold` is streamed from its first byte.
    let stream_now = content_length.is_some_and(|n| n > hold);
    if !stream_now {
        loop {
            match chunks.next().await {
                None => return Ok(RequestBody::Held(concat(held, total))),
                Some(Err(e)) => return Err(BodyError::Read(e.to_string())),
                Some(Ok(chunk)) => {
                    total += chunk.len() as u64;
                    held.push(chunk);
                    if total > hold {
                        break;
                    }
                }
            }
        }
    }
    if total > max {
        return Err(BodyError::TooLarge { limit: max });
    }
    let mut sent = total;
    let rest = chunks
        .map_err(std::io::Error::other)
        .and_then(move |chunk| {
            sent += chunk.len() as u64;
            let over = sent > max;
            async move {
                if over {
                    Err(std::io::Error::other(BodyError::TooLarge { limit: max }))
                } else {
                    Ok(chunk)
                }
            }
        });
    let all = stream::iter(held.into_iter().map(Ok)).chain(rest);
    Ok(RequestBody::Streamed {
        body: reqwest::Body::wrap_stream(all),
        length: content_length,
    })
}

fn concat(chunks: Vec<Bytes>, total: u64) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => {
            let mut all = Vec::with_capacity(total as usize);
            for chunk in chunks {
                all.extend_from_slice(&chunk);
            }
            Bytes::from(all)
        }
    }
}

/// An upstream answer's body, read far enough to decide what to do with it.
pub enum Peeked {
    /// The whole body (at most [`PEEK_BYTES`]).
    Whole(Bytes),
    /// The first bytes and a stream of the rest.
    Partial(Bytes, reqwest::Response),
}

/// Reads `response` whole if it is at most [`PEEK_BYTES`] long.
pub async fn peek(mut response: reqwest::Response) -> Result<Peeked, reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|n| n > PEEK_BYTES as u64)
    {
        return Ok(Peeked::Partial(Bytes::new(), response));
    }
    let mut read: Vec<u8> = Vec::new();
    loop {
        match response.chunk().await? {
            None => return Ok(Peeked::Whole(Bytes::from(read))),
            Some(chunk) => {
                read.extend_from_slice(&chunk);
                if read.len() > PEEK_BYTES {
                    return Ok(Peeked::Partial(Bytes::from(read), response));
                }
            }
        }
    }
}

impl Peeked {
    /// WeChat's errcode, if the body is a small JSON object that has one.
    pub fn errcode(&self) -> Option<i64> {
        #[derive(serde::Deserialize)]
        struct Answer {
            errcode: Option<i64>,
        }
        match self {
            Peeked::Whole(bytes) if bytes.first() == Some(&b'{') => {
                serde_json::from_slice::<Answer>(bytes).ok()?.errcode
            }
            _ => None,
        }
    }

    /// The body to send to the client.
    pub fn into_body(self) -> Body {
        match self {
            Peeked::Whole(bytes) => Body::from(bytes),
            Peeked::Partial(first, rest) => {
                let first = stream::once(async move { Ok::<_, reqwest::Error>(first) });
                Body::from_stream(first.chain(rest.bytes_stream()))
            }
        }
    }
}

/// A stream of `body`'s bytes for tests.
#[cfg(test)]
fn chunks_of(parts: Vec<&'static [u8]>) -> Body {
    let s: std::pin::Pin<Box<dyn futures::Stream<Item = Result<Bytes, std::io::Error>> + Send>> =
        Box::pin(stream::iter(
            parts.into_iter().map(|p| Ok(Bytes::from_static(p))),
        ));
    Body::from_stream(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_small_body_is_held_whole() {
        let body = chunks_of(vec![b"{\"a\":", b"1}"]);
        match read_request(body, None, 16, 64).await {
            Ok(RequestBody::Held(bytes)) => assert_eq!(&bytes[..], b"{\"a\":1}"),
            other => panic!("expected a held body, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_body_past_the_hold_limit_is_streamed() {
        let body = chunks_of(vec![b"0123456789", b"0123456789", b"0123456789"]);
        assert!(matches!(
            read_request(body, None, 16, 64).await,
            Ok(RequestBody::Streamed { .. })
        ));
    }

    #[tokio::test]
    async fn an_announced_length_over_the_limit_is_refused_before_forwarding() {
        let body = chunks_of(vec![b"x"]);
        assert!(matches!(
            read_request(body, Some(65), 16, 64).await,
            Err(BodyError::TooLarge { limit: 64 })
        ));
    }

    #[tokio::test]
    async fn an_unannounced_body_over_the_limit_fails_while_streaming() {
        let body = chunks_of(vec![b"0123456789"; 10]);
        let Ok(RequestBody::Streamed { body, .. }) = read_request(body, None, 16, 64).await else {
            panic!("expected a streamed body");
        };
        let mut stream = http_body_util::BodyDataStream::new(body);
        let mut failed = false;
        while let Some(item) = stream.next().await {
            if item.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "the stream must fail past 64 bytes");
    }
}
