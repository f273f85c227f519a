//! One participant's session: owns its WebSocket and its [`ServerPeer`], and reacts to three
//! sources in turn (the socket, the peer connection, the room). Nothing is shared with other
//! sessions except through the room directory's events.
//!
//! Negotiation: the browser offers first (its camera and microphone); the server answers.
//! From then on only the server offers, one offer at a time, whenever the set of streams the
//! participant receives changes (someone published or left). Streams that appear before the
//! first exchange wait for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::protocol::{parse_client_message, ClientMessage, ServerMessage};
use super::{App, SessionCommand};
use crate::room::roulette::{NextReason, RouletteError};
use crate::room::{
    clean_name, ParticipantId, ParticipantInfo, RoomError, RoomEvent, RoomId, EVENT_DEPTH,
};
use crate::rtc::{MediaKind, PeerEvent, Published, RtcError, ServerPeer, SubscriptionId};

/// WebSocket close code for "message too big" (RFC 6455).
const CLOSE_TOO_BIG: u16 = 1009;

/// Where a participant is: a room joined by name, or the roulette (pairs made by the hub).
enum Place {
    Room(RoomId),
    Roulette,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Room(room) => write!(f, "room {room}"),
            Place::Roulette => f.write_str("the roulette"),
        }
    }
}

struct Member {
    place: Place,
    id: ParticipantId,
    /// Secret that authorises this participant's calls to the face API.
    token: String,
    peer: ServerPeer,
    /// What this participant receives, by publisher.
    subscriptions: HashMap<ParticipantId, Vec<SubscriptionId>>,
    /// What this participant publishes (kept alive while it is in the room).
    published: Vec<Arc<Published>>,
    /// Streams to subscribe to once the first offer/answer exchange is done.
    waiting: Vec<(ParticipantId, Arc<Published>)>,
    answered_first_offer: bool,
    /// ICE and DTLS are up. Renegotiating before that loses the new tracks in the `webrtc`
    /// crate (they are never bound), so offers wait for it.
    connected: bool,
    offer_in_flight: bool,
    /// Subscriptions changed since the last offer.
    dirty: bool,
}

struct Session {
    app: Arc<App>,
    out: SplitSink<WebSocket, Message>,
    member: Option<Member>,
    peer_events: Option<mpsc::Receiver<PeerEvent>>,
    room_events: Option<mpsc::Receiver<RoomEvent>>,
    /// Commands from the HTTP edge (face changes), addressed by this session's token.
    commands: Option<mpsc::Receiver<SessionCommand>>,
    /// A write did not complete within `server.send_timeout_secs` (the client does not read
    /// its socket) or failed: the session ends.
    stalled: bool,
}

enum Flow {
    Continue,
    Close,
}

pub(crate) async fn run(socket: WebSocket, app: Arc<App>) {
    let _live = app.sessions.enter();
    let (out, mut incoming) = socket.split();
    let mut shutdown = app.shutdown.clone();
    let mut s = Session {
        app,
        out,
        member: None,
        peer_events: None,
        room_events: None,
        commands: None,
        stalled: false,
    };
    let join_timeout = Duration::from_secs(s.app.config.server.join_timeout_secs);
    let mut unjoined_since = Some(tokio::time::Instant::now());
    loop {
        // Not in a room or the roulette: the clock for `join_timeout` runs.
        match (&s.member, unjoined_since) {
            (Some(_), _) => unjoined_since = None,
            (None, None) => unjoined_since = Some(tokio::time::Instant::now()),
            (None, Some(_)) => {}
        }
        let join_deadline = unjoined_since.map(|t| t + join_timeout);
        let flow = tokio::select! {
            _ = async { tokio::time::sleep_until(join_deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if join_deadline.is_some() => {
                s.send_error("join_timeout", format!("no join within {} s", join_timeout.as_secs())).await;
                Flow::Close
            }
            msg = incoming.next() => match msg {
                Some(Ok(msg)) => s.on_socket(msg).await,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    Flow::Close
                }
                None => Flow::Close,
            },
            Some(event) = recv(&mut s.peer_events) => s.on_peer(event).await,
            Some(event) = recv(&mut s.room_events) => s.on_room(event).await,
            Some(command) = recv(&mut s.commands) => s.on_command(command).await,
            _ = draining(&mut shutdown) => {
                s.send(ServerMessage::Bye { reason: "server is shutting down".into() }).await;
                Flow::Close
            }
        };
        if matches!(flow, Flow::Close) || s.stalled {
            break;
        }
    }
    s.leave().await;
    if !s.stalled {
        let limit = Duration::from_secs(s.app.config.server.send_timeout_secs);
        let _ = tokio::time::timeout(limit, s.out.close()).await;
    }
}

async fn draining(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    // An error means the server is gone, which is a shutdown as well.
    let _ = shutdown.wait_for(|draining| *draining).await;
}

async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn rtc_error_code(e: &RtcError) -> &'static str {
    match e {
        RtcError::NoH264 => "no_h264",
        RtcError::BadSdp(_) => "bad_sdp",
        RtcError::BadCandidate(_) => "bad_candidate",
        RtcError::NoPorts => "server_full",
        RtcError::Thread(_) | RtcError::WebRtc(_) => "internal",
    }
}

impl Session {
    async fn send(&mut self, msg: ServerMessage) {
        if self.stalled {
            return;
        }
        let text = match serde_json::to_string(&msg) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise a server message");
                return;
            }
        };
        let limit = Duration::from_secs(self.app.config.server.send_timeout_secs);
        match tokio::time::timeout(limit, self.out.send(Message::Text(text.into()))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "websocket write failed");
                self.stalled = true;
            }
            Err(_) => {
                let participant = self.member.as_ref().map(|m| m.id.to_string());
                tracing::info!(
                    participant = participant.as_deref().unwrap_or("-"),
                    "the client has not read its socket for {} s; disconnecting it",
                    limit.as_secs()
                );
                self.stalled = true;
            }
        }
    }

    async fn send_error(&mut self, code: &str, message: impl Into<String>) {
        let message = message.into();
        if code == "internal" {
            // Not the client's doing: the operator needs to know.
            let participant = self.member.as_ref().map(|m| m.id.to_string());
            tracing::error!(
                participant = participant.as_deref().unwrap_or("-"),
                error = %message,
                "internal error answered to a client"
            );
        }
        self.send(ServerMessage::error(code, message)).await;
    }

    async fn on_socket(&mut self, msg: Message) -> Flow {
        let text = match msg {
            Message::Text(text) => text,
            Message::Binary(_) => {
                self.send_error("bad_message", "messages must be JSON text frames")
                    .await;
                return Flow::Continue;
            }
            Message::Close(_) => return Flow::Close,
            Message::Ping(_) | Message::Pong(_) => return Flow::Continue,
        };
        let limit = self.app.config.server.max_message_bytes;
        if text.len() > limit {
            self.send_error(
                "message_too_large",
                format!(
                    "message of {} bytes exceeds the limit of {limit} bytes",
                    text.len()
                ),
            )
            .await;
            let _ = self
                .out
                .send(Message::Close(Some(CloseFrame {
                    code: CLOSE_TOO_BIG,
                    reason: "message too large".into(),
                })))
                .await;
            return Flow::Close;
        }
        match parse_client_message(text.as_str()) {
            Ok(msg) => self.on_client(msg).await,
            Err(rejected) => {
                self.send_error(rejected.code, rejected.message).await;
                Flow::Continue
            }
        }
    }

    async fn on_client(&mut self, msg: ClientMessage) -> Flow {
        match msg {
            ClientMessage::Join { room, name } => self.join(Some(&room), &name).await,
            ClientMessage::Roulette { name } => self.join(None, &name).await,
            ClientMessage::Leave | ClientMessage::Stop => {
                self.leave().await;
            }
            ClientMessage::Next | ClientMessage::Block | ClientMessage::Report => {
                let hub = &self.app.roulette;
                let result = match &self.member {
                    Some(Member {
                        place: Place::Roulette,
                        id,
                        ..
                    }) => match msg {
                        ClientMessage::Next => hub.next(*id),
                        ClientMessage::Block => hub.block(*id),
                        _ => hub.report(*id),
                    },
                    _ => Err(RouletteError::NotInRoulette),
                };
                if let Err(e) = result {
                    self.send_error(e.code(), e.to_string()).await;
                }
            }
            msg => {
                if self.member.is_none() {
                    self.send_error("not_joined", "join a room or the roulette first")
                        .await;
                    return Flow::Continue;
                }
                if let Err((code, message)) = self.on_negotiation(msg).await {
                    self.send_error(code, message).await;
                }
            }
        }
        Flow::Continue
    }

    /// Joins the room `room`, or the roulette when `room` is `None`; a refusal is counted by
    /// its code and sent.
    async fn join(&mut self, room: Option<&str>, name: &str) {
        match self.try_join(room, name).await {
            Ok(()) => self
                .app
                .edge
                .joined(if room.is_some() { "room" } else { "roulette" }),
            Err((code, message)) => {
                self.app.edge.refused(code);
                self.send_error(code, message).await;
            }
        }
    }

    async fn try_join(
        &mut self,
        room: Option<&str>,
        name: &str,
    ) -> Result<(), (&'static str, String)> {
        if self.member.is_some() {
            return Err((
                "already_joined",
                "this connection is already in a room or the roulette; leave first".into(),
            ));
        }
        let max = self.app.config.rooms.max_name_chars;
        let (tx, rx) = mpsc::channel(EVENT_DEPTH);
        let (place, id, present) = match room {
            Some(room) => {
                let room = match RoomId::parse(room, max) {
                    Ok(r) => r,
                    Err(e) => return Err((e.code(), e.to_string())),
                };
                match self.app.directory.join(&room, name, tx) {
                    Ok(j) => (Place::Room(room), j.id, j.present),
                    Err(e) => return Err((e.code(), e.to_string())),
                }
            }
            None => {
                let Some(name) = clean_name(name, max) else {
                    let e = RoomError::InvalidDisplayName { max_chars: max };
                    return Err((e.code(), e.to_string()));
                };
                let id = ParticipantId::fresh();
                let info = ParticipantInfo {
                    id: id.to_string(),
                    name,
                    swapped: false,
                    face: crate::room::FaceState::None,
                };
                if let Err(e) = self.app.roulette.enter(info, id, tx) {
                    return Err((e.code(), e.to_string()));
                }
                (Place::Roulette, id, Vec::new())
            }
        };
        let (peer, peer_events) = match ServerPeer::new(self.app.engine.clone()).await {
            Ok(p) => p,
            Err(e) => {
                self.vacate(&place, id);
                tracing::warn!(error = %e, "cannot create a peer connection");
                return Err((rtc_error_code(&e), e.to_string()));
            }
        };
        tracing::info!(place = %place, participant = %id, "joined");
        let (command_tx, command_rx) = mpsc::channel(16);
        let token = self.app.register_session(&id.to_string(), command_tx);
        let participants = present.iter().map(|p| p.info.clone()).collect();
        let waiting = present
            .into_iter()
            .flat_map(|p| p.tracks.into_iter().map(move |t| (p.id, t)))
            .collect();
        self.send(ServerMessage::Welcome {
            id: id.to_string(),
            room: match &place {
                Place::Room(room) => Some(room.to_string()),
                Place::Roulette => None,
            },
            participants,
            ice_servers: self.app.config.ice.servers.clone(),
            token: token.clone(),
        })
        .await;
        self.member = Some(Member {
            place,
            id,
            token,
            peer,
            subscriptions: HashMap::new(),
            published: Vec::new(),
            waiting,
            answered_first_offer: false,
            connected: false,
            offer_in_flight: false,
            dirty: false,
        });
        self.peer_events = Some(peer_events);
        self.room_events = Some(rx);
        self.commands = Some(command_rx);
        Ok(())
    }

    async fn on_command(&mut self, command: SessionCommand) -> Flow {
        let Some(m) = self.member.as_ref() else {
            return Flow::Continue;
        };
        match command {
            SessionCommand::Face { state, reason } => {
                match &m.place {
                    Place::Room(room) => self.app.directory.set_face(room, m.id, state),
                    Place::Roulette => self.app.roulette.set_face(m.id, state),
                }
                // The wearer is told too: its page says what the others see.
                self.send(ServerMessage::FaceState { state, reason }).await;
            }
        }
        Flow::Continue
    }

    /// Takes the participant out of its room or the roulette (the others are told).
    fn vacate(&self, place: &Place, id: ParticipantId) {
        match place {
            Place::Room(room) => self.app.directory.leave(room, id),
            Place::Roulette => self.app.roulette.leave(id),
        }
    }

    async fn on_negotiation(&mut self, msg: ClientMessage) -> Result<(), (&'static str, String)> {
        let m = self
            .member
            .as_mut()
            .ok_or(("not_joined", "join a room first".into()))?;
        let rtc = |e: RtcError| (rtc_error_code(&e), e.to_string());
        match msg {
            ClientMessage::Offer { sdp } => {
                if m.offer_in_flight {
                    return Err((
                        "negotiation_in_progress",
                        "the server's offer is waiting for your answer".into(),
                    ));
                }
                let answer = m.peer.accept_offer(sdp).await.map_err(rtc)?;
                m.answered_first_offer = true;
                self.send(ServerMessage::Answer { sdp: answer }).await;
                self.subscribe_waiting().await;
                self.renegotiate_if_needed().await;
            }
            ClientMessage::Answer { sdp } => {
                if !m.offer_in_flight {
                    return Err((
                        "unexpected_answer",
                        "no offer is waiting for an answer".into(),
                    ));
                }
                m.peer.accept_answer(sdp).await.map_err(rtc)?;
                m.offer_in_flight = false;
                self.renegotiate_if_needed().await;
            }
            ClientMessage::Candidate {
                candidate: Some(candidate),
            } => {
                m.peer.add_remote_candidate(candidate).await.map_err(rtc)?;
            }
            ClientMessage::Candidate { candidate: None } => {}
            // Handled by `on_client`.
            ClientMessage::Join { .. }
            | ClientMessage::Leave
            | ClientMessage::Roulette { .. }
            | ClientMessage::Next
            | ClientMessage::Stop
            | ClientMessage::Block
            | ClientMessage::Report => {}
        }
        Ok(())
    }

    async fn subscribe_waiting(&mut self) {
        let Some(m) = self.member.as_mut() else {
            return;
        };
        for (owner, track) in std::mem::take(&mut m.waiting) {
            subscribe(m, owner, &track).await;
        }
    }

    /// Sends a new offer if what this participant receives changed and no offer is pending.
    async fn renegotiate_if_needed(&mut self) {
        let Some(m) = self.member.as_mut() else {
            return;
        };
        if !m.dirty || !m.answered_first_offer || !m.connected || m.offer_in_flight {
            return;
        }
        match m.peer.create_offer().await {
            Ok(sdp) => {
                m.dirty = false;
                m.offer_in_flight = true;
                tracing::debug!(participant = %m.id, subscriptions = m.peer.subscription_count(), "renegotiating");
                self.send(ServerMessage::Offer { sdp }).await;
            }
            Err(e) => tracing::warn!(error = %e, "cannot create a renegotiation offer"),
        }
    }

    async fn on_peer(&mut self, event: PeerEvent) -> Flow {
        let Some(m) = self.member.as_mut() else {
            return Flow::Continue;
        };
        match event {
            PeerEvent::LocalCandidate(candidate) => {
                tracing::debug!(participant = %m.id, candidate = %candidate.candidate, "local candidate");
                self.send(ServerMessage::Candidate { candidate }).await;
            }
            PeerEvent::RemoteTrack(track) => match m.peer.publish(track, &m.id.to_string()).await {
                Ok(published) => {
                    tracing::info!(participant = %m.id, kind = ?published.kind, stream = %published.stream, "publishing");
                    match &m.place {
                        Place::Room(room) => {
                            self.app.directory.publish(room, m.id, published.clone())
                        }
                        Place::Roulette => self.app.roulette.publish(m.id, published.clone()),
                    }
                    if published.kind == MediaKind::Video && self.app.config.media.self_view {
                        // The participant sees itself as the others do (after the stage).
                        subscribe(m, m.id, &published).await;
                    }
                    m.published.push(published);
                    self.renegotiate_if_needed().await;
                }
                Err(e) => {
                    let code = rtc_error_code(&e);
                    self.send_error(code, format!("cannot relay your track: {e}"))
                        .await;
                }
            },
            PeerEvent::VideoTooLarge { width, height } => {
                let max = self.app.config.media.max_frame_pixels;
                tracing::info!(participant = %m.id, width, height, "video over media.max_frame_pixels");
                self.send_error(
                    "video_too_large",
                    format!("your video is {width}x{height}; this server relays at most {max} pixels a frame: lower the camera resolution"),
                )
                .await;
            }
            // `Closed` here was not our doing: `leave` stops listening before it closes.
            PeerEvent::Failed | PeerEvent::Closed => {
                tracing::info!(participant = %m.id, "connection lost (ICE failed); leaving the room");
                self.send_error(
                    "connection_lost",
                    "no media traffic within the timeout; you have left the room",
                )
                .await;
                self.leave().await;
            }
            PeerEvent::Connected => {
                tracing::debug!(participant = %m.id, "connected");
                m.connected = true;
                self.renegotiate_if_needed().await;
            }
            PeerEvent::Disconnected => tracing::debug!(participant = %m.id, "disconnected"),
            PeerEvent::GatheringComplete => {}
        }
        Flow::Continue
    }

    async fn on_room(&mut self, event: RoomEvent) -> Flow {
        let Some(m) = self.member.as_mut() else {
            return Flow::Continue;
        };
        match event {
            RoomEvent::Joined(participant) => {
                self.send(ServerMessage::ParticipantJoined { participant })
                    .await;
            }
            RoomEvent::Updated(participant) => {
                self.send(ServerMessage::ParticipantUpdated { participant })
                    .await;
            }
            RoomEvent::Left(id) => {
                drop_publisher(m, id).await;
                self.send(ServerMessage::ParticipantLeft { id: id.to_string() })
                    .await;
                self.renegotiate_if_needed().await;
            }
            RoomEvent::Published { owner, track } => {
                add_publisher(m, owner, vec![track]).await;
                self.renegotiate_if_needed().await;
            }
            RoomEvent::Paired {
                partner,
                partner_id,
                tracks,
            } => {
                add_publisher(m, partner_id, tracks).await;
                self.send(ServerMessage::RoulettePaired { partner }).await;
                self.renegotiate_if_needed().await;
            }
            RoomEvent::PartnerLeft { partner, reason } => {
                drop_publisher(m, partner).await;
                // Blocks and reports are not revealed to the one blocked or reported.
                let reason = match reason {
                    NextReason::Blocked | NextReason::Reported => NextReason::Next,
                    other => other,
                };
                self.send(ServerMessage::RouletteEnded { reason }).await;
                self.renegotiate_if_needed().await;
            }
            RoomEvent::Waiting { position, online } => {
                self.send(ServerMessage::RouletteWaiting { position, online })
                    .await;
            }
        }
        Flow::Continue
    }

    /// Leaves the room (if in one) and frees everything of the participant.
    async fn leave(&mut self) {
        self.peer_events = None;
        self.room_events = None;
        self.commands = None;
        if let Some(mut m) = self.member.take() {
            self.app.unregister_session(&m.token, &m.id.to_string());
            self.vacate(&m.place, m.id);
            m.peer.close().await;
            tracing::info!(place = %m.place, participant = %m.id, "left");
        }
    }
}

/// Starts receiving `owner`'s tracks (after the first exchange; until then they wait).
async fn add_publisher(m: &mut Member, owner: ParticipantId, tracks: Vec<Arc<Published>>) {
    for track in tracks {
        if m.answered_first_offer {
            subscribe(m, owner, &track).await;
        } else {
            m.waiting.push((owner, track));
        }
    }
}

/// Stops receiving everything of `owner`.
async fn drop_publisher(m: &mut Member, owner: ParticipantId) {
    m.waiting.retain(|(o, _)| *o != owner);
    for sub in m.subscriptions.remove(&owner).unwrap_or_default() {
        if let Err(e) = m.peer.unsubscribe(sub).await {
            tracing::debug!(error = %e, "unsubscribe failed");
        }
        m.dirty = true;
    }
}

async fn subscribe(m: &mut Member, owner: ParticipantId, track: &Arc<Published>) {
    match m.peer.subscribe(track).await {
        Ok(id) => {
            m.subscriptions.entry(owner).or_default().push(id);
            m.dirty = true;
        }
        Err(e) => tracing::warn!(error = %e, "cannot subscribe"),
    }
}
