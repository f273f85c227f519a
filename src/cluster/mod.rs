//! Several facerelay nodes behind one service, on Redis (`cluster.redis_url`).
//!
//! A room's media must stay on one node, so the nodes share no rooms: they share a routing
//! table. Redis holds the node registry (each node's page URL and load, refreshed every
//! `cluster.heartbeat_ms` under a lease of `cluster.lease_ms`), a room → node map with leases
//! (a room lives on one node; its first join places it on the least loaded live node with
//! room, and the hosting node keeps the lease while the room has someone in it), and the node
//! numbers that make participant ids unique across nodes, and the roulette: one queue, its
//! pairs and blocks, shared by every node ([`RedisPairing`]; a pair talks on one node, with
//! room for both, and a participant whose partner waits elsewhere moves there).
//!
//! A browser may open any node. A node that does not host the room answers
//! the join with `redirect` and the URL of the node that does, and the page reopens there. When
//! a node dies, its leases run out within `cluster.lease_ms`; its pages reconnect to another
//! node (the `welcome` lists the live ones) and the room is placed again.
//!
//! Every Redis call of a join is bounded by `cluster.redis_timeout_ms`: while Redis is away,
//! joins fail with `cluster_unavailable` (rooms already running go on), and they work again
//! once the connection manager has reconnected. Without `cluster.redis_url` there is one node
//! and no Redis: [`Standalone`].

mod redis_roulette;
mod redis_router;

use std::sync::Arc;

use crate::metrics::Registry;

pub use redis_roulette::RedisPairing;
pub use redis_router::RedisRouter;

/// Where a room lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// On this node.
    Here,
    /// On another node, whose page is at `url`.
    There { url: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error("the cluster cannot place rooms right now (its store does not answer: {0}); try again in a moment")]
    Unavailable(String),
    #[error("every node of the cluster is full; try again later")]
    Full,
}

impl ClusterError {
    /// Stable code for the signalling edge's `error` message.
    pub fn code(&self) -> &'static str {
        match self {
            ClusterError::Unavailable(_) => "cluster_unavailable",
            ClusterError::Full => "server_full",
        }
    }
}

/// What a node reports about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    pub participants: usize,
    /// Participants the node takes at most (`rooms.max_total_participants`).
    pub capacity: usize,
    pub swap_free: usize,
    /// One-minute load average per CPU.
    pub cpu: f64,
}

/// Decides where rooms live.
#[async_trait::async_trait]
pub trait Router: Send + Sync + 'static {
    /// Where `room` lives, placing it if nobody hosts it.
    async fn place(&self, room: &str) -> Result<Placement, ClusterError>;
    /// The page URLs of the other live nodes, for a page whose node goes away.
    fn other_nodes(&self) -> Vec<String>;
    /// This node stops (its rooms may be placed elsewhere at once).
    async fn leave(&self) {}
    /// Registers the router's own metrics (a cluster's: its nodes and its store).
    fn register_metrics(self: Arc<Self>, _registry: &mut Registry) {}
}

/// One node, no Redis: every room lives here.
pub struct Standalone;

#[async_trait::async_trait]
impl Router for Standalone {
    async fn place(&self, _room: &str) -> Result<Placement, ClusterError> {
        Ok(Placement::Here)
    }

    fn other_nodes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Reads what a node reports at each heartbeat, and the rooms it has people in.
pub trait NodeState: Send + Sync + 'static {
    fn load(&self) -> Load;
    /// The rooms with someone in them on this node.
    fn rooms(&self) -> Vec<String>;
}

/// Load averages per CPU closer than this count as equal: two nodes of one machine, or two
/// readings a few seconds apart, differ by that much by chance, and a join is not sent to
/// another node (a page reload for the joiner) for it.
const CPU_MARGIN: f64 = 0.2;

/// The least loaded node with room for one more, by participants then CPU; `here` wins when it
/// has as few participants as the best and a CPU load within [`CPU_MARGIN`] of it, so that a
/// join stays where it arrived when it can.
pub(crate) fn least_loaded<'a>(nodes: &'a [(String, Load)], here: &str) -> Option<&'a str> {
    let open = || nodes.iter().filter(|(_, l)| l.participants < l.capacity);
    let (best, least) = open().min_by(|(_, a), (_, b)| {
        a.participants
            .cmp(&b.participants)
            .then(a.cpu.total_cmp(&b.cpu))
    })?;
    let here_as_good = open()
        .find(|(id, _)| id == here)
        .filter(|(_, l)| l.participants == least.participants && l.cpu <= least.cpu + CPU_MARGIN);
    Some(here_as_good.map_or(best, |(id, _)| id).as_str())
}

/// This machine's one-minute load average per CPU (0 where it cannot be read).
pub fn cpu_load() -> f64 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |l| l / cpus)
}

/// A shared handle.
pub type SharedRouter = Arc<dyn Router>;

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, participants: usize, capacity: usize, cpu: f64) -> (String, Load) {
        (
            id.to_owned(),
            Load {
                participants,
                capacity,
                swap_free: 0,
                cpu,
            },
        )
    }

    #[test]
    fn rooms_go_to_the_least_loaded_node_with_room_and_stay_here_on_a_tie_or_near_one() {
        let nodes = [
            node("a", 5, 10, 0.1),
            node("b", 2, 10, 0.9),
            node("c", 2, 10, 0.2),
        ];
        assert_eq!(least_loaded(&nodes, "a"), Some("c"));
        let tie = [node("a", 2, 10, 0.2), node("b", 2, 10, 0.2)];
        assert_eq!(least_loaded(&tie, "b"), Some("b"));
        assert_eq!(least_loaded(&tie, "a"), Some("a"));
        // CPU readings a little apart are a tie too; clearly apart, the idler node wins.
        let near = [node("a", 2, 10, 0.35), node("b", 2, 10, 0.2)];
        assert_eq!(least_loaded(&near, "a"), Some("a"));
        assert_eq!(least_loaded(&near, "b"), Some("b"));
        let apart = [node("a", 2, 10, 0.6), node("b", 2, 10, 0.2)];
        assert_eq!(least_loaded(&apart, "a"), Some("b"));
        // Fewer participants elsewhere wins whatever the CPU.
        let fewer = [node("a", 3, 10, 0.0), node("b", 2, 10, 0.9)];
        assert_eq!(least_loaded(&fewer, "a"), Some("b"));
        let full = [node("a", 10, 10, 0.0), node("b", 3, 3, 0.0)];
        assert_eq!(least_loaded(&full, "a"), None);
        assert_eq!(least_loaded(&[], "a"), None);
    }
}
