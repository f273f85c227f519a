//! A facerelay participant in Rust: signalling over WebSocket plus a WebRTC peer connection
//! built exactly like the server's. It publishes H.264 (encoded here with openh264) and raw
//! Opus packets, and decodes what it receives. The integration tests and `facerelay bench
//! relay` use it to drive the server end to end on loopback.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rtc_core::rtp::codec::h264::H264Payloader;
use rtc_core::rtp::{Header, Packet};
use rtc_core::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc_core::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};
use webrtc::rtp_transceiver::RtpSender;

use super::assembler::{Assembler, RtpIn};
use super::egress::{rand_u32, Fanout, Sink};
use super::peer::{
    build_connection, local_track, negotiated_payload_type, on_keyframe_requests, IceCandidate,
    MediaKind, PeerEvent,
};
use super::RtcSettings;
use crate::media::pipeline::OutputUnit;
use crate::media::{EncoderSettings, I420Frame, VideoDecoder, VideoEncoder};
use crate::room::ParticipantInfo;
use crate::signal::protocol::{ClientMessage, ServerMessage};

/// What a client receives from the others.
#[derive(Debug)]
pub enum Received {
    /// A decoded picture from participant `owner`, and when its last packet arrived.
    Video {
        owner: String,
        frame: I420Frame,
        arrived: Instant,
        /// The access unit was an IDR.
        keyframe: bool,
        /// The payload of facerelay's SEI mark in the access unit (a swapped face), if any.
        mark: Option<Vec<u8>>,
    },
    /// An RTP audio packet from participant `owner`.
    Audio { owner: String, payload: Bytes },
}

#[derive(Debug, Clone, Copy)]
pub struct Publish {
    pub video: bool,
    pub audio: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("websocket: {0}")]
    Socket(String),
    #[error("server refused: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("protocol: {0}")]
    Protocol(String),
    #[error(transparent)]
    Rtc(#[from] super::RtcError),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

impl From<webrtc::error::Error> for ClientError {
    fn from(e: webrtc::error::Error) -> Self {
        ClientError::Rtc(e.into())
    }
}

struct Outgoing {
    kind: MediaKind,
    sender: Arc<dyn RtpSender>,
    sink: Arc<Sink>,
    fanout: Arc<Fanout>,
}

pub struct Client {
    pub id: String,
    pub participants: Vec<ParticipantInfo>,
    /// The face-API token of this session.
    pub token: String,
    pc: Arc<dyn PeerConnection>,
    video: Option<Arc<Fanout>>,
    audio: Option<Arc<Fanout>>,
    audio_seq: u16,
    encoder: Option<VideoEncoder>,
    /// Set when the server asks for a keyframe (PLI/FIR).
    keyframe_wanted: Arc<AtomicBool>,
    payloader: H264Payloader,
    received: mpsc::Receiver<Received>,
    messages: mpsc::Receiver<ServerMessage>,
    ready: tokio::sync::watch::Receiver<bool>,
    server_candidates: Arc<std::sync::Mutex<Vec<IceCandidate>>>,
    remote_tracks: Arc<std::sync::Mutex<Vec<Arc<dyn TrackRemote>>>>,
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
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .map_err(|e| ClientError::Socket(e.to_string()))?;
        send_ws(
            &mut ws,
            &ClientMessage::Join {
                room: room.into(),
                name: name.into(),
            },
        )
        .await?;
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
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected welcome, got {other:?}"
                )))
            }
        };

        let (peer_tx, peer_rx) = mpsc::channel(256);
        let pc = build_connection(settings, None, vec![], peer_tx, None).await?;
        let mut outgoing = Vec::new();
        for (kind, wanted) in [
            (MediaKind::Video, publish.video),
            (MediaKind::Audio, publish.audio),
        ] {
            if !wanted {
                continue;
            }
            let ssrc = rand_u32();
            let track = local_track(kind, &id, &format!("{id}-{kind:?}"), ssrc);
            let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
            let sink = Arc::new(Sink::new(1, track, ssrc));
            let fanout = Arc::new(Fanout::default());
            fanout.add(sink.clone());
            outgoing.push(Outgoing {
                kind,
                sender,
                sink,
                fanout,
            });
        }
        // Receive-only sections where we publish nothing: an offer needs at least one m-line for
        // ICE to start, and the server's later offers then reuse them.
        for (kind, published) in [
            (RtpCodecKind::Video, publish.video),
            (RtpCodecKind::Audio, publish.audio),
        ] {
            if !published {
                let init = RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                };
                pc.add_transceiver_from_kind(kind, Some(init)).await?;
            }
        }
        let offer = pc.create_offer(None).await?;
        let sdp = offer.sdp.clone();
        pc.set_local_description(offer).await?;
        send_ws(&mut ws, &ClientMessage::Offer { sdp }).await?;

        let video = outgoing
            .iter()
            .find(|o| o.kind == MediaKind::Video)
            .map(|o| o.fanout.clone());
        let audio = outgoing
            .iter()
            .find(|o| o.kind == MediaKind::Audio)
            .map(|o| o.fanout.clone());
        let (received_tx, received) = mpsc::channel(1024);
        let (messages_tx, messages) = mpsc::channel(256);
        let (to_server, from_client) = mpsc::channel(16);
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let keyframe_wanted = Arc::new(AtomicBool::new(true));
        let server_candidates = Arc::new(std::sync::Mutex::new(Vec::new()));
        let remote_tracks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn(
            Signalling {
                ws,
                pc: pc.clone(),
                outgoing,
                received: received_tx,
                messages: messages_tx,
                ready: ready_tx,
                answered: false,
                connected: false,
                keyframe_wanted: keyframe_wanted.clone(),
                server_candidates: server_candidates.clone(),
                remote_tracks: remote_tracks.clone(),
                readers: HashMap::new(),
            }
            .run(peer_rx, from_client),
        );
        Ok(Self {
            id,
            participants,
            token,
            pc,
            video,
            audio,
            audio_seq: 0,
            encoder: publish
                .video
                .then(|| VideoEncoder::new(encoder))
                .transpose()
                .map_err(|e| ClientError::Protocol(e.to_string()))?,
            keyframe_wanted,
            server_candidates,
            remote_tracks,
            payloader: H264Payloader::default(),
            received,
            messages,
            ready,
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
        let (Some(fanout), Some(encoder)) = (&self.video, &mut self.encoder) else {
            return Err(ClientError::Protocol(
                "this client does not publish video".into(),
            ));
        };
        let encoded = encoder
            .encode(frame, self.keyframe_wanted.swap(false, Ordering::Relaxed))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let unit = OutputUnit {
            data: Bytes::from(encoded.data),
            timestamp,
            keyframe: encoded.keyframe,
            arrived: Instant::now(),
            width: frame.width(),
            height: frame.height(),
        };
        fanout.send_video(&mut self.payloader, &unit, None).await;
        Ok(())
    }

    /// Sends one Opus packet (any payload: the relay forwards it untouched).
    pub async fn send_audio(&mut self, payload: Bytes, timestamp: u32) -> Result<(), ClientError> {
        let Some(fanout) = &self.audio else {
            return Err(ClientError::Protocol(
                "this client does not publish audio".into(),
            ));
        };
        self.audio_seq = self.audio_seq.wrapping_add(1);
        let packet = Packet {
            header: Header {
                version: 2,
                sequence_number: self.audio_seq,
                timestamp,
                ..Default::default()
            },
            payload,
        };
        fanout.send_audio(&packet).await;
        Ok(())
    }

    /// Sends a PLI for every video track received, as a browser does after loss.
    pub async fn request_keyframes(&self) {
        let tracks = self
            .remote_tracks
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default();
        for track in tracks {
            let Some(&media_ssrc) = track.ssrcs().await.first() else {
                continue;
            };
            let pli =
                rtc_core::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                };
            let _ = track.write_rtcp(vec![Box::new(pli)]).await;
        }
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
        tokio::spawn(async move { self.pc.close().await });
    }

    /// Keeps the signalling socket open but stops all media, as a lost network path does:
    /// the server only notices through ICE consent checks going unanswered.
    pub async fn drop_media(&mut self) {
        let _ = self.pc.close().await;
    }

    /// Leaves: closes the socket and the peer connection.
    pub async fn close(self) {
        self.task.abort();
        let _ = self.pc.close().await;
    }
}

struct Signalling {
    ws: Ws,
    pc: Arc<dyn PeerConnection>,
    outgoing: Vec<Outgoing>,
    received: mpsc::Sender<Received>,
    messages: mpsc::Sender<ServerMessage>,
    ready: tokio::sync::watch::Sender<bool>,
    answered: bool,
    connected: bool,
    keyframe_wanted: Arc<AtomicBool>,
    server_candidates: Arc<std::sync::Mutex<Vec<IceCandidate>>>,
    remote_tracks: Arc<std::sync::Mutex<Vec<Arc<dyn TrackRemote>>>>,
    readers: HashMap<u64, JoinHandle<()>>,
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
        for (_, reader) in self.readers.drain() {
            reader.abort();
        }
    }

    async fn on_server(&mut self, msg: ServerMessage) -> Result<(), ClientError> {
        match msg {
            ServerMessage::Answer { sdp } => {
                let answer = RTCSessionDescription::answer(sdp)?;
                self.pc.set_remote_description(answer).await?;
                for o in &self.outgoing {
                    if let Some(pt) = negotiated_payload_type(&o.sender, o.kind).await {
                        o.sink.activate(pt);
                        if o.kind == MediaKind::Video {
                            let wanted = self.keyframe_wanted.clone();
                            tokio::spawn(on_keyframe_requests(o.sink.track().clone(), move || {
                                wanted.store(true, Ordering::Relaxed);
                                true
                            }));
                        }
                    }
                }
                self.answered = true;
                let _ = self.ready.send(self.answered && self.connected);
            }
            ServerMessage::Offer { sdp } => {
                let offer = RTCSessionDescription::offer(sdp)?;
                self.pc.set_remote_description(offer).await?;
                let answer = self.pc.create_answer(None).await?;
                let sdp = answer.sdp.clone();
                self.pc.set_local_description(answer).await?;
                send_ws(&mut self.ws, &ClientMessage::Answer { sdp }).await?;
            }
            ServerMessage::Candidate { candidate } => {
                if let Ok(mut seen) = self.server_candidates.lock() {
                    seen.push(candidate.clone());
                }
                let init = webrtc::peer_connection::RTCIceCandidateInit {
                    candidate: candidate.candidate,
                    sdp_mid: candidate.sdp_mid,
                    sdp_mline_index: candidate.sdp_mline_index,
                    username_fragment: candidate.username_fragment,
                    ..Default::default()
                };
                self.pc.add_ice_candidate(init).await?;
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
                // The first frames may have gone out before DTLS was up: start on a keyframe.
                self.keyframe_wanted.store(true, Ordering::Relaxed);
                let _ = self.ready.send(self.answered && self.connected);
            }
            PeerEvent::RemoteTrack(track) => {
                if let Ok(mut tracks) = self.remote_tracks.lock() {
                    tracks.push(track.0.clone());
                }
                let id = self.readers.len() as u64;
                let reader = tokio::spawn(read_track(track.0, self.received.clone()));
                self.readers.insert(id, reader);
            }
            _ => {}
        }
    }
}

async fn read_track(track: Arc<dyn TrackRemote>, out: mpsc::Sender<Received>) {
    let owner = track.stream_id().await;
    let is_video = matches!(
        track.kind().await,
        rtc_core::rtp_transceiver::rtp_sender::RtpCodecKind::Video
    );
    let mut assembler = Assembler::new();
    let mut decoder = match VideoDecoder::new(u32::MAX) {
        Ok(d) => d,
        Err(_) => return,
    };
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else {
            if matches!(event, TrackRemoteEvent::OnEnded) {
                break;
            }
            continue;
        };
        // `try_send`: a caller that stops reading must not stall this track (and with it the
        // connection's driver); what it does not read is dropped.
        if !is_video {
            let _ = out.try_send(Received::Audio {
                owner: owner.clone(),
                payload: packet.payload,
            });
            continue;
        }
        let assembled = assembler.push(RtpIn {
            sequence_number: packet.header.sequence_number,
            timestamp: packet.header.timestamp,
            marker: packet.header.marker,
            payload: packet.payload,
            arrival: Instant::now(),
        });
        for unit in assembled.units {
            match decoder.decode(&unit.data) {
                Ok(Some(frame)) => {
                    let _ = out.try_send(Received::Video {
                        owner: owner.clone(),
                        frame,
                        arrived: unit.completed_at,
                        keyframe: unit.keyframe,
                        mark: crate::media::sei::find(&unit.data),
                    });
                }
                Ok(None) => {}
                Err(_) => assembler.resync(),
            }
        }
    }
}
