//! Roulette: pairs waiting participants into private two-person rooms.
//!
//! A [`Matchmaker`] only decides who talks to whom. It never touches sockets or media, and
//! every operation returns what happened as [`MatchEvent`]s, so that the signalling layer can
//! forward them to the participants concerned (and move them into the [`RoomId`] of their
//! pair through the ordinary [`RoomDirectory`](super::RoomDirectory)). Time is passed in, so
//! the cooldown is tested without sleeping. [`InMemoryMatchmaker`] serves one node; a shared
//! store can implement the same trait for several.
//!
//! # Rules
//!
//! - **Arrival order.** Whoever has waited longest is paired first, with the longest waiter
//!   they may be paired with.
//! - **Next** ends the pair and queues both again at the back: the partner first, then the
//!   one who pressed next. The partner is told why ([`MatchEvent::PartnerLeft`]).
//! - **Cooldown.** Two participants whose pair ended less than
//!   [`RouletteConfig::cooldown`] ago are not paired again while anyone else is waiting whom
//!   either of them could be paired with instead. If nobody else is (for example, they are
//!   the only two waiting), they *are* paired again: an empty screen is worse than a familiar
//!   face, and the cooldown is a preference, not a ban.
//! - **Block** ends the pair like next, and the two are never paired again while both
//!   sessions last (until one of them disconnects).
//! - **Report** does what block does, is counted in [`RouletteStats::reports`] and is logged
//!   with the two ids only. It blocks because otherwise, with nobody else waiting, the
//!   cooldown rule would pair the reporter with the reported participant again at once.
//! - **Stop** leaves the roulette (a waiting participant leaves the queue; a paired one's
//!   partner is queued again and told). **Disconnect** is stop with reason
//!   [`NextReason::Disconnected`] and also forgets the participant's blocks.
//!
//! Block and report aim at the current partner or, while waiting, at the last one: the
//! partner may have pressed next a moment before the button was pressed.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{ParticipantId, RoomId};

/// How the roulette behaves; see the module docs for the rules these tune.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouletteConfig {
    /// How long two participants whose pair ended are kept apart while others wait.
    pub cooldown: Duration,
    /// Most participants in the roulette at once, waiting or paired.
    pub max_participants: usize,
}

impl Default for RouletteConfig {
    fn default() -> Self {
        Self {
            cooldown: Duration::from_secs(60),
            max_participants: 1000,
        }
    }
}

/// Why a pair ended, as told to the partner who stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NextReason {
    Next,
    Stop,
    Blocked,
    Reported,
    Disconnected,
}

/// Something the signalling layer must tell participants, in the order returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchEvent {
    /// `a` and `b` now share the private `room`; tell both. `a` had waited longer. No name a
    /// client sends can equal `room` (it holds a control character, which
    /// [`RoomId::parse`] refuses), so nobody else can join it.
    Paired {
        room: RoomId,
        a: ParticipantId,
        b: ParticipantId,
    },
    /// Tell `who` that `partner` ended their pair, and why. `who` is back in the queue: a
    /// later `Paired` or `Waiting` event in the same batch says where.
    PartnerLeft {
        who: ParticipantId,
        partner: ParticipantId,
        reason: NextReason,
    },
    /// `who` waits at `position` (1 is next in line); `online` is everyone in the roulette,
    /// waiting or paired ("waiting… N online").
    Waiting {
        who: ParticipantId,
        position: usize,
        online: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouletteError {
    #[error("not in the roulette")]
    NotInRoulette,
    #[error("already in the roulette")]
    AlreadyInRoulette,
    #[error("no partner to block or report")]
    NoPartner,
    #[error("roulette is full ({max} participants)")]
    RouletteFull { max: usize },
    #[error("server is shutting down")]
    ShuttingDown,
}

impl RouletteError {
    /// Stable machine-readable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            RouletteError::NotInRoulette => "not_in_roulette",
            RouletteError::AlreadyInRoulette => "already_in_roulette",
            RouletteError::NoPartner => "no_partner",
            RouletteError::RouletteFull { .. } => "roulette_full",
            RouletteError::ShuttingDown => "shutting_down",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RouletteStats {
    /// Everyone in the roulette, waiting or paired.
    pub online: usize,
    pub waiting: usize,
    /// Pairs talking now.
    pub pairs: usize,
    /// Pairs made since start.
    pub pairs_made: u64,
    /// Reports since start.
    pub reports: u64,
}

/// Pairs participants. `who` is always the participant whose session asked.
///
/// `enter`, `next`, `block` and `report` refuse an unknown participant with
/// [`RouletteError::NotInRoulette`] (or a known one, for `enter`, with
/// [`RouletteError::AlreadyInRoulette`]). `stop` and `disconnect` are idempotent: for an
/// unknown participant they do nothing and return no events, because a socket may close
/// after its participant has already stopped.
pub trait Matchmaker: Send + Sync + 'static {
    /// Queues `who`, and pairs whoever can be paired.
    fn enter(&self, who: ParticipantId, now: Instant) -> Result<Vec<MatchEvent>, RouletteError>;
    /// Ends `who`'s pair and queues both again. While waiting it changes nothing and
    /// returns `who`'s place (a double click must not cost it).
    fn next(&self, who: ParticipantId, now: Instant) -> Result<Vec<MatchEvent>, RouletteError>;
    /// Ends the pair like next, and the two are never paired again in these sessions.
    fn block(&self, who: ParticipantId, now: Instant) -> Result<Vec<MatchEvent>, RouletteError>;
    /// Blocks, counts the report and logs it (ids only).
    fn report(&self, who: ParticipantId, now: Instant) -> Result<Vec<MatchEvent>, RouletteError>;
    /// Leaves the roulette; a partner is queued again and told.
    fn stop(&self, who: ParticipantId, now: Instant) -> Vec<MatchEvent>;
    /// Stop for a session that ended, and forget its blocks. Call it whenever a socket
    /// closes, even if its participant never entered or has stopped.
    fn disconnect(&self, who: ParticipantId, now: Instant) -> Vec<MatchEvent>;
    /// From now on `enter` is refused and no new pair is made; pairs end as usual.
    fn begin_shutdown(&self);
    fn stats(&self) -> RouletteStats;
}

/// Two participants, the smaller id first, so that (a, b) and (b, a) are one key.
type Couple = (ParticipantId, ParticipantId);

fn couple(a: ParticipantId, b: ParticipantId) -> Couple {
    (a.min(b), a.max(b))
}

#[derive(Debug, Clone, Copy)]
enum Seat {
    /// In the queue under this ticket; tickets grow, so the smallest waited longest.
    Waiting { ticket: u64 },
    Paired {
        partner: ParticipantId,
        room: RoomId,
    },
}

struct Member {
    seat: Seat,
    /// The partner of the last pair that ended: what block and report aim at while waiting.
    last_partner: Option<ParticipantId>,
}

#[derive(Default)]
struct State {
    members: HashMap<ParticipantId, Member>,
    queue: BTreeMap<u64, ParticipantId>,
    next_ticket: u64,
    next_room: u64,
    /// When each couple's last pair ended, while its cooldown runs.
    ended: HashMap<Couple, Instant>,
    /// The same, oldest first, so that finished cooldowns are forgotten cheaply.
    ended_order: VecDeque<(Instant, Couple)>,
    /// Symmetric: `b` in `blocked[a]` exactly when `a` in `blocked[b]`.
    blocked: HashMap<ParticipantId, HashSet<ParticipantId>>,
    /// The latest time seen: callers read the clock before taking the lock, so their times
    /// can arrive slightly out of order; the state never goes back in time.
    clock: Option<Instant>,
    pairs_made: u64,
    reports: u64,
    shutting_down: bool,
}

/// The single-node matchmaker: all state in memory behind one short-held lock.
///
/// Pairing scans the queue, which holds only participants who cannot be paired with each
/// other (they blocked each other), so it stays short; the scan is quadratic in its length.
pub struct InMemoryMatchmaker {
    state: Mutex<State>,
    config: RouletteConfig,
}

impl InMemoryMatchmaker {
    pub fn new(config: RouletteConfig) -> Self {
        Self {
            state: Mutex::new(State::default()),
            config,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks, advances the clock and forgets finished cooldowns.
    fn lock_at(&self, now: Instant) -> (MutexGuard<'_, State>, Instant) {
        let mut state = self.lock();
        let now = state.tick(now, &self.config);
        (state, now)
    }

    /// Ends `who`'s pair (or aims at its last partner) and blocks the two for good.
    fn block_with(
        &self,
        who: ParticipantId,
        now: Instant,
        reason: NextReason,
    ) -> Result<Vec<MatchEvent>, RouletteError> {
        let (mut state, now) = self.lock_at(now);
        let member = state
            .members
            .get(&who)
            .ok_or(RouletteError::NotInRoulette)?;
        let current = match &member.seat {
            Seat::Paired { partner } => Some(*partner),
            Seat::Waiting { .. } => None,
        };
        let target = current
            .or(member.last_partner)
            .ok_or(RouletteError::NoPartner)?;
        state.block(who, target);
        if reason == NextReason::Reported {
            state.reports += 1;
            tracing::info!(reporter = %who, reported = %target, "roulette report");
        }
        let mut events = Vec::new();
        if current.is_some() {
            state.split(who, target, reason, now, &mut events);
            state.enqueue(who);
        }
        // Once blocked there is nothing more to aim at: a second report must not count twice.
        if let Some(member) = state.members.get_mut(&who) {
            member.last_partner = None;
        }
        let touched = [Some(who), current].into_iter().flatten();
        Ok(state.settle(touched, now, &self.config, events))
    }

    /// Stop and disconnect: `who` leaves, a partner is queued again and told `reason`.
    fn leave(&self, who: ParticipantId, now: Instant, reason: NextReason) -> Vec<MatchEvent> {
        let (mut state, now) = self.lock_at(now);
        if reason == NextReason::Disconnected {
            state.forget_blocks(who);
        }
        let Some(member) = state.members.remove(&who) else {
            return Vec::new();
        };
        let mut events = Vec::new();
        let partner = match member.seat {
            Seat::Waiting { ticket } => {
                state.queue.remove(&ticket);
                None
            }
            Seat::Paired { partner } => {
                state.split(who, partner, reason, now, &mut events);
                Some(partner)
            }
        };
        state.settle(partner, now, &self.config, events)
    }
}

impl State {
    fn tick(&mut self, now: Instant, config: &RouletteConfig) -> Instant {
        let now = self.clock.map_or(now, |clock| clock.max(now));
        self.clock = Some(now);
        // A flood of short pairs must not grow this without bound; forgetting a cooldown
        // early only loosens a preference.
        let most = config.max_participants.saturating_mul(8).max(64);
        while let Some(&(at, pair)) = self.ended_order.front() {
            if now.saturating_duration_since(at) < config.cooldown && self.ended_order.len() <= most
            {
                break;
            }
            self.ended_order.pop_front();
            if self.ended.get(&pair) == Some(&at) {
                self.ended.remove(&pair);
            }
        }
        now
    }

    /// Puts `who` at the back of the queue (a new member, or one whose pair just ended).
    fn enqueue(&mut self, who: ParticipantId) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.queue.insert(ticket, who);
        let seat = Seat::Waiting { ticket };
        match self.members.get_mut(&who) {
            Some(member) => member.seat = seat,
            None => {
                self.members.insert(
                    who,
                    Member {
                        seat,
                        last_partner: None,
                    },
                );
            }
        }
    }

    /// Ends the pair of `who` and `partner`: starts its cooldown, queues `partner` again and
    /// tells it why. What becomes of `who` is the caller's business.
    fn split(
        &mut self,
        who: ParticipantId,
        partner: ParticipantId,
        reason: NextReason,
        now: Instant,
        events: &mut Vec<MatchEvent>,
    ) {
        let pair = couple(who, partner);
        self.ended.insert(pair, now);
        self.ended_order.push_back((now, pair));
        for (me, other) in [(who, partner), (partner, who)] {
            if let Some(member) = self.members.get_mut(&me) {
                member.last_partner = Some(other);
            }
        }
        events.push(MatchEvent::PartnerLeft {
            who: partner,
            partner: who,
            reason,
        });
        self.enqueue(partner);
    }

    fn block(&mut self, a: ParticipantId, b: ParticipantId) {
        self.blocked.entry(a).or_default().insert(b);
        self.blocked.entry(b).or_default().insert(a);
    }

    fn forget_blocks(&mut self, who: ParticipantId) {
        for other in self.blocked.remove(&who).unwrap_or_default() {
            if let Some(set) = self.blocked.get_mut(&other) {
                set.remove(&who);
                if set.is_empty() {
                    self.blocked.remove(&other);
                }
            }
        }
    }

    fn is_blocked(&self, a: ParticipantId, b: ParticipantId) -> bool {
        self.blocked.get(&a).is_some_and(|set| set.contains(&b))
    }

    fn cooling(
        &self,
        a: ParticipantId,
        b: ParticipantId,
        now: Instant,
        cooldown: Duration,
    ) -> bool {
        self.ended
            .get(&couple(a, b))
            .is_some_and(|&at| now.saturating_duration_since(at) < cooldown)
    }

    /// The longest waiter who can be paired, with the longest waiter it can be paired with.
    /// With `fresh_only`, couples in cooldown do not count.
    fn find_pair(
        &self,
        fresh_only: bool,
        now: Instant,
        cooldown: Duration,
    ) -> Option<(ParticipantId, ParticipantId)> {
        let waiting = || self.queue.values().copied();
        waiting().enumerate().find_map(|(i, a)| {
            waiting().skip(i + 1).find_map(|b| {
                let ok =
                    !self.is_blocked(a, b) && !(fresh_only && self.cooling(a, b, now, cooldown));
                ok.then_some((a, b))
            })
        })
    }

    fn pair(&mut self, a: ParticipantId, b: ParticipantId, events: &mut Vec<MatchEvent>) {
        // The control character keeps every name a client can send (`RoomId::parse`) apart.
        let room = RoomId(format!("roulette\u{1f}{}", self.next_room));
        self.next_room += 1;
        self.pairs_made += 1;
        for (me, partner) in [(a, b), (b, a)] {
            if let Some(member) = self.members.get_mut(&me) {
                if let Seat::Waiting { ticket } = member.seat {
                    self.queue.remove(&ticket);
                }
                member.seat = Seat::Paired { partner };
            }
        }
        events.push(MatchEvent::Paired { room, a, b });
    }

    /// Pairs everyone who can be paired, then says where each of `touched` waits.
    ///
    /// The cooldown rule in two passes: first only couples outside their cooldown, in
    /// arrival order; whoever is left then has no such partner in the queue, so pairing
    /// couples in cooldown among them keeps nobody from a fresh partner.
    fn settle(
        &mut self,
        touched: impl IntoIterator<Item = ParticipantId>,
        now: Instant,
        config: &RouletteConfig,
        mut events: Vec<MatchEvent>,
    ) -> Vec<MatchEvent> {
        if !self.shutting_down {
            for fresh_only in [true, false] {
                while let Some((a, b)) = self.find_pair(fresh_only, now, config.cooldown) {
                    self.pair(a, b, &mut events);
                }
            }
        }
        for who in touched {
            if let Some(event) = self.waiting_event(who) {
                events.push(event);
            }
        }
        events
    }

    fn waiting_event(&self, who: ParticipantId) -> Option<MatchEvent> {
        let Seat::Waiting { ticket } = self.members.get(&who)?.seat else {
            return None;
        };
        Some(MatchEvent::Waiting {
            who,
            position: self.queue.range(..=ticket).count(),
            online: self.members.len(),
        })
    }
}

impl Matchmaker for InMemoryMatchmaker {
    fn enter(&self, who: ParticipantId, now: Instant) -> Result<Vec<MatchEvent>, RouletteError> {
        let (mut state, now) = self.lock_at(now);
        if state.shutting_down {
            return Err(RouletteError::ShuttingDown);
        }
        if state.members.contains_key(&who) {
            return Err(RouletteError::AlreadyInRoulette);
        }
        if state.members.len() >= self.config.max_participants {
            return Err(RouletteError::RouletteFull {
                max: self.config.max_participants,
            });
        }
        state.enqueue(who);
        Ok(state.settle([who], now, &self.config, Vec::new()))
    }

    fn next(&self, who: ParticipantId, now: Instant) -> Result<Vec<MatchEvent>, RouletteError> {
        let (mut state, now) = self.lock_at(now);
        let member = state
            .members
            .get(&who)
            .ok_or(RouletteError::NotInRoulette)?;
        let Seat::Paired { partner } = member.seat else {
            return Ok(state.waiting_event(who).into_iter().collect());
        };
        let mut events = Vec::new();
        state.split(who, partner, NextReason::Next, now, &mut events);
        state.enqueue(who);
        Ok(state.settle([partner, who], now, &self.config, events))
    }

    fn block(&self, who: ParticipantId, now: Instant) -> Result<Vec<MatchEvent>, RouletteError> {
        self.block_with(who, now, NextReason::Blocked)
    }

    fn report(&self, who: ParticipantId, now: Instant) -> Result<Vec<MatchEvent>, RouletteError> {
        self.block_with(who, now, NextReason::Reported)
    }

    fn stop(&self, who: ParticipantId, now: Instant) -> Vec<MatchEvent> {
        self.leave(who, now, NextReason::Stop)
    }

    fn disconnect(&self, who: ParticipantId, now: Instant) -> Vec<MatchEvent> {
        self.leave(who, now, NextReason::Disconnected)
    }

    fn begin_shutdown(&self) {
        self.lock().shutting_down = true;
    }

    fn stats(&self) -> RouletteStats {
        let state = self.lock();
        let waiting = state.queue.len();
        RouletteStats {
            online: state.members.len(),
            waiting,
            pairs: state.members.len().saturating_sub(waiting) / 2,
            pairs_made: state.pairs_made,
            reports: state.reports,
        }
    }
}
