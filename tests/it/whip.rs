//! WHIP and WHEP: the protocol (status codes, headers, trickle, teardown) with raw HTTP, and
//! Chromium as a WHIP publisher and WHEP viewer (the watch page).

use std::time::{Duration, Instant};

use facerelay::app::{RunningServer, Swap};
use facerelay::config::Config;
use facerelay::testkit::BROWSER_OFFER;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{serial, RawSocket};

const KEY: &str = "0123456789abcdef-studio";

/// An HTTP/1.1 exchange: status, headers (names lower-cased) and body.
async fn http(
    server: &RunningServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("")[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn server() -> RunningServer {
    let mut config = Config::loopback();
    config.server.web_root = crate::browser::root().join("web");
    config.server.whip_keys.insert("studio".into(), KEY.into());
    RunningServer::start_with_swap(config, Swap::none())
        .await
        .unwrap()
}

const SDP: (&str, &str) = ("Content-Type", "application/sdp");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_whep_answer_as_the_protocols_say_and_free_everything() {
    let _serial = serial().await;
    let server = server().await;
    let auth = format!("Bearer {KEY}");
    let key = ("Authorization", auth.as_str());
    let post = |path: &'static str, headers: Vec<(&'static str, String)>, body: &'static str| {
        let server = &server;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http(server, "POST", path, &h, body).await
        }
    };
    let with = |extra: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        extra.iter().map(|(k, v)| (*k, v.to_string())).collect()
    };

    // Who may publish.
    let (s, _, body) = post("/whip/studio", with(&[SDP]), BROWSER_OFFER).await;
    assert_eq!(s, 401, "{body}");
    let (s, _, _) = post(
        "/whip/studio",
        with(&[SDP, ("Authorization", "Bearer wrong-key-wrong-key")]),
        BROWSER_OFFER,
    )
    .await;
    assert_eq!(s, 401);
    let (s, _, body) = post("/whip/elsewhere", with(&[SDP, key]), BROWSER_OFFER).await;
    assert_eq!(s, 401, "a room without a key: {body}");
    // What may be published.
    let (s, _, body) = post(
        "/whip/studio",
        with(&[("Content-Type", "text/plain"), key]),
        BROWSER_OFFER,
    )
    .await;
    assert_eq!(s, 415, "{body}");
    let vp8 = Box::leak(
        BROWSER_OFFER
            .replace("H264/90000", "VP8/90000")
            .into_boxed_str(),
    );
    let (s, _, body) = post("/whip/studio", with(&[SDP, key]), vp8).await;
    assert_eq!(s, 422, "{body}");
    assert!(body.contains("no_h264"), "{body}");

    let baseline = facerelay::rtc::live_connections();
    // A publisher: 201, its resource, ETag, the answer with the server's candidates, and the
    // face-API token; it sits in the room like any participant.
    let (s, headers, answer) =
        post("/whip/studio?name=Studio", with(&[SDP, key]), BROWSER_OFFER).await;
    assert_eq!(s, 201, "{answer}");
    let location = header(&headers, "location").unwrap().to_owned();
    assert!(location.starts_with("/whip/studio/"), "{location}");
    let etag = header(&headers, "etag").unwrap().to_owned();
    assert_eq!(header(&headers, "content-type"), Some("application/sdp"));
    assert!(header(&headers, "facerelay-token").is_some_and(|t| t.len() == 32));
    assert!(
        answer.starts_with("v=0") && answer.contains("a=candidate:"),
        "{answer}"
    );
    assert!(answer.contains("a=end-of-candidates"), "{answer}");
    assert_eq!(server.app.whip_sessions(), 1);
    let mut ann = RawSocket::connect(&server).await;
    let welcome = ann.join("studio", "Ann").await;
    let names: Vec<&str> = welcome["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Studio"]);

    // Trickle: the right content type, If-Match with the ETag.
    let frag = "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2113937151 127.0.0.1 50000 typ host\r\n";
    let patch = |headers: Vec<(&'static str, String)>, path: String| {
        let server = &server;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http(server, "PATCH", &path, &h, frag).await.0
        }
    };
    let sdpfrag = ("Content-Type", "application/trickle-ice-sdpfrag");
    assert_eq!(patch(with(&[sdpfrag]), location.clone()).await, 428);
    assert_eq!(
        patch(
            with(&[sdpfrag, ("If-Match", "\"other\"")]),
            location.clone()
        )
        .await,
        412
    );
    assert_eq!(
        patch(with(&[SDP, ("If-Match", &etag)]), location.clone()).await,
        415
    );
    assert_eq!(
        patch(with(&[sdpfrag, ("If-Match", &etag)]), location.clone()).await,
        204
    );
    assert_eq!(
        patch(
            with(&[sdpfrag, ("If-Match", &etag)]),
            "/whip/studio/nope".into()
        )
        .await,
        404
    );

    // WHEP of someone who does not publish video: 404.
    let (s, _, _) = post("/whep/studio/Nobody", with(&[SDP]), BROWSER_OFFER).await;
    assert_eq!(s, 404);
    let (s, _, _) = post("/whep/studio/Studio", with(&[SDP]), BROWSER_OFFER).await;
    assert_eq!(s, 404, "Studio's offer never connected: no video yet");

    // DELETE: unknown 404; the session's end frees its seat and connection.
    assert_eq!(
        http(&server, "DELETE", "/whip/studio/nope", &[], "")
            .await
            .0,
        404
    );
    assert_eq!(http(&server, "DELETE", &location, &[], "").await.0, 200);
    assert_eq!(http(&server, "DELETE", &location, &[], "").await.0, 404);
    assert_eq!(
        ann.recv().await.unwrap()["type"],
        "participant-left",
        "the room hears the publisher leave"
    );

    // Churn: sessions opened and deleted leave nothing behind.
    for _ in 0..20 {
        let (s, headers, _) = post("/whip/studio", with(&[SDP, key]), BROWSER_OFFER).await;
        assert_eq!(s, 201);
        let location = header(&headers, "location").unwrap().to_owned();
        assert_eq!(http(&server, "DELETE", &location, &[], "").await.0, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = (
            server.app.whip_sessions(),
            server.app.directory.stats().participants,
            facerelay::rtc::live_connections().saturating_sub(baseline),
        );
        // Ann stays: her seat and her connection.
        if left == (0, 1, 1) {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(ann);
    server.shutdown().await.unwrap();
}

/// With join tokens, WHIP takes a token of the room with the publish right instead of a key,
/// and the participant is called what the token says.
/// A full server answers a WHIP publisher 503 `server_full` and takes it once a seat is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_refuses_whip_with_503_until_a_session_ends() {
    let _serial = serial().await;
    let mut config = Config::loopback();
    config.server.whip_keys.insert("studio".into(), KEY.into());
    config.server.max_sessions = 1;
    let server = RunningServer::start_with_swap(config, Swap::none())
        .await
        .unwrap();
    let auth = format!("Bearer {KEY}");
    let headers = [SDP, ("Authorization", auth.as_str())];
    let publish = || http(&server, "POST", "/whip/studio", &headers, BROWSER_OFFER);
    let mut ann = RawSocket::connect(&server).await;
    ann.join("studio", "Ann").await;
    let (s, _, body) = publish().await;
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("server_full"), "{body}");
    drop(ann);
    let deadline = Instant::now() + Duration::from_secs(5);
    let (s, headers, body) = loop {
        let answer = publish().await;
        if answer.0 != 503 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s, 201, "{body}");
    let location = header(&headers, "location").unwrap().to_owned();
    assert_eq!(http(&server, "DELETE", &location, &[], "").await.0, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_with_join_tokens_wants_a_token_that_may_publish() {
    use facerelay::config::IceServer;
    use facerelay::signal::token::{self, Rights};
    let _serial = serial().await;
    const SECRET: &str = "a-join-token-secret-of-32-chars!";
    const TURN_SECRET: &str = "shared-with-coturn";
    let mut config = Config::loopback();
    config.server.token_secret = SECRET.into();
    // The STUN/TURN servers a browser gets in its welcome reach a WHIP client as Link headers.
    config.ice.servers = vec![
        IceServer {
            urls: vec!["stun:stun.example.net:3478".into()],
            username: None,
            credential: None,
        },
        IceServer {
            urls: vec!["turn:turn.example.net:3478?transport=udp".into()],
            username: None,
            credential: None,
        },
    ];
    config.ice.turn_secret = TURN_SECRET.into();
    config.ice.turn_ttl_secs = 600;
    let server = RunningServer::start_with_swap(config, Swap::none())
        .await
        .unwrap();
    let issue = |room: &str, publish: bool| {
        let rights = Rights {
            publish,
            face: true,
        };
        let t = token::issue(
            SECRET,
            Some(room),
            "OBS studio",
            rights,
            Duration::from_secs(60),
        );
        format!("Bearer {}", t.unwrap())
    };
    let post = |auth: Option<String>| {
        let server = &server;
        async move {
            let mut headers = vec![SDP];
            if let Some(auth) = &auth {
                headers.push(("Authorization", auth.as_str()));
            }
            http(server, "POST", "/whip/live", &headers, BROWSER_OFFER).await
        }
    };
    let code =
        |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap()["code"].clone();
    let (s, _, body) = post(None).await;
    assert_eq!((s, code(&body)), (401, "unauthorised".into()));
    let (s, _, body) = post(Some("Bearer not.a.token".into())).await;
    assert_eq!((s, code(&body)), (401, "bad_token".into()));
    let (s, _, body) = post(Some(issue("other", true))).await;
    assert_eq!((s, code(&body)), (401, "token_wrong_room".into()));
    let (s, _, body) = post(Some(issue("live", false))).await;
    assert_eq!((s, code(&body)), (403, "not_allowed".into()));
    let (s, headers, _) = post(Some(issue("live", true))).await;
    assert_eq!(s, 201);
    let links: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k == "link")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(links.len(), 2, "{headers:?}");
    assert_eq!(
        links[0],
        r#"<stun:stun.example.net:3478>; rel="ice-server""#
    );
    let turn = links[1];
    let field = |name: &str| {
        let start = turn.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        turn[start..start + turn[start..].find('"').unwrap()].to_owned()
    };
    let (user, credential) = (field("username"), field("credential"));
    assert!(turn.starts_with("<turn:turn.example.net:3478?transport=udp>; rel=\"ice-server\""));
    assert!(turn.ends_with(r#"credential-type="password""#), "{turn}");
    let expiry: u64 = user.split(':').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now + 590..=now + 610).contains(&expiry), "{user}");
    assert_eq!(
        credential,
        facerelay::config::turn_credential(TURN_SECRET, &user)
    );
    let mut ann = RawSocket::connect(&server).await;
    ann.send(serde_json::json!({"type": "join", "room": "live", "name": "x", "token": issue("live", false).trim_start_matches("Bearer ")}).to_string()).await;
    let welcome = ann.recv().await.unwrap();
    assert_eq!(
        welcome["participants"][0]["name"], "OBS studio",
        "{welcome}"
    );
    let location = header(&headers, "location").unwrap().to_owned();
    assert_eq!(http(&server, "DELETE", &location, &[], "").await.0, 200);
    server.shutdown().await.unwrap();
}

/// Chromium, whose camera films a real face, publishes with WHIP wearing a gallery face into a
/// room where a page sees it swapped; the watch page (WHEP) shows the swapped stream
/// full-window, and plays it again after the publisher ends and starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chromium_publishes_with_whip_and_the_watch_page_plays_it_swapped() {
    let _serial = serial().await;
    let root = crate::browser::root();
    let artifacts = root.join("test-artifacts");
    let gallery = artifacts.join("whip-gallery");
    std::fs::create_dir_all(&gallery).unwrap();
    std::fs::copy(
        root.join("models/packaged/photos/gauss.png"),
        gallery.join("gauss.png"),
    )
    .unwrap();
    let camera = artifacts.join("whip-camera.y4m");
    crate::real_faces::write_y4m(&camera, &crate::real_faces::newton_panned());
    let mut config = Config::defaults();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.web_root = root.join("web");
    config.server.whip_keys.insert("*".into(), KEY.into());
    config.swap.gallery = gallery.to_string_lossy().into_owned();
    let swap = Swap::from_config(&config).unwrap();
    assert_eq!(swap.swapper, "mesh", "the packaged models are installed");
    let server = RunningServer::start_with_swap(config, swap).await.unwrap();
    let dir = crate::browser::run_script_at(
        "whip_whep.mjs",
        &server.url(),
        &[],
        &[
            ("KEY", std::ffi::OsStr::new(KEY)),
            ("FAKE_VIDEO", camera.as_os_str()),
            ("FACE", std::ffi::OsStr::new("gauss")),
        ],
    )
    .await;
    assert!(dir.join("watch.png").exists());
    server.shutdown().await.unwrap();
}

/// A PPM (P6) image as the interop script writes it.
fn read_ppm(path: &std::path::Path) -> image::RgbImage {
    let data = std::fs::read(path).unwrap();
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while data[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !data[at].is_ascii_whitespace() {
            at += 1;
        }
        fields.push(String::from_utf8_lossy(&data[start..at]).into_owned());
    }
    assert_eq!(fields[0], "P6");
    let (w, h): (u32, u32) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    image::RgbImage::from_raw(w, h, data[at + 1..].to_vec()).expect("a whole image")
}

/// aiortc (PyPI) publishes two streams over WHIP: numbered frames, which a webrtc-crate
/// subscriber in the room receives intact (the relay test's bar), and a real face wearing a
/// gallery face; then it watches that swapped participant over WHEP: what it decodes shows the
/// chosen face, never the camera's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aiortc_publishes_with_whip_and_watches_a_swapped_participant_with_whep() {
    use facerelay::media::synthetic::numbered_frame;
    use facerelay::rtc::RtcSettings;
    use facerelay::testkit::Client;

    let _serial = serial().await;
    let root = crate::browser::root();
    let python = root.join(".deps/venv-models/bin/python");
    let has_aiortc = std::process::Command::new(&python)
        .args(["-c", "import aiortc"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_aiortc,
        "aiortc is missing from {}: run scripts/venv-models.sh tests/interop/requirements.txt",
        python.display()
    );
    let artifacts = root.join("test-artifacts/interop");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();
    let gallery = artifacts.join("gallery");
    std::fs::create_dir_all(&gallery).unwrap();
    std::fs::copy(
        root.join("models/packaged/photos/gauss.png"),
        gallery.join("gauss.png"),
    )
    .unwrap();
    let numbers: Vec<_> = (0..150).map(|n| numbered_frame(640, 480, n)).collect();
    crate::real_faces::write_y4m(&artifacts.join("numbers.y4m"), &numbers);
    let faces = crate::real_faces::newton_panned();
    crate::real_faces::write_y4m(&artifacts.join("newton.y4m"), &faces);

    let mut config = Config::defaults();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.web_root = root.join("web");
    config.ice.bind_ip = "127.0.0.1".parse().unwrap();
    config.ice.include_loopback = true;
    config.server.whip_keys.insert("*".into(), KEY.into());
    config.swap.gallery = gallery.to_string_lossy().into_owned();
    let reference = crate::real_faces::newton_as_gauss(&config, &faces);
    let server =
        RunningServer::start_with_swap(config.clone(), Swap::from_config(&config).unwrap())
            .await
            .unwrap();
    let settings = RtcSettings::from_config(&config);
    let mut b = Client::join(
        &server.ws_url(),
        "interop",
        "B",
        crate::support::NOTHING,
        &settings,
        crate::support::encoder(),
    )
    .await
    .expect("B joins");

    const SECONDS: u64 = 14;
    let script = tokio::process::Command::new(&python)
        .arg(root.join("tests/interop/aiortc_whip_whep.py"))
        .args([
            server.url().as_str(),
            "interop",
            KEY,
            artifacts.join("numbers.y4m").to_str().unwrap(),
            artifacts.join("newton.y4m").to_str().unwrap(),
            "gauss",
            artifacts.to_str().unwrap(),
            &SECONDS.to_string(),
        ])
        .kill_on_drop(true)
        .output();
    let script = tokio::spawn(script);
    // B takes what comes for as long as aiortc publishes.
    let mut seen = crate::relay::Seen::new();
    let until = Instant::now() + Duration::from_secs(SECONDS + 5);
    while Instant::now() < until {
        if let Some(got) = b.recv(Duration::from_millis(200)).await {
            crate::relay::note(&mut seen, "B", got);
        }
    }
    let out = tokio::time::timeout(Duration::from_secs(60), script)
        .await
        .expect("the script ends")
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the aiortc script failed: {stdout}");
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    println!("aiortc: {report}");

    // WHIP: aiortc's numbered frames reached the webrtc-crate subscriber intact (the file loops,
    // so every number comes round at least twice).
    crate::relay::check_delivery(&seen, "B", &(0..150).collect::<Vec<_>>(), 0.9);
    // WHEP: aiortc decoded Newton's swapped stream.
    assert_eq!(report["whep"]["size"], serde_json::json!([640, 480]));
    // A stream, not a picture: a second of video at least (how much more aiortc decodes in
    // the time depends on this machine's speed, which no test asserts).
    assert!(report["whep"]["frames"].as_u64().unwrap() >= 30, "{report}");
    assert_eq!(report["deleted"], serde_json::json!([200, 200, 200]));
    let saved = report["whep"]["saved"].as_u64().unwrap();
    let mut worst_camera: f64 = 0.0;
    let mut faces_seen = 0;
    for k in 0..saved {
        let got = read_ppm(&artifacts.join(format!("whep-{k}.ppm")));
        let (like_camera, like_face) = crate::real_faces::likeness(&reference, &got);
        worst_camera = worst_camera.max(like_camera);
        faces_seen += (like_face > like_camera + 0.2) as usize;
    }
    println!(
        "WHEP: {saved} frames checked, at most {worst_camera:.2} like the camera's own face, {faces_seen} clearly the chosen face"
    );
    assert!(saved >= 5, "{report}");
    assert!(
        worst_camera < 0.8,
        "the viewer saw the own face: {worst_camera:.2}"
    );
    assert!(faces_seen * 2 >= saved as usize, "{faces_seen} of {saved}");
    // Every WHIP and WHEP session ended with its DELETE.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.app.whip_sessions() > 0 {
        assert!(
            Instant::now() < deadline,
            "sessions left: {}",
            server.app.whip_sessions()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.close().await;
    server.shutdown().await.unwrap();
}
