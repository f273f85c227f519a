//! One participant's session: owns its WebSocket and its [`ServerPeer`], and drives the
//! participant's state machine ([`super::participant`]) with what arrives from four sources in
//! turn (the socket, the peer connection, the room, the HTTP edge's face commands) and the
//! join clock, running the actions it returns. Nothing is shared with other sessions except
//! through the room directory and the roulette hub.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::participant::{Action, Input, Participant, Receives, RouletteRequest, Seat};
use super::protocol::{parse_client_message, ClientMessage, ServerMessage};
use super::token::{self, Rights, TokenError};
use super::{App, SessionCommand};
use crate::cluster::Placement;
use crate::room::{
    clean_name, ParticipantId, ParticipantInfo, RoomError, RoomEvent, RoomId, EVENT_DEPTH,
};
use crate::rtc::{MediaKind, PeerEvent, Published, RtcError, ServerPeer, SubscriptionId};

/// WebSocket close code for "message too big" (RFC 6455).
const CLOSE_TOO_BIG: u16 = 1009;

/// Where a participant is: a room joined by name, the roulette (pairs made by the hub), or a
/// preview (a room of its own on this node, alone).
enum Place {
    Room(RoomId),
    Roulette,
    Preview(RoomId),
}

impl Place {
    /// The directory room it sits in (the roulette's pairs are the hub's).
    fn room(&self) -> Option<&RoomId> {
        match self {
            Place::Room(room) | Place::Preview(room) => Some(room),
            Place::Roulette => None,
        }
    }

    /// Its label in logs and in `facerelay_joins_total`.
    fn label(&self) -> &'static str {
        match self {
            Place::Room(_) => "room",
            Place::Roulette => "roulette",
            Place::Preview(_) => "preview",
        }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Room(room) => write!(f, "room {room}"),
            Place::Roulette => f.write_str("the roulette"),
            Place::Preview(_) => f.write_str("a preview"),
        }
    }
}

/// Where a join ended.
enum Joined {
    /// Seated here: the participant's id and the tracks of those already there.
    Here(ParticipantId, Vec<(ParticipantId, Arc<Published>)>),
    /// The room lives on another node, whose page is this.
    Elsewhere(String),
}

/// The resources of a seated participant.
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
    /// What its join token allows.
    rights: Rights,
    /// It was told its tracks are not relayed (a token without the publish right).
    refused_media: bool,
}

struct Session {
    app: Arc<App>,
    out: Outgoing,
    participant: Participant<Arc<Published>>,
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

/// Where a session's client messages come from: a browser's socket, or an HTTP edge (WHIP,
/// WHEP) speaking for its client.
enum Incoming {
    Socket(SplitStream<WebSocket>),
    Channel(mpsc::Receiver<ClientMessage>),
}

/// Where the session's messages to its client go.
enum Outgoing {
    Socket(SplitSink<WebSocket, Message>),
    Channel(mpsc::Sender<ServerMessage>),
}

/// A participant of a browser page, on its WebSocket.
pub(crate) async fn run(socket: WebSocket, app: Arc<App>) {
    let (out, incoming) = socket.split();
    let participant = Participant::new(
        Instant::now(),
        Duration::from_secs(app.config.server.join_timeout_secs),
        app.config.media.self_view,
    );
    drive(
        app,
        participant,
        Incoming::Socket(incoming),
        Outgoing::Socket(out),
    )
    .await;
}

/// A participant whose client speaks through `incoming` and hears through `outgoing` (the
/// WHIP and WHEP endpoints), receiving what `receives` says.
pub(crate) async fn run_channel(
    app: Arc<App>,
    receives: Receives,
    incoming: mpsc::Receiver<ClientMessage>,
    outgoing: mpsc::Sender<ServerMessage>,
) {
    let participant = Participant::new(
        Instant::now(),
        Duration::from_secs(app.config.server.join_timeout_secs),
        false,
    )
    .receiving(receives);
    drive(
        app,
        participant,
        Incoming::Channel(incoming),
        Outgoing::Channel(outgoing),
    )
    .await;
}

async fn drive(
    app: Arc<App>,
    participant: Participant<Arc<Published>>,
    mut incoming: Incoming,
    out: Outgoing,
) {
    let _live = app.sessions.enter();
    let mut shutdown = app.shutdown.clone();
    let mut s = Session {
        app,
        out,
        participant,
        member: None,
        peer_events: None,
        room_events: None,
        commands: None,
        stalled: false,
    };
    loop {
        let deadline = s.participant.deadline().map(tokio::time::Instant::from_std);
        let flow = tokio::select! {
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => {
                s.feed(Input::Timeout).await
            }
            msg = incoming.next() => match msg {
                Some(Ok(Ok(msg))) => s.on_socket(msg).await,
                Some(Ok(Err(msg))) => s.feed(Input::Client(msg)).await,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    Flow::Close
                }
                None => Flow::Close,
            },
            Some(event) = recv(&mut s.peer_events) => s.on_peer(event).await,
            Some(event) = recv(&mut s.room_events) => s.feed(room_input(event)).await,
            Some(command) = recv(&mut s.commands) => match command {
                SessionCommand::Face { state, reason } => s.feed(Input::Face { state, reason }).await,
                SessionCommand::Voice { state, reason } => {
                    s.feed(Input::Voice { state, reason }).await
                }
            },
            _ = draining(&mut shutdown) => s.feed(Input::Shutdown).await,
        };
        if matches!(flow, Flow::Close) || s.stalled {
            break;
        }
    }
    s.leave().await;
    if let (Outgoing::Socket(out), false) = (&mut s.out, s.stalled) {
        let limit = Duration::from_secs(s.app.config.server.send_timeout_secs);
        let _ = tokio::time::timeout(limit, out.close()).await;
    }
}

impl Incoming {
    /// The next frame of the socket (`Ok`) or message of the channel (`Err`); `None` when the
    /// client is gone.
    async fn next(&mut self) -> Option<Result<Result<Message, ClientMessage>, axum::Error>> {
        match self {
            Incoming::Socket(socket) => socket.next().await.map(|m| m.map(Ok)),
            Incoming::Channel(channel) => channel.recv().await.map(|m| Ok(Err(m))),
        }
    }
}

/// A room's event as the participant's input.
fn room_input(event: RoomEvent) -> Input<Arc<Published>> {
    match event {
        RoomEvent::Joined(p) => Input::OtherJoined(p),
        RoomEvent::Updated(p) => Input::OtherUpdated(p),
        RoomEvent::Left(id) => Input::OtherLeft(id),
        RoomEvent::Published { owner, track } => Input::OtherPublished { owner, track },
        RoomEvent::Paired {
            partner,
            partner_id,
            tracks,
        } => Input::Paired {
            partner,
            partner_id,
            tracks,
        },
        RoomEvent::PartnerLeft { partner, reason } => Input::PartnerLeft { partner, reason },
        RoomEvent::Waiting { position, online } => Input::Waiting { position, online },
        RoomEvent::Move { url, ticket } => Input::Move { url, ticket },
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
    /// Hands `input` to the participant and runs what it asks, feeding each result back
    /// before the rest (so the participant sees its work done in order).
    async fn feed(&mut self, input: Input<Arc<Published>>) -> Flow {
        let mut actions: VecDeque<_> = self.participant.handle(input, Instant::now()).into();
        while let Some(action) = actions.pop_front() {
            if let Action::Close = action {
                return Flow::Close;
            }
            if let Some(result) = self.run_action(action).await {
                for next in self
                    .participant
                    .handle(result, Instant::now())
                    .into_iter()
                    .rev()
                {
                    actions.push_front(next);
                }
            }
            if self.stalled {
                return Flow::Close;
            }
        }
        Flow::Continue
    }

    /// Runs one action; some answer with an input.
    async fn run_action(
        &mut self,
        action: Action<Arc<Published>>,
    ) -> Option<Input<Arc<Published>>> {
        let failed = |(code, message): (&'static str, String)| Input::Failed { code, message };
        let rtc = |e: RtcError| failed((rtc_error_code(&e), e.to_string()));
        match action {
            Action::Send(msg) => self.send(msg).await,
            Action::Error { code, message } => self.send_error(code, message).await,
            Action::Join { seat, name, token } => {
                let joined = self.try_join(&seat, &name, token.as_deref()).await;
                return Some(match joined {
                    Ok(Joined::Here(id, present)) => Input::Joined { id, present },
                    Ok(Joined::Elsewhere(url)) => {
                        self.app.edge.joined("redirected");
                        Input::Redirected { url }
                    }
                    Err((code, message)) => {
                        self.app.edge.refused(code);
                        failed((code, message))
                    }
                });
            }
            Action::Leave => self.leave().await,
            Action::Close => {}
            action => {
                let m = self.member.as_mut()?;
                match action {
                    Action::AcceptOffer(sdp) => {
                        return Some(match m.peer.accept_offer(sdp).await {
                            Ok(sdp) => Input::Answered { sdp },
                            Err(e) => rtc(e),
                        })
                    }
                    Action::AcceptAnswer(sdp) => {
                        return Some(match m.peer.accept_answer(sdp).await {
                            Ok(()) => Input::AnswerTaken,
                            Err(e) => rtc(e),
                        })
                    }
                    Action::CreateOffer => {
                        let sdp = match m.peer.create_offer().await {
                            Ok(sdp) => {
                                tracing::debug!(participant = %m.id, subscriptions = m.peer.subscription_count(), "renegotiating");
                                Some(sdp)
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot create a renegotiation offer");
                                None
                            }
                        };
                        return Some(Input::Offered { sdp });
                    }
                    Action::AddCandidate(candidate) => {
                        if let Err(e) = m.peer.add_remote_candidate(candidate).await {
                            return Some(rtc(e));
                        }
                    }
                    Action::Announce(track) => {
                        match m.place.room() {
                            Some(room) => self.app.directory.publish(room, m.id, track.clone()),
                            None => self.app.roulette.publish(m.id, track.clone()).await,
                        }
                        m.published.push(track);
                    }
                    Action::Subscribe { owner, track } => match m.peer.subscribe(&track).await {
                        Ok(id) => m.subscriptions.entry(owner).or_default().push(id),
                        Err(e) => tracing::warn!(error = %e, "cannot subscribe"),
                    },
                    Action::Unsubscribe(owner) => {
                        for sub in m.subscriptions.remove(&owner).unwrap_or_default() {
                            if let Err(e) = m.peer.unsubscribe(sub).await {
                                tracing::debug!(error = %e, "unsubscribe failed");
                            }
                        }
                    }
                    Action::Update(change) => match m.place.room() {
                        Some(room) => self.app.directory.update(room, m.id, change),
                        None => self.app.roulette.update(m.id, change).await,
                    },
                    Action::Roulette(request) => {
                        let hub = &self.app.roulette;
                        let result = match request {
                            RouletteRequest::Next => hub.next(m.id).await,
                            RouletteRequest::Block => hub.block(m.id).await,
                            RouletteRequest::Report => hub.report(m.id).await,
                        };
                        if let Err(e) = result {
                            return Some(failed((e.code(), e.to_string())));
                        }
                    }
                    Action::Send(_)
                    | Action::Error { .. }
                    | Action::Join { .. }
                    | Action::Leave
                    | Action::Close => unreachable!("handled above"),
                }
            }
        }
        None
    }

    async fn send(&mut self, msg: ServerMessage) {
        if self.stalled {
            return;
        }
        let limit = Duration::from_secs(self.app.config.server.send_timeout_secs);
        let sent = match &mut self.out {
            Outgoing::Socket(out) => {
                let text = match serde_json::to_string(&msg) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot serialise a server message");
                        return;
                    }
                };
                tokio::time::timeout(limit, out.send(Message::Text(text.into())))
                    .await
                    .map(|r| r.map_err(|e| e.to_string()))
            }
            Outgoing::Channel(out) => tokio::time::timeout(limit, out.send(msg))
                .await
                .map(|r| r.map_err(|e| e.to_string())),
        };
        match sent {
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
            if let Outgoing::Socket(out) = &mut self.out {
                let close = Message::Close(Some(CloseFrame {
                    code: CLOSE_TOO_BIG,
                    reason: "message too large".into(),
                }));
                let _ = out.send(close).await;
            }
            return Flow::Close;
        }
        match parse_client_message(text.as_str()) {
            Ok(msg) => self.feed(Input::Client(msg)).await,
            Err(rejected) => {
                self.send_error(rejected.code, rejected.message).await;
                Flow::Continue
            }
        }
    }

    /// Takes `seat`, makes the peer connection and welcomes the client; returns the
    /// participant's id and the tracks already there, or the node that hosts the room in a
    /// cluster.
    async fn try_join(
        &mut self,
        seat: &Seat,
        name: &str,
        token: Option<&str>,
    ) -> Result<Joined, (&'static str, String)> {
        let (name, rights) = self.admit(seat, name, token)?;
        let name = name.as_str();
        let max = self.app.config.rooms.max_name_chars;
        let place = match seat {
            Seat::Room(room) => {
                Place::Room(RoomId::parse(room, max).map_err(|e| (e.code(), e.to_string()))?)
            }
            Seat::Roulette { .. } => Place::Roulette,
            // A preview stays on the node the page talks to.
            Seat::Preview => Place::Preview(RoomId::preview(ParticipantId::fresh())),
        };
        // A room lives on one node; the roulette on every node (its pairing is shared).
        if let Place::Room(room) = &place {
            match self.app.router.place(room.as_str()).await {
                Ok(Placement::Here) => {}
                Ok(Placement::There { url }) => return Ok(Joined::Elsewhere(url)),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot place a join");
                    return Err((e.code(), e.to_string()));
                }
            }
        }
        let (tx, rx) = mpsc::channel(EVENT_DEPTH);
        let (id, present) = match &place {
            Place::Room(room) | Place::Preview(room) => {
                let j = self
                    .app
                    .directory
                    .join(room, name, tx)
                    .map_err(|e| (e.code(), e.to_string()))?;
                (j.id, j.present)
            }
            Place::Roulette => {
                let ticket = match seat {
                    Seat::Roulette { ticket } => ticket.as_deref(),
                    _ => None,
                };
                let Some(name) = clean_name(name, max) else {
                    let e = RoomError::InvalidDisplayName { max_chars: max };
                    return Err((e.code(), e.to_string()));
                };
                // A move keeps its id (and so its blocks); an unknown or used ticket is a
                // plain entry.
                let redeemed = match ticket {
                    Some(ticket) => self.app.roulette.redeem(ticket).await,
                    None => None,
                };
                let id = redeemed.map_or_else(ParticipantId::fresh, |(id, _)| id);
                let info = ParticipantInfo::new(id, name);
                let claim = redeemed.map(|(_, partner)| partner);
                if let Err(e) = self.app.roulette.enter(info, id, tx, claim).await {
                    return Err((e.code(), e.to_string()));
                }
                (id, Vec::new())
            }
        };
        let (peer, peer_events) = match ServerPeer::new(self.app.engine.clone()).await {
            Ok(p) => p,
            Err(e) => {
                self.vacate(&place, id).await;
                tracing::warn!(error = %e, "cannot create a peer connection");
                return Err((rtc_error_code(&e), e.to_string()));
            }
        };
        tracing::info!(place = %place, participant = %id, "joined");
        // Counted before the welcome goes out: whoever reads /metrics after it sees the join.
        self.app.edge.joined(place.label());
        let (command_tx, command_rx) = mpsc::channel(16);
        let token = self
            .app
            .register_session(&id.to_string(), command_tx, rights);
        let participants = present.iter().map(|p| p.info.clone()).collect();
        let waiting = present
            .into_iter()
            .flat_map(|p| p.tracks.into_iter().map(move |t| (p.id, t)))
            .collect();
        self.send(ServerMessage::Welcome {
            id: id.to_string(),
            room: match &place {
                Place::Room(room) => Some(room.to_string()),
                Place::Roulette | Place::Preview(_) => None,
            },
            participants,
            ice_servers: self.app.config.ice.servers_now(&id),
            token: token.clone(),
            nodes: self.app.router.other_nodes(),
        })
        .await;
        self.member = Some(Member {
            place,
            id,
            token,
            peer,
            subscriptions: HashMap::new(),
            published: Vec::new(),
            rights,
            refused_media: false,
        });
        self.peer_events = Some(peer_events);
        self.room_events = Some(rx);
        self.commands = Some(command_rx);
        Ok(Joined::Here(id, waiting))
    }

    /// The display name and rights of a join: as asked when tokens are off, else as the join
    /// token (`server.token_secret`) says, which must open this room (or the roulette; a
    /// preview takes any, under its own name).
    fn admit(
        &self,
        seat: &Seat,
        name: &str,
        token: Option<&str>,
    ) -> Result<(String, Rights), (&'static str, String)> {
        let secret = &self.app.config.server.token_secret;
        if secret.is_empty() {
            return Ok((name.to_owned(), Rights::ALL));
        }
        let refused = |e: TokenError| (e.code(), e.to_string());
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| refused(TokenError::Required))?;
        let claims = match seat {
            Seat::Room(room) => token::verify(secret, token, Some(room)),
            Seat::Roulette { .. } => token::verify(secret, token, None),
            Seat::Preview => token::decode(secret, token),
        }
        .map_err(refused)?;
        let rights = Rights {
            publish: claims.publish,
            face: claims.face,
        };
        let name = match seat {
            Seat::Preview => name.to_owned(),
            _ => claims.name,
        };
        Ok((name, rights))
    }

    /// Takes the participant out of its room or the roulette (the others are told).
    async fn vacate(&self, place: &Place, id: ParticipantId) {
        match place.room() {
            Some(room) => self.app.directory.leave(room, id),
            None => self.app.roulette.leave(id).await,
        }
    }

    async fn on_peer(&mut self, event: PeerEvent) -> Flow {
        let Some(m) = self.member.as_mut() else {
            return Flow::Continue;
        };
        match event {
            PeerEvent::LocalCandidate(candidate) => {
                tracing::debug!(participant = %m.id, candidate = %candidate.candidate, "local candidate");
                self.feed(Input::LocalCandidate(candidate)).await
            }
            PeerEvent::RemoteTrack(track) if !m.rights.publish => {
                crate::rtc::discard(track);
                if !std::mem::replace(&mut m.refused_media, true) {
                    self.send_error(
                        "not_allowed",
                        "the link you joined with does not allow sending your camera or microphone; you receive the others",
                    )
                    .await;
                }
                Flow::Continue
            }
            PeerEvent::RemoteTrack(track) => match m.peer.publish(track, &m.id.to_string()).await {
                Ok(published) => {
                    tracing::info!(participant = %m.id, kind = ?published.kind, stream = %published.stream, "publishing");
                    let video = published.kind == MediaKind::Video;
                    self.feed(Input::Published {
                        track: published,
                        video,
                    })
                    .await
                }
                Err(e) => {
                    let code = rtc_error_code(&e);
                    self.send_error(code, format!("cannot relay your track: {e}"))
                        .await;
                    Flow::Continue
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
                Flow::Continue
            }
            // `Closed` here was not our doing: `leave` stops listening before it closes.
            PeerEvent::Failed | PeerEvent::Closed => {
                tracing::info!(participant = %m.id, "connection lost (ICE failed); leaving the room");
                self.feed(Input::ConnectionLost).await
            }
            PeerEvent::Connected => {
                tracing::debug!(participant = %m.id, "connected");
                self.feed(Input::Connected).await
            }
            PeerEvent::Disconnected => {
                tracing::debug!(participant = %m.id, "disconnected");
                Flow::Continue
            }
            PeerEvent::GatheringComplete => Flow::Continue,
        }
    }

    /// Leaves the room (if in one) and frees everything of the participant.
    async fn leave(&mut self) {
        self.peer_events = None;
        self.room_events = None;
        self.commands = None;
        if let Some(mut m) = self.member.take() {
            self.app.unregister_session(&m.token, &m.id.to_string());
            self.vacate(&m.place, m.id).await;
            m.peer.close().await;
            tracing::info!(place = %m.place, participant = %m.id, "left");
        }
    }
}
