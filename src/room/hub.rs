//! The roulette's connection to sessions: the [`Matchmaker`] decides who talks to whom, the hub
//! delivers its decisions to the participants' sessions (the same bounded event channels rooms
//! use) and hands each new partner the tracks the other already publishes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;

use super::roulette::{MatchEvent, Matchmaker, RouletteError, RouletteStats};
use super::{Inbox, ParticipantId, ParticipantInfo, RoomEvent};
use crate::rtc::Published;

struct Member {
    info: ParticipantInfo,
    events: Inbox,
    tracks: Vec<Arc<Published>>,
    partner: Option<ParticipantId>,
}

/// One lock over the session registry, taken before the matchmaker's own: events are delivered
/// in the order the matchmaker produced them, even when two sessions act at once.
pub struct RouletteHub {
    matchmaker: Arc<dyn Matchmaker>,
    members: Mutex<HashMap<ParticipantId, Member>>,
}

impl RouletteHub {
    pub fn new(matchmaker: Arc<dyn Matchmaker>) -> Self {
        Self {
            matchmaker,
            members: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ParticipantId, Member>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enters the roulette; the participant is paired at once or told it waits.
    pub fn enter(
        &self,
        info: ParticipantInfo,
        id: ParticipantId,
        events: mpsc::Sender<RoomEvent>,
    ) -> Result<(), RouletteError> {
        let mut members = self.lock();
        let outcome = self.matchmaker.enter(id, Instant::now())?;
        members.insert(
            id,
            Member {
                info,
                events: Inbox::new(events),
                tracks: Vec::new(),
                partner: None,
            },
        );
        dispatch(&mut members, outcome);
        Ok(())
    }

    pub fn next(&self, id: ParticipantId) -> Result<(), RouletteError> {
        self.act(id, |m, now| m.next(id, now))
    }

    pub fn block(&self, id: ParticipantId) -> Result<(), RouletteError> {
        self.act(id, |m, now| m.block(id, now))
    }

    pub fn report(&self, id: ParticipantId) -> Result<(), RouletteError> {
        self.act(id, |m, now| m.report(id, now))
    }

    fn act(
        &self,
        id: ParticipantId,
        op: impl FnOnce(&dyn Matchmaker, Instant) -> Result<Vec<MatchEvent>, RouletteError>,
    ) -> Result<(), RouletteError> {
        let mut members = self.lock();
        if !members.contains_key(&id) {
            return Err(RouletteError::NotInRoulette);
        }
        let outcome = op(self.matchmaker.as_ref(), Instant::now())?;
        dispatch(&mut members, outcome);
        Ok(())
    }

    /// Leaves the roulette (stop, or the session ended); the partner is told. Idempotent.
    pub fn leave(&self, id: ParticipantId) {
        let mut members = self.lock();
        let outcome = self.matchmaker.disconnect(id, Instant::now());
        members.remove(&id);
        dispatch(&mut members, outcome);
    }

    /// Records a track the participant publishes and hands it to its partner, if any.
    pub fn publish(&self, id: ParticipantId, track: Arc<Published>) {
        let mut members = self.lock();
        let Some(member) = members.get_mut(&id) else {
            return;
        };
        member.tracks.push(track.clone());
        if let Some(partner) = member.partner.and_then(|p| members.get(&p)) {
            send(partner, RoomEvent::Published { owner: id, track });
        }
    }

    /// Records what the participant's video carries and tells its partner.
    pub fn set_face(&self, id: ParticipantId, face: super::FaceState) {
        let mut members = self.lock();
        let Some(member) = members.get_mut(&id) else {
            return;
        };
        if member.info.face == face {
            return;
        }
        member.info.set_face(face);
        let info = member.info.clone();
        if let Some(partner) = member.partner.and_then(|p| members.get(&p)) {
            send(partner, RoomEvent::Updated(info));
        }
    }

    pub fn begin_shutdown(&self) {
        self.matchmaker.begin_shutdown();
    }

    pub fn stats(&self) -> RouletteStats {
        self.matchmaker.stats()
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::roulette::{InMemoryMatchmaker, NextReason, RouletteConfig};

    fn join(hub: &RouletteHub, n: u64) -> (ParticipantId, mpsc::Receiver<RoomEvent>) {
        let id = ParticipantId(1000 + n);
        let (tx, rx) = mpsc::channel(16);
        let info = ParticipantInfo {
            id: id.to_string(),
            name: format!("guest{n}"),
            swapped: false,
            face: crate::room::FaceState::None,
        };
        hub.enter(info, id, tx).unwrap();
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

    #[test]
    fn both_sides_hear_of_pairs_and_partings() {
        let hub = RouletteHub::new(Arc::new(InMemoryMatchmaker::new(RouletteConfig::default())));
        let (a, mut rx_a) = join(&hub, 1);
        let (_b, mut rx_b) = join(&hub, 2);
        let (_c, mut rx_c) = join(&hub, 3);
        assert_eq!(drain(&mut rx_a), ["waiting 1", "paired guest2"]);
        assert_eq!(drain(&mut rx_b), ["paired guest1"]);
        assert_eq!(drain(&mut rx_c), ["waiting 1"]);
        hub.next(a).unwrap();
        assert_eq!(drain(&mut rx_a), ["paired guest3"]);
        assert_eq!(
            drain(&mut rx_b),
            [format!("left {:?}", NextReason::Next), "waiting 1".into()]
        );
        assert_eq!(drain(&mut rx_c), ["paired guest1"]);
        hub.leave(a);
        assert_eq!(
            drain(&mut rx_c),
            [
                format!("left {:?}", NextReason::Disconnected),
                "paired guest2".into()
            ]
        );
        assert_eq!(hub.next(a), Err(RouletteError::NotInRoulette));
        hub.leave(a); // idempotent
    }
}
