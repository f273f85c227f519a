//! Rooms and participants.
//!
//! A [`RoomDirectory`] knows who is in which room and what each participant publishes, and
//! tells the others when that changes (through each participant's bounded event channel). It
//! never touches sockets; it holds the published tracks of this node's rooms, so a room lives
//! on one node ([`InMemoryDirectory`]).
//!
//! [`roulette`] pairs strangers behind a [`roulette::Matchmaker`] trait (sans-I/O, in memory);
//! [`hub::RouletteHub`] delivers the decisions of a [`hub::Pairing`] (that matchmaker, or a
//! cluster's shared queue) to the sessions, and a pair talks through the hub, not through a
//! directory room.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::metrics::{Registry, Scraped};
use crate::rtc::Published;
pub use crate::voice::VoiceState;

pub mod hub;
pub mod roulette;

/// Registers the figures of the rooms and the roulette, read at each scrape of `/metrics`.
pub fn register_metrics(
    directory: Arc<dyn RoomDirectory>,
    roulette: Arc<hub::RouletteHub>,
    registry: &mut Registry,
) {
    let mut scraped = Scraped::default();
    let d = directory.clone();
    scraped
        .gauge(
            "facerelay_participants",
            "Participants in rooms and previews.",
            move || d.stats().participants as u64,
        )
        .gauge(
            "facerelay_rooms",
            "Rooms with at least one participant.",
            move || directory.stats().rooms as u64,
        );
    type Pick = fn(&roulette::RouletteStats) -> u64;
    let figures: [(&str, &str, bool, Pick); 4] = [
        (
            "facerelay_roulette_online",
            "Participants in the roulette, waiting or paired.",
            false,
            |s| s.online as u64,
        ),
        (
            "facerelay_roulette_waiting",
            "Roulette participants waiting for a partner.",
            false,
            |s| s.waiting as u64,
        ),
        (
            "facerelay_roulette_pairs",
            "Roulette pairs made.",
            true,
            |s| s.pairs_made,
        ),
        (
            "facerelay_roulette_reports",
            "Roulette partners reported.",
            true,
            |s| s.reports,
        ),
    ];
    for (name, help, counter, pick) in figures {
        let hub = roulette.clone();
        let read = move || pick(&hub.stats());
        if counter {
            scraped.counter(name, help, read);
        } else {
            scraped.gauge(name, help, read);
        }
    }
    scraped.register(registry);
}

/// Depth of a participant's room-event channel.
pub const EVENT_DEPTH: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);

/// This process's node number in a cluster (0 alone): the high bits of every id it makes.
static NODE: AtomicU64 = AtomicU64::new(0);

/// Bits of an id that count participants within one node.
const LOCAL_BITS: u32 = 40;

impl ParticipantId {
    /// A unique id: rooms and roulette draw from the same counter, so an id never means two
    /// people, and in a cluster the node's number makes it unique across nodes.
    pub fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let local = NEXT.fetch_add(1, Ordering::Relaxed) & ((1 << LOCAL_BITS) - 1);
        Self(NODE.load(Ordering::Relaxed) << LOCAL_BITS | local)
    }

    /// Sets this process's node number (from the cluster store, once, at start).
    pub fn set_node(number: u64) {
        NODE.store(number & ((1 << (64 - LOCAL_BITS)) - 1), Ordering::Relaxed);
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// A validated room name: trimmed, 1 to `max` characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(String);

impl RoomId {
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, RoomError> {
        Ok(Self(
            clean_name(raw, max_chars).ok_or(RoomError::InvalidRoomName { max_chars })?,
        ))
    }

    /// The name of a roulette pair (`tag` unique per pair): its control character keeps it
    /// apart from every name a client can send.
    pub fn roulette_pair(tag: impl fmt::Display) -> Self {
        Self(format!("roulette\u{1f}{tag}"))
    }

    /// A preview's own room (`tag` unique per preview), apart from every name a client can send
    /// like a roulette pair's. Previews are seats, but not rooms: [`RoomDirectory::rooms`] and
    /// the room count leave them out.
    pub fn preview(tag: impl fmt::Display) -> Self {
        Self(format!("{PREVIEW}{tag}"))
    }

    /// Whether this is a preview's room.
    pub fn is_preview(&self) -> bool {
        self.0.starts_with(PREVIEW)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const PREVIEW: &str = "preview\u{1f}";

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Trims a user-given name and checks it: non-empty, at most `max_chars`, no control chars.
pub fn clean_name(raw: &str, max_chars: usize) -> Option<String> {
    let name = raw.trim();
    let ok = !name.is_empty()
        && name.chars().count() <= max_chars
        && !name.chars().any(char::is_control);
    ok.then(|| name.to_owned())
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParticipantInfo {
    pub id: String,
    pub name: String,
    /// Whether this participant's video carries a swapped face now (`face` is `swapped` or
    /// `held`): disclosure, everyone can know.
    #[serde(default)]
    pub swapped: bool,
    /// What this participant's video carries, as its frames do.
    #[serde(default)]
    pub face: FaceState,
    /// What this participant's audio carries: its own voice, a disguise, or silence where a
    /// chosen disguise could not be applied.
    #[serde(default)]
    pub voice: VoiceState,
    /// Its camera and microphone are on (as its page says; off: the others show its initials,
    /// or a muted mark).
    #[serde(default = "on")]
    pub camera: bool,
    #[serde(default = "on")]
    pub microphone: bool,
}

fn on() -> bool {
    true
}

/// A change of what the others know of a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// What its video carries (the live swap's report, or a face picked or cleared).
    Face(FaceState),
    /// Its camera or microphone turned on or off.
    Media { camera: bool, microphone: bool },
    /// What its audio carries (a voice chosen, or its stream's report).
    Voice(VoiceState),
}

/// What a participant's video carries, as the live swap reports it (debounced).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaceState {
    /// No face chosen: the participant's own face.
    #[default]
    None,
    /// The chosen face.
    Swapped,
    /// The last swapped frame, repeated (the face could not be swapped for a moment).
    Held,
    /// The whole frame pixelated (the face could not be swapped).
    Blurred,
    /// A face is chosen but the frames go out as they are (`swap.on_failure = "pass"`).
    Unswapped,
}

impl ParticipantInfo {
    /// A participant as it joins: its own face, camera and microphone on.
    pub fn new(id: ParticipantId, name: String) -> Self {
        Self {
            id: id.to_string(),
            name,
            swapped: false,
            face: FaceState::None,
            voice: VoiceState::None,
            camera: true,
            microphone: true,
        }
    }

    /// Applies `change`; whether anything changed.
    pub fn apply(&mut self, change: Change) -> bool {
        let before = self.clone();
        match change {
            Change::Face(face) => {
                self.face = face;
                self.swapped = matches!(face, FaceState::Swapped | FaceState::Held);
            }
            Change::Media { camera, microphone } => {
                self.camera = camera;
                self.microphone = microphone;
            }
            Change::Voice(voice) => self.voice = voice,
        }
        *self != before
    }
}

/// What the directory tells a participant about the others in its room.
pub enum RoomEvent {
    Joined(ParticipantInfo),
    /// Someone's details changed (e.g. they picked or cleared a face).
    Updated(ParticipantInfo),
    Left(ParticipantId),
    /// Someone this participant sees publishes a track (a room member, or the roulette partner).
    Published {
        owner: ParticipantId,
        track: Arc<Published>,
    },
    /// Roulette: a new partner, with what it already publishes.
    Paired {
        partner: ParticipantInfo,
        partner_id: ParticipantId,
        tracks: Vec<Arc<Published>>,
    },
    /// Roulette: the partner is gone, and why.
    PartnerLeft {
        partner: ParticipantId,
        reason: roulette::NextReason,
    },
    /// Roulette: waiting for a partner.
    Waiting {
        position: usize,
        online: usize,
    },
    /// Roulette, in a cluster: continue on the node at `url`, where the partner waits.
    Move {
        url: String,
        ticket: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("room is full ({max} participants)")]
    RoomFull { max: usize },
    #[error("server is full ({max} participants)")]
    ServerFull { max: usize },
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("room name must be 1 to {max_chars} characters without control characters")]
    InvalidRoomName { max_chars: usize },
    #[error("display name must be 1 to {max_chars} characters without control characters")]
    InvalidDisplayName { max_chars: usize },
}

impl RoomError {
    /// Stable machine-readable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            RoomError::RoomFull { .. } => "room_full",
            RoomError::ServerFull { .. } => "server_full",
            RoomError::ShuttingDown => "shutting_down",
            RoomError::InvalidRoomName { .. } => "invalid_room",
            RoomError::InvalidDisplayName { .. } => "invalid_name",
        }
    }
}

/// Someone already in the room, with what they publish.
pub struct Present {
    pub info: ParticipantInfo,
    pub id: ParticipantId,
    pub tracks: Vec<Arc<Published>>,
}

pub struct Joined {
    pub id: ParticipantId,
    pub present: Vec<Present>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DirectoryStats {
    pub rooms: usize,
    pub participants: usize,
}

pub trait RoomDirectory: Send + Sync + 'static {
    /// Adds a participant, or says why not. The others are told.
    fn join(
        &self,
        room: &RoomId,
        name: &str,
        events: mpsc::Sender<RoomEvent>,
    ) -> Result<Joined, RoomError>;
    /// Records a track the participant publishes and tells the others.
    fn publish(&self, room: &RoomId, id: ParticipantId, track: Arc<Published>);
    /// Removes a participant and its tracks (idempotent). The others are told.
    fn leave(&self, room: &RoomId, id: ParticipantId);
    /// Records what the participant's video carries and tells the others.
    /// Records a change of what the others know of the participant, and tells them.
    fn update(&self, room: &RoomId, id: ParticipantId, change: Change);
    /// From now on every join is refused.
    fn begin_shutdown(&self);
    /// Rooms (previews not counted) and participants (previews included: each holds a seat).
    fn stats(&self) -> DirectoryStats;
    /// The rooms with someone in them (previews are no rooms).
    fn rooms(&self) -> Vec<String>;
    /// The participant of `room` whose id (`p…`) or display name is `who`, if it publishes
    /// video (the first such, by id, when several share the name).
    fn video_publisher(&self, room: &RoomId, who: &str) -> Option<ParticipantId>;
}

struct Member {
    info: ParticipantInfo,
    events: Inbox,
    tracks: Vec<Arc<Published>>,
}

#[derive(Default)]
struct State {
    rooms: HashMap<RoomId, BTreeMap<ParticipantId, Member>>,
    participants: usize,
    shutting_down: bool,
}

/// The single-node directory: all state in memory behind one short-held lock.
pub struct InMemoryDirectory {
    state: Mutex<State>,
    max_per_room: usize,
    max_total: usize,
    max_name_chars: usize,
}

impl InMemoryDirectory {
    pub fn new(max_per_room: usize, max_total: usize, max_name_chars: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            max_per_room,
            max_total,
            max_name_chars,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A participant's event queue. Delivery never waits: a participant whose queue is full is not
/// reading (its session ends after `server.send_timeout_secs`) and loses the event; that is
/// logged once per participant, not per event.
pub(crate) struct Inbox {
    events: mpsc::Sender<RoomEvent>,
    lagging: std::sync::atomic::AtomicBool,
}

impl Inbox {
    pub(crate) fn new(events: mpsc::Sender<RoomEvent>) -> Self {
        Self {
            events,
            lagging: Default::default(),
        }
    }

    /// Delivers `event` to participant `who` of `place` ("room", "roulette").
    pub(crate) fn deliver(&self, place: &str, who: &str, event: RoomEvent) {
        let lost = self.events.try_send(event).is_err();
        if lost
            && !self
                .lagging
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                participant = who,
                "{place} events dropped: the participant is not reading (further drops are not logged)"
            );
        }
    }
}

fn notify(member: &Member, event: RoomEvent) {
    member.events.deliver("room", &member.info.id, event);
}

impl RoomDirectory for InMemoryDirectory {
    fn join(
        &self,
        room: &RoomId,
        name: &str,
        events: mpsc::Sender<RoomEvent>,
    ) -> Result<Joined, RoomError> {
        let name = clean_name(name, self.max_name_chars).ok_or(RoomError::InvalidDisplayName {
            max_chars: self.max_name_chars,
        })?;
        let mut state = self.lock();
        if state.shutting_down {
            return Err(RoomError::ShuttingDown);
        }
        if state.participants >= self.max_total {
            return Err(RoomError::ServerFull {
                max: self.max_total,
            });
        }
        let members = state.rooms.entry(room.clone()).or_default();
        if members.len() >= self.max_per_room {
            return Err(RoomError::RoomFull {
                max: self.max_per_room,
            });
        }
        let id = ParticipantId::fresh();
        let info = ParticipantInfo::new(id, name);
        let present = members
            .iter()
            .map(|(pid, m)| {
                notify(m, RoomEvent::Joined(info.clone()));
                Present {
                    info: m.info.clone(),
                    id: *pid,
                    tracks: m.tracks.clone(),
                }
            })
            .collect();
        members.insert(
            id,
            Member {
                info,
                events: Inbox::new(events),
                tracks: Vec::new(),
            },
        );
        state.participants += 1;
        Ok(Joined { id, present })
    }

    fn publish(&self, room: &RoomId, id: ParticipantId, track: Arc<Published>) {
        let mut state = self.lock();
        let Some(members) = state.rooms.get_mut(room) else {
            return;
        };
        let Some(member) = members.get_mut(&id) else {
            return;
        };
        member.tracks.push(track.clone());
        for (pid, m) in members.iter() {
            if *pid != id {
                notify(
                    m,
                    RoomEvent::Published {
                        owner: id,
                        track: track.clone(),
                    },
                );
            }
        }
    }

    fn video_publisher(&self, room: &RoomId, who: &str) -> Option<ParticipantId> {
        let state = self.lock();
        state.rooms.get(room)?.iter().find_map(|(id, m)| {
            let named = m.info.id == who || m.info.name == who;
            let video = m
                .tracks
                .iter()
                .any(|t| t.kind == crate::rtc::MediaKind::Video);
            (named && video).then_some(*id)
        })
    }

    fn leave(&self, room: &RoomId, id: ParticipantId) {
        let mut state = self.lock();
        let Some(members) = state.rooms.get_mut(room) else {
            return;
        };
        if members.remove(&id).is_none() {
            return;
        }
        for m in members.values() {
            notify(m, RoomEvent::Left(id));
        }
        if members.is_empty() {
            state.rooms.remove(room);
        }
        state.participants -= 1;
    }

    fn update(&self, room: &RoomId, id: ParticipantId, change: Change) {
        let mut state = self.lock();
        let Some(members) = state.rooms.get_mut(room) else {
            return;
        };
        let Some(member) = members.get_mut(&id) else {
            return;
        };
        if !member.info.apply(change) {
            return;
        }
        let info = member.info.clone();
        for (pid, m) in members.iter() {
            if *pid != id {
                notify(m, RoomEvent::Updated(info.clone()));
            }
        }
    }

    fn begin_shutdown(&self) {
        self.lock().shutting_down = true;
    }

    fn rooms(&self) -> Vec<String> {
        let state = self.lock();
        let rooms = state.rooms.keys().filter(|r| !r.is_preview());
        rooms.map(|r| r.0.clone()).collect()
    }

    fn stats(&self) -> DirectoryStats {
        let state = self.lock();
        DirectoryStats {
            rooms: state.rooms.keys().filter(|r| !r.is_preview()).count(),
            participants: state.participants,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomId {
        RoomId::parse(name, 64).unwrap()
    }

    fn chan() -> (mpsc::Sender<RoomEvent>, mpsc::Receiver<RoomEvent>) {
        mpsc::channel(16)
    }

    #[test]
    fn names_are_validated() {
        assert_eq!(RoomId::parse("  lobby ", 64).unwrap().as_str(), "lobby");
        assert!(RoomId::parse("", 64).is_err());
        assert!(RoomId::parse("a\nb", 64).is_err());
        assert!(RoomId::parse(&"x".repeat(65), 64).is_err());
        let d = InMemoryDirectory::new(4, 10, 8);
        let e = d.join(&room("r"), "far too long a name", chan().0).err();
        assert_eq!(e.map(|e| e.code()), Some("invalid_name"));
    }

    #[test]
    fn changes_are_told_to_the_others_once() {
        let d = InMemoryDirectory::new(4, 10, 64);
        let (tx_a, mut rx_a) = chan();
        let (tx_b, mut rx_b) = chan();
        d.join(&room("r"), "Ann", tx_a).unwrap();
        let b = d.join(&room("r"), "Bob", tx_b).unwrap();
        let _ = rx_a.try_recv(); // Bob joined
        let off = Change::Media {
            camera: false,
            microphone: true,
        };
        d.update(&room("r"), b.id, off);
        assert!(matches!(
            rx_a.try_recv(),
            Ok(RoomEvent::Updated(info)) if !info.camera && info.microphone && info.name == "Bob"
        ));
        d.update(&room("r"), b.id, off);
        assert!(rx_a.try_recv().is_err(), "no news, no event");
        d.update(&room("r"), b.id, Change::Face(FaceState::Held));
        assert!(matches!(
            rx_a.try_recv(),
            Ok(RoomEvent::Updated(info)) if info.swapped && info.face == FaceState::Held && !info.camera
        ));
        assert!(
            rx_b.try_recv().is_err(),
            "the participant itself is not told"
        );
    }

    #[test]
    fn joins_and_leaves_are_announced_and_rooms_vanish_when_empty() {
        let d = InMemoryDirectory::new(4, 10, 64);
        let (tx_a, mut rx_a) = chan();
        let a = d.join(&room("r"), "Ann", tx_a).unwrap();
        assert!(a.present.is_empty());
        let b = d.join(&room("r"), "Bob", chan().0).unwrap();
        assert_eq!(b.present.len(), 1);
        assert_eq!(b.present[0].info.name, "Ann");
        assert!(matches!(rx_a.try_recv(), Ok(RoomEvent::Joined(info)) if info.name == "Bob"));
        d.leave(&room("r"), b.id);
        assert!(matches!(rx_a.try_recv(), Ok(RoomEvent::Left(id)) if id == b.id));
        d.leave(&room("r"), b.id); // idempotent
        assert_eq!(
            d.stats(),
            DirectoryStats {
                rooms: 1,
                participants: 1
            }
        );
        d.leave(&room("r"), a.id);
        assert_eq!(d.stats(), DirectoryStats::default());
    }

    #[test]
    fn limits_and_shutdown_refuse_joins() {
        let d = InMemoryDirectory::new(2, 3, 64);
        d.join(&room("a"), "1", chan().0).unwrap();
        d.join(&room("a"), "2", chan().0).unwrap();
        assert_eq!(
            d.join(&room("a"), "3", chan().0).err(),
            Some(RoomError::RoomFull { max: 2 })
        );
        d.join(&room("b"), "3", chan().0).unwrap();
        assert_eq!(
            d.join(&room("c"), "4", chan().0).err(),
            Some(RoomError::ServerFull { max: 3 })
        );
        d.begin_shutdown();
        assert_eq!(
            d.join(&room("a"), "5", chan().0).err(),
            Some(RoomError::ShuttingDown)
        );
    }

    #[test]
    fn rooms_are_isolated() {
        let d = InMemoryDirectory::new(4, 10, 64);
        let (tx, mut rx) = chan();
        d.join(&room("a"), "Ann", tx).unwrap();
        d.join(&room("b"), "Bob", chan().0).unwrap();
        assert!(rx.try_recv().is_err());
    }
}
