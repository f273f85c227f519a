//! The signalling protocol under bad input: every case gets a clear error with a stable code,
//! and nobody else notices.

use std::time::Duration;

use facerelay::config::Config;
use futures_util::SinkExt;

use crate::support::{http_get, serial, start, RawSocket};

const VP8_ONLY_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n\
a=mid:0\r\na=sendrecv\r\na=rtpmap:96 VP8/90000\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_clear_errors_and_the_connection_keeps_working() {
    let _serial = serial().await;
    let mut config = Config::loopback();
    config.rooms.max_participants = 2;
    let server = start(config).await;

    // An innocent bystander in the room under test.
    let mut bystander = RawSocket::connect(&server).await;
    assert_eq!(bystander.join("lab", "Bystander").await["type"], "welcome");

    let mut s = RawSocket::connect(&server).await;
    s.send("{not json").await;
    s.expect_error("bad_message").await;
    s.send(r#"{"type":"teleport"}"#).await;
    s.expect_error("unknown_type").await;
    s.send(r#"{"type":"join","room":"lab"}"#).await;
    s.expect_error("bad_message").await;
    s.send(r#"{"type":"offer","sdp":"v=0"}"#).await;
    s.expect_error("not_joined").await;
    s.0.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        1, 2, 3,
    ]))
    .await
    .unwrap();
    s.expect_error("bad_message").await;
    s.send(r#"{"type":"join","room":"","name":"Eve"}"#).await;
    s.expect_error("invalid_room").await;
    s.send(r#"{"type":"join","room":"lab","name":"   "}"#).await;
    s.expect_error("invalid_name").await;

    // After all that, the same connection joins normally.
    let welcome = s.join("lab", "Eve").await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["participants"][0]["name"], "Bystander");
    let joined = bystander.recv().await.unwrap();
    assert_eq!(joined["type"], "participant-joined");
    assert_eq!(joined["participant"]["name"], "Eve");

    s.send(r#"{"type":"join","room":"lab","name":"Eve"}"#).await;
    s.expect_error("already_joined").await;
    s.send(serde_json::json!({"type": "offer", "sdp": VP8_ONLY_OFFER}).to_string())
        .await;
    s.expect_error("no_h264").await;
    s.send(r#"{"type":"offer","sdp":"v=0\r\nthis is not sdp"}"#)
        .await;
    s.expect_error("bad_sdp").await;
    // A complete offer (ICE, DTLS) whose two sections send tracks without saying their SSRCs:
    // a clear bad_sdp, not internal.
    let msid_without_ssrc: String = facerelay::testkit::BROWSER_OFFER
        .split_inclusive("\r\n")
        .filter(|line| !line.starts_with("a=ssrc:"))
        .collect();
    assert_eq!(msid_without_ssrc.matches("a=msid:").count(), 2);
    s.send(serde_json::json!({"type": "offer", "sdp": msid_without_ssrc}).to_string())
        .await;
    let e = s.expect_error("bad_sdp").await;
    assert!(e["message"].as_str().unwrap().contains("a=ssrc"), "{e}");
    s.send(r#"{"type":"answer","sdp":"v=0"}"#).await;
    s.expect_error("unexpected_answer").await;

    // The room holds two: a third is refused, with the room's size in words.
    let mut third = RawSocket::connect(&server).await;
    third
        .send(r#"{"type":"join","room":"lab","name":"Mallory"}"#)
        .await;
    let full = third.expect_error("room_full").await;
    assert!(full["message"].as_str().unwrap().contains('2'));
    // But another room is fine.
    assert_eq!(third.join("other", "Mallory").await["type"], "welcome");
    // Joins and refusals are counted by place and by the code the client got.
    let metrics = crate::support::http_get(&format!("http://{}/metrics", server.addr)).await;
    for line in [
        "facerelay_joins_total{place=\"room\"} 3\n",
        "facerelay_joins_refused_total{reason=\"room_full\"} 1\n",
        "facerelay_joins_refused_total{reason=\"invalid_name\"} 1\n",
        "facerelay_joins_refused_total{reason=\"invalid_room\"} 1\n",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    // Leaving is announced; the socket can join again.
    s.send(r#"{"type":"leave"}"#).await;
    let left = bystander.recv().await.unwrap();
    assert_eq!(left["type"], "participant-left");
    assert_eq!(s.join("lab", "Eve again").await["type"], "welcome");
    assert_eq!(
        bystander.recv().await.unwrap()["type"],
        "participant-joined"
    );

    // Nothing above disturbed the bystander's session: it still answers.
    bystander.send(r#"{"type":"teleport"}"#).await;
    bystander.expect_error("unknown_type").await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_closes_only_its_own_connection() {
    let _serial = serial().await;
    let server = start(Config::loopback()).await;
    let mut bystander = RawSocket::connect(&server).await;
    assert_eq!(bystander.join("big", "Bystander").await["type"], "welcome");

    let mut s = RawSocket::connect(&server).await;
    assert_eq!(s.join("big", "Sender").await["type"], "welcome");
    assert_eq!(
        bystander.recv().await.unwrap()["type"],
        "participant-joined"
    );
    let huge = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "a".repeat(70 * 1024));
    s.send(huge).await;
    s.expect_error("message_too_large").await;
    assert!(
        s.recv().await.is_none(),
        "the socket is closed after the error"
    );

    // The sender left the room; the bystander is told and keeps working.
    let left = bystander.recv().await.unwrap();
    assert_eq!(left["type"], "participant-left");
    bystander.send("[]").await;
    bystander.expect_error("bad_message").await;
    assert_eq!(server.app.directory.stats().participants, 1);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_says_bye_and_refuses_new_joins() {
    let _serial = serial().await;
    let server = start(Config::loopback()).await;
    let url = format!("http://{}/healthz", server.addr);
    let mut s = RawSocket::connect(&server).await;
    assert_eq!(s.join("bye", "Ann").await["type"], "welcome");
    let health = http_get(&url).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains(r#""participants":1"#), "{health}");

    let app = server.app.clone();
    let shutdown = tokio::spawn(server.shutdown());
    let bye = s.recv().await.expect("a goodbye");
    assert_eq!(bye["type"], "bye", "{bye}");
    assert!(s.recv().await.is_none(), "then the socket closes");
    assert!(
        app.directory
            .join(
                &facerelay::room::RoomId::parse("bye", 64).unwrap(),
                "late",
                tokio::sync::mpsc::channel(1).0
            )
            .is_err(),
        "joins are refused while draining"
    );
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown finishes within the grace period")
        .unwrap()
        .expect("clean shutdown");
    assert_eq!(app.live_sessions(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_advertises_the_public_address_and_uses_the_port_range() {
    let _serial = serial().await;
    let port = {
        // A free UDP port to configure as the whole range.
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut config = Config::loopback();
    config.ice.public_ip = Some("203.0.113.10".parse().unwrap());
    config.ice.udp_port_range = [port, port];
    let secret = "a-turn-secret-of-32-characters!!";
    config.ice.turn_secret = secret.into();
    config.ice.servers = vec![
        facerelay::config::IceServer {
            urls: vec!["stun:stun.example.org:3478".into()],
            username: None,
            credential: None,
        },
        facerelay::config::IceServer {
            urls: vec!["turn:turn.example.org:3478?transport=tcp".into()],
            username: None,
            credential: None,
        },
    ];
    let server = start(config).await;

    // The browser is handed the configured STUN server, and the TURN server with a credential
    // of its own that expires a day (ice.turn_ttl_secs) after the join.
    let mut watcher = RawSocket::connect(&server).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let welcome = watcher.join("nat", "Watcher").await;
    assert_eq!(
        welcome["iceServers"][0]["urls"][0], "stun:stun.example.org:3478",
        "{welcome}"
    );
    assert!(
        welcome["iceServers"][0].get("username").is_none(),
        "{welcome}"
    );
    let turn = &welcome["iceServers"][1];
    let username = turn["username"].as_str().expect("a TURN username");
    let (expiry, who) = username.split_once(':').unwrap();
    assert_eq!(who, welcome["id"], "{welcome}");
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        (now + 86_400..=now + 86_402).contains(&expiry),
        "{expiry} vs {now}"
    );
    assert_eq!(
        turn["credential"],
        facerelay::config::turn_credential(secret, username),
        "{welcome}"
    );

    // The one port is taken by the watcher: the next participant is told the server is full.
    let mut second = RawSocket::connect(&server).await;
    second
        .send(r#"{"type":"join","room":"nat","name":"Second"}"#)
        .await;
    second.expect_error("server_full").await;
    drop(watcher);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Once it is free again, a real client gets candidates on that port with the public IP.
    let mut c = crate::support::join(&server, "nat", "Client", crate::support::NOTHING).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while c.server_candidates().is_empty() && std::time::Instant::now() < deadline {
        let _ = c.recv(Duration::from_millis(100)).await;
    }
    let candidates = c.server_candidates();
    assert!(!candidates.is_empty(), "the server trickles candidates");
    for cand in &candidates {
        let fields: Vec<&str> = cand.candidate.split_whitespace().collect();
        assert_eq!(fields[4], "203.0.113.10", "{}", cand.candidate);
        assert_eq!(fields[5], port.to_string(), "{}", cand.candidate);
    }
    c.close().await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roulette_pairs_in_arrival_order_and_next_moves_on() {
    let _serial = serial().await;
    let server = start(Config::loopback()).await;
    async fn enter(server: &facerelay::app::RunningServer, name: &str) -> RawSocket {
        let mut s = RawSocket::connect(server).await;
        s.send(serde_json::json!({"type": "roulette", "name": name}).to_string())
            .await;
        let welcome = s.recv().await.unwrap();
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        assert!(welcome["room"].is_null(), "{welcome}");
        s
    }
    let mut ann = enter(&server, "Ann").await;
    let waiting = ann.recv().await.unwrap();
    assert_eq!(waiting["type"], "roulette-waiting", "{waiting}");
    assert_eq!(
        (waiting["position"].as_u64(), waiting["online"].as_u64()),
        (Some(1), Some(1))
    );

    let mut bob = enter(&server, "Bob").await;
    let paired = |v: serde_json::Value, partner: &str| {
        assert_eq!(v["type"], "roulette-paired", "{v}");
        assert_eq!(v["partner"]["name"], partner, "{v}");
    };
    paired(ann.recv().await.unwrap(), "Bob");
    paired(bob.recv().await.unwrap(), "Ann");

    let mut cid = enter(&server, "Cid").await;
    assert_eq!(cid.recv().await.unwrap()["type"], "roulette-waiting");

    // Ann moves on: she meets Cid, who was waiting; Bob is told and waits.
    ann.send(r#"{"type":"next"}"#).await;
    paired(ann.recv().await.unwrap(), "Cid");
    paired(cid.recv().await.unwrap(), "Ann");
    let ended = bob.recv().await.unwrap();
    assert_eq!(ended["type"], "roulette-ended", "{ended}");
    assert_eq!(ended["reason"], "next");
    assert_eq!(bob.recv().await.unwrap()["type"], "roulette-waiting");

    // Cid reports Ann: Ann is not told it was a report; Cid meets Bob.
    cid.send(r#"{"type":"report"}"#).await;
    let ended = ann.recv().await.unwrap();
    assert_eq!(
        (ended["type"].as_str(), ended["reason"].as_str()),
        (Some("roulette-ended"), Some("next"))
    );
    paired(cid.recv().await.unwrap(), "Bob");
    paired(bob.recv().await.unwrap(), "Cid");
    let metrics = crate::support::http_get(&format!("http://{}/metrics", server.addr)).await;
    assert!(
        metrics.contains("facerelay_roulette_reports_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("facerelay_roulette_online 3\n"),
        "{metrics}"
    );

    // Bob's tab dies: Cid is told, and waits rather than meet Ann again (Cid reported her).
    drop(bob);
    let ended = cid.recv().await.unwrap();
    assert_eq!(
        (ended["type"].as_str(), ended["reason"].as_str()),
        (Some("roulette-ended"), Some("disconnected"))
    );
    assert_eq!(cid.recv().await.unwrap()["type"], "roulette-waiting");

    // Roulette commands outside the roulette are refused clearly.
    let mut outsider = RawSocket::connect(&server).await;
    outsider.send(r#"{"type":"next"}"#).await;
    outsider.expect_error("not_in_roulette").await;
    assert_eq!(outsider.join("room", "Dee").await["type"], "welcome");
    outsider.send(r#"{"type":"block"}"#).await;
    outsider.expect_error("not_in_roulette").await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tcp_candidates_never_make_the_server_dial_and_candidates_are_capped() {
    use facerelay::rtc::IceCandidate;
    use facerelay::signal::protocol::{ClientMessage, ServerMessage};
    let _serial = serial().await;
    let server = start(Config::loopback()).await;
    let mut a = crate::support::join(&server, "tcp", "A", crate::support::VIDEO).await;
    a.wait_ready(crate::support::TIMEOUT)
        .await
        .expect("A connected");
    // A port on this machine that counts the connections made to it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let acceptor = tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let cand = |i: usize, transport: &str| IceCandidate {
        candidate: format!(
            "candidate:{i} 1 {transport} 1518280447 127.0.0.1 {port} typ host tcptype passive"
        ),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    };
    // TCP candidates (passive and active, upper case too): taken quietly, never dialled.
    for i in 0..40 {
        let transport = if i % 2 == 0 { "tcp" } else { "TCP" };
        a.send_message(ClientMessage::Candidate {
            candidate: Some(cand(i, transport)),
        })
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the server dialled a client's TCP candidate"
    );
    let mut errors = Vec::new();
    while let Some(msg) = a.next_message(Duration::from_millis(300)).await {
        if let ServerMessage::Error { code, .. } = msg {
            errors.push(code);
        }
    }
    assert!(
        errors.is_empty(),
        "TCP candidates are ignored, not errors: {errors:?}"
    );
    // Past 64 candidates on one connection: refused with a clear code.
    for i in 40..80 {
        a.send_message(ClientMessage::Candidate {
            candidate: Some(cand(i, "tcp")),
        })
        .await
        .unwrap();
    }
    let mut refused = 0;
    while let Some(msg) = a.next_message(Duration::from_millis(500)).await {
        if let ServerMessage::Error { code, message } = msg {
            assert_eq!(code, "bad_candidate", "{message}");
            assert!(message.contains("more than 64 candidates"), "{message}");
            refused += 1;
        }
    }
    assert!(refused > 0, "the cap refuses further candidates");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
    acceptor.abort();
    a.close().await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_join_time_out_and_are_capped_per_address() {
    let _serial = serial().await;
    let mut config = Config::loopback();
    config.server.join_timeout_secs = 1;
    config.server.max_sessions_per_ip = 3;
    let server = start(config).await;
    // A socket that never joins: told, then closed, after the timeout.
    let mut idle = RawSocket::connect(&server).await;
    let started = std::time::Instant::now();
    let msg = tokio::time::timeout(Duration::from_secs(5), idle.recv())
        .await
        .expect("the server speaks within 5 s")
        .expect("an error before the close");
    assert_eq!(
        (msg["type"].as_str(), msg["code"].as_str()),
        (Some("error"), Some("join_timeout")),
        "{msg}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(2), idle.recv())
            .await
            .ok()
            .flatten()
            .is_none(),
        "closed"
    );
    // A joined one stays past the timeout.
    let mut joined = RawSocket::connect(&server).await;
    assert_eq!(joined.join("caps", "J").await["type"], "welcome");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ws = server.ws_url();
    // Three connections from this address at once (the joined one and two more), then no more.
    let _a = RawSocket::connect(&server).await;
    let _b = RawSocket::connect(&server).await;
    let refused = tokio_tungstenite::connect_async(ws.as_str()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 429);
            let body =
                String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).to_string();
            assert!(body.contains("too_many_connections"), "{body}");
            let metrics =
                crate::support::http_get(&format!("http://{}/metrics", server.addr)).await;
            assert!(
                metrics
                    .contains("facerelay_joins_refused_total{reason=\"too_many_connections\"} 1\n"),
                "{metrics}"
            );
        }
        other => panic!(
            "a fourth connection from one address: {:?}",
            other.map(|_| ())
        ),
    }
    // The joined session is unaffected.
    joined.send(r#"{"type":"leave"}"#).await;
    server.shutdown().await.unwrap();
}

/// A joined client that floods requests and never reads the replies: the server's writes stall,
/// and after `server.send_timeout_secs` it is disconnected and leaves its room (the others are
/// told), instead of keeping its seat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_its_seat() {
    let _serial = serial().await;
    let mut config = Config::loopback();
    config.server.send_timeout_secs = 2;
    let server = start(config).await;
    let mut watcher = RawSocket::connect(&server).await;
    assert_eq!(watcher.join("stall", "W").await["type"], "welcome");
    // A small receive buffer, so that the server's writes stall after a few kilobytes rather
    // than tens of megabytes (which the kernel may abort under memory pressure).
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let tcp = tcp.connect(server.addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        server.ws_url(),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .unwrap();
    let mut stalled = RawSocket(ws);
    let welcome = stalled.join("stall", "S").await;
    let id = welcome["id"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    let flood = tokio::spawn(async move {
        let mut sent = 0u32;
        // Each request gets an error reply it never reads (tens of MB in all, more than the
        // socket buffers hold).
        while sent < 400_000 {
            let bad =
                tokio_tungstenite::tungstenite::Message::text(r#"{"type":"no-such-message"}"#);
            if stalled.0.send(bad).await.is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    let left = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let msg = watcher.recv().await.expect("the watcher stays connected");
            if msg["type"] == "participant-left" && msg["id"] == id.as_str() {
                break;
            }
        }
    })
    .await;
    assert!(
        left.is_ok(),
        "the stalled client still holds its seat after 30 s"
    );
    println!("the stalled client left after {:?}", started.elapsed());
    // Not before its writes had stalled for the timeout.
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    // Its socket is closed: the flood ends (an error) well before its last request.
    let sent = tokio::time::timeout(Duration::from_secs(10), flood)
        .await
        .expect("the flood ends once the server has closed the socket")
        .unwrap();
    assert!(sent < 400_000, "{sent} requests sent");
    // The server still serves others.
    let mut other = RawSocket::connect(&server).await;
    assert_eq!(other.join("stall", "O").await["type"], "welcome");
    server.shutdown().await.unwrap();
}

/// `log.format = "json"`: every line the server writes to standard error is one JSON object
/// (level, message, fields), joins and leaves included, and no colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_can_log_json_lines() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let _serial = serial().await;
    let root = crate::browser::root();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_facerelay"))
        .arg("serve")
        .env("FACERELAY_LOG__FORMAT", "json")
        .env("FACERELAY_SERVER__LISTEN", "127.0.0.1:0")
        .env_remove("RUST_LOG")
        .current_dir(&root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("facerelay listening on http://") {
                return format!("ws://{}ws", url);
            }
        }
        panic!("the server exited before listening");
    })
    .await
    .expect("the server listens within 60 s");
    let mut a = RawSocket::connect_url(&url).await;
    assert_eq!(a.join("logs", "A").await["type"], "welcome");
    a.0.close(None).await.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the server stops")
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains('\u{1b}'), "no colour codes: {stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .map(|v| {
            assert!(v["level"].is_string() && v["timestamp"].is_string(), "{v}");
            v["fields"]["message"].as_str().unwrap_or_default()
        })
        .collect();
    for wanted in ["face swap on", "joined", "left"] {
        assert!(messages.contains(&wanted), "{wanted:?} in {messages:?}");
    }
}

/// A client that never finishes its request head (or sends nothing at all) is disconnected
/// after `server.header_timeout_secs`; whole requests are still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_never_finishes_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _serial = serial().await;
    let mut config = Config::loopback();
    config.server.header_timeout_secs = 1;
    let server = start(config).await;
    let started = std::time::Instant::now();
    let mut half = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    for (name, socket) in [("half-sent head", &mut half), ("silent", &mut silent)] {
        let mut got = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            let mut buf = [0u8; 512];
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "{name}: still open after 5 s");
        let answer = String::from_utf8_lossy(&got);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{name}: {answer}"
        );
        println!("{name}: closed after {:?} ({answer:?})", started.elapsed());
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let ok = http_get(&format!("http://{}/healthz", server.addr)).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    server.shutdown().await.unwrap();
}

/// Over TLS, a client that never finishes its handshake is cut off like one that never finishes
/// its request head, and a plain-HTTP request to the TLS port gets no page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_never_finishes_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _serial = serial().await;
    let mut config = Config::loopback();
    config.server.header_timeout_secs = 1;
    let server = facerelay::app::RunningServer::start_dev_tls(config, facerelay::app::Swap::none())
        .await
        .unwrap();
    assert!(server.url().starts_with("https://"), "{}", server.url());
    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 64];
        while let Ok(n) = silent.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a silent TLS client is still connected after 5 s"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let mut plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut got)).await;
    assert!(
        !String::from_utf8_lossy(&got).contains("\"status\""),
        "plain HTTP on the TLS port got the page"
    );
    server.shutdown().await.unwrap();
}

/// Opens a signalling socket with `x-forwarded-for: forwarded_for`; the HTTP status it was
/// refused with, if it was.
async fn connect_forwarded(
    url: &str,
    forwarded_for: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    u16,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-for", forwarded_for.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("the socket neither opened nor was refused: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_cap_counts_clients_and_forged_headers_are_ignored() {
    let _serial = serial().await;
    // The test is the proxy: its connections come from 127.0.0.1.
    let mut config = Config::loopback();
    config.server.max_sessions_per_ip = 3;
    config.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let server = start(config.clone()).await;
    let url = server.ws_url();
    // Sixty browsers behind the proxy: sixty sockets, though all come from one address.
    let mut behind = Vec::new();
    for i in 0..60 {
        let client = format!("198.51.100.{}, 127.0.0.1", i + 1);
        behind.push(
            connect_forwarded(&url, &client)
                .await
                .unwrap_or_else(|status| panic!("client {i} refused with {status}")),
        );
    }
    // One browser that opens more than its share is capped on its own.
    let mut same = Vec::new();
    for _ in 0..3 {
        same.push(
            connect_forwarded(&url, "203.0.113.7")
                .await
                .expect("within the cap"),
        );
    }
    assert_eq!(
        connect_forwarded(&url, "203.0.113.7").await.err(),
        Some(429)
    );
    drop((behind, same));
    server.shutdown().await.expect("clean shutdown");

    // The same header from a peer that is not a trusted proxy names nobody: the peer is capped.
    config.server.trusted_proxies = vec!["10.0.0.2".parse().unwrap()];
    let server = start(config).await;
    let url = server.ws_url();
    let mut forged = Vec::new();
    for i in 0..3 {
        let client = format!("198.51.100.{}", i + 1);
        forged.push(
            connect_forwarded(&url, &client)
                .await
                .expect("within the cap"),
        );
    }
    assert_eq!(
        connect_forwarded(&url, "198.51.100.99").await.err(),
        Some(429)
    );
    drop(forged);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_server_answers_probes_with_503_and_refuses_new_sockets() {
    let _serial = serial().await;
    let mut config = Config::loopback();
    // Long enough that the drain cannot end before the checks below; ended by `shutdown`.
    config.server.shutdown_grace_secs = 600;
    let mut server = start(config).await;
    let health = format!("http://{}/healthz", server.addr);
    let mut s = RawSocket::connect(&server).await;
    assert_eq!(s.join("drain", "Ann").await["type"], "welcome");

    server.begin_shutdown();
    assert_eq!(s.recv().await.expect("a goodbye")["type"], "bye");
    assert!(s.recv().await.is_none(), "then the socket closes");
    // A probe on a new connection: answered, 503, draining (not a connection that hangs).
    let probe = tokio::time::timeout(Duration::from_secs(10), http_get(&health))
        .await
        .expect("the probe is answered while the server drains");
    assert!(probe.starts_with("HTTP/1.1 503"), "{probe}");
    assert!(probe.contains(r#""status":"draining""#), "{probe}");
    // A new signalling socket is refused before the upgrade, with the reason.
    match tokio_tungstenite::connect_async(server.ws_url().as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            let body =
                String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).to_string();
            assert!(body.contains("shutting_down"), "{body}");
        }
        other => panic!("a socket opened while draining: {:?}", other.map(|_| ())),
    }
    let addr = server.addr;
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("the drain ends when asked")
        .expect("clean shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "after the drain the port is closed"
    );
}
