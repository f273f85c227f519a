//! The Redis side of the cluster. Keys (all under `facerelay:`):
//!
//! - `node_seq`: a counter; each node takes a number from it at start (participant ids).
//! - `nodes`: a set of the node ids that have registered; `node:{id}` a hash (`url`,
//!   `participants`, `capacity`, `swap_free`, `cpu`) that expires `cluster.lease_ms` after the
//!   node's last heartbeat: a node is live while its hash exists (no clocks compared).
//! - `room:{name}`: the id of the node hosting the room, with the same lease, kept by that
//!   node while the room has someone in it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{least_loaded, ClusterError, Load, NodeState, Placement, Router};
use crate::config::ClusterConfig;
use crate::metrics::{Registry, Scraped};

pub(super) const PREFIX: &str = "facerelay:";

/// Renews a room's lease if this node holds it, or takes it if nobody does (after an outage);
/// 1 if the room is this node's, 0 if another node holds it.
const KEEP_ROOM: &str = r#"
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// Deletes a key if it still holds the given value.
const DELETE_IF: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

pub struct RedisRouter {
    pub(super) conn: ConnectionManager,
    pub(super) id: String,
    url: String,
    number: u64,
    pub(super) lease: Duration,
    pub(super) timeout: Duration,
    state: Arc<dyn NodeState>,
    /// The other live nodes, as of the last heartbeat: (id, page URL).
    others: RwLock<Vec<(String, String)>>,
    /// Rooms placed on this node, and when: a room keeps its lease for one lease after it was
    /// placed even before anyone arrives (the page may be on its way).
    placed: Mutex<HashMap<String, Instant>>,
    /// The last heartbeat reached Redis.
    store_up: AtomicBool,
    /// Whether this node has left the cluster (its drain began). Held by each heartbeat and by
    /// the leaving, so that no heartbeat in flight registers the node again after it left.
    left: tokio::sync::Mutex<bool>,
}

fn unavailable(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable(e.to_string())
}

impl RedisRouter {
    /// Connects, takes a node number, registers this node (its page at `url`) and starts its
    /// heartbeat. A Redis that does not answer within `cluster.redis_timeout_ms` is a start-up
    /// error.
    pub async fn connect(
        config: &ClusterConfig,
        url: String,
        state: Arc<dyn NodeState>,
    ) -> Result<Arc<Self>, ClusterError> {
        let timeout = Duration::from_millis(config.redis_timeout_ms);
        let client = redis::Client::open(config.redis_url.as_str()).map_err(unavailable)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let mut conn = tokio::time::timeout(
            timeout,
            ConnectionManager::new_with_config(client, manager_config),
        )
        .await
        .map_err(|_| {
            unavailable(format!(
                "no answer from {} within {timeout:?}",
                redact(&config.redis_url)
            ))
        })?
        .map_err(unavailable)?;
        let number: u64 = tokio::time::timeout(
            timeout,
            redis::cmd("INCR")
                .arg(format!("{PREFIX}node_seq"))
                .query_async(&mut conn),
        )
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
        let id = if config.node_id.is_empty() {
            format!("node{number}")
        } else {
            config.node_id.clone()
        };
        let router = Arc::new(Self {
            conn,
            id,
            url,
            number,
            lease: Duration::from_millis(config.lease_ms),
            timeout,
            state,
            others: RwLock::default(),
            placed: Mutex::default(),
            store_up: AtomicBool::new(true),
            left: tokio::sync::Mutex::new(false),
        });
        router.heartbeat().await.map_err(unavailable)?;
        let weak = Arc::downgrade(&router);
        tokio::spawn(beat(weak, Duration::from_millis(config.heartbeat_ms)));
        tracing::info!(node = %router.id, number, url = %router.url, "joined the cluster");
        Ok(router)
    }

    /// This node's number (unique in the cluster): the high bits of its participant ids.
    pub fn number(&self) -> u64 {
        self.number
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn key(kind: &str, name: &str) -> String {
        format!("{PREFIX}{kind}:{name}")
    }

    /// Registers this node's load, keeps the leases of its rooms, and reads the other nodes;
    /// nothing once the node has left (a draining node is not brought back, nor its rooms).
    async fn heartbeat(&self) -> redis::RedisResult<()> {
        let left = self.left.lock().await;
        if *left {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let load = self.state.load();
        let lease = self.lease.as_millis() as u64;
        let node_key = Self::key("node", &self.id);
        redis::pipe()
            .cmd("HSET")
            .arg(&node_key)
            .arg("url")
            .arg(&self.url)
            .arg("participants")
            .arg(load.participants)
            .arg("capacity")
            .arg(load.capacity)
            .arg("swap_free")
            .arg(load.swap_free)
            .arg("cpu")
            .arg(format!("{:.3}", load.cpu))
            .ignore()
            .cmd("PEXPIRE")
            .arg(&node_key)
            .arg(lease)
            .ignore()
            .cmd("SADD")
            .arg(format!("{PREFIX}nodes"))
            .arg(&self.id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;

        // The rooms to keep: those with people, and those placed within the last lease.
        let mut rooms = self.state.rooms();
        {
            let mut placed = self.placed.lock().unwrap_or_else(|e| e.into_inner());
            placed.retain(|room, at| rooms.contains(room) || at.elapsed() < self.lease);
            for room in placed.keys() {
                if !rooms.contains(room) {
                    rooms.push(room.clone());
                }
            }
        }
        let keep = redis::Script::new(KEEP_ROOM);
        for room in rooms {
            let ours: i64 = keep
                .key(Self::key("room", &room))
                .arg(&self.id)
                .arg(lease)
                .invoke_async(&mut conn)
                .await?;
            if ours == 0 {
                tracing::warn!(room = %room, "another node holds this room's lease (after a Redis outage?); its participants here stay on this node");
            }
        }

        let nodes = self.live_nodes(&mut conn).await?;
        *self.others.write().unwrap_or_else(|e| e.into_inner()) = nodes
            .into_iter()
            .filter(|(id, _, _)| *id != self.id)
            .map(|(id, url, _)| (id, url))
            .collect();
        Ok(())
    }

    /// Every live node: (id, page URL, load). Ids whose hash has expired leave the set.
    async fn live_nodes(
        &self,
        conn: &mut ConnectionManager,
    ) -> redis::RedisResult<Vec<(String, String, Load)>> {
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(format!("{PREFIX}nodes"))
            .query_async(conn)
            .await?;
        let mut nodes = Vec::with_capacity(ids.len());
        for id in ids {
            let hash: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(Self::key("node", &id))
                .query_async(conn)
                .await?;
            let Some(url) = hash.get("url").cloned() else {
                redis::cmd("SREM")
                    .arg(format!("{PREFIX}nodes"))
                    .arg(&id)
                    .query_async::<()>(conn)
                    .await?;
                continue;
            };
            let number = |k: &str| hash.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
            let load = Load {
                participants: number("participants"),
                capacity: number("capacity"),
                swap_free: number("swap_free"),
                cpu: hash.get("cpu").and_then(|v| v.parse().ok()).unwrap_or(0.0),
            };
            nodes.push((id, url, load));
        }
        Ok(nodes)
    }

    async fn try_place(&self, room: &str) -> Result<Placement, ClusterError> {
        let mut conn = self.conn.clone();
        let key = Self::key("room", room);
        let lease = self.lease.as_millis() as u64;
        for _ in 0..4 {
            let owner: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            match owner {
                Some(owner) if owner == self.id => return Ok(self.here(room)),
                Some(owner) => {
                    let url: Option<String> = redis::cmd("HGET")
                        .arg(Self::key("node", &owner))
                        .arg("url")
                        .query_async(&mut conn)
                        .await
                        .map_err(unavailable)?;
                    if let Some(url) = url {
                        return Ok(Placement::There { url });
                    }
                    // Its node is gone: the room is placed again.
                    redis::Script::new(DELETE_IF)
                        .key(&key)
                        .arg(&owner)
                        .invoke_async::<i64>(&mut conn)
                        .await
                        .map_err(unavailable)?;
                }
                None => {
                    let mut nodes = self.live_nodes(&mut conn).await.map_err(unavailable)?;
                    // A Redis that restarted empty forgets every node until its next
                    // heartbeat; this one is alive (it is placing), so it counts as it is.
                    if !nodes.iter().any(|(id, _, _)| *id == self.id) {
                        nodes.push((self.id.clone(), self.url.clone(), self.state.load()));
                    }
                    let loads: Vec<(String, Load)> =
                        nodes.iter().map(|(id, _, l)| (id.clone(), *l)).collect();
                    let chosen = least_loaded(&loads, &self.id).ok_or(ClusterError::Full)?;
                    let set: Option<String> = redis::cmd("SET")
                        .arg(&key)
                        .arg(chosen)
                        .arg("NX")
                        .arg("PX")
                        .arg(lease)
                        .query_async(&mut conn)
                        .await
                        .map_err(unavailable)?;
                    if set.is_none() {
                        continue; // another node placed it meanwhile
                    }
                    if chosen == self.id {
                        return Ok(self.here(room));
                    }
                    let url = nodes
                        .into_iter()
                        .find(|(id, _, _)| id == chosen)
                        .map(|(_, url, _)| url)
                        .unwrap_or_default();
                    return Ok(Placement::There { url });
                }
            }
        }
        Err(ClusterError::Unavailable(
            "the room's placement kept changing (four tries); try again".into(),
        ))
    }

    fn here(&self, room: &str) -> Placement {
        self.placed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room.to_owned(), Instant::now());
        Placement::Here
    }

    /// Leaves the cluster (at shutdown): the node's registration and its rooms' leases go, so
    /// that its rooms are placed again at once rather than after their lease.
    async fn unregister(&self) {
        let mut left = self.left.lock().await;
        *left = true;
        let mut conn = self.conn.clone();
        let rooms: Vec<String> = self
            .placed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .chain(self.state.rooms())
            .collect();
        let work = async {
            for room in rooms {
                redis::Script::new(DELETE_IF)
                    .key(Self::key("room", &room))
                    .arg(&self.id)
                    .invoke_async::<i64>(&mut conn)
                    .await?;
            }
            redis::pipe()
                .cmd("DEL")
                .arg(Self::key("node", &self.id))
                .ignore()
                .cmd("SREM")
                .arg(format!("{PREFIX}nodes"))
                .arg(&self.id)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(())) => tracing::info!(node = %self.id, "left the cluster"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot leave the cluster cleanly"),
            Err(_) => tracing::warn!("cannot leave the cluster cleanly: Redis does not answer"),
        }
    }
}

#[async_trait::async_trait]
impl Router for RedisRouter {
    async fn place(&self, room: &str) -> Result<Placement, ClusterError> {
        match tokio::time::timeout(self.timeout, self.try_place(room)).await {
            Ok(result) => result,
            Err(_) => Err(ClusterError::Unavailable(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    async fn leave(&self) {
        self.unregister().await
    }

    fn register_metrics(self: Arc<Self>, registry: &mut Registry) {
        let (nodes, up) = (Arc::downgrade(&self), Arc::downgrade(&self));
        let mut scraped = Scraped::default();
        scraped
            .gauge(
                "facerelay_cluster_nodes",
                "Live nodes of the cluster, this one included, as of the last heartbeat.",
                move || nodes.upgrade().map_or(0, |r| r.others.read().map_or(0, |o| o.len()) as u64 + 1),
            )
            .gauge(
                "facerelay_cluster_store_up",
                "1 when the last heartbeat reached Redis, else 0 (joins then fail with cluster_unavailable).",
                move || up.upgrade().is_some_and(|r| r.store_up.load(Ordering::Relaxed)) as u64,
            );
        scraped.register(registry);
    }

    fn other_nodes(&self) -> Vec<String> {
        self.others
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, url)| url.clone())
            .collect()
    }
}

/// The heartbeat: every `every`, while the router lives. Failures are logged (once until it
/// works again), never fatal.
async fn beat(router: Weak<RedisRouter>, every: Duration) {
    let mut failing = false;
    loop {
        tokio::time::sleep(every).await;
        let Some(router) = router.upgrade() else {
            return;
        };
        if *router.left.lock().await {
            return;
        }
        let result = tokio::time::timeout(router.timeout, router.heartbeat()).await;
        router
            .store_up
            .store(matches!(result, Ok(Ok(()))), Ordering::Relaxed);
        match result {
            Ok(Ok(())) if std::mem::take(&mut failing) => {
                tracing::info!("the cluster store answers again");
            }
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cluster heartbeat failed; joins fail with cluster_unavailable until Redis answers");
            }
            Err(_) if !failing => {
                failing = true;
                tracing::warn!("cluster heartbeat timed out; joins fail with cluster_unavailable until Redis answers");
            }
            _ => {}
        }
    }
}

/// A Redis URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            super::redact("redis://user:secret@10.0.0.5:6379/0"),
            "redis://…@10.0.0.5:6379/0"
        );
        assert_eq!(
            super::redact("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
