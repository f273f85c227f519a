//! The roulette's connection to sessions: the [`Matchmaker`] decides who talks to whom, the hub
//! delivers its decisions to the participants' sessions (the same bounded event channels rooms
//! use) and hands each new partner the tracks the other already publishes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, Mutex, MutexGuard};

use super::roulette::{MatchEvent, Matchmaker, RouletteError, RouletteStats};
use super::{Inbox, ParticipantId, ParticipantInfo, RoomEvent};
use crate::rtc::Published;

/// Who decides the pairs: the in-memory [`Matchmaker`] of one node, or a store shared by the
/// nodes of a cluster (whose calls wait on the network, hence `async`). Its events concern
/// only participants of this node: a pair is always made on one node, and a participant whose
/// partner waits elsewhere is told to [`MatchEvent::Move`] there.
#[async_trait::async_trait]
pub trait Pairing: Send + Sync + 'static {
    /// Queues `who`, and pairs whoever can be paired. `claim`: `who` arrives from another
    /// node to meet this participant (from its [`Pairing::redeem`]ed ticket).
    async fn enter(
        &self,
        who: ParticipantId,
        claim: Option<ParticipantId>,
        now: Instant,
    ) -> Result<Vec<MatchEvent>, RouletteError>;
    async fn next(
        &self,
        who: ParticipantId,
        now: Instant,
    ) -> Result<Vec<MatchEvent>, RouletteError>;
    async fn block(
        &self,
        who: ParticipantId,
        now: Instant,
    ) -> Result<Vec<MatchEvent>, RouletteError>;
    async fn report(
        &self,
        who: ParticipantId,
        now: Instant,
    ) -> Result<Vec<MatchEvent>, RouletteError>;
    /// The session ended: stop and forget its blocks (see [`Matchmaker::disconnect`]).
    async fn disconnect(&self, who: ParticipantId, now: Instant) -> Vec<MatchEvent>;
    /// Looks again for partners of participants who wait (in a cluster, where a waiter may be
    /// kept for a mover who never comes); the in-memory matchmaker pairs at once and needs
    /// none.
    async fn rematch(&self, _now: Instant) -> Vec<MatchEvent> {
        Vec::new()
    }
    /// `who` left this node after a [`MatchEvent::Move`]: it keeps its blocks and its record,
    /// which the node it moves to takes over.
    async fn moved(&self, _who: ParticipantId) {}
    /// The participant a move ticket was issued to, and the one it is to meet; `None` for a
    /// ticket that is unknown, used or expired.
    async fn redeem(&self, _ticket: &str) -> Option<(ParticipantId, ParticipantId)> {
        None
    }
    fn begin_shutdown(&self);
    fn stats(&self) -> RouletteStats;
}

#[async_trait::async_trait]
impl<M: Matchmaker> Pairing for M {
    async fn enter(
        &self,
        who: ParticipantId,
        _claim: Option<ParticipantId>,
        now: Instant,
    ) -> Result<Vec<MatchEvent>, RouletteError> {
        Matchmaker::enter(self, who, now)
    }
    async fn next(
        &self,
        who: ParticipantId,
        now: Instant,
    ) -> Result<Vec<MatchEvent>, RouletteError> {
        Matchmaker::next(self, who, now)
    }
    async fn block(
        &self,
        who: ParticipantId,
        now: Instant,
    ) -> Result<Vec<MatchEvent>, RouletteError> {
        Matchmaker::block(self, who, now)
    }
    async fn report(
        &self,
        who: ParticipantId,
        now: Instant,
    ) -> Result<Vec<MatchEvent>, RouletteError> {
        Matchmaker::report(self, who, now)
    }
    async fn disconnect(&self, who: ParticipantId, now: Instant) -> Vec<MatchEvent> {
        Matchmaker::disconnect(self, who, now)
    }
    fn begin_shutdown(&self) {
        Matchmaker::begin_shutdown(self)
    }
    fn stats(&self) -> RouletteStats {
        Matchmaker::stats(self)
    }
}

struct Member {
    info: ParticipantInfo,
    events: Inbox,
    tracks: Vec<Arc<Published>>,
    partner: Option<ParticipantId>,
    /// Told to continue on another node: its leaving is a move, not a disconnect.
    moving: bool,
}

/// One lock over the session registry, held across the pairing's decision: events are
/// delivered in the order they were decided, even when two sessions act at once.
pub struct RouletteHub {
    pairing: Arc<dyn Pairing>,
    members: Mutex<HashMap<ParticipantId, Member>>,
}

enum Ask {
    Next,
    Block,
    Report,
}

impl RouletteHub {
    pub fn new(pairing: Arc<dyn Pairing>) -> Self {
        Self {
            pairing,
            members: Mutex::new(HashMap::new()),
        }
    }

    async fn lock(&self) -> MutexGuard<'_, HashMap<ParticipantId, Member>> {
        self.members.lock().await
    }

    /// The participant and partner a move ticket names (see [`Pairing::redeem`]).
    pub async fn redeem(&self, ticket: &str) -> Option<(ParticipantId, ParticipantId)> {
        self.pairing.redeem(ticket).await
    }

    /// Enters the roulette; the participant is paired at once, told it waits, or told to
    /// move. `claim`: the partner its move ticket named.
    pub async fn enter(
        &self,
        info: ParticipantInfo,
        id: ParticipantId,
        events: mpsc::Sender<RoomEvent>,
        claim: Option<ParticipantId>,
    ) -> Result<(), RouletteError> {
        let mut members = self.lock().await;
        if members.contains_key(&id) {
            return Err(RouletteError::AlreadyInRoulette);
        }
        // Seated first: the decision may pair it at once.
        members.insert(
            id,
            Member {
                info,
                events: Inbox::new(events),
                tracks: Vec::new(),
                partner: None,
                moving: false,
            },
        );
        match self.pairing.enter(id, claim, Instant::now()).await {
            Ok(outcome) => {
                dispatch(&mut members, outcome);
                Ok(())
            }
            Err(e) => {
                members.remove(&id);
                Err(e)
            }
        }
    }

    pub async fn next(&self, id: ParticipantId) -> Result<(), RouletteError> {
        self.act(id, Ask::Next).await
    }

    pub async fn block(&self, id: ParticipantId) -> Result<(), RouletteError> {
        self.act(id, Ask::Block).await
    }

    pub async fn report(&self, id: ParticipantId) -> Result<(), RouletteError> {
        self.act(id, Ask::Report).await
    }

    async fn act(&self, id: ParticipantId, ask: Ask) -> Result<(), RouletteError> {
        let mut members = self.lock().await;
        if !members.contains_key(&id) {
            return Err(RouletteError::NotInRoulette);
        }
        let (pairing, now) = (&self.pairing, Instant::now());
        let outcome = match ask {
            Ask::Next => pairing.next(id, now).await,
            Ask::Block => pairing.block(id, now).await,
            Ask::Report => pairing.report(id, now).await,
        }?;
        dispatch(&mut members, outcome);
        Ok(())
    }

    /// Leaves the roulette (stop, the session ended, or a move); a partner is told.
    /// Idempotent.
    pub async fn leave(&self, id: ParticipantId) {
        let mut members = self.lock().await;
        if members.remove(&id).is_some_and(|m| m.moving) {
            self.pairing.moved(id).await;
            return;
        }
        let outcome = self.pairing.disconnect(id, Instant::now()).await;
        dispatch(&mut members, outcome);
    }

    /// Runs [`Pairing::rematch`] and delivers what it decided.
    pub async fn rematch(&self) {
        let mut members = self.lock().await;
        let outcome = self.pairing.rematch(Instant::now()).await;
        dispatch(&mut members, outcome);
    }

    /// Records a track the participant publishes and hands it to its partner, if any.
    pub async fn publish(&self, id: ParticipantId, track: Arc<Published>) {
        let mut members = self.lock().await;
        let Some(member) = members.get_mut(&id) else {
            return;
        };
        member.tracks.push(track.clone());
        if let Some(partner) = member.partner.and_then(|p| members.get(&p)) {
            send(partner, RoomEvent::Published { owner: id, track });
        }
    }

    /// Records what the participant's video carries and tells its partner.
    pub async fn update(&self, id: ParticipantId, change: super::Change) {
        let mut members = self.lock().await;
        let Some(member) = members.get_mut(&id) else {
            return;
        };
        if !member.info.apply(change) {
            return;
        }
        let info = member.info.clone();
        if let Some(partner) = member.partner.and_then(|p| members.get(&p)) {
            send(partner, RoomEvent::Updated(info));
        }
    }

    pub fn begin_shutdown(&self) {
        self.pairing.begin_shutdown();
    }

    pub fn stats(&self) -> RouletteStats {
        self.pairing.stats()
    }
}

fn send(member: &Member, event: RoomEvent) {
    member.events.deliver("roulette", &member.info.id, event);
}

fn dispatch(members: &mut HashMap<ParticipantId, Member>, outcome: Vec<MatchEvent>) {
    for event in outcome {
        match event {
            MatchEvent::Paired { a, b, .. } => {
                for (me, other) in [(a, b), (b, a)] {
                    let Some((info, tracks)) = members
                        .get(&other)
                        .map(|o| (o.info.clone(), o.tracks.clone()))
                    else {
                        continue;
                    };
                    if let Some(m) = members.get_mut(&me) {
                        m.partner = Some(other);
                        send(
                            m,
                            RoomEvent::Paired {
                                partner: info,
                                partner_id: other,
                                tracks,
                            },
                        );
                    }
                }
            }
            MatchEvent::PartnerLeft {
                who,
                partner,
                reason,
            } => {
                if let Some(m) = members.get_mut(&who) {
                    m.partner = None;
                    send(m, RoomEvent::PartnerLeft { partner, reason });
                }
                if let Some(m) = members.get_mut(&partner) {
                    m.partner = None;
                }
            }
            MatchEvent::Waiting {
                who,
                position,
                online,
            } => {
                if let Some(m) = members.get(&who) {
                    send(m, RoomEvent::Waiting { position, online });
                }
            }
            MatchEvent::Move { who, url, ticket } => {
                if let Some(m) = members.get_mut(&who) {
                    m.moving = true;
                    send(m, RoomEvent::Move { url, ticket });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::roulette::{InMemoryMatchmaker, NextReason, RouletteConfig};

    async fn join(hub: &RouletteHub, n: u64) -> (ParticipantId, mpsc::Receiver<RoomEvent>) {
        let id = ParticipantId(1000 + n);
        let (tx, rx) = mpsc::channel(16);
        let info = ParticipantInfo::new(id, format!("guest{n}"));
        hub.enter(info, id, tx, None).await.unwrap();
        (id, rx)
    }

    fn drain(rx: &mut mpsc::Receiver<RoomEvent>) -> Vec<String> {
        let mut out = vec![];
        while let Ok(e) = rx.try_recv() {
            out.push(match e {
                RoomEvent::Paired { partner, .. } => format!("paired {}", partner.name),
                RoomEvent::PartnerLeft { reason, .. } => format!("left {reason:?}"),
                RoomEvent::Waiting { position, .. } => format!("waiting {position}"),
                _ => "other".into(),
            });
        }
        out
    }

    #[tokio::test]
    async fn both_sides_hear_of_pairs_and_partings() {
        let hub = RouletteHub::new(Arc::new(InMemoryMatchmaker::new(RouletteConfig::default())));
        let (a, mut rx_a) = join(&hub, 1).await;
        let (_b, mut rx_b) = join(&hub, 2).await;
        let (_c, mut rx_c) = join(&hub, 3).await;
        assert_eq!(drain(&mut rx_a), ["waiting 1", "paired guest2"]);
        assert_eq!(drain(&mut rx_b), ["paired guest1"]);
        assert_eq!(drain(&mut rx_c), ["waiting 1"]);
        hub.next(a).await.unwrap();
        assert_eq!(drain(&mut rx_a), ["paired guest3"]);
        assert_eq!(
            drain(&mut rx_b),
            [format!("left {:?}", NextReason::Next), "waiting 1".into()]
        );
        assert_eq!(drain(&mut rx_c), ["paired guest1"]);
        hub.leave(a).await;
        assert_eq!(
            drain(&mut rx_c),
            [
                format!("left {:?}", NextReason::Disconnected),
                "paired guest2".into()
            ]
        );
        assert_eq!(hub.next(a).await, Err(RouletteError::NotInRoulette));
        hub.leave(a).await; // idempotent
    }
}
