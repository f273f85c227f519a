//! Several nodes on one Redis: a real `redis-server` (Debian's package) on a loopback port and
//! three `facerelay serve` processes, joined by clients that open different nodes.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use facerelay::cluster::{Load, NodeState, Placement, RedisPairing, RedisRouter, Router};
use facerelay::config::{ClusterConfig, Config};
use facerelay::room::hub::Pairing;
use facerelay::room::roulette::{MatchEvent, NextReason, RouletteError};
use facerelay::room::{ParticipantId, RoomId};
use facerelay::rtc::RtcSettings;
use facerelay::testkit::{ws_url_of, Client, ClientError, Publish};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::relay::{check_delivery, stream, warm_up, Seen};
use crate::support::{encoder, serial, RawSocket, NOTHING, TIMEOUT, VIDEO};

/// Heartbeat and lease of the test cluster: a dead node's rooms move within about a second.
const HEARTBEAT_MS: u64 = 200;
const LEASE_MS: u64 = 1000;

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the node at `page` reports the metric line `line` (name and value), at most
/// 20 s; the last scrape goes with the failure.
pub(crate) async fn wait_for_metric(page: &str, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = crate::support::http_get(&format!("{page}metrics")).await;
        if m.contains(&format!("\n{line}\n")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{page} never reported {line}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `redis-server` of its own, without persistence, on `port`.
pub(crate) struct Redis {
    child: tokio::process::Child,
    pub port: u16,
}

impl Redis {
    pub(crate) async fn start_on(port: u16) -> Self {
        Self::spawn(&["redis-server", "--save", "", "--appendonly", "no"], port).await
    }

    /// Runs `command` (`redis-server` and its flags) on loopback `port`, until it answers.
    pub(crate) async fn spawn(command: &[&str], port: u16) -> Self {
        let child = tokio::process::Command::new(command[0])
            .args(&command[1..])
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs (scripts/setup.sh installs Debian's redis-server)");
        let redis = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis.answers().await {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        redis
    }

    pub(crate) async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    async fn answers(&self) -> bool {
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").await.is_ok()
            && matches!(s.read(&mut buf).await, Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    /// Empties the store, as a Redis that restarted without persistence comes back.
    pub(crate) async fn flush(&self) {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        s.write_all(b"FLUSHALL\r\n").await.unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"+OK"), "FLUSHALL: {:?}", &buf[..n]);
    }

    /// Sends a signal (`-STOP`, `-CONT`) to the server.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("redis-server runs").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// One `facerelay serve` process of the cluster.
pub(crate) struct Node {
    child: tokio::process::Child,
    /// Its page, `http://127.0.0.1:PORT/`.
    pub url: String,
}

impl Node {
    pub(crate) async fn start(redis: &str, extra: &[(&str, &str)]) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_facerelay"));
        command
            .arg("serve")
            .env("FACERELAY_SERVER__LISTEN", "127.0.0.1:0")
            .env("FACERELAY_SERVER__WEB_ROOT", root.join("web"))
            .env("FACERELAY_ICE__BIND_IP", "127.0.0.1")
            .env("FACERELAY_ICE__INCLUDE_LOOPBACK", "true")
            .env("FACERELAY_CLUSTER__REDIS_URL", redis)
            .env("FACERELAY_CLUSTER__HEARTBEAT_MS", HEARTBEAT_MS.to_string())
            .env("FACERELAY_CLUSTER__LEASE_MS", LEASE_MS.to_string())
            .env("FACERELAY_CLUSTER__REDIS_TIMEOUT_MS", "500")
            // No models: the nodes relay (the swap is not what this tests).
            .env("FACERELAY_MODELS__DIR", "/nonexistent")
            .env("FACERELAY_MODELS__PACKAGED_DIR", "/nonexistent")
            .envs(extra.iter().copied())
            .env("RUST_LOG", "warn");
        Self::spawn(command).await
    }

    /// Runs `command` (a `facerelay serve`, from the repository's root) and waits until it
    /// listens.
    pub(crate) async fn spawn(mut command: tokio::process::Command) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut child = command
            .current_dir(root)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the facerelay program runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("facerelay listening on ") {
                    return url.trim().to_owned();
                }
            }
            panic!("the node exited before it listened");
        })
        .await
        .expect("the node listens within 20 s");
        // Keep reading its output so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, url }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id().expect("the node runs")
    }

    /// SIGKILL: no goodbye, no lease released.
    pub(crate) async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Joins `room` starting at the node `page`, following redirects; returns the client and the
/// page of the node it ended on.
async fn join_via(
    page: &str,
    room: &str,
    name: &str,
    publish: Publish,
) -> Result<(Client, String), ClientError> {
    let settings = RtcSettings::from_config(&Config::loopback());
    let mut page = page.to_owned();
    for _ in 0..3 {
        match Client::join(&ws_url_of(&page), room, name, publish, &settings, encoder()).await {
            Ok(client) => return Ok((client, page)),
            Err(ClientError::Redirected { url }) => page = url,
            Err(e) => return Err(e),
        }
    }
    panic!("{name}: redirected more than twice");
}

/// A raw signalling socket that joins `msg` (a join or roulette message) starting at `page`,
/// following redirects; returns the socket, its node's page and the welcome.
async fn raw_join_via(
    page: &str,
    msg: &serde_json::Value,
) -> (RawSocket, String, serde_json::Value) {
    let mut page = page.to_owned();
    for _ in 0..3 {
        let mut s = RawSocket::connect_url(&ws_url_of(&page)).await;
        s.send(msg.to_string()).await;
        let answer = s.recv().await.expect("an answer to the join");
        match answer["type"].as_str() {
            Some("welcome") => return (s, page, answer),
            Some("redirect") => page = answer["url"].as_str().unwrap().to_owned(),
            _ => panic!("join answered {answer}"),
        }
    }
    panic!("redirected more than twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_share_rooms_and_the_roulette_and_survive_a_dead_node() {
    let _serial = serial().await;
    let redis = Redis::start().await;
    let mut nodes = Vec::new();
    let whip_keys = [(
        "FACERELAY_SERVER__WHIP_KEYS",
        r#"{ "*" = "0123456789abcdef-key" }"#,
    )];
    for _ in 0..3 {
        nodes.push(Node::start(&redis.url(), &whip_keys).await);
    }
    let pages: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    // Every node sees the others, and its store.
    for page in &pages {
        wait_for_metric(page, "facerelay_cluster_nodes 3").await;
        wait_for_metric(page, "facerelay_cluster_store_up 1").await;
    }

    // A joins through node 0, B through node 1: both end on the node that hosts the room, and
    // B receives A's video intact.
    let (mut a, a_node) = join_via(&pages[0], "together", "A", VIDEO).await.unwrap();
    let (mut b, b_node) = join_via(&pages[1], "together", "B", NOTHING).await.unwrap();
    assert_eq!(a_node, b_node, "one room, one node");
    println!("the room lives on {a_node}");
    a.wait_ready(TIMEOUT).await.expect("A connected");
    b.wait_ready(TIMEOUT).await.expect("B connected");
    warm_up(&mut a, &mut b).await;
    let mut seen = Seen::new();
    stream(&mut a, &mut [("B", &mut b)], 0..90, &mut seen).await;
    let all: Vec<u16> = (0..90).collect();
    check_delivery(&seen, "B", &all, 0.9);

    roulette_across_nodes(&pages).await;

    // WHIP into the room through a node that does not host it: redirected (307) there.
    let other = pages.iter().find(|p| **p != a_node).unwrap();
    let addr = other.trim_start_matches("http://").trim_end_matches('/');
    let mut http = tokio::net::TcpStream::connect(addr).await.unwrap();
    let offer = facerelay::testkit::BROWSER_OFFER;
    let request = format!(
        "POST /whip/together HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer 0123456789abcdef-key\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
        offer.len()
    );
    http.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    http.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 307"), "{answer}");
    let location = format!("location: {a_node}whip/together");
    assert!(answer.to_ascii_lowercase().contains(&location), "{answer}");

    // 1000 joins spread over the nodes: no participant id twice.
    let mut ids = BTreeSet::new();
    let mut joins_per_node = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..1000 {
        let msg =
            serde_json::json!({"type": "join", "room": format!("many-{}", i % 25), "name": "M"});
        let (mut s, node, welcome) = raw_join_via(&pages[i % 3], &msg).await;
        assert!(
            ids.insert(welcome["id"].as_str().unwrap().to_owned()),
            "id twice: {welcome}"
        );
        *joins_per_node.entry(node).or_default() += 1;
        s.send(r#"{"type":"leave"}"#).await;
    }
    println!(
        "1000 joins: {} distinct ids; by node {joins_per_node:?}",
        ids.len()
    );
    assert_eq!(ids.len(), 1000);
    assert!(
        joins_per_node.len() >= 2,
        "rooms spread over the nodes: {joins_per_node:?}"
    );

    // The node hosting "together" dies: A and B reconnect through another node and meet
    // again there.
    let dead = pages.iter().position(|p| *p == a_node).unwrap();
    let killed = Instant::now();
    nodes.remove(dead).kill().await;
    drop((a, b));
    let survivor = pages.iter().find(|p| **p != a_node).unwrap().clone();
    let (mut a, a_node, b, b_node) = loop {
        let a = join_via(&survivor, "together", "A", VIDEO).await;
        let b = join_via(&survivor, "together", "B", NOTHING).await;
        match (a, b) {
            (Ok((a, an)), Ok((b, bn))) if an != pages[dead] && bn != pages[dead] => {
                break (a, an, b, bn)
            }
            _ => {
                assert!(
                    killed.elapsed() < Duration::from_secs(15),
                    "no new home for the room"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let mut b = b;
    assert_eq!(a_node, b_node);
    a.wait_ready(TIMEOUT).await.expect("A connected again");
    b.wait_ready(TIMEOUT).await.expect("B connected again");
    warm_up(&mut a, &mut b).await;
    let met_again = killed.elapsed();
    println!(
        "node killed: A and B meet again on {a_node} after {met_again:?} (lease {LEASE_MS} ms)"
    );
    assert!(met_again < Duration::from_secs(15), "{met_again:?}");
    let mut seen = Seen::new();
    stream(&mut a, &mut [("B", &mut b)], 100..160, &mut seen).await;
    check_delivery(&seen, "B", &(100..160).collect::<Vec<_>>(), 0.9);
    a.close().await;
    b.close().await;

    // Redis hangs (SIGSTOP: connections open, no answers): a join fails with a clear code
    // within cluster.redis_timeout_ms instead of hanging.
    redis.signal("-STOP");
    let mut s = RawSocket::connect_url(&ws_url_of(&survivor)).await;
    let asked = Instant::now();
    s.send(r#"{"type":"join","room":"while-hung","name":"H"}"#)
        .await;
    s.expect_error("cluster_unavailable").await;
    let hung = asked.elapsed();
    println!("Redis hung: join refused after {hung:?} (redis_timeout_ms 500)");
    assert!(
        hung >= Duration::from_millis(400) && hung < Duration::from_secs(3),
        "{hung:?}"
    );
    redis.signal("-CONT");

    // Redis stops: joins fail at once with a clear code; it comes back, and so do joins.
    let port = redis.port;
    redis.stop().await;
    let mut s = RawSocket::connect_url(&ws_url_of(&survivor)).await;
    let asked = Instant::now();
    s.send(r#"{"type":"join","room":"while-down","name":"D"}"#)
        .await;
    let refused = s.expect_error("cluster_unavailable").await;
    println!(
        "Redis down: join refused after {:?}: {refused}",
        asked.elapsed()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    // The roulette's queue is in Redis too: entering fails the same way.
    let mut s = RawSocket::connect_url(&ws_url_of(&survivor)).await;
    s.send(r#"{"type":"roulette","name":"D"}"#).await;
    s.expect_error("cluster_unavailable").await;
    wait_for_metric(&survivor, "facerelay_cluster_store_up 0").await;
    let redis = Redis::start_on(port).await;
    let back = Instant::now();
    loop {
        let mut s = RawSocket::connect_url(&ws_url_of(&survivor)).await;
        s.send(r#"{"type":"join","room":"after","name":"E"}"#).await;
        let answer = s.recv().await.unwrap();
        if matches!(answer["type"].as_str(), Some("welcome") | Some("redirect")) {
            println!("Redis back: joins work again after {:?}", back.elapsed());
            break;
        }
        assert_eq!(answer["code"], "cluster_unavailable", "{answer}");
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "joins did not resume"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for node in nodes {
        node.kill().await;
    }
    redis.stop().await;
}

/// A Redis that restarts empty forgets every node until its next heartbeat; a join meanwhile
/// is placed on the node it reached, never refused as "every node is full".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joins_are_placed_while_a_restarted_redis_has_not_heard_a_heartbeat() {
    let redis = Redis::start().await;
    let node = Node::start(&redis.url(), &[]).await;
    wait_for_metric(&node.url, "facerelay_cluster_nodes 1").await;
    for i in 0..10 {
        redis.flush().await;
        let mut s = RawSocket::connect_url(&ws_url_of(&node.url)).await;
        s.send(
            serde_json::json!({"type": "join", "room": format!("flushed-{i}"), "name": "F"})
                .to_string(),
        )
        .await;
        let answer = s.recv().await.expect("an answer to the join");
        assert_eq!(
            answer["type"], "welcome",
            "join {i} right after FLUSHALL: {answer}"
        );
    }
}

/// The cluster settings of routers made in this process (the test's heartbeat and lease).
fn in_process_cluster(redis: &Redis) -> ClusterConfig {
    ClusterConfig {
        redis_url: redis.url(),
        node_url: String::new(),
        node_id: String::new(),
        heartbeat_ms: HEARTBEAT_MS,
        lease_ms: LEASE_MS,
        redis_timeout_ms: 500,
    }
}

/// A node that left the cluster (its drain began) stays gone while it drains: its heartbeat,
/// which would go on until the process ends, neither registers it again nor takes back the
/// room it had placed, so the others place that room themselves instead of sending people to a
/// node that refuses them. (An absence: the window is five of the leaving node's heartbeats; a
/// machine too slow to run one in it could only let the defect pass, never fail this.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_left_stays_gone_while_it_drains() {
    let redis = Redis::start().await;
    let config = in_process_cluster(&redis);
    let load = Load {
        participants: 0,
        capacity: 10,
        swap_free: 0,
        cpu: 0.0,
    };
    let node =
        |url: &'static str| RedisRouter::connect(&config, url.into(), Arc::new(FixedLoad(load)));
    let a = node("http://a/").await.unwrap();
    let b = node("http://b/").await.unwrap();
    assert_eq!(a.place("drained").await.unwrap(), Placement::Here);
    a.leave().await;
    let deadline = Instant::now() + TIMEOUT;
    while !b.other_nodes().is_empty() {
        assert!(
            Instant::now() < deadline,
            "b still sees {:?}",
            b.other_nodes()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let window = Instant::now() + Duration::from_millis(5 * HEARTBEAT_MS);
    while Instant::now() < window {
        assert!(
            b.other_nodes().is_empty(),
            "the node that left is back: {:?}",
            b.other_nodes()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        b.place("drained").await.unwrap(),
        Placement::Here,
        "the room of the node that left"
    );
    redis.stop().await;
}

/// The next message of type `ty` on `s`, skipping others (at most eight).
async fn next_of(s: &mut RawSocket, ty: &str) -> serde_json::Value {
    for _ in 0..8 {
        let m = s
            .recv()
            .await
            .unwrap_or_else(|| panic!("closed before {ty}"));
        if m["type"] == ty {
            return m;
        }
    }
    panic!("no {ty} in eight messages");
}

/// Roulette players who open different nodes share one queue: the newcomer moves to the node
/// where its partner waits (keeping its id), blocks hold across nodes, and a used ticket is a
/// plain entry.
async fn roulette_across_nodes(pages: &[String]) {
    let roulette = |name: &str| serde_json::json!({"type": "roulette", "name": name});
    let (mut r1, r1_node, _) = raw_join_via(&pages[0], &roulette("R1")).await;
    assert_eq!(r1_node, pages[0], "the roulette is on every node");
    assert_eq!(next_of(&mut r1, "roulette-waiting").await["position"], 1);
    let (mut r2, r2_node, welcome) = raw_join_via(&pages[2], &roulette("R2")).await;
    assert_eq!(r2_node, pages[2]);
    let r2_id = welcome["id"].clone();
    let moved = Instant::now();
    let order = next_of(&mut r2, "roulette-move").await;
    assert_eq!(
        order["url"],
        pages[0].as_str(),
        "R2 moves to R1's node: {order}"
    );
    let ticket = order["ticket"].as_str().unwrap().to_owned();
    assert!(r2.recv().await.is_none(), "the old node closes the socket");
    let mut r2 = RawSocket::connect_url(&ws_url_of(&pages[0])).await;
    r2.send(serde_json::json!({"type": "roulette", "name": "R2", "ticket": ticket}).to_string())
        .await;
    let welcome = next_of(&mut r2, "welcome").await;
    assert_eq!(welcome["id"], r2_id, "a move keeps the participant's id");
    assert_eq!(
        next_of(&mut r2, "roulette-paired").await["partner"]["name"],
        "R1"
    );
    assert_eq!(
        next_of(&mut r1, "roulette-paired").await["partner"]["name"],
        "R2"
    );
    println!(
        "roulette: R2 opened node 2; its move order, new socket on node 0 and pairing with R1 took {:?}",
        moved.elapsed()
    );

    // A block holds in the shared queue: the only two waiting are not paired again.
    r2.send(r#"{"type":"block"}"#).await;
    next_of(&mut r1, "roulette-ended").await;
    assert_eq!(next_of(&mut r1, "roulette-waiting").await["online"], 2);
    next_of(&mut r2, "roulette-waiting").await;
    // A newcomer on node 1 moves to node 0, where both wait, and meets the longest waiter.
    let (mut r3, _, _) = raw_join_via(&pages[1], &roulette("R3")).await;
    let order = next_of(&mut r3, "roulette-move").await;
    assert_eq!(order["url"], pages[0].as_str(), "{order}");
    let ticket = order["ticket"].as_str().unwrap().to_owned();
    let mut r3 = RawSocket::connect_url(&ws_url_of(&pages[0])).await;
    let enter = serde_json::json!({"type": "roulette", "name": "R3", "ticket": ticket});
    r3.send(enter.to_string()).await;
    next_of(&mut r3, "welcome").await;
    assert_eq!(
        next_of(&mut r3, "roulette-paired").await["partner"]["name"],
        "R2",
        "R2 was queued first after its block"
    );
    next_of(&mut r2, "roulette-paired").await;
    // The same ticket again: used, so a plain entry (a new id, waiting with R1).
    let mut r4 = RawSocket::connect_url(&ws_url_of(&pages[0])).await;
    r4.send(enter.to_string()).await;
    let welcome = next_of(&mut r4, "welcome").await;
    assert_ne!(welcome["id"], r2_id);
    assert_eq!(
        next_of(&mut r4, "roulette-paired").await["partner"]["name"],
        "R1"
    );
    drop((r1, r2, r3, r4));
}

/// Two Chromium pages open different nodes of the cluster with the same room link: the one
/// whose node does not host the room is sent to the one that does, wearing the gallery face it
/// picked in its invitation there, and they see each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_chromium_pages_that_open_different_nodes_meet_in_one_room() {
    let _serial = serial().await;
    let redis = Redis::start().await;
    // The stand-in swapper and a gallery of "Ada", which Bob picks on the node he opens.
    let gallery = crate::browser::gallery_of_ada("cluster-gallery");
    let gallery = gallery.to_str().unwrap();
    let swap = [
        ("FACERELAY_MODELS__DIR", "models/fixtures"),
        ("FACERELAY_MODELS__DETECTOR", "det_10g.onnx"),
        ("FACERELAY_MODELS__RECOGNIZER", "w600k_r50.onnx"),
        ("FACERELAY_SWAP__SWAPPER", "inswapper_128"),
        ("FACERELAY_SWAP__DEEP_MASK", "square"),
        ("FACERELAY_SWAP__GALLERY", gallery),
    ];
    let first = Node::start(&redis.url(), &swap).await;
    let second = Node::start(&redis.url(), &swap).await;
    for node in [&first.url, &second.url] {
        wait_for_metric(node, "facerelay_cluster_nodes 2").await;
    }
    let bob_base = std::ffi::OsString::from(&second.url);
    let dir = crate::browser::run_script_at(
        "room.mjs",
        &first.url,
        &[],
        &[
            ("BOB_BASE", bob_base.as_os_str()),
            ("BOB_FACE", std::ffi::OsStr::new("Ada")),
            ("SHOT", std::ffi::OsStr::new("room-cluster.png")),
        ],
    )
    .await;
    assert!(dir.join("room-cluster.png").exists());
    first.kill().await;
    second.kill().await;
    redis.stop().await;
}

/// The node of a room dies under two Chromium pages: they continue on another node of the
/// cluster by themselves (the `welcome` listed it) and meet again there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chromium_pages_continue_on_another_node_when_theirs_dies() {
    let _serial = serial().await;
    let redis = Redis::start().await;
    let first = Node::start(&redis.url(), &[]).await;
    let second = Node::start(&redis.url(), &[]).await;
    for node in [&first.url, &second.url] {
        wait_for_metric(node, "facerelay_cluster_nodes 2").await;
    }
    let pid = first.pid().to_string();
    let dir = crate::browser::run_script_at(
        "failover.mjs",
        &first.url,
        &[],
        &[("NODE_PID", std::ffi::OsStr::new(&pid))],
    )
    .await;
    assert!(dir.join("failover.png").exists());
    first.kill().await;
    second.kill().await;
    redis.stop().await;
}

/// What a node reports, fixed (the pairing reads capacity from the registry).
struct FixedLoad(Load);

impl NodeState for FixedLoad {
    fn load(&self) -> Load {
        self.0
    }
    fn rooms(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The shared roulette's rules, straight on its Redis pairing with three nodes in this
/// process: arrival order across nodes, moves and claims, the cooldown as a preference,
/// blocks, a full node passed over, a dead node's waiter dropped, a waiter kept for its mover
/// and paired elsewhere when the mover never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_roulette_keeps_its_rules_across_nodes() {
    let _serial = serial().await;
    let redis = Redis::start().await;
    let config = in_process_cluster(&redis);
    let node = |url: &'static str, participants: usize| {
        let config = config.clone();
        async move {
            let load = Load {
                participants,
                capacity: 10,
                swap_free: 0,
                cpu: 0.0,
            };
            let router = RedisRouter::connect(&config, url.into(), Arc::new(FixedLoad(load)))
                .await
                .unwrap();
            let pairing = Arc::new(RedisPairing::new(Duration::from_secs(60), 100));
            pairing.attach(router.clone());
            (router, pairing)
        }
    };
    let (_ra, a) = node("http://a/", 0).await;
    let (_rb, b) = node("http://b/", 0).await;
    let (rc, c) = node("http://c/", 10).await; // full
    let now = Instant::now();
    let p = ParticipantId;
    let waiting = |who, position| MatchEvent::Waiting {
        who,
        position,
        online: 0,
    };
    // Compares events with `online` left out (the count is checked by the process test).
    fn plain(events: Vec<MatchEvent>) -> Vec<MatchEvent> {
        events
            .into_iter()
            .map(|e| match e {
                MatchEvent::Waiting { who, position, .. } => MatchEvent::Waiting {
                    who,
                    position,
                    online: 0,
                },
                MatchEvent::Paired { a, b, .. } => MatchEvent::Paired {
                    room: RoomId::roulette_pair(""),
                    a,
                    b,
                },
                other => other,
            })
            .collect()
    }
    let paired = |a, b| MatchEvent::Paired {
        room: RoomId::roulette_pair(""),
        a,
        b,
    };
    let moved = |events: Vec<MatchEvent>| match &events[..] {
        [MatchEvent::Move { url, ticket, .. }] => (url.clone(), ticket.clone()),
        other => panic!("expected a move, got {other:?}"),
    };

    // Someone waits on the full node: a newcomer elsewhere passes it over and waits too.
    assert_eq!(
        plain(c.enter(p(10), None, now).await.unwrap()),
        [waiting(p(10), 1)]
    );
    assert_eq!(
        plain(b.enter(p(11), None, now).await.unwrap()),
        [waiting(p(11), 2)],
        "no pair on a node without room"
    );
    // The full node dies: a scan drops its waiter.
    rc.leave().await;
    assert_eq!(
        plain(b.next(p(11), now).await.unwrap()),
        [waiting(p(11), 1)]
    );
    assert!(b.disconnect(p(11), now).await.is_empty());

    // 1 waits on A; 2 arrives on B and moves to A, where its ticket claims 1.
    assert_eq!(
        plain(a.enter(p(1), None, now).await.unwrap()),
        [waiting(p(1), 1)]
    );
    let (url, ticket) = moved(b.enter(p(2), None, now).await.unwrap());
    assert_eq!(url, "http://a/");
    b.moved(p(2)).await;
    assert_eq!(a.redeem(&ticket).await, Some((p(2), p(1))));
    assert_eq!(a.redeem(&ticket).await, None, "a ticket is used once");
    assert_eq!(
        plain(a.enter(p(2), Some(p(1)), now).await.unwrap()),
        [paired(p(1), p(2))]
    );
    assert_eq!(b.stats().online, 0);
    assert_eq!((a.stats().online, a.stats().pairs), (2, 1));

    // Next with nobody else waiting: the cooldown is a preference, so they meet again.
    assert_eq!(
        plain(a.next(p(1), now).await.unwrap()),
        [
            MatchEvent::PartnerLeft {
                who: p(2),
                partner: p(1),
                reason: NextReason::Next
            },
            waiting(p(1), 1),
            paired(p(1), p(2)),
        ]
    );
    // A block holds: both wait, 2 (who blocked) first.
    let events = plain(a.block(p(2), now).await.unwrap());
    assert_eq!(
        events,
        [
            MatchEvent::PartnerLeft {
                who: p(1),
                partner: p(2),
                reason: NextReason::Blocked
            },
            waiting(p(2), 1),
            waiting(p(1), 2),
        ]
    );
    assert_eq!(
        a.block(p(2), now).await,
        Err(RouletteError::NoPartner),
        "nothing left to aim at"
    );
    // A newcomer on B meets the longest waiter, on A.
    let (url, ticket) = moved(b.enter(p(3), None, now).await.unwrap());
    assert_eq!(url, "http://a/");
    b.moved(p(3)).await;
    assert_eq!(a.redeem(&ticket).await, Some((p(3), p(2))));
    // The one it was sent to left meanwhile: the newcomer meets the next in line instead.
    assert_eq!(
        plain(a.disconnect(p(2), now).await),
        Vec::<MatchEvent>::new()
    );
    assert_eq!(
        plain(a.enter(p(3), Some(p(2)), now).await.unwrap()),
        [paired(p(1), p(3))]
    );
    // A disconnect frees the partner, who waits.
    assert_eq!(
        plain(a.disconnect(p(3), now).await),
        [
            MatchEvent::PartnerLeft {
                who: p(1),
                partner: p(3),
                reason: NextReason::Disconnected
            },
            waiting(p(1), 1),
        ]
    );
    assert_eq!(a.next(p(3), now).await, Err(RouletteError::NotInRoulette));

    // 6 is sent to 1, which is kept for it: 7 meanwhile passes 1 over instead of following.
    let (_, ticket) = moved(b.enter(p(6), None, now).await.unwrap());
    b.moved(p(6)).await;
    assert_eq!(
        plain(b.enter(p(7), None, now).await.unwrap()),
        [waiting(p(7), 2)]
    );
    assert!(a.rematch(now).await.is_empty(), "1 stays kept for 6");
    // 6 never comes: once the reservation lapses, A's rematch moves 1 to 7.
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let (url, ticket_1) = moved(a.rematch(now).await);
    assert_eq!(url, "http://b/");
    a.moved(p(1)).await;
    assert_eq!(b.redeem(&ticket_1).await, Some((p(1), p(7))));
    assert_eq!(
        plain(b.enter(p(1), Some(p(7)), now).await.unwrap()),
        [paired(p(7), p(1))]
    );
    assert_eq!(
        a.redeem(&ticket).await,
        Some((p(6), p(1))),
        "6's own ticket is still valid"
    );

    // A mover is nobody's partner before it has left: 20 and 21 talk on A, 22 waits on B; 20's
    // Next sends it to 22, and a rematch on A before 20's page has left pairs nobody (20 with
    // 21 again would leave 21 talking to someone gone).
    a.enter(p(20), None, now).await.unwrap();
    assert_eq!(
        plain(a.enter(p(21), None, now).await.unwrap()),
        [paired(p(20), p(21))]
    );
    b.enter(p(22), None, now).await.unwrap();
    let events = a.next(p(20), now).await.unwrap();
    let (url, ticket) = moved(events[1..2].to_vec());
    assert_eq!(url, "http://b/");
    assert_eq!(
        plain([&events[..1], &events[2..]].concat()),
        [
            MatchEvent::PartnerLeft {
                who: p(21),
                partner: p(20),
                reason: NextReason::Next
            },
            // Behind 22, who is kept for 20.
            waiting(p(21), 2),
        ]
    );
    assert!(a.rematch(now).await.is_empty(), "20 is on its way, 22 kept");
    assert_eq!(a.stats().online, 1);
    a.moved(p(20)).await;
    assert_eq!(b.redeem(&ticket).await, Some((p(20), p(22))));
    assert_eq!(
        plain(b.enter(p(20), Some(p(22)), now).await.unwrap()),
        [paired(p(22), p(20))]
    );

    // A Next that pairs at once with someone else: the partner's leaving comes first, since it
    // unlinks both (after the new pairing it would cut 30 off from 31). 21 still waits on A.
    assert_eq!(
        plain(a.enter(p(30), None, now).await.unwrap()),
        [paired(p(21), p(30))]
    );
    assert_eq!(
        plain(a.enter(p(31), None, now).await.unwrap()),
        [waiting(p(31), 1)]
    );
    assert_eq!(
        plain(a.next(p(30), now).await.unwrap()),
        [
            MatchEvent::PartnerLeft {
                who: p(21),
                partner: p(30),
                reason: NextReason::Next
            },
            paired(p(31), p(30)),
            waiting(p(21), 1),
        ]
    );
    redis.stop().await;
}

/// A roulette page moves between nodes with its face: Ann, paired on node 1 with a face on,
/// presses Next while Cid waits on node 2; her page continues on node 2 without reloading,
/// puts the face back on there, and Cid sees her with the face badge from the first moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chromium_roulette_page_moves_to_another_node_with_its_face() {
    let _serial = serial().await;
    let redis = Redis::start().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let packaged = root.join("models/packaged");
    let swap: &[(&str, &str)] = &[
        ("FACERELAY_MODELS__PACKAGED_DIR", packaged.to_str().unwrap()),
        ("FACERELAY_SWAP__SWAPPER", "mesh"),
    ];
    let first = Node::start(&redis.url(), swap).await;
    let second = Node::start(&redis.url(), swap).await;
    for node in [&first.url, &second.url] {
        wait_for_metric(node, "facerelay_cluster_nodes 2").await;
    }
    let photo = packaged.join("photos/gauss.png");
    let base2 = std::ffi::OsString::from(&second.url);
    crate::browser::run_script_at(
        "roulette_move.mjs",
        &first.url,
        &[&photo],
        &[("BASE2", base2.as_os_str())],
    )
    .await;
    first.kill().await;
    second.kill().await;
    redis.stop().await;
}
