//! One participant's lifecycle as a sans-I/O state machine: what the client says, what its
//! peer connection and its room report, the results of the work it asked for, and the time go
//! in ([`Input`]); what to do comes out ([`Action`]). The WebSocket session (`session.rs`)
//! runs the actions (room directory, roulette, peer connection, socket) and feeds their results
//! back; another front door can drive the same machine.
//!
//! Rules it keeps:
//!
//! - A participant joins one room or the roulette at a time, within `join_timeout` of the
//!   connection (or of its last leave); messages that need a seat before it get `not_joined`
//!   (roulette requests outside the roulette: `not_in_roulette`).
//! - Negotiation: the client offers first; the server answers. From then on only the server
//!   offers, one offer at a time, once the connection is up, whenever what the participant
//!   receives changed. Streams that appear before the first exchange wait for it. A client
//!   offer while the server's waits for its answer is refused (`negotiation_in_progress`), an
//!   answer with no offer waiting too (`unexpected_answer`).
//! - Leaving (asked, or the connection failed) drops everything of the seat; messages of the
//!   old negotiation that arrive afterwards get `not_joined`.
//!
//! `T` is the handle of a published track (the session uses `Arc<rtc::Published>`); the
//! machine only passes it on, so its tests use plain values.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::protocol::{ClientMessage, ServerMessage};
use crate::room::roulette::NextReason;
use crate::room::{Change, FaceState, ParticipantId, ParticipantInfo};
use crate::rtc::IceCandidate;

/// Where a participant asks to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seat {
    Room(String),
    /// With the ticket of a move from another node, if any.
    Roulette {
        ticket: Option<String>,
    },
    /// A seat of one's own, to see oneself as the others would before joining.
    Preview,
}

/// What a participant receives of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receives {
    /// Everyone it sees (its room, its roulette partner), renegotiated as they come and go: a
    /// browser page.
    Everyone,
    /// Nothing: a WHIP publisher, whose client never takes an offer.
    Nobody,
    /// One participant's tracks, fixed in the answer to the client's only offer: a WHEP viewer.
    /// When that participant leaves, the session ends.
    Only(ParticipantId),
}

impl Receives {
    fn admits(self, owner: ParticipantId) -> bool {
        match self {
            Receives::Everyone => true,
            Receives::Nobody => false,
            Receives::Only(id) => id == owner,
        }
    }
}

/// A roulette request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouletteRequest {
    Next,
    Block,
    Report,
}

/// What happens to a participant.
#[derive(Debug)]
pub enum Input<T> {
    /// A message from the client.
    Client(ClientMessage),
    /// The join asked for with [`Action::Join`] succeeded: the participant's id, and the tracks
    /// of those already there (subscribed to after the first exchange).
    Joined {
        id: ParticipantId,
        present: Vec<(ParticipantId, T)>,
    },
    /// The join asked for lives on another node ([`Action::Join`]): its page.
    Redirected {
        url: String,
    },
    /// Work asked for failed; the client is told with this code.
    Failed {
        code: &'static str,
        message: String,
    },
    /// The client's offer was taken ([`Action::AcceptOffer`]): the answer to send.
    Answered {
        sdp: String,
    },
    /// The client's answer was taken ([`Action::AcceptAnswer`]).
    AnswerTaken,
    /// The server's offer to send ([`Action::CreateOffer`]); `None` if it could not be made.
    Offered {
        sdp: Option<String>,
    },
    /// The peer connection is up (ICE and DTLS).
    Connected,
    /// The peer connection failed or closed under us.
    ConnectionLost,
    LocalCandidate(IceCandidate),
    /// A track the participant sends is ready to relay (`video`: it is its camera).
    Published {
        track: T,
        video: bool,
    },
    /// Someone arrived, or changed (their face).
    OtherJoined(ParticipantInfo),
    OtherUpdated(ParticipantInfo),
    OtherLeft(ParticipantId),
    /// Someone this participant sees publishes a track.
    OtherPublished {
        owner: ParticipantId,
        track: T,
    },
    /// Roulette: a partner, with what it already publishes.
    Paired {
        partner: ParticipantInfo,
        partner_id: ParticipantId,
        tracks: Vec<T>,
    },
    /// Roulette: the partner is gone.
    PartnerLeft {
        partner: ParticipantId,
        reason: NextReason,
    },
    /// Roulette: waiting for a partner.
    Waiting {
        position: usize,
        online: usize,
    },
    /// Roulette, in a cluster: the partner waits on the node at `url`; continue there.
    Move {
        url: String,
        ticket: String,
    },
    /// What the participant's video carries changed (a face picked or cleared, the swap's
    /// report).
    Face {
        state: FaceState,
        reason: Option<String>,
    },
    /// What the participant's audio carries changed (a voice chosen, its stream's report).
    Voice {
        state: crate::voice::VoiceState,
        reason: Option<String>,
    },
    /// [`Participant::deadline`] passed.
    Timeout,
    /// The server is shutting down.
    Shutdown,
}

/// What to do, in order.
#[derive(Debug, PartialEq)]
pub enum Action<T> {
    /// Send this to the client.
    Send(ServerMessage),
    /// Tell the client its request failed.
    Error {
        code: &'static str,
        message: String,
    },
    /// Take a seat (directory or roulette), make the peer connection, welcome the client;
    /// answer with [`Input::Joined`], [`Input::Redirected`] or [`Input::Failed`]. `token`: the
    /// join token sent.
    Join {
        seat: Seat,
        name: String,
        token: Option<String>,
    },
    /// Give up the seat: leave the room or roulette, close the peer connection, forget the
    /// face.
    Leave,
    /// Answer with [`Input::Answered`] or [`Input::Failed`].
    AcceptOffer(String),
    /// Answer with [`Input::AnswerTaken`] or [`Input::Failed`] (the server's offer then still
    /// waits for an answer).
    AcceptAnswer(String),
    /// Answer with [`Input::Offered`].
    CreateOffer,
    /// Answer with nothing, or [`Input::Failed`].
    AddCandidate(IceCandidate),
    /// Offer a track the participant sends to the others of its room or its partner.
    Announce(T),
    /// Start receiving `owner`'s track (sent after the next exchange).
    Subscribe {
        owner: ParticipantId,
        track: T,
    },
    /// Stop receiving everything of `owner`.
    Unsubscribe(ParticipantId),
    /// Tell the room (or the partner) what changed of the participant: what its video
    /// carries, its camera or microphone.
    Update(Change),
    Roulette(RouletteRequest),
    /// End the session.
    Close,
}

/// The seat and the negotiation of a joined participant.
#[derive(Debug)]
struct Member<T> {
    id: ParticipantId,
    receives: Receives,
    roulette: bool,
    /// A preview: the participant sees its own video whatever `media.self_view` says.
    preview: bool,
    /// Owners whose tracks this participant receives.
    receiving: BTreeSet<ParticipantId>,
    /// Tracks to subscribe to once the first exchange is done.
    waiting: Vec<(ParticipantId, T)>,
    answered_first_offer: bool,
    /// ICE and DTLS are up. Renegotiating before that loses the new tracks in the `webrtc`
    /// crate (they are never bound), so offers wait for it.
    connected: bool,
    offer_in_flight: bool,
    /// An offer is being made ([`Action::CreateOffer`] out, [`Input::Offered`] not yet in).
    making_offer: bool,
    /// What the participant receives changed since the last offer.
    dirty: bool,
}

#[derive(Debug)]
enum Phase<T> {
    /// Not seated since this instant.
    Lobby {
        since: Instant,
    },
    /// [`Action::Join`] is out.
    Joining {
        since: Instant,
        roulette: bool,
        preview: bool,
    },
    Joined(Member<T>),
}

/// One participant, from its connection to its end.
#[derive(Debug)]
pub struct Participant<T> {
    phase: Phase<T>,
    join_timeout: Duration,
    /// The participant receives its own video as the others do (`media.self_view`).
    self_view: bool,
    receives: Receives,
}

impl<T: Clone> Participant<T> {
    pub fn new(now: Instant, join_timeout: Duration, self_view: bool) -> Self {
        Self {
            phase: Phase::Lobby { since: now },
            join_timeout,
            self_view,
            receives: Receives::Everyone,
        }
    }

    /// A participant that receives only `receives` (WHIP, WHEP), never its own video.
    pub fn receiving(mut self, receives: Receives) -> Self {
        self.receives = receives;
        self.self_view &= receives == Receives::Everyone;
        self
    }

    /// The participant's id while seated.
    pub fn id(&self) -> Option<ParticipantId> {
        match &self.phase {
            Phase::Joined(m) => Some(m.id),
            _ => None,
        }
    }

    /// Whether it sits in the roulette.
    pub fn in_roulette(&self) -> bool {
        matches!(&self.phase, Phase::Joined(m) if m.roulette)
    }

    /// When [`Input::Timeout`] is due: `join_timeout` after the connection or the last leave,
    /// while the participant has no seat.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Lobby { since } | Phase::Joining { since, .. } => {
                Some(since + self.join_timeout)
            }
            Phase::Joined(_) => None,
        }
    }

    pub fn handle(&mut self, input: Input<T>, now: Instant) -> Vec<Action<T>> {
        let mut out = Vec::new();
        match input {
            Input::Client(msg) => self.on_client(msg, now, &mut out),
            Input::Joined { id, present } => {
                if let Phase::Joining {
                    roulette, preview, ..
                } = self.phase
                {
                    self.phase = Phase::Joined(Member {
                        id,
                        receives: self.receives,
                        roulette,
                        preview,
                        receiving: BTreeSet::new(),
                        waiting: present
                            .into_iter()
                            .filter(|(owner, _)| self.receives.admits(*owner))
                            .collect(),
                        answered_first_offer: false,
                        connected: false,
                        offer_in_flight: false,
                        making_offer: false,
                        dirty: false,
                    });
                }
            }
            Input::Redirected { url } => {
                if let Phase::Joining { since, .. } = self.phase {
                    self.phase = Phase::Lobby { since };
                    out.push(Action::Send(ServerMessage::Redirect { url }));
                }
            }
            Input::Failed { code, message } => {
                if let Phase::Joining { since, .. } = self.phase {
                    self.phase = Phase::Lobby { since };
                }
                out.push(Action::Error { code, message });
            }
            Input::Answered { sdp } => {
                if let Phase::Joined(m) = &mut self.phase {
                    m.answered_first_offer = true;
                    out.push(Action::Send(ServerMessage::Answer { sdp }));
                    for (owner, track) in std::mem::take(&mut m.waiting) {
                        subscribe(m, owner, track, &mut out);
                    }
                    renegotiate(m, &mut out);
                }
            }
            Input::AnswerTaken => {
                if let Phase::Joined(m) = &mut self.phase {
                    m.offer_in_flight = false;
                    renegotiate(m, &mut out);
                }
            }
            Input::Offered { sdp } => {
                if let Phase::Joined(m) = &mut self.phase {
                    m.making_offer = false;
                    if let Some(sdp) = sdp {
                        m.dirty = false;
                        m.offer_in_flight = true;
                        out.push(Action::Send(ServerMessage::Offer { sdp }));
                    }
                }
            }
            Input::Connected => {
                if let Phase::Joined(m) = &mut self.phase {
                    m.connected = true;
                    renegotiate(m, &mut out);
                }
            }
            Input::ConnectionLost => {
                if let Phase::Joined(_) = self.phase {
                    out.push(Action::Error {
                        code: "connection_lost",
                        message: "no media traffic within the timeout; you have left the room"
                            .into(),
                    });
                    self.leave(now, &mut out);
                }
            }
            Input::LocalCandidate(candidate) => {
                if let Phase::Joined(_) = self.phase {
                    out.push(Action::Send(ServerMessage::Candidate { candidate }));
                }
            }
            Input::Published { track, video } => {
                if let Phase::Joined(m) = &mut self.phase {
                    out.push(Action::Announce(track.clone()));
                    if video && (self.self_view || m.preview) {
                        // The participant sees itself as the others do (after the stage).
                        let id = m.id;
                        subscribe(m, id, track, &mut out);
                    }
                    renegotiate(m, &mut out);
                }
            }
            Input::OtherJoined(participant) => {
                self.tell(ServerMessage::ParticipantJoined { participant }, &mut out)
            }
            Input::OtherUpdated(participant) => {
                self.tell(ServerMessage::ParticipantUpdated { participant }, &mut out)
            }
            Input::OtherLeft(id) => {
                if let Phase::Joined(m) = &self.phase {
                    if m.receives == Receives::Only(id) {
                        // The one stream this session carries ended.
                        self.leave(now, &mut out);
                        out.push(Action::Close);
                        return out;
                    }
                }
                if let Phase::Joined(m) = &mut self.phase {
                    drop_publisher(m, id, &mut out);
                    out.push(Action::Send(ServerMessage::ParticipantLeft {
                        id: id.to_string(),
                    }));
                    renegotiate(m, &mut out);
                }
            }
            Input::OtherPublished { owner, track } => {
                if let Phase::Joined(m) = &mut self.phase {
                    add_publisher(m, owner, vec![track], &mut out);
                    renegotiate(m, &mut out);
                }
            }
            Input::Paired {
                partner,
                partner_id,
                tracks,
            } => {
                if let Phase::Joined(m) = &mut self.phase {
                    add_publisher(m, partner_id, tracks, &mut out);
                    out.push(Action::Send(ServerMessage::RoulettePaired { partner }));
                    renegotiate(m, &mut out);
                }
            }
            Input::PartnerLeft { partner, reason } => {
                if let Phase::Joined(m) = &mut self.phase {
                    drop_publisher(m, partner, &mut out);
                    // Blocks and reports are not revealed to the one blocked or reported.
                    let reason = match reason {
                        NextReason::Blocked | NextReason::Reported => NextReason::Next,
                        other => other,
                    };
                    out.push(Action::Send(ServerMessage::RouletteEnded { reason }));
                    renegotiate(m, &mut out);
                }
            }
            Input::Waiting { position, online } => self.tell(
                ServerMessage::RouletteWaiting { position, online },
                &mut out,
            ),
            Input::Move { url, ticket } => {
                if self.in_roulette() {
                    out.push(Action::Send(ServerMessage::RouletteMove { url, ticket }));
                    self.leave(now, &mut out);
                    out.push(Action::Close);
                }
            }
            Input::Face { state, reason } => {
                if let Phase::Joined(_) = self.phase {
                    out.push(Action::Update(Change::Face(state)));
                    // The wearer is told too: its page says what the others see.
                    out.push(Action::Send(ServerMessage::FaceState { state, reason }));
                }
            }
            Input::Voice { state, reason } => {
                if let Phase::Joined(_) = self.phase {
                    out.push(Action::Update(Change::Voice(state)));
                    // The speaker too: its page says what the others hear.
                    out.push(Action::Send(ServerMessage::VoiceState { state, reason }));
                }
            }
            Input::Timeout => {
                if self.deadline().is_some_and(|d| now >= d) {
                    out.push(Action::Error {
                        code: "join_timeout",
                        message: format!("no join within {} s", self.join_timeout.as_secs()),
                    });
                    out.push(Action::Close);
                }
            }
            Input::Shutdown => {
                out.push(Action::Send(ServerMessage::Bye {
                    reason: "server is shutting down".into(),
                }));
                out.push(Action::Close);
            }
        }
        out
    }

    /// Forwards a message of the room to a seated participant.
    fn tell(&self, msg: ServerMessage, out: &mut Vec<Action<T>>) {
        if let Phase::Joined(_) = self.phase {
            out.push(Action::Send(msg));
        }
    }

    fn on_client(&mut self, msg: ClientMessage, now: Instant, out: &mut Vec<Action<T>>) {
        let seat = match &msg {
            ClientMessage::Join { room, .. } => Some(Seat::Room(room.clone())),
            ClientMessage::Roulette { ticket, .. } => Some(Seat::Roulette {
                ticket: ticket.clone(),
            }),
            ClientMessage::Preview { .. } => Some(Seat::Preview),
            _ => None,
        };
        if let Some(seat) = seat {
            let (name, token) = match msg {
                ClientMessage::Join { name, token, .. }
                | ClientMessage::Roulette { name, token, .. } => (name, token),
                // Nobody sees a preview's name.
                ClientMessage::Preview { token } => ("you".to_owned(), token),
                _ => unreachable!("a seat comes from a join"),
            };
            return match self.phase {
                Phase::Lobby { since } => {
                    self.phase = Phase::Joining {
                        since,
                        roulette: matches!(seat, Seat::Roulette { .. }),
                        preview: seat == Seat::Preview,
                    };
                    out.push(Action::Join { seat, name, token });
                }
                _ => out.push(Action::Error {
                    code: "already_joined",
                    message: "this connection is already in a room or the roulette; leave first"
                        .into(),
                }),
            };
        }
        if let ClientMessage::Leave | ClientMessage::Stop = msg {
            return self.leave(now, out);
        }
        let request = match msg {
            ClientMessage::Next => Some(RouletteRequest::Next),
            ClientMessage::Block => Some(RouletteRequest::Block),
            ClientMessage::Report => Some(RouletteRequest::Report),
            _ => None,
        };
        if let Some(request) = request {
            return out.push(if self.in_roulette() {
                Action::Roulette(request)
            } else {
                Action::Error {
                    code: "not_in_roulette",
                    message: "not in the roulette".into(),
                }
            });
        }
        let Phase::Joined(m) = &mut self.phase else {
            return out.push(Action::Error {
                code: "not_joined",
                message: "join a room or the roulette first".into(),
            });
        };
        match msg {
            ClientMessage::Offer { sdp } => {
                if m.offer_in_flight {
                    return out.push(Action::Error {
                        code: "negotiation_in_progress",
                        message: "the server's offer is waiting for your answer".into(),
                    });
                }
                if let Receives::Only(_) = m.receives {
                    // No offer of the server's follows: what it sends goes in this answer.
                    for (owner, track) in std::mem::take(&mut m.waiting) {
                        subscribe(m, owner, track, out);
                    }
                    m.dirty = false;
                }
                out.push(Action::AcceptOffer(sdp));
            }
            ClientMessage::Answer { sdp } => {
                if !m.offer_in_flight {
                    return out.push(Action::Error {
                        code: "unexpected_answer",
                        message: "no offer is waiting for an answer".into(),
                    });
                }
                out.push(Action::AcceptAnswer(sdp));
            }
            ClientMessage::Candidate {
                candidate: Some(candidate),
            } => out.push(Action::AddCandidate(candidate)),
            ClientMessage::Candidate { candidate: None } => {}
            ClientMessage::Media { camera, microphone } => {
                out.push(Action::Update(Change::Media { camera, microphone }))
            }
            ClientMessage::Join { .. }
            | ClientMessage::Roulette { .. }
            | ClientMessage::Preview { .. }
            | ClientMessage::Leave
            | ClientMessage::Stop
            | ClientMessage::Next
            | ClientMessage::Block
            | ClientMessage::Report => unreachable!("handled above"),
        }
    }

    fn leave(&mut self, now: Instant, out: &mut Vec<Action<T>>) {
        if let Phase::Joined(_) = self.phase {
            out.push(Action::Leave);
            self.phase = Phase::Lobby { since: now };
        }
    }
}

/// Starts receiving `owner`'s tracks (after the first exchange; until then they wait).
fn add_publisher<T>(
    m: &mut Member<T>,
    owner: ParticipantId,
    tracks: Vec<T>,
    out: &mut Vec<Action<T>>,
) {
    if !m.receives.admits(owner) {
        return;
    }
    for track in tracks {
        if let (Receives::Only(_), true) = (m.receives, m.answered_first_offer) {
            // Fixed at the first exchange.
        } else if m.answered_first_offer {
            subscribe(m, owner, track, out);
        } else {
            m.waiting.push((owner, track));
        }
    }
}

fn subscribe<T>(m: &mut Member<T>, owner: ParticipantId, track: T, out: &mut Vec<Action<T>>) {
    m.receiving.insert(owner);
    m.dirty = true;
    out.push(Action::Subscribe { owner, track });
}

/// Stops receiving everything of `owner`.
fn drop_publisher<T>(m: &mut Member<T>, owner: ParticipantId, out: &mut Vec<Action<T>>) {
    m.waiting.retain(|(o, _)| *o != owner);
    if m.receiving.remove(&owner) {
        m.dirty = true;
        out.push(Action::Unsubscribe(owner));
    }
}

/// Makes an offer if what the participant receives changed and none is pending.
fn renegotiate<T>(m: &mut Member<T>, out: &mut Vec<Action<T>>) {
    if m.receives == Receives::Everyone
        && m.dirty
        && m.answered_first_offer
        && m.connected
        && !m.offer_in_flight
        && !m.making_offer
    {
        m.making_offer = true;
        out.push(Action::CreateOffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type P = Participant<&'static str>;
    type A = Action<&'static str>;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn id(n: u64) -> ParticipantId {
        ParticipantId(n)
    }

    fn info(n: u64, name: &str) -> ParticipantInfo {
        ParticipantInfo::new(id(n), name.into())
    }

    fn client(p: &mut P, msg: &str) -> Vec<A> {
        let msg = super::super::protocol::parse_client_message(msg).expect("a valid message");
        p.handle(Input::Client(msg), Instant::now())
    }

    fn input(p: &mut P, i: Input<&'static str>) -> Vec<A> {
        p.handle(i, Instant::now())
    }

    fn codes(actions: &[A]) -> Vec<&'static str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Error { code, .. } => Some(*code),
                _ => None,
            })
            .collect()
    }

    fn sent(actions: &[A]) -> Vec<&ServerMessage> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    fn bob_publishes(p: &mut P) -> Vec<A> {
        input(
            p,
            Input::OtherPublished {
                owner: id(2),
                track: "bob",
            },
        )
    }

    fn offer(sdp: &str) -> String {
        serde_json::json!({"type": "offer", "sdp": sdp}).to_string()
    }

    fn answer(sdp: &str) -> String {
        serde_json::json!({"type": "answer", "sdp": sdp}).to_string()
    }

    /// Joined `room`, with `present` already there: the first offer answered and, when
    /// `connected`, the connection up.
    fn seated(present: Vec<(ParticipantId, &'static str)>, connected: bool) -> P {
        let mut p = P::new(Instant::now(), TIMEOUT, false);
        let join = client(&mut p, r#"{"type":"join","room":"lab","name":"Ann"}"#);
        assert_eq!(
            join,
            vec![Action::Join {
                seat: Seat::Room("lab".into()),
                name: "Ann".into(),
                token: None
            }]
        );
        assert!(input(&mut p, Input::Joined { id: id(1), present }).is_empty());
        assert_eq!(
            client(&mut p, &offer("client offer")),
            vec![Action::AcceptOffer("client offer".into())]
        );
        if connected {
            assert!(input(&mut p, Input::Connected).is_empty());
        }
        p
    }

    #[test]
    fn a_join_is_asked_once_and_a_refusal_leaves_the_participant_free_to_retry() {
        let mut p = P::new(Instant::now(), TIMEOUT, false);
        assert_eq!(
            codes(&client(&mut p, &offer("x"))),
            ["not_joined"],
            "negotiation before a seat"
        );
        assert_eq!(
            codes(&client(&mut p, r#"{"type":"next"}"#)),
            ["not_in_roulette"]
        );
        let a = client(&mut p, r#"{"type":"join","room":"lab","name":"Ann"}"#);
        assert!(matches!(a[..], [Action::Join { .. }]));
        // A second join while the first is out, or after it, is refused.
        assert_eq!(
            codes(&client(&mut p, r#"{"type":"roulette","name":"Ann"}"#)),
            ["already_joined"]
        );
        let refused = input(
            &mut p,
            Input::Failed {
                code: "room_full",
                message: "room is full (2 participants)".into(),
            },
        );
        assert_eq!(codes(&refused), ["room_full"]);
        assert_eq!(p.id(), None);
        let a = client(&mut p, r#"{"type":"roulette","name":"Ann"}"#);
        assert_eq!(
            a,
            vec![Action::Join {
                seat: Seat::Roulette { ticket: None },
                name: "Ann".into(),
                token: None
            }]
        );
        input(
            &mut p,
            Input::Joined {
                id: id(7),
                present: vec![],
            },
        );
        assert_eq!((p.id(), p.in_roulette()), (Some(id(7)), true));
        // In a cluster, a join may be sent elsewhere: the participant stays free to join.
        let mut q = P::new(Instant::now(), TIMEOUT, false);
        client(&mut q, r#"{"type":"join","room":"lab","name":"Ann"}"#);
        let a = input(
            &mut q,
            Input::Redirected {
                url: "http://node2/".into(),
            },
        );
        assert_eq!(
            a,
            vec![Action::Send(ServerMessage::Redirect {
                url: "http://node2/".into()
            })]
        );
        assert!(q.deadline().is_some(), "the join clock still runs");
        let a = client(&mut q, r#"{"type":"join","room":"lab","name":"Ann"}"#);
        assert!(matches!(a[..], [Action::Join { .. }]));
        assert_eq!(
            codes(&client(
                &mut p,
                r#"{"type":"join","room":"lab","name":"Ann"}"#
            )),
            ["already_joined"]
        );
    }

    #[test]
    fn the_first_answer_subscribes_those_already_there_and_offers_once_connected() {
        let mut p = seated(vec![(id(2), "bob-video"), (id(2), "bob-audio")], false);
        let a = input(
            &mut p,
            Input::Answered {
                sdp: "server answer".into(),
            },
        );
        assert_eq!(
            a,
            vec![
                Action::Send(ServerMessage::Answer {
                    sdp: "server answer".into()
                }),
                Action::Subscribe {
                    owner: id(2),
                    track: "bob-video"
                },
                Action::Subscribe {
                    owner: id(2),
                    track: "bob-audio"
                },
            ],
            "no offer before the connection is up"
        );
        assert_eq!(input(&mut p, Input::Connected), vec![Action::CreateOffer]);
        let a = input(
            &mut p,
            Input::Offered {
                sdp: Some("server offer".into()),
            },
        );
        assert_eq!(
            sent(&a),
            [&ServerMessage::Offer {
                sdp: "server offer".into()
            }]
        );
    }

    #[test]
    fn tracks_published_during_a_renegotiation_wait_for_its_answer_and_one_more_offer() {
        let mut p = seated(vec![], true);
        input(&mut p, Input::Answered { sdp: "a".into() });
        let a = input(
            &mut p,
            Input::OtherPublished {
                owner: id(2),
                track: "bob-video",
            },
        );
        assert_eq!(
            a,
            vec![
                Action::Subscribe {
                    owner: id(2),
                    track: "bob-video"
                },
                Action::CreateOffer
            ]
        );
        // Until the offer is made, a second track does not ask for another.
        let a = input(
            &mut p,
            Input::OtherPublished {
                owner: id(3),
                track: "cid-video",
            },
        );
        assert_eq!(a.len(), 1, "{a:?}");
        input(
            &mut p,
            Input::Offered {
                sdp: Some("o1".into()),
            },
        );
        // While the offer waits for its answer: more tracks, no offer; the client may not
        // offer either.
        let a = input(
            &mut p,
            Input::OtherPublished {
                owner: id(4),
                track: "dan-video",
            },
        );
        assert!(!a.contains(&Action::CreateOffer), "{a:?}");
        assert_eq!(
            codes(&client(&mut p, &offer("x"))),
            ["negotiation_in_progress"]
        );
        // A failed answer leaves the offer waiting; a good one ends it and the changes since
        // make one more offer.
        assert_eq!(
            client(&mut p, &answer("bad")),
            vec![Action::AcceptAnswer("bad".into())]
        );
        input(
            &mut p,
            Input::Failed {
                code: "bad_sdp",
                message: "no".into(),
            },
        );
        assert_eq!(
            client(&mut p, &answer("good")),
            vec![Action::AcceptAnswer("good".into())]
        );
        assert_eq!(input(&mut p, Input::AnswerTaken), vec![Action::CreateOffer]);
        input(
            &mut p,
            Input::Offered {
                sdp: Some("o2".into()),
            },
        );
        client(&mut p, &answer("a2"));
        assert!(
            input(&mut p, Input::AnswerTaken).is_empty(),
            "nothing changed"
        );
        assert_eq!(codes(&client(&mut p, &answer("a3"))), ["unexpected_answer"]);
    }

    #[test]
    fn an_offer_that_cannot_be_made_is_tried_again_at_the_next_change() {
        let mut p = seated(vec![], true);
        input(&mut p, Input::Answered { sdp: "a".into() });
        bob_publishes(&mut p);
        assert!(input(&mut p, Input::Offered { sdp: None }).is_empty());
        let a = input(&mut p, Input::OtherLeft(id(2)));
        assert_eq!(
            a,
            vec![
                Action::Unsubscribe(id(2)),
                Action::Send(ServerMessage::ParticipantLeft {
                    id: id(2).to_string()
                }),
                Action::CreateOffer
            ]
        );
    }

    #[test]
    fn leaving_during_a_negotiation_drops_the_seat_and_its_late_messages() {
        let mut p = seated(vec![], true);
        input(&mut p, Input::Answered { sdp: "a".into() });
        bob_publishes(&mut p);
        input(
            &mut p,
            Input::Offered {
                sdp: Some("o".into()),
            },
        );
        assert_eq!(client(&mut p, r#"{"type":"leave"}"#), vec![Action::Leave]);
        assert_eq!(p.id(), None);
        assert_eq!(codes(&client(&mut p, &answer("late"))), ["not_joined"]);
        // What the old room still sends goes nowhere.
        assert!(input(&mut p, Input::OtherLeft(id(2))).is_empty());
        assert!(input(&mut p, Input::Connected).is_empty());
        // Leaving twice does nothing; joining again works.
        assert!(client(&mut p, r#"{"type":"leave"}"#).is_empty());
        let a = client(&mut p, r#"{"type":"join","room":"lab","name":"Ann"}"#);
        assert!(matches!(a[..], [Action::Join { .. }]));
    }

    #[test]
    fn a_lost_connection_tells_the_client_and_leaves() {
        let mut p = seated(vec![], true);
        let a = input(&mut p, Input::ConnectionLost);
        assert_eq!(codes(&a), ["connection_lost"]);
        assert_eq!(a.last(), Some(&Action::Leave));
        assert_eq!(p.id(), None);
    }

    #[test]
    fn a_late_joiner_before_the_first_answer_waits_and_one_who_leaves_first_is_forgotten() {
        let mut p = seated(vec![], true);
        // Before the first exchange: tracks wait, nothing is offered.
        let a = input(
            &mut p,
            Input::OtherPublished {
                owner: id(2),
                track: "bob",
            },
        );
        assert!(a.is_empty(), "{a:?}");
        input(
            &mut p,
            Input::OtherPublished {
                owner: id(3),
                track: "cid",
            },
        );
        // Cid leaves before the answer: nothing to unsubscribe, Cid's track is not subscribed.
        let a = input(&mut p, Input::OtherLeft(id(3)));
        assert_eq!(
            a,
            vec![Action::Send(ServerMessage::ParticipantLeft {
                id: id(3).to_string()
            })]
        );
        let a = input(&mut p, Input::Answered { sdp: "a".into() });
        assert_eq!(
            a[1..],
            [
                Action::Subscribe {
                    owner: id(2),
                    track: "bob"
                },
                Action::CreateOffer
            ]
        );
    }

    #[test]
    fn roulette_pairs_subscribe_the_partner_and_reports_are_not_revealed() {
        let mut p = P::new(Instant::now(), TIMEOUT, false);
        assert_eq!(
            codes(&client(
                &mut p,
                r#"{"type":"join","room":"lab","name":"A"}"#
            )),
            Vec::<&str>::new()
        );
        input(
            &mut p,
            Input::Joined {
                id: id(1),
                present: vec![],
            },
        );
        assert_eq!(
            codes(&client(&mut p, r#"{"type":"next"}"#)),
            ["not_in_roulette"]
        );

        let mut p = P::new(Instant::now(), TIMEOUT, false);
        client(&mut p, r#"{"type":"roulette","name":"A"}"#);
        input(
            &mut p,
            Input::Joined {
                id: id(1),
                present: vec![],
            },
        );
        client(&mut p, &offer("o"));
        input(&mut p, Input::Answered { sdp: "a".into() });
        input(&mut p, Input::Connected);
        let a = input(
            &mut p,
            Input::Waiting {
                position: 1,
                online: 1,
            },
        );
        assert_eq!(
            sent(&a),
            [&ServerMessage::RouletteWaiting {
                position: 1,
                online: 1
            }]
        );
        let a = input(
            &mut p,
            Input::Paired {
                partner: info(2, "B"),
                partner_id: id(2),
                tracks: vec!["b-video", "b-audio"],
            },
        );
        assert_eq!(
            a,
            vec![
                Action::Subscribe {
                    owner: id(2),
                    track: "b-video"
                },
                Action::Subscribe {
                    owner: id(2),
                    track: "b-audio"
                },
                Action::Send(ServerMessage::RoulettePaired {
                    partner: info(2, "B")
                }),
                Action::CreateOffer
            ]
        );
        input(
            &mut p,
            Input::Offered {
                sdp: Some("o".into()),
            },
        );
        client(&mut p, &answer("a"));
        input(&mut p, Input::AnswerTaken);
        assert_eq!(
            client(&mut p, r#"{"type":"report"}"#),
            vec![Action::Roulette(RouletteRequest::Report)]
        );
        let a = input(
            &mut p,
            Input::PartnerLeft {
                partner: id(2),
                reason: NextReason::Reported,
            },
        );
        assert_eq!(
            a,
            vec![
                Action::Unsubscribe(id(2)),
                Action::Send(ServerMessage::RouletteEnded {
                    reason: NextReason::Next
                }),
                Action::CreateOffer
            ]
        );
        assert_eq!(
            client(&mut p, r#"{"type":"stop"}"#),
            vec![Action::Leave],
            "stop leaves the roulette"
        );
    }

    #[test]
    fn camera_and_microphone_changes_go_to_the_room_once_seated() {
        let mut p = P::new(Instant::now(), TIMEOUT, false);
        let off = r#"{"type":"media","camera":false,"microphone":true}"#;
        assert_eq!(codes(&client(&mut p, off)), ["not_joined"]);
        let mut p = seated(vec![], true);
        assert_eq!(
            client(&mut p, off),
            vec![Action::Update(Change::Media {
                camera: false,
                microphone: true
            })]
        );
    }

    #[test]
    fn a_whip_publisher_receives_nothing_and_is_never_offered_anything() {
        let mut p = P::new(Instant::now(), TIMEOUT, true).receiving(Receives::Nobody);
        client(&mut p, r#"{"type":"join","room":"lab","name":"OBS"}"#);
        input(
            &mut p,
            Input::Joined {
                id: id(1),
                present: vec![(id(2), "bob")],
            },
        );
        assert_eq!(
            client(&mut p, &offer("o")),
            vec![Action::AcceptOffer("o".into())]
        );
        let a = input(&mut p, Input::Answered { sdp: "a".into() });
        assert_eq!(sent(&a), [&ServerMessage::Answer { sdp: "a".into() }]);
        assert_eq!(a.len(), 1, "nothing subscribed: {a:?}");
        input(&mut p, Input::Connected);
        assert!(bob_publishes(&mut p).is_empty());
        // Its own video is announced to the room, never sent back (no self-view).
        let a = input(
            &mut p,
            Input::Published {
                track: "own",
                video: true,
            },
        );
        assert_eq!(a, vec![Action::Announce("own")]);
    }

    #[test]
    fn a_whep_viewer_receives_one_participant_in_its_answer_and_ends_with_it() {
        let mut p = P::new(Instant::now(), TIMEOUT, false).receiving(Receives::Only(id(2)));
        client(&mut p, r#"{"type":"join","room":"lab","name":"Viewer"}"#);
        input(
            &mut p,
            Input::Joined {
                id: id(1),
                present: vec![
                    (id(2), "bob-video"),
                    (id(3), "cid-video"),
                    (id(2), "bob-audio"),
                ],
            },
        );
        // Bob's tracks are added before the answer is made: no offer of the server's follows.
        assert_eq!(
            client(&mut p, &offer("o")),
            vec![
                Action::Subscribe {
                    owner: id(2),
                    track: "bob-video"
                },
                Action::Subscribe {
                    owner: id(2),
                    track: "bob-audio"
                },
                Action::AcceptOffer("o".into())
            ]
        );
        let a = input(&mut p, Input::Answered { sdp: "a".into() });
        assert_eq!(
            a,
            vec![Action::Send(ServerMessage::Answer { sdp: "a".into() })]
        );
        assert!(input(&mut p, Input::Connected).is_empty());
        assert!(bob_publishes(&mut p).is_empty(), "fixed at the answer");
        assert_eq!(
            input(&mut p, Input::OtherLeft(id(3))),
            vec![Action::Send(ServerMessage::ParticipantLeft {
                id: id(3).to_string()
            })]
        );
        assert_eq!(
            input(&mut p, Input::OtherLeft(id(2))),
            vec![Action::Leave, Action::Close],
            "the stream it carries ended"
        );
    }

    #[test]
    fn a_roulette_move_tells_the_client_leaves_and_closes_and_the_ticket_comes_back() {
        let mut p = P::new(Instant::now(), TIMEOUT, false);
        let url = || "http://node2/".to_owned();
        let ticket = || "00ff".to_owned();
        let move_order = Input::Move {
            url: url(),
            ticket: ticket(),
        };
        // Before a seat in the roulette, a stray move order does nothing.
        assert!(input(&mut p, move_order).is_empty());
        client(&mut p, r#"{"type":"roulette","name":"A"}"#);
        input(
            &mut p,
            Input::Joined {
                id: id(1),
                present: vec![],
            },
        );
        let a = input(
            &mut p,
            Input::Move {
                url: url(),
                ticket: ticket(),
            },
        );
        assert_eq!(
            a,
            vec![
                Action::Send(ServerMessage::RouletteMove {
                    url: url(),
                    ticket: ticket()
                }),
                Action::Leave,
                Action::Close
            ]
        );
        // On the node moved to, the page enters with the ticket.
        let mut q = P::new(Instant::now(), TIMEOUT, false);
        assert_eq!(
            client(&mut q, r#"{"type":"roulette","name":"A","ticket":"00ff"}"#),
            vec![Action::Join {
                seat: Seat::Roulette {
                    ticket: Some(ticket())
                },
                name: "A".into(),
                token: None
            }]
        );
    }

    #[test]
    fn own_video_is_announced_and_seen_with_self_view_and_always_in_a_preview() {
        let cases = [
            (false, r#"{"type":"join","room":"lab","name":"A"}"#, false),
            (true, r#"{"type":"join","room":"lab","name":"A"}"#, true),
            (false, r#"{"type":"preview"}"#, true),
            (true, r#"{"type":"preview","token":"t"}"#, true),
        ];
        for (self_view, join, sees_itself) in cases {
            let mut p = P::new(Instant::now(), TIMEOUT, self_view);
            let a = client(&mut p, join);
            if join.contains("preview") {
                assert_eq!(
                    a,
                    vec![Action::Join {
                        seat: Seat::Preview,
                        name: "you".into(),
                        token: join.contains("token").then(|| "t".into()),
                    }]
                );
                // A preview is no roulette seat.
                assert!(!p.in_roulette());
            }
            input(
                &mut p,
                Input::Joined {
                    id: id(1),
                    present: vec![],
                },
            );
            client(&mut p, &offer("o"));
            input(&mut p, Input::Connected);
            input(&mut p, Input::Answered { sdp: "a".into() });
            let a = input(
                &mut p,
                Input::Published {
                    track: "my-video",
                    video: true,
                },
            );
            let mut expected = vec![Action::Announce("my-video")];
            if sees_itself {
                expected.push(Action::Subscribe {
                    owner: id(1),
                    track: "my-video",
                });
                expected.push(Action::CreateOffer);
            }
            assert_eq!(a, expected, "self_view {self_view}, {join}");
            let a = input(
                &mut p,
                Input::Published {
                    track: "my-audio",
                    video: false,
                },
            );
            assert_eq!(a, vec![Action::Announce("my-audio")]);
        }
    }

    #[test]
    fn the_join_timeout_runs_only_without_a_seat() {
        let start = Instant::now();
        let mut p = P::new(start, TIMEOUT, false);
        assert_eq!(p.deadline(), Some(start + TIMEOUT));
        // Early: nothing.
        assert!(p.handle(Input::Timeout, start + TIMEOUT / 2).is_empty());
        client(&mut p, r#"{"type":"join","room":"lab","name":"A"}"#);
        input(
            &mut p,
            Input::Joined {
                id: id(1),
                present: vec![],
            },
        );
        assert_eq!(p.deadline(), None);
        let left = start + Duration::from_secs(60);
        p.handle(Input::Client(ClientMessage::Leave), left);
        assert_eq!(p.deadline(), Some(left + TIMEOUT), "the clock starts again");
        let a = p.handle(Input::Timeout, left + TIMEOUT);
        assert_eq!(codes(&a), ["join_timeout"]);
        assert_eq!(a.last(), Some(&Action::Close));
    }

    #[test]
    fn face_changes_reach_the_room_and_the_wearer_and_shutdown_says_bye() {
        let mut p = seated(vec![], true);
        let a = input(
            &mut p,
            Input::Face {
                state: FaceState::Swapped,
                reason: None,
            },
        );
        assert_eq!(
            a,
            vec![
                Action::Update(Change::Face(FaceState::Swapped)),
                Action::Send(ServerMessage::FaceState {
                    state: FaceState::Swapped,
                    reason: None
                })
            ]
        );
        let a = input(&mut p, Input::Shutdown);
        assert!(matches!(sent(&a)[..], [ServerMessage::Bye { .. }]));
        assert_eq!(a.last(), Some(&Action::Close));
    }
}
