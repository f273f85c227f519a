//! Join tokens (`server.token_secret`): who may join which room, under which name, with which
//! rights; every refusal has its own code.

use std::time::Duration;

use facerelay::config::Config;
use facerelay::signal::token::{self, JoinClaims, Rights};

use crate::support::{encoder, http_get, serial, start, RawSocket, NOTHING, TIMEOUT, VIDEO};

const SECRET: &str = "the operator's secret, 32 characters or more";

fn token_for(room: Option<&str>, name: &str, rights: Rights) -> String {
    token::issue(SECRET, room, name, rights, Duration::from_secs(600)).unwrap()
}

fn expired(room: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &JoinClaims {
            room: Some(room.into()),
            name: "Late".into(),
            publish: true,
            face: true,
            exp: now - 120,
            iat: now - 3720,
        },
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn join_with(s: &mut RawSocket, room: &str, token: Option<&str>) {
    let mut msg = serde_json::json!({"type": "join", "room": room, "name": "Whoever"});
    if let Some(t) = token {
        msg["token"] = t.into();
    }
    s.send(msg.to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_admit_by_room_name_and_rights() {
    let _serial = serial().await;
    let mut config = Config::loopback();
    config.server.token_secret = SECRET.into();
    let server = start(config.clone()).await;

    // Refusals, each with its code; the socket stays usable.
    let mut s = RawSocket::connect(&server).await;
    join_with(&mut s, "lab", None).await;
    s.expect_error("token_required").await;
    join_with(&mut s, "lab", Some("not-a-token")).await;
    s.expect_error("bad_token").await;
    let forged = token::issue(
        "somebody else's secret, also long enough",
        Some("lab"),
        "Eve",
        Rights::ALL,
        Duration::from_secs(600),
    )
    .unwrap();
    join_with(&mut s, "lab", Some(&forged)).await;
    s.expect_error("bad_token").await;
    join_with(&mut s, "lab", Some(&expired("lab"))).await;
    s.expect_error("token_expired").await;
    join_with(
        &mut s,
        "other",
        Some(&token_for(Some("lab"), "Ann", Rights::ALL)),
    )
    .await;
    s.expect_error("token_wrong_room").await;
    let roulette_token = token_for(None, "Ann", Rights::ALL);
    join_with(&mut s, "lab", Some(&roulette_token)).await;
    s.expect_error("token_wrong_room").await;

    // A valid token joins under the name it carries, whatever the page sent.
    join_with(
        &mut s,
        "lab",
        Some(&token_for(Some("lab"), "Ann", Rights::ALL)),
    )
    .await;
    let welcome = s.recv().await.unwrap();
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    // The roulette takes its own tokens.
    let mut r = RawSocket::connect(&server).await;
    r.send(
        serde_json::json!({"type": "roulette", "name": "X", "token": roulette_token}).to_string(),
    )
    .await;
    assert_eq!(r.recv().await.unwrap()["type"], "welcome");
    // A preview takes any valid token (the page previews before the room it was invited to),
    // and no other.
    let mut p = RawSocket::connect(&server).await;
    for (token, code) in [
        (None, "token_required"),
        (Some(forged.clone()), "bad_token"),
        (Some(expired("lab")), "token_expired"),
    ] {
        let mut msg = serde_json::json!({"type": "preview"});
        if let Some(t) = token {
            msg["token"] = t.into();
        }
        p.send(msg.to_string()).await;
        p.expect_error(code).await;
    }
    p.send(serde_json::json!({"type": "preview", "token": roulette_token}).to_string())
        .await;
    let welcome = p.recv().await.unwrap();
    assert_eq!(
        (welcome["type"].as_str(), welcome["room"].as_str()),
        (Some("welcome"), None),
        "{welcome}"
    );

    // Without the face right, choosing a face is refused (before any model is asked).
    let no_face = Rights {
        publish: true,
        face: false,
    };
    let mut f = RawSocket::connect(&server).await;
    join_with(&mut f, "lab", Some(&token_for(Some("lab"), "Fay", no_face))).await;
    let welcome = f.recv().await.unwrap();
    let session = welcome["token"].as_str().unwrap().to_owned();
    let joined = s.recv().await.unwrap();
    assert_eq!(
        (
            joined["type"].as_str(),
            joined["participant"]["name"].as_str()
        ),
        (Some("participant-joined"), Some("Fay"))
    );
    let (status, body) =
        crate::faces::post(&server, "/api/face/gallery/ada", &session, Vec::new()).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("not_allowed")));

    // Without the publish right, a client's camera is not relayed, and it is told once.
    let settings = facerelay::rtc::RtcSettings::from_config(&Config::loopback());
    let viewer_token = token_for(Some("show"), "Viewer", Rights::ALL);
    let mut viewer = facerelay::testkit::Client::join_with_token(
        &server.ws_url(),
        "show",
        "ignored",
        Some(&viewer_token),
        NOTHING,
        &settings,
        encoder(),
    )
    .await
    .expect("viewer joins");
    let watch_only = Rights {
        publish: false,
        face: true,
    };
    let mut sender = facerelay::testkit::Client::join_with_token(
        &server.ws_url(),
        "show",
        "ignored",
        Some(&token_for(Some("show"), "Quiet", watch_only)),
        VIDEO,
        &settings,
        encoder(),
    )
    .await
    .expect("a watch-only participant joins");
    sender.wait_ready(TIMEOUT).await.expect("connected");
    let frame = facerelay::media::I420Frame::filled(320, 240, 120, 128, 128).unwrap();
    let mut told = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    let mut k = 0;
    while std::time::Instant::now() < deadline {
        sender.send_video(&frame, k * 3000).await.unwrap();
        k += 1;
        if let Some(facerelay::signal::protocol::ServerMessage::Error { code, .. }) =
            sender.next_message(Duration::from_millis(30)).await
        {
            assert_eq!(code, "not_allowed");
            assert!(!told, "told once");
            told = true;
        }
    }
    assert!(
        told,
        "the watch-only participant is told its camera is not relayed"
    );
    assert!(
        viewer.recv(Duration::from_millis(500)).await.is_none(),
        "nothing of the watch-only participant reaches the others"
    );
    let metrics = http_get(&format!("http://{}/metrics", server.addr)).await;
    assert!(
        metrics.contains("facerelay_published_streams{kind=\"video\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("facerelay_joins_refused_total{reason=\"token_wrong_room\"} 2\n"),
        "{metrics}"
    );
    sender.close().await;
    viewer.close().await;
    server.shutdown().await.unwrap();

    // `facerelay token` makes what the server takes, and says when there is no secret.
    let args = facerelay::cli::token::TokenArgs {
        room: Some("lab".into()),
        roulette: false,
        name: "Cli".into(),
        ttl: "2h".into(),
        no_publish: true,
        no_face: false,
        url: String::new(),
        config: None,
    };
    let made = facerelay::cli::token::make(&args, &config).unwrap();
    let claims = token::verify(SECRET, &made, Some("lab")).unwrap();
    assert_eq!(
        (claims.name.as_str(), claims.publish, claims.face),
        ("Cli", false, true)
    );
    assert_eq!(claims.exp - claims.iat, 7200);
    let err = facerelay::cli::token::make(&args, &Config::loopback()).unwrap_err();
    assert!(err.to_string().contains("token_secret"), "{err}");
    // A secret too short to sign with is a configuration error.
    let short = Config::load_with_env(
        None,
        [(
            "FACERELAY_SERVER__TOKEN_SECRET".to_owned(),
            "short".to_owned(),
        )],
    )
    .unwrap_err();
    assert!(short.to_string().contains("token_secret"), "{short}");
}
