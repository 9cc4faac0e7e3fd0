//! Connections cannot be hoarded: the real accept loop (`medserve::serve::serve`) on
//! 127.0.0.1 with short limits, driven by raw TCP clients as a hostile client would.
//! Bounds on time are generous and only say "eventually"; nothing here measures speed.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use medserve::serve::{ConnLimits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest any "is eventually closed / served" check waits.
const BOUND: Duration = Duration::from_secs(20);

fn limits(header_read_secs: u64, idle_secs: u64, max_connections: usize) -> ConnLimits {
    ConnLimits {
        header_read_timeout: Duration::from_secs(header_read_secs),
        idle_timeout: Duration::from_secs(idle_secs),
        max_connections,
    }
}

/// A server on an ephemeral port; dropping `stop` (or sending on it) shuts it down.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start_app(app: Router, limits: ConnLimits) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app, limits, async move {
        let _ = stopped.await;
    }));
    Server {
        addr,
        stop: Some(stop),
        task,
    }
}

async fn start(limits: ConnLimits) -> Server {
    start_app(common::app().0, limits).await
}

/// Sends a complete keep-alive GET.
async fn send_get(s: &mut TcpStream, path: &str) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
}

/// Reads one response with a Content-Length body; returns (status, body).
async fn read_response(s: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .expect("a content-length")
        .trim()
        .parse()
        .unwrap();
    let mut body = buf.split_off(head_end);
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed inside a body");
        body.extend_from_slice(&chunk[..n]);
    }
    (status, body)
}

/// One GET on a fresh connection, answered within `BOUND`.
async fn get_status(addr: SocketAddr, path: &str) -> u16 {
    tokio::time::timeout(BOUND, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        send_get(&mut s, path).await;
        read_response(&mut s).await.0
    })
    .await
    .expect("a normal request was not answered")
}

/// Whether the server closes (or resets) `s` within `within`; bytes it sends are discarded.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Connects and sends `bytes` (nothing when empty).
async fn open_with(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    if !bytes.is_empty() {
        s.write_all(bytes).await.unwrap();
    }
    s
}

const HALF_REQUEST: &[u8] = b"GET /v1/datasets HTTP/1.1\r\nHost: x\r\nAccept: appl";

#[tokio::test]
async fn half_sent_request_is_closed_after_the_header_read_timeout() {
    // Idle is long, so only the header-read timeout (hyper's timer) can close these.
    let server = start(limits(1, 1, 100)).await;
    let server_long_idle = start(limits(1, 3600, 100)).await;
    for addr in [server.addr, server_long_idle.addr] {
        let mut half_line = open_with(addr, b"GET /v1/datas").await;
        let mut half_headers = open_with(addr, HALF_REQUEST).await;
        assert!(closed_within(&mut half_line, BOUND).await, "half a line");
        assert!(
            closed_within(&mut half_headers, BOUND).await,
            "half the headers"
        );
    }
    assert_eq!(get_status(server_long_idle.addr, "/healthz").await, 200);
}

#[tokio::test]
async fn silent_connections_are_closed() {
    // Nothing at all, or half the HTTP/2 preface: hyper-util is still choosing the protocol
    // and hyper's header timer has not started; the idle timeout closes them.
    let server = start(limits(3600, 1, 100)).await;
    let mut silent = open_with(server.addr, b"").await;
    let mut half_preface = open_with(server.addr, b"PRI * HTTP/2.0\r\n").await;
    assert!(closed_within(&mut silent, BOUND).await, "sent nothing");
    assert!(
        closed_within(&mut half_preface, BOUND).await,
        "half a preface"
    );
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed() {
    let server = start(limits(3600, 1, 100)).await;
    let mut s = open_with(server.addr, b"").await;
    // Kept alive between requests sent back to back...
    for _ in 0..3 {
        send_get(&mut s, "/healthz").await;
        assert_eq!(read_response(&mut s).await.0, 200);
    }
    // ...and closed once idle.
    assert!(closed_within(&mut s, BOUND).await);
}

#[tokio::test]
async fn hypers_header_timer_also_closes_an_idle_http1_connection() {
    // Why --idle-timeout-secs may not exceed --header-read-timeout-secs: with a long idle
    // timeout, hyper's header-read timer still closes a kept-alive HTTP/1 connection.
    let server = start(limits(1, 3600, 100)).await;
    let mut s = open_with(server.addr, b"").await;
    send_get(&mut s, "/healthz").await;
    assert_eq!(read_response(&mut s).await.0, 200);
    assert!(closed_within(&mut s, BOUND).await);
}

#[tokio::test]
async fn idle_http2_connection_is_closed_even_when_it_ignores_goaway() {
    let server = start(limits(1, 1, 100)).await;
    // The preface and an empty SETTINGS frame; then no ACKs, no PING replies, nothing.
    let mut s = open_with(
        server.addr,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    )
    .await;
    assert!(closed_within(&mut s, BOUND).await);
}

#[tokio::test]
async fn normal_requests_are_served_while_hundreds_of_connections_hold_half_requests() {
    let server = start(limits(3600, 3600, 1000)).await;
    let mut held = Vec::new();
    for _ in 0..300 {
        held.push(open_with(server.addr, HALF_REQUEST).await);
    }
    for path in ["/healthz", "/v1/datasets", "/healthz", "/v1/datasets"] {
        assert_eq!(get_status(server.addr, path).await, 200, "{path}");
    }
    // The held connections are still open (nothing closed them): the test held them.
    for s in &mut held[..10] {
        assert!(!closed_within(s, Duration::from_millis(10)).await);
    }
}

#[tokio::test]
async fn connection_past_the_cap_waits_until_one_closes() {
    let server = start(limits(3600, 3600, 2)).await;
    // Two kept-alive connections, each answered once: both slots are taken.
    let mut first = open_with(server.addr, b"").await;
    let mut second = open_with(server.addr, b"").await;
    for s in [&mut first, &mut second] {
        send_get(s, "/healthz").await;
        assert_eq!(read_response(s).await.0, 200);
    }
    // A third connects (the kernel's backlog completes the handshake) but is not served...
    let mut third = open_with(server.addr, b"").await;
    send_get(&mut third, "/healthz").await;
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte)).await;
    assert!(early.is_err(), "served past the cap: {early:?}");
    // ...until one of the two closes.
    drop(first);
    let (status, _) = tokio::time::timeout(BOUND, read_response(&mut third))
        .await
        .expect("served once a slot was free");
    assert_eq!(status, 200);
    send_get(&mut second, "/healthz").await;
    assert_eq!(read_response(&mut second).await.0, 200);
}

#[tokio::test]
async fn shutdown_finishes_with_idle_and_half_open_connections() {
    let mut server = start(limits(2, 1, 100)).await;
    let mut idle = open_with(server.addr, b"").await;
    send_get(&mut idle, "/healthz").await;
    assert_eq!(read_response(&mut idle).await.0, 200);
    let mut half = open_with(server.addr, HALF_REQUEST).await;
    let mut silent = open_with(server.addr, b"").await;
    server.stop.take().unwrap().send(()).unwrap();
    let stopped = tokio::time::timeout(BOUND, server.task).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    for s in [&mut idle, &mut half, &mut silent] {
        assert!(closed_within(s, BOUND).await);
    }
}

#[tokio::test]
async fn handlers_see_the_peer_address() {
    let app = Router::new().route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
    );
    let server = start_app(app, limits(10, 10, 10)).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let local = s.local_addr().unwrap();
    send_get(&mut s, "/peer").await;
    let (status, body) = read_response(&mut s).await;
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8(body).unwrap(), local.to_string());
}

/// A child process killed on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_takes_the_limits_from_its_environment() {
    use std::io::BufRead;
    let cwd = tempfile::tempdir().unwrap();
    let mut child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_medserve"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(common::sample_dir())
            .current_dir(cwd.path())
            .env("MEDSERVE_HEADER_READ_TIMEOUT_SECS", "1")
            .env("MEDSERVE_IDLE_TIMEOUT_SECS", "1")
            .env("MEDSERVE_MAX_CONNECTIONS", "1")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("medserve is serving on http://") {
                let _ = tx.send(addr.trim().parse::<SocketAddr>().unwrap());
            }
        }
    });
    let addr = rx.recv_timeout(BOUND).expect("the serving line");
    // One slot, taken by a half-sent request until the header-read timeout frees it.
    let mut half = open_with(addr, HALF_REQUEST).await;
    assert!(closed_within(&mut half, BOUND).await);
    assert_eq!(get_status(addr, "/healthz").await, 200);
}
