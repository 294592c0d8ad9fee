//! A 20 MB upload through the gateway streams: the server's memory does not grow by
//! the file's size (measured on a real `wxtoken serve` process).

use futures::stream;
use serde_json::Value;

use crate::helpers::*;

/// Peak and current resident memory of a process, in kB (`VmHWM`, `VmRSS`).
fn memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .expect("field")
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn streamed_file(bytes: usize) -> reqwest::multipart::Part {
    const CHUNK: usize = 64 * 1024;
    let chunks = stream::iter(
        (0..bytes.div_ceil(CHUNK))
            .map(move |i| Ok::<_, std::io::Error>(vec![b'x'; CHUNK.min(bytes - i * CHUNK)])),
    );
    reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(chunks), bytes as u64)
        .file_name("report.bin")
}

async fn upload(base: &str, token: &str, bytes: usize) -> Value {
    let form = reqwest::multipart::Form::new().part("media", streamed_file(bytes));
    reqwest::Client::new()
        .post(format!(
            "{base}/cgi-bin/media/upload?access_token={token}&type=file"
        ))
        .multipart(form)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mb_upload_streams_through_the_gateway_with_flat_memory() {
    let (emulator, _dir, config) = emulator_and_config(&Options::default()).await;
    let server = serve(&config).await;
    let pid = server.child.id().expect("pid");
    let body: Value = reqwest::Client::new()
        .get(format!("{}/v1/apps/hr/access_token", server.base))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let token = body["access_token"].as_str().expect("token").to_owned();

    // Warm up the paths (connection pools, buffers) with a small upload first.
    let small = upload(&server.base, &token, 2 * 1024 * 1024).await;
    assert_eq!(small["errcode"], 0, "{small}");
    let (peak_before, rss_before) = memory_kb(pid);

    let answer = upload(&server.base, &token, 20_000_000).await;
    assert_eq!(answer["errcode"], 0, "{answer}");
    assert!(answer["media_id"].is_string());
    let stats = emulator
        .emulator
        .stats()
        .app(&wechat_emulator::wecom_key(CORPID, AGENTID));
    assert_eq!(
        stats.media_bytes,
        2 * 1024 * 1024 + 20_000_000,
        "every byte arrived"
    );

    let (peak_after, rss_after) = memory_kb(pid);
    println!(
        "wxtoken RSS {rss_before} kB -> {rss_after} kB, peak {peak_before} kB -> {peak_after} kB for a 20 MB upload"
    );
    assert!(
        peak_after < peak_before + 8 * 1024,
        "the peak grew by {} kB: the upload was buffered",
        peak_after - peak_before
    );

    // Over the limit: refused before a byte is forwarded.
    let uploads = stats.media_uploads;
    let too_big = reqwest::Client::new()
        .post(format!(
            "{}/cgi-bin/media/upload?access_token={token}&type=file",
            server.base
        ))
        .multipart(reqwest::multipart::Form::new().part("media", streamed_file(21 * 1024 * 1024)))
        .send()
        .await
        .expect("sent");
    assert_eq!(too_big.status(), 413);
    let after = emulator
        .emulator
        .stats()
        .app(&wechat_emulator::wecom_key(CORPID, AGENTID));
    assert_eq!(after.media_uploads, uploads);
    let logs = server.logs.lock().expect("logs").join("\n");
    assert!(!logs.contains(&token), "no whole token in the logs");
}
