//! Roulette: pairs waiting participants, two by two.
//!
//! A [`Matchmaker`] only decides who talks to whom. It never touches sockets or media, and
//! every operation returns what happened as [`MatchEvent`]s, so that the roulette hub
//! ([`super::hub::RouletteHub`]) can forward them to the participants concerned, whose
//! sessions then subscribe to each other's tracks (a pair is not a room of the
//! [`RoomDirectory`](super::RoomDirectory); its [`RoomId`] only names it). Time is passed in,
//! so the cooldown is tested without sleeping. [`InMemoryMatchmaker`] keeps the queue and the
//! pairs of one node.
//!
//! # Rules
//!
//! - **Arrival order.** Whoever has waited longest is paired first, with the longest waiter
//!   they may be paired with.
//! - **Next** ends the pair and queues both again at the back: the one who pressed next first
//!   (a stranger already waiting meets them), then the partner, who is told why.
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
//! partner may have left a moment before the click arrived.

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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
    /// waiting or paired ("waiting… N online"). Only those whose seat changed hear it (the
    /// others' positions move silently, so that one operation costs a bounded number of
    /// messages); [`Matchmaker::stats`] has the counts for anyone who wants them fresh.
    Waiting {
        who: ParticipantId,
        position: usize,
        online: usize,
    },
    /// In a cluster: `who`'s partner waits on another node, whose page is at `url`; `who`
    /// continues there with `ticket` (the in-memory matchmaker never moves anyone).
    Move {
        who: ParticipantId,
        url: String,
        ticket: String,
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
    #[error("the roulette cannot pair anyone right now (its store does not answer: {0}); try again in a moment")]
    Unavailable(String),
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
            RouletteError::Unavailable(_) => "cluster_unavailable",
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

/// A queue entry: ticket and participant.
type Queued = (u64, ParticipantId);

fn couple(a: ParticipantId, b: ParticipantId) -> Couple {
    (a.min(b), a.max(b))
}

#[derive(Debug, Clone, Copy)]
enum Seat {
    /// In the queue under this ticket; tickets grow, so the smallest waited longest.
    Waiting { ticket: u64 },
    /// The room is not kept: the `Paired` event gave it to the signalling layer.
    Paired { partner: ParticipantId },
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
            state.enqueue(target);
            state.enqueue(who);
        }
        // Once blocked there is nothing more to aim at: a second report must not count twice.
        if let Some(member) = state.members.get_mut(&who) {
            member.last_partner = None;
        }
        let touched = [current, Some(who)].into_iter().flatten();
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
                state.enqueue(partner);
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

    /// The longest waiter who can be paired, with the longest waiter it can be paired with,
    /// as queue entries (ticket, participant). With `fresh_only`, couples in cooldown do not
    /// count.
    fn find_pair(&self, fresh_only: bool, now: Instant, cooldown: Duration) -> Option<[Queued; 2]> {
        let waiting = || self.queue.iter().map(|(&ticket, &who)| (ticket, who));
        waiting().enumerate().find_map(|(i, a)| {
            waiting().skip(i + 1).find_map(|b| {
                let (x, y) = (a.1, b.1);
                let ok =
                    !self.is_blocked(x, y) && !(fresh_only && self.cooling(x, y, now, cooldown));
                ok.then_some([a, b])
            })
        })
    }

    /// Pairs two queue entries. It takes both out of the queue by ticket whatever their seats
    /// say, so that the loop in `settle` always ends.
    fn pair(&mut self, [(ticket_a, a), (ticket_b, b)]: [Queued; 2], events: &mut Vec<MatchEvent>) {
        // The control character keeps every name a client can send (`RoomId::parse`) apart.
        let room = RoomId::roulette_pair(self.next_room);
        self.next_room += 1;
        self.pairs_made += 1;
        self.queue.remove(&ticket_a);
        self.queue.remove(&ticket_b);
        for (me, partner) in [(a, b), (b, a)] {
            if let Some(member) = self.members.get_mut(&me) {
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
                while let Some(two) = self.find_pair(fresh_only, now, config.cooldown) {
                    self.pair(two, &mut events);
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
        // The one who pressed next goes back first: they asked for someone new, and a waiting
        // stranger should meet them rather than the partner who was just left.
        state.enqueue(who);
        state.enqueue(partner);
        Ok(state.settle([who, partner], now, &self.config, events))
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

#[cfg(test)]
mod tests {
    use std::ops::Range;
    use std::sync::Arc;

    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(60);

    fn p(n: u64) -> ParticipantId {
        ParticipantId(n)
    }

    fn matchmaker(max_participants: usize) -> InMemoryMatchmaker {
        InMemoryMatchmaker::new(RouletteConfig {
            cooldown: COOLDOWN,
            max_participants,
        })
    }

    /// A `Paired` event without its room (room names are checked on their own).
    fn paired(a: ParticipantId, b: ParticipantId) -> MatchEvent {
        MatchEvent::Paired {
            room: RoomId(String::new()),
            a,
            b,
        }
    }

    fn left(who: ParticipantId, partner: ParticipantId, reason: NextReason) -> MatchEvent {
        MatchEvent::PartnerLeft {
            who,
            partner,
            reason,
        }
    }

    fn waiting(who: ParticipantId, position: usize, online: usize) -> MatchEvent {
        MatchEvent::Waiting {
            who,
            position,
            online,
        }
    }

    /// A fresh roulette in which 1 and 2 talk.
    fn talking() -> (InMemoryMatchmaker, Instant) {
        let m = matchmaker(100);
        let t = Instant::now();
        m.enter(p(1), t).unwrap();
        m.enter(p(2), t).unwrap();
        (m, t)
    }

    type Op =
        fn(&InMemoryMatchmaker, ParticipantId, Instant) -> Result<Vec<MatchEvent>, RouletteError>;

    /// 1 ends its pair with 2 by `op`: unlike next, not even the only two waiting meet again.
    fn separated_by(op: Op, reason: NextReason) -> (InMemoryMatchmaker, Instant) {
        let (m, t) = talking();
        assert_eq!(
            no_rooms(op(&m, p(1), t)),
            vec![
                left(p(2), p(1), reason),
                waiting(p(2), 1, 2),
                waiting(p(1), 2, 2)
            ]
        );
        m.check_invariants().unwrap();
        (m, t)
    }

    fn no_rooms(events: Result<Vec<MatchEvent>, RouletteError>) -> Vec<MatchEvent> {
        let events = events.unwrap_or_else(|e| panic!("unexpected error {e}"));
        events
            .into_iter()
            .map(|event| match event {
                MatchEvent::Paired { a, b, .. } => paired(a, b),
                other => other,
            })
            .collect()
    }

    /// What the roulette looks like from outside: the queue in order and who talks to whom.
    struct Snapshot {
        waiting: Vec<ParticipantId>,
        partners: HashMap<ParticipantId, ParticipantId>,
    }

    impl Snapshot {
        fn contains(&self, who: ParticipantId) -> bool {
            self.waiting.contains(&who) || self.partners.contains_key(&who)
        }
    }

    impl InMemoryMatchmaker {
        fn snapshot(&self) -> Snapshot {
            let state = self.lock();
            let partners = state
                .members
                .iter()
                .filter_map(|(&who, member)| match member.seat {
                    Seat::Paired { partner } => Some((who, partner)),
                    Seat::Waiting { .. } => None,
                })
                .collect();
            Snapshot {
                waiting: state.queue.values().copied().collect(),
                partners,
            }
        }

        /// Everything that must hold between operations, read under one lock.
        fn check_invariants(&self) -> Result<(), String> {
            let state = self.lock();
            let mut queued = HashSet::new();
            for (&ticket, &who) in &state.queue {
                if !queued.insert(who) {
                    return Err(format!("{who} queued twice"));
                }
                match state.members.get(&who).map(|m| m.seat) {
                    Some(Seat::Waiting { ticket: t }) if t == ticket => {}
                    _ => return Err(format!("{who} queued but not waiting under that ticket")),
                }
            }
            let mut paired = 0;
            for (&who, member) in &state.members {
                match member.seat {
                    Seat::Waiting { ticket } => {
                        if state.queue.get(&ticket) != Some(&who) {
                            return Err(format!("{who} waits outside the queue (lost)"));
                        }
                    }
                    Seat::Paired { partner } => {
                        paired += 1;
                        if partner == who {
                            return Err(format!("{who} paired with itself"));
                        }
                        match state.members.get(&partner).map(|m| m.seat) {
                            Some(Seat::Paired { partner: back }) if back == who => {}
                            _ => return Err(format!("{who}'s partner {partner} is elsewhere")),
                        }
                    }
                }
            }
            if paired % 2 != 0 || paired + state.queue.len() != state.members.len() {
                return Err(format!(
                    "counts: {paired} paired + {} waiting != {} members",
                    state.queue.len(),
                    state.members.len()
                ));
            }
            for (&a, set) in &state.blocked {
                if set.is_empty() || set.iter().any(|&b| !state.is_blocked(b, a)) {
                    return Err(format!("blocks of {a} are not symmetric or empty"));
                }
            }
            let now = state.clock.unwrap_or_else(Instant::now);
            if !state.shutting_down {
                if let Some([(_, a), (_, b)]) = state.find_pair(false, now, self.config.cooldown) {
                    return Err(format!("{a} and {b} both wait but could be paired"));
                }
            }
            Ok(())
        }
    }

    #[test]
    fn pairs_in_arrival_order_and_says_who_waits() {
        let m = matchmaker(100);
        let t = Instant::now();
        assert_eq!(no_rooms(m.enter(p(1), t)), vec![waiting(p(1), 1, 1)]);
        assert_eq!(no_rooms(m.enter(p(2), t)), vec![paired(p(1), p(2))]);
        assert_eq!(no_rooms(m.enter(p(3), t)), vec![waiting(p(3), 1, 3)]);
        assert_eq!(no_rooms(m.enter(p(4), t)), vec![paired(p(3), p(4))]);
        assert_eq!(no_rooms(m.enter(p(5), t)), vec![waiting(p(5), 1, 5)]);
        let stats = m.stats();
        assert_eq!(
            stats,
            RouletteStats {
                online: 5,
                waiting: 1,
                pairs: 2,
                pairs_made: 2,
                reports: 0
            }
        );
        m.check_invariants().unwrap();
    }

    #[test]
    fn next_requeues_both_and_tells_the_partner() {
        let (m, t) = talking();
        m.enter(p(3), t).unwrap();
        // 3 waited longest, then 1 (who pressed next goes back before the partner it left).
        assert_eq!(
            no_rooms(m.next(p(1), t)),
            vec![
                left(p(2), p(1), NextReason::Next),
                paired(p(3), p(1)),
                waiting(p(2), 1, 3)
            ]
        );
        // Next while waiting keeps the place.
        assert_eq!(no_rooms(m.next(p(2), t)), vec![waiting(p(2), 1, 3)]);
        m.check_invariants().unwrap();
    }

    /// 1 and 2 were paired at `t0`; 1 pressed next, met 3, and 2 waits. When 1 presses next
    /// again at `t0 + after`, the queue is [2, 1, 3]: 2 waited longest and 1 is next in line.
    fn after_a_cooldown_of(after: Duration) -> Vec<MatchEvent> {
        let m = matchmaker(100);
        let t0 = Instant::now();
        m.enter(p(1), t0).unwrap();
        m.enter(p(2), t0).unwrap();
        m.enter(p(3), t0).unwrap();
        m.next(p(1), t0).unwrap();
        let events = no_rooms(m.next(p(1), t0 + after));
        m.check_invariants().unwrap();
        events
    }

    #[test]
    fn cooldown_keeps_a_couple_apart_while_someone_else_waits() {
        assert_eq!(
            after_a_cooldown_of(Duration::from_secs(10)),
            vec![
                left(p(3), p(1), NextReason::Next),
                paired(p(2), p(3)),
                waiting(p(1), 1, 3)
            ]
        );
        // Once the cooldown is over, arrival order alone decides.
        assert_eq!(
            after_a_cooldown_of(COOLDOWN + Duration::from_secs(1)),
            vec![
                left(p(3), p(1), NextReason::Next),
                paired(p(2), p(1)),
                waiting(p(3), 1, 3)
            ]
        );
    }

    #[test]
    fn cooldown_lets_the_only_two_waiting_meet_again() {
        let (m, t) = talking();
        assert_eq!(
            no_rooms(m.next(p(1), t)),
            vec![left(p(2), p(1), NextReason::Next), paired(p(1), p(2))]
        );
        m.check_invariants().unwrap();
    }

    #[test]
    fn a_late_clock_reading_does_not_shorten_the_cooldown() {
        let m = matchmaker(100);
        let t0 = Instant::now();
        let late = t0 + Duration::from_secs(100);
        m.enter(p(1), late).unwrap();
        m.enter(p(2), late).unwrap();
        m.enter(p(3), late).unwrap();
        // Read before `late` was, arrives after: the pair (1, 2) ends at `late`, not at `t0`.
        m.next(p(1), t0).unwrap();
        // 1 leaves 3 thirty seconds after `late`: 1 and 2 are still in cooldown, so 2 (waiting
        // longest) meets 3. Had the pair ended at `t0`, 2 would have met 1.
        let events = no_rooms(m.next(p(1), t0 + Duration::from_secs(130)));
        assert!(events.contains(&paired(p(2), p(3))), "{events:?}");
        m.check_invariants().unwrap();
    }

    #[test]
    fn block_ends_the_pair_and_keeps_the_two_apart_for_the_session() {
        let (m, t) = separated_by(InMemoryMatchmaker::block, NextReason::Blocked);
        // The longest waiter gets the newcomer.
        assert_eq!(no_rooms(m.enter(p(3), t)), vec![paired(p(2), p(3))]);
        let later = t + COOLDOWN * 10;
        assert_eq!(
            no_rooms(m.stop(p(3), later).into_iter().map(Ok).collect()),
            vec![left(p(2), p(3), NextReason::Stop), waiting(p(2), 2, 2)]
        );
        // Stopping and coming back does not lift a block either.
        m.stop(p(1), later);
        assert_eq!(no_rooms(m.enter(p(1), later)), vec![waiting(p(1), 2, 2)]);
        m.check_invariants().unwrap();
        // A session that ends takes its blocks along.
        m.disconnect(p(1), later);
        m.disconnect(p(2), later);
        assert!(m.lock().blocked.is_empty());
    }

    #[test]
    fn block_while_waiting_aims_at_the_last_partner() {
        let (m, t) = talking();
        m.stop(p(2), t); // just before 1 pressed block
        assert_eq!(no_rooms(m.block(p(1), t)), vec![waiting(p(1), 1, 1)]);
        assert_eq!(no_rooms(m.enter(p(2), t)), vec![waiting(p(2), 2, 2)]);
        // 2 stopped, which forgot its last partner: nobody to block.
        assert_eq!(m.block(p(2), t), Err(RouletteError::NoPartner));
        m.check_invariants().unwrap();
    }

    #[test]
    fn report_ends_the_pair_blocks_and_counts_once() {
        let (m, t) = separated_by(InMemoryMatchmaker::report, NextReason::Reported);
        assert_eq!(m.stats().reports, 1);
        assert_eq!(m.report(p(1), t), Err(RouletteError::NoPartner));
        assert_eq!(m.stats().reports, 1);
        assert_eq!(m.stats().pairs, 0);
        m.check_invariants().unwrap();
    }

    #[test]
    fn stop_leaves_and_requeues_the_partner() {
        let (m, t) = talking();
        assert_eq!(
            m.stop(p(1), t),
            vec![left(p(2), p(1), NextReason::Stop), waiting(p(2), 1, 1)]
        );
        // Idempotent: stopping again does nothing; the rest refuse.
        assert_eq!(m.stop(p(1), t), vec![]);
        assert_eq!(m.next(p(1), t), Err(RouletteError::NotInRoulette));
        assert_eq!(m.block(p(1), t), Err(RouletteError::NotInRoulette));
        assert_eq!(m.report(p(1), t), Err(RouletteError::NotInRoulette));
        // A waiting participant just leaves the queue.
        assert_eq!(m.stop(p(2), t), vec![]);
        assert_eq!(
            m.stats(),
            RouletteStats {
                pairs_made: 1,
                ..RouletteStats::default()
            }
        );
        m.check_invariants().unwrap();
    }

    #[test]
    fn disconnect_cleans_up_like_stop() {
        let (m, t) = talking();
        assert_eq!(
            m.disconnect(p(2), t),
            vec![
                left(p(1), p(2), NextReason::Disconnected),
                waiting(p(1), 1, 1)
            ]
        );
        assert_eq!(m.disconnect(p(2), t), vec![]);
        assert_eq!(m.disconnect(p(99), t), vec![]);
        assert_eq!(m.stats().online, 1);
        m.check_invariants().unwrap();
    }

    #[test]
    fn entering_twice_a_full_roulette_and_shutdown_are_refused() {
        let m = matchmaker(2);
        let t = Instant::now();
        m.enter(p(1), t).unwrap();
        let twice = m.enter(p(1), t).unwrap_err();
        assert_eq!(twice, RouletteError::AlreadyInRoulette);
        assert_eq!(twice.code(), "already_in_roulette");
        m.enter(p(2), t).unwrap();
        let full = m.enter(p(3), t).unwrap_err();
        assert_eq!(full, RouletteError::RouletteFull { max: 2 });
        assert_eq!(full.code(), "roulette_full");
        assert_eq!(RouletteError::NotInRoulette.code(), "not_in_roulette");
        assert_eq!(RouletteError::NoPartner.code(), "no_partner");
        m.stop(p(2), t);
        m.begin_shutdown();
        let shut = m.enter(p(3), t).unwrap_err();
        assert_eq!(shut.code(), "shutting_down");
    }

    #[test]
    fn shutdown_makes_no_new_pairs() {
        let m = matchmaker(100);
        let t = Instant::now();
        for n in 1..=3 {
            m.enter(p(n), t).unwrap();
        }
        m.begin_shutdown();
        assert_eq!(
            no_rooms(m.next(p(1), t)),
            vec![
                left(p(2), p(1), NextReason::Next),
                waiting(p(1), 2, 3),
                waiting(p(2), 3, 3)
            ]
        );
        m.check_invariants().unwrap();
    }

    #[test]
    fn pair_rooms_are_distinct_and_no_client_can_name_them() {
        let m = matchmaker(100);
        let t = Instant::now();
        let mut rooms = HashSet::new();
        for n in 1..=20 {
            for event in m.enter(p(n), t).unwrap() {
                if let MatchEvent::Paired { room, .. } = event {
                    assert!(RoomId::parse(room.as_str(), 1000).is_err());
                    assert!(rooms.insert(room));
                }
            }
        }
        assert_eq!(rooms.len(), 10);
    }

    /// xorshift64: seeded, reproducible and no new dependency.
    struct XorShift(u64);

    impl XorShift {
        fn new(seed: u64) -> Self {
            Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        fn below(&mut self, n: u64) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x % n
        }
    }

    /// Events that make sense on their own, whoever else is busy with the roulette.
    fn check_events(events: &[MatchEvent]) {
        for event in events {
            match event {
                MatchEvent::Paired { a, b, .. } => assert_ne!(a, b, "paired with itself"),
                MatchEvent::PartnerLeft { who, partner, .. } => assert_ne!(who, partner),
                MatchEvent::Waiting {
                    position, online, ..
                } => assert!((1..=*online).contains(position), "{event:?}"),
                MatchEvent::Move { .. } => panic!("the in-memory matchmaker moved someone"),
            }
        }
    }

    /// Random enter/next/stop/disconnect (and some block/report) by the participants `ids`.
    /// Only this caller enters, stops or disconnects them, so it knows exactly which of them
    /// must be in the roulette, whatever other threads do; it returns those. Every
    /// `check_every` operations it checks the invariants and that none of its own is lost.
    fn churn(
        m: &InMemoryMatchmaker,
        ids: Range<u64>,
        seed: u64,
        ops: u64,
        check_every: u64,
        on_events: &mut dyn FnMut(&[MatchEvent]),
    ) -> HashSet<ParticipantId> {
        let mut rng = XorShift::new(seed);
        let mut inside = HashSet::new();
        let t0 = Instant::now();
        for step in 0..ops {
            let who = p(ids.start + rng.below(ids.end - ids.start));
            // 10 ms a step against a 1 s cooldown: couples cool down and warm up again.
            let now = t0 + Duration::from_millis(step * 10);
            let was_inside = inside.contains(&who);
            let refused = |r: &Result<_, RouletteError>| match r {
                Err(e) => Some(e.clone()),
                Ok(_) => None,
            };
            let result = match rng.below(100) {
                0..=34 => {
                    let r = m.enter(who, now);
                    let expected = was_inside.then_some(RouletteError::AlreadyInRoulette);
                    assert_eq!(refused(&r), expected);
                    inside.insert(who);
                    r
                }
                35..=69 => {
                    let r = m.next(who, now);
                    let expected = (!was_inside).then_some(RouletteError::NotInRoulette);
                    assert_eq!(refused(&r), expected);
                    r
                }
                70..=79 => {
                    inside.remove(&who);
                    Ok(m.stop(who, now))
                }
                80..=89 => {
                    inside.remove(&who);
                    Ok(m.disconnect(who, now))
                }
                op => {
                    let r = if op < 95 {
                        m.block(who, now)
                    } else {
                        m.report(who, now)
                    };
                    match refused(&r) {
                        None | Some(RouletteError::NoPartner) => assert!(was_inside),
                        Some(e) => {
                            assert_eq!((e, was_inside), (RouletteError::NotInRoulette, false))
                        }
                    }
                    r
                }
            };
            let events = result.unwrap_or_default();
            check_events(&events);
            on_events(&events);
            if step % check_every == 0 {
                m.check_invariants().unwrap();
                let snapshot = m.snapshot();
                for id in ids.clone().map(p) {
                    assert_eq!(
                        snapshot.contains(id),
                        inside.contains(&id),
                        "{id} lost or kept"
                    );
                }
            }
        }
        inside
    }

    fn stress_matchmaker() -> InMemoryMatchmaker {
        InMemoryMatchmaker::new(RouletteConfig {
            cooldown: Duration::from_secs(1),
            max_participants: 1000,
        })
    }

    /// One thread, invariants after every operation, and the events alone rebuild exactly
    /// who talks to whom: what the signalling layer forwards is complete.
    #[test]
    fn stress_one_thread_events_tell_the_whole_story() {
        let m = stress_matchmaker();
        let mut partners: HashMap<ParticipantId, ParticipantId> = HashMap::new();
        let mut rooms = HashSet::new();
        let mut apply = |events: &[MatchEvent]| {
            for event in events {
                match event {
                    MatchEvent::Paired { room, a, b } => {
                        assert!(rooms.insert(room.clone()), "room used twice");
                        assert_eq!(partners.insert(*a, *b), None, "{a} in two pairs");
                        assert_eq!(partners.insert(*b, *a), None, "{b} in two pairs");
                    }
                    MatchEvent::PartnerLeft { who, partner, .. } => {
                        assert_eq!(partners.remove(who), Some(*partner));
                        assert_eq!(partners.remove(partner), Some(*who));
                    }
                    MatchEvent::Waiting { who, .. } => assert!(!partners.contains_key(who)),
                    MatchEvent::Move { .. } => panic!("moved on one node"),
                }
            }
            assert_eq!(partners, m.snapshot().partners);
        };
        let inside = churn(&m, 0..30, 0x5EED, 20_000, 1, &mut apply);
        m.check_invariants().unwrap();
        assert_eq!(m.stats().online, inside.len());
        assert!(m.stats().pairs_made > 1000, "{:?}", m.stats());
    }

    /// Several threads hammer one matchmaker; each owns a range of participants.
    #[test]
    fn stress_threads_nobody_in_two_pairs_and_nobody_lost() {
        const THREADS: u64 = 4;
        const IDS: u64 = 40;
        let m = Arc::new(stress_matchmaker());
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    churn(
                        &m,
                        t * IDS..(t + 1) * IDS,
                        0xFACE + t,
                        20_000,
                        50,
                        &mut check_events,
                    )
                })
            })
            .collect();
        let mut inside = HashSet::new();
        for worker in workers {
            inside.extend(worker.join().unwrap());
        }
        m.check_invariants().unwrap();
        let snapshot = m.snapshot();
        let present: HashSet<_> = snapshot
            .waiting
            .iter()
            .chain(snapshot.partners.keys())
            .copied()
            .collect();
        assert_eq!(present, inside);
        let stats = m.stats();
        assert_eq!(stats.online, inside.len());
        assert_eq!(stats.waiting + 2 * stats.pairs, stats.online);
        assert!(stats.pairs_made > 1000 && stats.reports > 100, "{stats:?}");
    }
}
