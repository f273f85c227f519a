//! A facerelay participant in Rust for the integration tests and the benchmarks: signalling
//! over WebSocket driving an [`rtc::ClientPeer`](crate::rtc::ClientPeer), a peer connection
//! built exactly like the server's. It publishes H.264 and raw Opus packets and decodes what it
//! receives, to drive the server end to end on loopback.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::media::{EncoderSettings, I420Frame};
use crate::room::ParticipantInfo;
use crate::rtc::{ClientPeer, ClientSender, IceCandidate, PeerEvent, RtcError, RtcSettings};
pub use crate::rtc::{Publish, Received};
use crate::signal::protocol::{ClientMessage, ServerMessage};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("websocket: {0}")]
    Socket(String),
    #[error("server refused: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("protocol: {0}")]
    Protocol(String),
    #[error(transparent)]
    Rtc(#[from] RtcError),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// In a cluster: the room lives on the node whose page is `url` (join there).
    #[error("the room lives on {url}")]
    Redirected { url: String },
}

/// The signalling socket of the node whose page is `page_url` (`http://host:port/`).
pub fn ws_url_of(page_url: &str) -> String {
    let base = page_url.trim_end_matches('/');
    let base = base
        .strip_prefix("https://")
        .map(|rest| format!("wss://{rest}"))
        .or_else(|| {
            base.strip_prefix("http://")
                .map(|rest| format!("ws://{rest}"))
        })
        .unwrap_or_else(|| base.to_owned());
    format!("{base}/ws")
}

pub struct Client {
    pub id: String,
    pub participants: Vec<ParticipantInfo>,
    /// The face-API token of this session.
    pub token: String,
    peer: ClientPeer,
    sender: ClientSender,
    received: mpsc::Receiver<Received>,
    messages: mpsc::Receiver<ServerMessage>,
    ready: tokio::sync::watch::Receiver<bool>,
    server_candidates: std::sync::Arc<std::sync::Mutex<Vec<IceCandidate>>>,
    to_server: mpsc::Sender<ClientMessage>,
    task: JoinHandle<()>,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send_ws(ws: &mut Ws, msg: &ClientMessage) -> Result<(), ClientError> {
    let text = serde_json::to_string(msg).map_err(|e| ClientError::Protocol(e.to_string()))?;
    ws.send(Message::text(text))
        .await
        .map_err(|e| ClientError::Socket(e.to_string()))
}

async fn recv_ws(ws: &mut Ws) -> Result<ServerMessage, ClientError> {
    loop {
        let msg = ws
            .next()
            .await
            .ok_or(ClientError::Socket("closed".into()))?
            .map_err(|e| ClientError::Socket(e.to_string()))?;
        if let Message::Text(text) = msg {
            return serde_json::from_str(text.as_str())
                .map_err(|e| ClientError::Protocol(format!("{e}: {text}")));
        }
    }
}

impl Client {
    /// Connects, joins `room`, publishes what `publish` asks for, and completes the first
    /// offer/answer exchange. `settings` supplies the local ICE setup (bind address, loopback).
    pub async fn join(
        ws_url: &str,
        room: &str,
        name: &str,
        publish: Publish,
        settings: &RtcSettings,
        encoder: EncoderSettings,
    ) -> Result<Self, ClientError> {
        Self::join_with_token(ws_url, room, name, None, publish, settings, encoder).await
    }

    /// As [`Client::join`], with a join token (servers with `server.token_secret`).
    pub async fn join_with_token(
        ws_url: &str,
        room: &str,
        name: &str,
        token: Option<&str>,
        publish: Publish,
        settings: &RtcSettings,
        encoder: EncoderSettings,
    ) -> Result<Self, ClientError> {
        let join = ClientMessage::Join {
            room: room.into(),
            name: name.into(),
            token: token.map(str::to_owned),
        };
        Self::enter(ws_url, &join, publish, settings, encoder).await
    }

    /// As [`Client::join`], entering with `entry` (a `join`, `roulette` or `preview` message).
    pub async fn enter(
        ws_url: &str,
        entry: &ClientMessage,
        publish: Publish,
        settings: &RtcSettings,
        encoder: EncoderSettings,
    ) -> Result<Self, ClientError> {
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .map_err(|e| ClientError::Socket(e.to_string()))?;
        send_ws(&mut ws, entry).await?;
        let (id, participants, token) = match recv_ws(&mut ws).await? {
            ServerMessage::Welcome {
                id,
                participants,
                token,
                ..
            } => (id, participants, token),
            ServerMessage::Error { code, message } => {
                return Err(ClientError::Refused { code, message })
            }
            ServerMessage::Redirect { url } => return Err(ClientError::Redirected { url }),
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected welcome, got {other:?}"
                )))
            }
        };

        let (peer, sender, peer_events) = ClientPeer::new(settings, &id, publish, encoder).await?;
        let sdp = peer.offer().await?;
        send_ws(&mut ws, &ClientMessage::Offer { sdp }).await?;

        let (received_tx, received) = mpsc::channel(1024);
        let (messages_tx, messages) = mpsc::channel(256);
        let (to_server, from_client) = mpsc::channel(16);
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let server_candidates = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn(
            Signalling {
                ws,
                peer: peer.clone(),
                received: received_tx,
                messages: messages_tx,
                ready: ready_tx,
                answered: false,
                connected: false,
                server_candidates: server_candidates.clone(),
            }
            .run(peer_events, from_client),
        );
        Ok(Self {
            id,
            participants,
            token,
            peer,
            sender,
            received,
            messages,
            ready,
            server_candidates,
            to_server,
            task,
        })
    }

    /// Waits until the first exchange is done, the connection is up, and what we publish can
    /// flow.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), ClientError> {
        tokio::time::timeout(timeout, self.ready.wait_for(|r| *r))
            .await
            .map_err(|_| ClientError::Timeout("the first answer"))?
            .map_err(|_| ClientError::Socket("signalling ended".into()))?;
        Ok(())
    }

    /// Encodes and sends one video frame with the given RTP timestamp (90 kHz).
    pub async fn send_video(
        &mut self,
        frame: &I420Frame,
        timestamp: u32,
    ) -> Result<(), ClientError> {
        Ok(self.sender.send_video(frame, timestamp).await?)
    }

    /// Sends one Opus packet (any payload: the relay forwards it untouched).
    pub async fn send_audio(&mut self, payload: Bytes, timestamp: u32) -> Result<(), ClientError> {
        Ok(self.sender.send_audio(payload, timestamp).await?)
    }

    /// Sends a PLI for every video track received, as a browser does after loss.
    pub async fn request_keyframes(&self) {
        self.peer.request_keyframes().await
    }

    /// The ICE candidates the server has sent so far.
    pub fn server_candidates(&self) -> Vec<IceCandidate> {
        self.server_candidates
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Next media received, or `None` after `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Received> {
        tokio::time::timeout(timeout, self.received.recv())
            .await
            .ok()
            .flatten()
    }

    /// Next non-negotiation server message (joins, leaves, errors), or `None` after `timeout`.
    pub async fn next_message(&mut self, timeout: Duration) -> Option<ServerMessage> {
        tokio::time::timeout(timeout, self.messages.recv())
            .await
            .ok()
            .flatten()
    }

    /// Sends a raw protocol message (tests of bad input).
    pub async fn send_message(&self, msg: ClientMessage) -> Result<(), ClientError> {
        self.to_server
            .send(msg)
            .await
            .map_err(|_| ClientError::Socket("signalling ended".into()))
    }

    /// Disappears without a goodbye, as a killed tab does: the socket is dropped without a
    /// closing handshake and the peer connection stops without telling the server.
    pub fn vanish(self) {
        self.task.abort();
        // The tab's process is gone: its sockets close with it, nothing is said.
        tokio::spawn(async move { self.peer.close().await });
    }

    /// Keeps the signalling socket open but stops all media, as a lost network path does:
    /// the server only notices through ICE consent checks going unanswered.
    pub async fn drop_media(&mut self) {
        self.peer.close().await;
    }

    /// Leaves: closes the socket and the peer connection.
    pub async fn close(self) {
        self.task.abort();
        self.peer.close().await;
    }
}

struct Signalling {
    ws: Ws,
    peer: ClientPeer,
    received: mpsc::Sender<Received>,
    messages: mpsc::Sender<ServerMessage>,
    ready: tokio::sync::watch::Sender<bool>,
    answered: bool,
    connected: bool,
    server_candidates: std::sync::Arc<std::sync::Mutex<Vec<IceCandidate>>>,
}

impl Signalling {
    async fn run(
        mut self,
        mut peer_events: mpsc::Receiver<PeerEvent>,
        mut from_client: mpsc::Receiver<ClientMessage>,
    ) {
        loop {
            tokio::select! {
                msg = recv_ws(&mut self.ws) => match msg {
                    Ok(msg) => {
                        if let Err(e) = self.on_server(msg).await {
                            tracing::warn!(error = %e, "client signalling");
                        }
                    }
                    Err(_) => break,
                },
                Some(event) = peer_events.recv() => self.on_peer(event).await,
                Some(msg) = from_client.recv() => {
                    if send_ws(&mut self.ws, &msg).await.is_err() {
                        break;
                    }
                }
            }
        }
        self.peer.stop_reading();
    }

    async fn on_server(&mut self, msg: ServerMessage) -> Result<(), ClientError> {
        match msg {
            ServerMessage::Answer { sdp } => {
                self.peer.on_answer(sdp).await?;
                self.answered = true;
                let _ = self.ready.send(self.answered && self.connected);
            }
            ServerMessage::Offer { sdp } => {
                let sdp = self.peer.on_offer(sdp).await?;
                send_ws(&mut self.ws, &ClientMessage::Answer { sdp }).await?;
            }
            ServerMessage::Candidate { candidate } => {
                if let Ok(mut seen) = self.server_candidates.lock() {
                    seen.push(candidate.clone());
                }
                self.peer.add_candidate(candidate).await?;
            }
            other => {
                let _ = self.messages.send(other).await;
            }
        }
        Ok(())
    }

    async fn on_peer(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::LocalCandidate(c) => {
                let _ = send_ws(
                    &mut self.ws,
                    &ClientMessage::Candidate { candidate: Some(c) },
                )
                .await;
            }
            PeerEvent::Connected => {
                self.connected = true;
                self.peer.on_connected();
                let _ = self.ready.send(self.answered && self.connected);
            }
            PeerEvent::RemoteTrack(track) => {
                self.peer.on_remote_track(track, self.received.clone())
            }
            _ => {}
        }
    }
}

/// A browser-like offer (audio and H.264 video with their SSRCs, ICE and DTLS parameters): the
/// server builds a peer connection and answers it (`--offer`; tests derive bad offers from it).
pub const BROWSER_OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\na=msid-semantic: WMS s\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=msid:s a\r\na=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\na=ssrc:1111 cname:x\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\na=mid:1\r\na=sendrecv\r\na=msid:s v\r\na=rtcp-mux\r\n\
a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack pli\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=ssrc:2222 cname:x\r\n";
