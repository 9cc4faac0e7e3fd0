//! The real binary, as a user runs it: sample data by default, `--data s3://...` against a real
//! S3-protocol server with credentials from the environment, bad flags, and SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_medserve");

/// A child process killed on drop unless it already exited.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `medserve serve ARGS` on a free port and waits for its "serving on" line.
fn spawn(args: &[&str], envs: &[(&str, &str)], cwd: &std::path::Path) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(cwd)
        .env_remove("MEDSERVE_DATA")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn medserve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("medserve is serving on http://") {
                let _ = tx.send(rest.trim().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server started");
    Server { child, addr }
}

/// `medserve serve --data <s3 url>` against a test S3 server, credentials from the environment.
fn spawn_on_s3(data: &str, endpoint: &str, cwd: &std::path::Path) -> Server {
    spawn(
        &["--data", data, "--s3-endpoint", endpoint],
        &[
            ("AWS_ACCESS_KEY_ID", common::s3::AK),
            ("AWS_SECRET_ACCESS_KEY", common::s3::SK),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
        cwd,
    )
}

fn sigterm(server: &Server) {
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// The exit status once the server has stopped (bounded: a server that ignores SIGTERM fails).
async fn exit_after_sigterm(server: &mut Server) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A minimal HTTP/1.1 GET; returns (status, body).
async fn http_get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    try_http_get(addr, path)
        .await
        .unwrap_or_else(|| panic!("GET {path}: no complete answer"))
}

/// [`http_get`], `None` when the connection fails or ends before a whole head.
async fn try_http_get(addr: &str, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head.get(9..12)?.parse().ok()?;
    let mut body = buf[head_end..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Some((status, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}

#[tokio::test]
async fn serve_without_data_generates_and_serves_sample_data() {
    let cwd = tempfile::tempdir().unwrap();
    let server = spawn(&[], &[], cwd.path());
    assert!(
        cwd.path()
            .join("medserve-sample-data/medmnist/train/HeadCT")
            .is_dir()
    );
    let (status, body) = http_get(&server.addr, "/v1/datasets").await;
    assert_eq!(status, 200);
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(j.as_array().unwrap().len(), 5);
    // Clients are told it is sample data, not where the server keeps it.
    assert_eq!(j[2]["source"], "sample:medmnist/");
    let (_, ready) = http_get(&server.addr, "/readyz").await;
    let ready: serde_json::Value = serde_json::from_slice(&ready).unwrap();
    assert_eq!(ready["store"], "sample:");
    let cwd_path = cwd.path().to_str().unwrap();
    assert!(!String::from_utf8_lossy(&body).contains(cwd_path));
    let (status, body) = http_get(
        &server.addr,
        "/v1/datasets/medmnist/splits/train/items/HeadCT~005001/image?format=npy",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(common::parse_npy(&body).0, [1, 64, 64]);
}

#[tokio::test]
async fn responses_name_a_local_data_root_relative_to_itself() {
    let cwd = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(common::sample_dir()).unwrap();
    let data = data.to_str().unwrap();
    let server = spawn(&["--data", data], &[], cwd.path());
    for path in ["/v1/datasets", "/v1/datasets/nojson", "/readyz"] {
        let (status, body) = http_get(&server.addr, path).await;
        assert_eq!(status, 200);
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains(data), "{path} shows the server path: {text}");
    }
    let (_, body) = http_get(&server.addr, "/v1/datasets").await;
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let sources: Vec<&str> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        [
            "./Task01_BrainTumour/",
            "./Task09_Spleen/",
            "./medmnist/",
            "./nojson/",
            "./segmentation/"
        ]
    );
}

#[tokio::test]
async fn serve_from_s3_with_credentials_from_the_environment() {
    let s3 = common::s3::start_s3().await;
    let client = common::s3::sdk_client(&s3.endpoint);
    common::s3::upload(&client, common::sample_dir(), "workshop/").await;
    let cwd = tempfile::tempdir().unwrap();
    let data = format!("s3://{}/workshop", common::s3::BUCKET);
    let server = spawn_on_s3(&data, &s3.endpoint, cwd.path());
    let (status, body) = http_get(&server.addr, "/readyz").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, body) = http_get(&server.addr, "/v1/datasets/medmnist").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        j["source"],
        format!("s3://{}/workshop/medmnist/", common::s3::BUCKET)
    );
    let (status, body) = http_get(
        &server.addr,
        "/v1/datasets/medmnist/splits/val/items/CXR~012001/image?format=npy&size=32,32",
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(common::parse_npy(&body).0, [1, 32, 32]);
    // Nothing was downloaded to disk.
    assert!(!cwd.path().join("medserve-sample-data").exists());
}

#[test]
fn bad_flags_are_all_reported_and_exit_2() {
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "nowhere",
            "--cache-mb",
            "0",
            "--data",
            "s3://Bad_Bucket",
        ])
        .env_remove("MEDSERVE_DATA")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["--listen", "--cache-mb", "--data"] {
        assert!(err.contains(needle), "{needle} missing from: {err}");
    }
}

#[test]
fn sample_data_command_is_deterministic() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for d in [&a, &b] {
        let st = Command::new(BIN)
            .arg("sample-data")
            .arg(d.path())
            .status()
            .unwrap();
        assert!(st.success());
    }
    let fa = common::s3::files_under(a.path());
    let fb = common::s3::files_under(b.path());
    assert!(fa.len() > 120);
    assert!(fa == fb, "two runs wrote different bytes");
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let cwd = tempfile::tempdir().unwrap();
    let mut server = spawn(&[], &[], cwd.path());
    assert_eq!(http_get(&server.addr, "/healthz").await.0, 200);
    sigterm(&server);
    let status = exit_after_sigterm(&mut server).await;
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let root = tempfile::tempdir().unwrap();
    let gets = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s3 = common::s3::serve_s3_slow(
        root.path(),
        "127.0.0.1:0",
        Duration::from_millis(1500),
        gets.clone(),
    )
    .await;
    let client = common::s3::sdk_client(&s3.endpoint);
    common::s3::upload(&client, common::sample_dir(), "workshop/").await;
    let cwd = tempfile::tempdir().unwrap();
    let data = format!("s3://{}/workshop", common::s3::BUCKET);
    let mut server = spawn_on_s3(&data, &s3.endpoint, cwd.path());
    assert_eq!(http_get(&server.addr, "/readyz").await.0, 200);
    let in_flight = {
        let addr = server.addr.clone();
        tokio::spawn(async move {
            http_get(
                &addr,
                "/v1/datasets/medmnist/splits/val/items/CXR~012001/image?format=npy",
            )
            .await
        })
    };
    // Wait (bounded) until the request is inside the slow GET, then ask the server to stop.
    let before = gets.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..400 {
        if gets.load(std::sync::atomic::Ordering::SeqCst) > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        gets.load(std::sync::atomic::Ordering::SeqCst) > before,
        "the GET never started"
    );
    sigterm(&server);
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(common::parse_npy(&body).0, [1, 64, 64]);
    let exit = exit_after_sigterm(&mut server).await;
    assert!(exit.success(), "exit status {exit}");
}

/// `kill -9` while the disk tier writes an entry: the restarted server removes the half-written
/// file, and answers the same bytes as a server without the tier (from a complete entry, or
/// decoding again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_mid_write_leaves_no_torn_disk_entry() {
    let data = tempfile::tempdir().unwrap();
    let disk = tempfile::tempdir().unwrap();
    // A float32 volume of 25 MB: long enough to write that the kill can land inside it.
    let dims = [256usize, 256, 96];
    let (ct, _) = medserve::sample::ct_volume(7, (dims[0], dims[1], dims[2]));
    let voxels: Vec<f32> = ct.t().iter().map(|&v| f32::from(v)).collect();
    let nii = common::nifti_f32(dims, &voxels);
    let subject = data.path().join("big/train/s1");
    std::fs::create_dir_all(&subject).unwrap();
    std::fs::write(subject.join("img.nii"), &nii).unwrap();
    let args = [
        "--data",
        data.path().to_str().unwrap(),
        "--disk-cache-dir",
        disk.path().to_str().unwrap(),
    ];
    let path = "/v1/datasets/big/splits/train/items/s1/volume?size=32,32,12&format=npy";

    let mut server = spawn(&args, &[], data.path());
    let request = tokio::spawn({
        let addr = server.addr.clone();
        async move { try_http_get(&addr, path).await }
    });
    // Kill as soon as a temporary entry shows up (or the complete one, if the write won).
    let listing = |suffix: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(disk.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while listing(".tmp").is_empty() && listing(".mvol").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no disk entry started"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let torn = !listing(".tmp").is_empty();
    eprintln!("killed {} the write", if torn { "during" } else { "after" });

    let server = spawn(&args, &[], data.path());
    assert!(
        listing(".tmp").is_empty(),
        "the restart removes half-written entries"
    );
    let (status, body) = http_get(&server.addr, path).await;
    assert_eq!(status, 200);
    // The killed server answered first when the write started after its response.
    if let Ok(Some((200, first))) = request.await {
        assert_eq!(body, first);
    }
    let plain = spawn(&args[..2], &[], data.path());
    assert_eq!(http_get(&plain.addr, path).await, (200, body));
    let (_, metrics) = http_get(&server.addr, "/metrics").await;
    let metrics = String::from_utf8(metrics).unwrap();
    let expect = if torn {
        "medserve_decode_total 1"
    } else {
        "medserve_disk_cache_hits_total 1"
    };
    assert!(metrics.lines().any(|l| l == expect), "{expect}:\n{metrics}");
    assert!(
        metrics
            .lines()
            .any(|l| l == "medserve_disk_cache_dropped_total 0")
    );
}
