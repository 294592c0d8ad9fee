//! `POST /cgi-bin/media/upload?access_token=T&type=...` (multipart, the file in the
//! field `media`), for official accounts and WeCom alike: the token's family decides
//! the types and limits (official: image/voice/video 10/2/10 MB, thumb 64 KB; WeCom:
//! image/voice/video/file 10/2/10/20 MB, more than 5 bytes). The file is read chunk by
//! chunk and counted, never held whole, so large uploads cost no memory here.
//!
//! Errors: a dead token as on every ordinary API, 40004 for a type the family does not
//! take, 41005 without a `media` part, 44001 for an empty file; a size outside the
//! limits is 40006 on official accounts, and on WeCom 40009 (image), 40011 (video) or
//! 40006 (voice, file, or 5 bytes or fewer). A refused upload is still read to its end
//! (within the body limit) so that the client gets to read the answer.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Query, State};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::time::Instant;

use super::api_delay;
use crate::Emulator;
use crate::failure::WxError;
use crate::state::MediaLimits;

/// The largest request body read at all: a 20 MB file and its multipart framing.
pub(crate) const MAX_UPLOAD_BODY: usize = 21 * 1024 * 1024;

/// `POST /cgi-bin/media/upload?access_token=T&type=image|voice|video|thumb|file`
pub(crate) async fn upload(
    State(emulator): State<Emulator>,
    Query(params): Query<HashMap<String, String>>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    match receive(&emulator, &params, multipart).await {
        Ok(answer) => answer,
        Err(err) => err.into_response(),
    }
}

async fn receive(
    emulator: &Emulator,
    params: &HashMap<String, String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, WxError> {
    api_delay(emulator).await;
    let token = params
        .get("access_token")
        .filter(|t| !t.is_empty())
        .ok_or(WxError::TOKEN_MISSING)?;
    let wecom = emulator.lock().use_token_of_family(token, Instant::now())?;
    let kind = params.get("type").map(String::as_str).unwrap_or_default();
    let limits = MediaLimits::of(kind, wecom).ok_or(WxError::INVALID_MEDIA_TYPE)?;
    let mut multipart = multipart.map_err(|_| WxError::MEDIA_MISSING)?;
    let size = match read_media(&mut multipart, &limits).await {
        Ok(size) => size,
        Err(err) => {
            drain(&mut multipart).await;
            return Err(err);
        }
    };
    limits.check(size)?;
    emulator.lock().record_upload(token, size, Instant::now());
    let media_id: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(64)
        .map(char::from)
        .collect();
    let created_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    // WeCom writes created_at as a string, official accounts as a number.
    Ok(if wecom {
        Json(serde_json::json!({
            "errcode": 0,
            "errmsg": "ok",
            "type": kind,
            "media_id": media_id,
            "created_at": created_at.to_string(),
        }))
        .into_response()
    } else {
        Json(serde_json::json!({
            "type": kind,
            "media_id": media_id,
            "created_at": created_at,
        }))
        .into_response()
    })
}

/// Counts the bytes of the `media` part chunk by chunk, holding none of them; stops at
/// the first byte over the type's limit. Other parts are skipped.
async fn read_media(multipart: &mut Multipart, limits: &MediaLimits) -> Result<u64, WxError> {
    while let Ok(Some(mut field)) = multipart.next_field().await {
        if field.name() != Some("media") {
            continue;
        }
        let mut bytes: u64 = 0;
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    bytes += chunk.len() as u64;
                    if bytes > limits.max {
                        return Err(limits.wrong_size);
                    }
                }
                Ok(None) => return Ok(bytes),
                // A body cut short or malformed: WeChat got no file.
                Err(_) => return Err(WxError::MEDIA_MISSING),
            }
        }
    }
    Err(WxError::MEDIA_MISSING)
}

/// Reads and discards what is left of a refused upload (at most the route's body
/// limit), as a front proxy would: a server that stops reading mid-body closes the
/// connection on a client still sending, which may then meet a reset rather than
/// the errcode.
async fn drain(multipart: &mut Multipart) {
    // `next_field` skips what is left of the field being read.
    while let Ok(Some(mut field)) = multipart.next_field().await {
        while let Ok(Some(_)) = field.chunk().await {}
    }
}
