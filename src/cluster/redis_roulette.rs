//! The roulette of a cluster: one queue, its pairs and blocks in Redis, shared by every node.
//!
//! Each node seats the roulette participants who open it. The queue is a sorted set in
//! arrival order; a participant entering it (arriving, or after its pair ended) is paired in
//! one Lua script with the longest waiter it may be paired with, on any node, by the rules
//! of [`crate::room::roulette`] (arrival order, cooldown as a preference, blocks for the
//! session). A pair always talks on one node, which must have room for both:
//!
//! - the waiter is on this node: the two are paired here at once;
//! - the waiter is on another node with a free seat: this participant gets a one-time ticket
//!   and is told to move there ([`MatchEvent::Move`]); its page opens a socket to that node
//!   and enters with the ticket, which keeps its id (and blocks) and claims the waiter;
//! - the waiter's node is full: it is passed over.
//!
//! If the waiter is gone when the mover arrives (someone else was quicker), the mover simply
//! enters the queue there. Waiters of a node that died leave the queue when a scan meets
//! them (their node's registry entry has expired); records of participants whose node stops
//! refreshing them expire after three leases.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use rand::Rng;

use super::redis_router::{RedisRouter, PREFIX};
use crate::room::hub::Pairing;
use crate::room::roulette::{MatchEvent, NextReason, RouletteError, RouletteStats};
use crate::room::{ParticipantId, RoomId};

/// How long a move ticket is valid: the page reconnects within a second or two.
const TICKET_MS: u64 = 15_000;
/// How long the waiter a mover is sent to is kept for it (others pass it over meanwhile).
const RESERVE_MS: u64 = 5_000;
/// How many of a node's longest waiters [`Pairing::rematch`] looks at each time.
const REMATCH: usize = 3;
/// How many waiters one scan looks at (the longest waiting).
const SCAN: usize = 200;

/// Queues `id` (ARGV[2]) and pairs it if it can: returns `{'paired', w}`, `{'move', w, url}`
/// (a ticket is stored) or `{'wait', position, online}`.
const MATCH: &str = r#"
local P, id, node, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local claim, ticket, ticket_ms, scan = ARGV[5], ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[9])
local q = P .. 'rq'
local function rec(x) return P .. 'rm:' .. x end
local function blocked(a, b) return redis.call('SISMEMBER', P .. 'rb:' .. a, b) == 1 end
local function cooling(a, b)
  if a > b then a, b = b, a end
  return redis.call('EXISTS', P .. 'rc:' .. a .. ':' .. b) == 1
end
local function reserved(x) return redis.call('EXISTS', P .. 'rr:' .. x) == 1 end
local function position()
  local online = 0
  local counts = redis.call('HGETALL', P .. 'ron')
  for i = 1, #counts, 2 do
    if redis.call('EXISTS', P .. 'node:' .. counts[i]) == 1 then
      online = online + tonumber(counts[i + 1])
    else
      redis.call('HDEL', P .. 'ron', counts[i])
    end
  end
  local rank = redis.call('ZRANK', q, id) or 0
  return {'wait', tostring(rank + 1), tostring(math.max(online, 1))}
end
redis.call('HSET', P .. 'ron', node, ARGV[8])
redis.call('HSET', rec(id), 'node', node, 'partner', '')
redis.call('PEXPIRE', rec(id), ttl)
-- Someone is on the way to meet this waiter: it stays put.
if reserved(id) and redis.call('ZSCORE', q, id) then return position() end
local function pair(w)
  redis.call('ZREM', q, w, id)
  redis.call('DEL', P .. 'rr:' .. w)
  redis.call('HSET', rec(id), 'partner', w, 'last', w)
  redis.call('HSET', rec(w), 'partner', id, 'last', id)
  return {'paired', w}
end
local holder = claim ~= '' and redis.call('GET', P .. 'rr:' .. claim)
if claim ~= '' and redis.call('ZSCORE', q, claim) and redis.call('HGET', rec(claim), 'node') == node
    and not blocked(id, claim) and (not holder or holder == id) then
  return pair(claim)
end
local function take(w, wn)
  if wn == node then return pair(w) end
  redis.call('ZREM', q, id)
  redis.call('SET', P .. 'rt:' .. ticket, id .. ' ' .. w, 'PX', ticket_ms)
  redis.call('SET', P .. 'rr:' .. w, id, 'PX', ARGV[10])
  return {'move', w, redis.call('HGET', P .. 'node:' .. wn, 'url')}
end
local fallback
for _, w in ipairs(redis.call('ZRANGE', q, 0, scan - 1)) do
  if w ~= id then
    local wn = redis.call('HGET', rec(w), 'node')
    if not wn or redis.call('EXISTS', P .. 'node:' .. wn) == 0 then
      redis.call('ZREM', q, w)
    elseif not blocked(id, w) and not reserved(w) then
      local fits = wn == node
      if not fits then
        local load = redis.call('HMGET', P .. 'node:' .. wn, 'participants', 'capacity')
        fits = tonumber(load[1] or '0') < tonumber(load[2] or '0')
      end
      if fits then
        if not cooling(id, w) then return take(w, wn) end
        fallback = fallback or {w, wn}
      end
    end
  end
end
if fallback then return take(fallback[1], fallback[2]) end
if not redis.call('ZSCORE', q, id) then
  redis.call('ZADD', q, redis.call('INCR', P .. 'rq_seq'), id)
end
return position()
"#;

/// Ends `id`'s pair for next (ARGV[3] = 'next'), block or report: returns `{'ended', partner}`,
/// `{'blocked'}` (a last partner blocked while waiting), `{'waiting'}` (next while waiting),
/// `{'nopartner'}` or `{'unknown'}`.
const END: &str = r#"
local P, id, mode, cool_ms, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local rec = P .. 'rm:' .. id
if redis.call('EXISTS', rec) == 0 then return {'unknown'} end
local partner = redis.call('HGET', rec, 'partner') or ''
local target = partner
if target == '' then
  if mode == 'next' then return {'waiting'} end
  target = redis.call('HGET', rec, 'last') or ''
  if target == '' then return {'nopartner'} end
end
if mode ~= 'next' then
  for _, pair in ipairs({{id, target}, {target, id}}) do
    redis.call('SADD', P .. 'rb:' .. pair[1], pair[2])
    redis.call('PEXPIRE', P .. 'rb:' .. pair[1], ttl)
  end
  -- Once blocked there is nothing more to aim at: a second report must not count twice.
  redis.call('HSET', rec, 'last', '')
end
if partner == '' then return {'blocked'} end
local a, b = id, partner
if a > b then a, b = b, a end
redis.call('SET', P .. 'rc:' .. a .. ':' .. b, '1', 'PX', cool_ms)
redis.call('HSET', rec, 'partner', '')
redis.call('HSET', P .. 'rm:' .. partner, 'partner', '', 'last', id)
return {'ended', partner}
"#;

/// Takes `id` out of the roulette for good (ARGV[4]: the node's count without it); returns
/// its partner ('' if none).
const DROP: &str = r#"
local P, id = ARGV[1], ARGV[2]
redis.call('HSET', P .. 'ron', ARGV[3], ARGV[4])
local rec = P .. 'rm:' .. id
local partner = redis.call('HGET', rec, 'partner') or ''
redis.call('ZREM', P .. 'rq', id)
redis.call('DEL', rec, P .. 'rb:' .. id, P .. 'rr:' .. id)
if partner ~= '' then
  redis.call('HSET', P .. 'rm:' .. partner, 'partner', '', 'last', id)
end
return partner
"#;

static MATCH_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(MATCH));
static END_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(END));
static DROP_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(DROP));

/// What became of one participant entering the queue.
enum Matched {
    Paired(ParticipantId),
    Move { url: String, ticket: String },
    Wait { position: usize, online: usize },
}

/// This node's roulette participants: partner (none while waiting), and when each last
/// entered the queue (a local count: the smallest waited longest here).
#[derive(Default)]
struct Locals {
    seats: HashMap<ParticipantId, (Option<ParticipantId>, u64)>,
    entries: u64,
}

impl Locals {
    /// `who` (new, or whose pair ended) waits, at the back.
    fn wait(&mut self, who: ParticipantId) {
        self.entries += 1;
        self.seats.insert(who, (None, self.entries));
    }

    fn pair(&mut self, a: ParticipantId, b: ParticipantId) {
        for (me, other) in [(a, b), (b, a)] {
            if let Some(seat) = self.seats.get_mut(&me) {
                seat.0 = Some(other);
            }
        }
    }

    /// The `n` who have waited longest here.
    fn longest_waiting(&self, n: usize) -> Vec<ParticipantId> {
        let mut waiting: Vec<_> = self
            .seats
            .iter()
            .filter(|(_, (partner, _))| partner.is_none())
            .map(|(&who, &(_, since))| (since, who))
            .collect();
        waiting.sort_unstable();
        waiting.into_iter().take(n).map(|(_, who)| who).collect()
    }
}

/// The shared roulette of a cluster node; [`RedisPairing::attach`] gives it the node's
/// connection once the node has joined the cluster.
pub struct RedisPairing {
    router: OnceLock<Arc<RedisRouter>>,
    cooldown: Duration,
    max_participants: usize,
    /// This node's roulette participants.
    local: Mutex<Locals>,
    pairs_made: AtomicU64,
    reports: AtomicU64,
    shutting_down: AtomicBool,
}

fn unavailable(e: impl std::fmt::Display) -> RouletteError {
    RouletteError::Unavailable(e.to_string())
}

fn id_of(s: &str) -> Option<ParticipantId> {
    s.strip_prefix('p')?.parse().ok().map(ParticipantId)
}

impl RedisPairing {
    pub fn new(cooldown: Duration, max_participants: usize) -> Self {
        Self {
            router: OnceLock::new(),
            cooldown,
            max_participants,
            local: Mutex::default(),
            pairs_made: AtomicU64::new(0),
            reports: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Connects to the node's cluster and keeps this node's records alive while it runs.
    pub fn attach(self: &Arc<Self>, router: Arc<RedisRouter>) {
        let every = router.lease / 3;
        if self.router.set(router).is_ok() {
            tokio::spawn(refresh(Arc::downgrade(self), every));
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Locals> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn router(&self) -> Result<&Arc<RedisRouter>, RouletteError> {
        self.router
            .get()
            .ok_or_else(|| unavailable("the node has not joined the cluster"))
    }

    /// Records live three leases without a refresh.
    fn ttl(router: &RedisRouter) -> u64 {
        3 * router.lease.as_millis() as u64
    }

    /// Runs one script, bounded by `cluster.redis_timeout_ms`.
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        args: &[String],
    ) -> Result<T, RouletteError> {
        let router = self.router()?;
        let mut conn = router.conn.clone();
        let mut invocation = script.prepare_invoke();
        invocation.arg(PREFIX);
        for arg in args {
            invocation.arg(arg);
        }
        match tokio::time::timeout(router.timeout, invocation.invoke_async(&mut conn)).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(unavailable(format!(
                "no answer within {} ms",
                router.timeout.as_millis()
            ))),
        }
    }

    /// Queues `who` (already a local member) and pairs it if it can.
    async fn queue(
        &self,
        who: ParticipantId,
        claim: Option<ParticipantId>,
    ) -> Result<Matched, RouletteError> {
        let router = self.router()?;
        let ticket = format!("{:032x}", rand::rng().random::<u128>());
        let online_here = self.local().seats.len();
        let reply: Vec<String> = self
            .run(
                &MATCH_SCRIPT,
                &[
                    who.to_string(),
                    router.id.clone(),
                    Self::ttl(router).to_string(),
                    claim.map(|c| c.to_string()).unwrap_or_default(),
                    ticket.clone(),
                    TICKET_MS.to_string(),
                    online_here.to_string(),
                    SCAN.to_string(),
                    RESERVE_MS.to_string(),
                ],
            )
            .await?;
        let field = |i: usize| reply.get(i).map(String::as_str).unwrap_or_default();
        match field(0) {
            "paired" => id_of(field(1))
                .map(Matched::Paired)
                .ok_or_else(|| unavailable("the store named an unknown partner")),
            "move" => Ok(Matched::Move {
                url: field(2).to_owned(),
                ticket,
            }),
            _ => Ok(Matched::Wait {
                position: field(1).parse().unwrap_or(1),
                online: field(2).parse().unwrap_or(1),
            }),
        }
    }

    /// Queues `who` and says what became of it, as events for this node.
    async fn settle(
        &self,
        who: ParticipantId,
        claim: Option<ParticipantId>,
        events: &mut Vec<MatchEvent>,
    ) -> Result<(), RouletteError> {
        match self.queue(who, claim).await? {
            Matched::Paired(partner) => {
                self.local().pair(who, partner);
                let n = self.pairs_made.fetch_add(1, Ordering::Relaxed);
                let node = &self.router()?.id;
                events.push(MatchEvent::Paired {
                    room: RoomId::roulette_pair(format!("{node}-{n}")),
                    a: partner,
                    b: who,
                });
            }
            Matched::Move { url, ticket } => {
                tracing::debug!(participant = %who, node = %url, "roulette partner on another node");
                // On its way: no longer one of this node's waiters, whom a rematch would pair
                // again (its page would never learn of that partner, nor the partner of its
                // leaving) before its page has left.
                self.local().seats.remove(&who);
                events.push(MatchEvent::Move { who, url, ticket });
            }
            Matched::Wait { position, online } => events.push(MatchEvent::Waiting {
                who,
                position,
                online,
            }),
        }
        Ok(())
    }

    /// Next, block or report.
    async fn end(
        &self,
        who: ParticipantId,
        reason: NextReason,
    ) -> Result<Vec<MatchEvent>, RouletteError> {
        if !self.local().seats.contains_key(&who) {
            return Err(RouletteError::NotInRoulette);
        }
        let router = self.router()?;
        let mode = match reason {
            NextReason::Blocked => "block",
            NextReason::Reported => "report",
            _ => "next",
        };
        let reply: Vec<String> = self
            .run(
                &END_SCRIPT,
                &[
                    who.to_string(),
                    mode.to_owned(),
                    self.cooldown.as_millis().to_string(),
                    Self::ttl(router).to_string(),
                ],
            )
            .await?;
        let mut events = Vec::new();
        match reply.first().map(String::as_str) {
            Some("ended") => {
                let partner = reply.get(1).and_then(|p| id_of(p));
                if reason == NextReason::Reported {
                    self.reports.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(reporter = %who, reported = ?partner, "roulette report");
                }
                if let Some(partner) = partner {
                    let mut local = self.local();
                    local.wait(who);
                    local.wait(partner);
                }
                // The pair has ended in the store, whatever follows: the partner hears of it
                // first (the event unlinks both, so it must come before a new pairing of
                // either), then both queue again. One that cannot be queued now stays one of
                // this node's waiters, which the rematch tick queues once the store answers.
                if let Some(partner) = partner {
                    events.push(MatchEvent::PartnerLeft {
                        who: partner,
                        partner: who,
                        reason,
                    });
                }
                for p in std::iter::once(who).chain(partner) {
                    if let Err(e) = self.settle(p, None, &mut events).await {
                        tracing::warn!(participant = %p, error = %e, "cannot queue a participant again; the rematch will");
                    }
                }
            }
            Some("blocked") => {
                if reason == NextReason::Reported {
                    self.reports.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(reporter = %who, "roulette report of a last partner");
                }
            }
            Some("waiting") => self.settle(who, None, &mut events).await?,
            Some("nopartner") => return Err(RouletteError::NoPartner),
            _ => return Err(RouletteError::NotInRoulette),
        }
        Ok(events)
    }
}

#[async_trait::async_trait]
impl Pairing for RedisPairing {
    async fn enter(
        &self,
        who: ParticipantId,
        claim: Option<ParticipantId>,
        _now: Instant,
    ) -> Result<Vec<MatchEvent>, RouletteError> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(RouletteError::ShuttingDown);
        }
        {
            let mut local = self.local();
            if local.seats.contains_key(&who) {
                return Err(RouletteError::AlreadyInRoulette);
            }
            if local.seats.len() >= self.max_participants {
                return Err(RouletteError::RouletteFull {
                    max: self.max_participants,
                });
            }
            local.wait(who);
        }
        let mut events = Vec::new();
        if let Err(e) = self.settle(who, claim, &mut events).await {
            self.local().seats.remove(&who);
            return Err(e);
        }
        Ok(events)
    }

    async fn next(
        &self,
        who: ParticipantId,
        _now: Instant,
    ) -> Result<Vec<MatchEvent>, RouletteError> {
        self.end(who, NextReason::Next).await
    }

    async fn block(
        &self,
        who: ParticipantId,
        _now: Instant,
    ) -> Result<Vec<MatchEvent>, RouletteError> {
        self.end(who, NextReason::Blocked).await
    }

    async fn report(
        &self,
        who: ParticipantId,
        _now: Instant,
    ) -> Result<Vec<MatchEvent>, RouletteError> {
        self.end(who, NextReason::Reported).await
    }

    async fn disconnect(&self, who: ParticipantId, _now: Instant) -> Vec<MatchEvent> {
        let online_here = {
            let mut local = self.local();
            if local.seats.remove(&who).is_none() {
                return Vec::new();
            }
            local.seats.len()
        };
        let Ok(router) = self.router() else {
            return Vec::new();
        };
        let args = [who.to_string(), router.id.clone(), online_here.to_string()];
        let partner: String = match self.run(&DROP_SCRIPT, &args).await {
            Ok(partner) => partner,
            Err(e) => {
                // Its record expires within three leases; until then a scan may still offer
                // it, and a move to it finds nobody and simply queues.
                tracing::warn!(participant = %who, error = %e, "cannot take a participant out of the shared roulette");
                return Vec::new();
            }
        };
        let mut events = Vec::new();
        if let Some(partner) = id_of(&partner) {
            self.local().wait(partner);
            events.push(MatchEvent::PartnerLeft {
                who: partner,
                partner: who,
                reason: NextReason::Disconnected,
            });
            if let Err(e) = self.settle(partner, None, &mut events).await {
                tracing::warn!(participant = %partner, error = %e, "cannot queue a participant again");
            }
        }
        events
    }

    /// Looks again for partners of this node's longest waiters: a waiter kept for a mover who
    /// never came, or missed while Redis was away, is paired (or moved) within a tick.
    async fn rematch(&self, _now: Instant) -> Vec<MatchEvent> {
        let waiters = self.local().longest_waiting(REMATCH);
        let mut events = Vec::new();
        for who in waiters {
            let mut found = Vec::new();
            if self.settle(who, None, &mut found).await.is_err() {
                break;
            }
            // Still waiting: its page already knows.
            events.extend(
                found
                    .into_iter()
                    .filter(|e| !matches!(e, MatchEvent::Waiting { .. })),
            );
        }
        events
    }

    async fn moved(&self, who: ParticipantId) {
        let online_here = {
            let mut local = self.local();
            local.seats.remove(&who);
            local.seats.len()
        };
        if let Ok(router) = self.router() {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(format!("{PREFIX}ron"))
                .arg(&router.id)
                .arg(online_here);
            let mut conn = router.conn.clone();
            // The next refresh corrects a miss.
            let _ = tokio::time::timeout(router.timeout, cmd.query_async::<()>(&mut conn)).await;
        }
    }

    async fn redeem(&self, ticket: &str) -> Option<(ParticipantId, ParticipantId)> {
        if ticket.len() != 32 || !ticket.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let router = self.router().ok()?;
        let mut conn = router.conn.clone();
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(format!("{PREFIX}rt:{ticket}"));
        let get = cmd.query_async::<Option<String>>(&mut conn);
        let value = tokio::time::timeout(router.timeout, get)
            .await
            .ok()?
            .ok()??;
        let (who, partner) = value.split_once(' ')?;
        Some((id_of(who)?, id_of(partner)?))
    }

    fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    fn stats(&self) -> RouletteStats {
        let seats = &self.local().seats;
        let waiting = seats.values().filter(|(p, _)| p.is_none()).count();
        RouletteStats {
            online: seats.len(),
            waiting,
            pairs: (seats.len() - waiting) / 2,
            pairs_made: self.pairs_made.load(Ordering::Relaxed),
            reports: self.reports.load(Ordering::Relaxed),
        }
    }
}

/// Keeps this node's roulette records (and blocks) alive and its count of participants
/// current, until the pairing is dropped.
async fn refresh(pairing: Weak<RedisPairing>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pairing) = pairing.upgrade() else {
            return;
        };
        let Ok(router) = pairing.router() else {
            continue;
        };
        let ids: Vec<ParticipantId> = pairing.local().seats.keys().copied().collect();
        let ttl = RedisPairing::ttl(router);
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(format!("{PREFIX}ron"))
            .arg(&router.id)
            .arg(ids.len())
            .ignore();
        for id in &ids {
            for kind in ["rm", "rb"] {
                pipe.cmd("PEXPIRE")
                    .arg(format!("{PREFIX}{kind}:{id}"))
                    .arg(ttl)
                    .ignore();
            }
        }
        let mut conn = router.conn.clone();
        let result = tokio::time::timeout(router.timeout, pipe.query_async::<()>(&mut conn)).await;
        if !matches!(result, Ok(Ok(()))) {
            tracing::debug!("cannot refresh the roulette's records (Redis away?)");
        }
    }
}
