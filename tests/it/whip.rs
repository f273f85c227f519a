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
