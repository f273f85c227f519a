//! Helpers shared by the integration tests.

use std::sync::Arc;
use std::time::Duration;

use facerelay::app::RunningServer;
use facerelay::config::Config;
use facerelay::media::{EncoderSettings, IdentityStage};
use facerelay::rtc::RtcSettings;
use facerelay::testkit::{Client, Publish};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub fn encoder() -> EncoderSettings {
    EncoderSettings {
        bitrate_bps: 2_000_000,
        max_frame_rate: 30.0,
        keyframe_interval: 0,
    }
}

pub async fn start(config: Config) -> RunningServer {
    // RUST_LOG=facerelay=debug shows the server's log in a failing test.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    RunningServer::start(config, Arc::new(IdentityStage))
        .await
        .expect("server starts")
}

pub async fn join(server: &RunningServer, room: &str, name: &str, publish: Publish) -> Client {
    let settings = RtcSettings::from_config(&Config::loopback());
    Client::join(&server.ws_url(), room, name, publish, &settings, encoder())
        .await
        .expect("client joins")
}

pub const NOTHING: Publish = Publish {
    video: false,
    audio: false,
};
pub const VIDEO: Publish = Publish {
    video: true,
    audio: false,
};

/// A bare signalling socket for protocol tests.
pub struct RawSocket(
    pub tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
);

impl RawSocket {
    pub async fn connect(server: &RunningServer) -> Self {
        Self::connect_url(&server.ws_url()).await
    }

    pub async fn connect_url(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Self(ws)
    }

    pub async fn send(&mut self, text: impl Into<String>) {
        self.0.send(Message::text(text.into())).await.expect("send");
    }

    /// Next JSON message, skipping ICE candidates; `None` when the socket closed.
    pub async fn recv(&mut self) -> Option<serde_json::Value> {
        loop {
            let msg = tokio::time::timeout(TIMEOUT, self.0.next())
                .await
                .expect("a message in time")?;
            match msg {
                Ok(Message::Text(t)) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("JSON");
                    if v["type"] != "candidate" {
                        return Some(v);
                    }
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Expects an error message with this code.
    pub async fn expect_error(&mut self, code: &str) -> serde_json::Value {
        let v = self.recv().await.expect("an error message");
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["code"], code, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v
    }

    pub async fn join(&mut self, room: &str, name: &str) -> serde_json::Value {
        self.send(serde_json::json!({"type": "join", "room": room, "name": name}).to_string())
            .await;
        self.recv().await.expect("a reply to join")
    }
}

/// Tests that count process-wide resources (threads, file descriptors) or measure take this
/// lock, so that under `cargo test` (every test a thread of one process) they run one at a
/// time. Under cargo nextest (scripts/test.sh) every test is its own process: the lock has
/// nothing to wait for, and those counts see only the test's own.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// A plain HTTP/1.1 GET; returns the whole response, status line first.
pub async fn http_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

/// An HTTP/1.1 request with a bearer token; returns the status and the body as JSON (`Null`
/// when it is not JSON).
pub async fn request(
    server: &facerelay::app::RunningServer,
    method: &str,
    path: &str,
    token: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    request_at(server.addr, method, path, token, body).await
}

/// [`request`] to a server at `addr` (one this test did not start in-process).
pub async fn request_at(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413) before reading a large body; a failed write is fine then.
    let _ = stream.write_all(&body).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b.trim()).ok())
        .unwrap_or(serde_json::Value::Null);
    (status, json)
}
