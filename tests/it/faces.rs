//! The face API: a participant picks a face by uploading a photo; bad uploads get clear errors,
//! keep the previous choice, and the server keeps working. The others are told who is swapped.

use std::io::Cursor;
use std::sync::Arc;

use facerelay::app::{RunningServer, Swap};
use facerelay::config::Config;
use facerelay::infer::scheduler::Admission;
use facerelay::swap::live::LiveFaces;
use facerelay::swap::picker::FacePicker;
use facerelay::swap::{fixtures_dir, Engine};
use image::{ImageFormat, RgbImage};

use crate::support::{request, serial, RawSocket};

struct Server {
    server: RunningServer,
    faces: Arc<LiveFaces>,
}

async fn start_with_picker() -> Server {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut config = Config::loopback();
    config.models = config.models.with_fixtures();
    let engine = Engine::load(&config.models, &config.swap).expect("fixture models load");
    let faces = Arc::new(LiveFaces::new(Admission::new(4)));
    let swap = Swap {
        picker: Some(FacePicker::new(engine, None)),
        faces: faces.clone(),
        ..Swap::none()
    };
    let server = RunningServer::start_with_swap(config, swap).await.unwrap();
    Server { server, faces }
}

/// POSTs `body` to `path` with the token; returns (status, JSON body).
pub(crate) async fn post(
    server: &RunningServer,
    path: &str,
    token: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    request(server, "POST", path, token, body).await
}

fn png(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .unwrap();
    out
}

fn source_photo() -> Vec<u8> {
    std::fs::read(fixtures_dir().join("testcard_source.jpg")).unwrap()
}

/// Three copies of the one-face source photo side by side.
fn three_faces() -> Vec<u8> {
    let one = image::load_from_memory(&source_photo()).unwrap().to_rgb8();
    let mut three = RgbImage::new(one.width() * 3, one.height());
    for i in 0..3 {
        image::imageops::replace(&mut three, &one, (i * one.width()) as i64, 0);
    }
    png(&three)
}

/// A PNG claiming 20000 x 20000 pixels (a decompression bomb): a valid header, a few bytes of
/// image data, and the end chunk.
fn pixel_bomb() -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&20_000u32.to_be_bytes());
    ihdr.extend_from_slice(&20_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut crc_input = b"IHDR".to_vec();
    crc_input.extend_from_slice(&ihdr);
    let crc = crc32(&crc_input);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&crc_input);
    out.extend_from_slice(&crc.to_be_bytes());
    for (kind, data) in [
        (
            &b"IDAT"[..],
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01][..],
        ),
        (b"IEND", &[]),
    ] {
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_pick_a_face_and_bad_ones_get_clear_errors() {
    let _serial = serial().await;
    let Server { server, faces } = start_with_picker().await;
    let mut watcher = RawSocket::connect(&server).await;
    assert_eq!(watcher.join("faces", "Watcher").await["type"], "welcome");
    let mut me = RawSocket::connect(&server).await;
    let welcome = me.join("faces", "Me").await;
    let token = welcome["token"].as_str().expect("a token").to_owned();
    let id = welcome["id"].as_str().unwrap().to_owned();
    assert_eq!(watcher.recv().await.unwrap()["type"], "participant-joined");

    // Without a (valid) token nothing happens.
    let (status, body) = post(&server, "/api/face?consent=true", "nope", source_photo()).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("not_joined")));

    // A good photo: the face is found, a preview comes back, the others are told.
    let (status, body) = post(&server, "/api/face?consent=true", &token, source_photo()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["preview"]
        .as_str()
        .unwrap()
        .starts_with("data:image/png;base64,"));
    let chosen = faces
        .get(&id)
        .expect("the face is registered for the stage");
    // Told at once that a face is chosen: held back (blurred) until the live swap reports its
    // first swapped frames (this server has no stage, so it stays so).
    let updated = watcher.recv().await.unwrap();
    assert_eq!(updated["type"], "participant-updated", "{updated}");
    assert_eq!(updated["participant"]["face"], "blurred");
    assert_eq!(updated["participant"]["swapped"], false);

    // Every bad upload: a clear error, and the face chosen before stays.
    let mut truncated = source_photo();
    truncated.truncate(truncated.len() / 3);
    // Cut off, and the end-of-image marker put back: decodable, but still refused.
    let mut resealed = source_photo();
    resealed.truncate(resealed.len() * 2 / 3);
    resealed.extend_from_slice(&[0xFF, 0xD9]);
    let blank = png(&RgbImage::from_pixel(320, 240, image::Rgb([90, 90, 90])));
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "a text file",
            b"hello, I am not an image".to_vec(),
            415,
            "not_an_image",
        ),
        ("a truncated JPEG", truncated, 415, "not_an_image"),
        (
            "a truncated JPEG with its end marker",
            resealed,
            415,
            "not_an_image",
        ),
        (
            "a 20000x20000 PNG header",
            pixel_bomb(),
            413,
            "image_too_large",
        ),
        ("an image without a face", blank, 422, "no_face"),
        (
            "an image with three faces",
            three_faces(),
            422,
            "several_faces",
        ),
        ("an empty body", Vec::new(), 415, "not_an_image"),
    ];
    for (what, bytes, want_status, want_code) in cases {
        let (status, body) = post(&server, "/api/face?consent=true", &token, bytes).await;
        println!("{what}: {status} {body}");
        assert_eq!(
            (status, body["code"].as_str()),
            (want_status, Some(want_code)),
            "{what}: {body}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| m.len() > 10),
            "{what}: {body}"
        );
        assert!(
            faces.get(&id).is_some_and(|f| Arc::ptr_eq(&f, &chosen)),
            "{what}: the previous face stays"
        );
    }
    // The 20000x20000 case is refused for its size, not by running out of memory.
    let (_, body) = post(&server, "/api/face?consent=true", &token, pixel_bomb()).await;
    assert!(
        body["message"].as_str().unwrap().contains("20000x20000"),
        "{body}"
    );

    // No swap.
    let (status, body) = request(&server, "DELETE", "/api/face", &token, Vec::new()).await;
    assert_eq!((status, body["swapped"].as_bool()), (200, Some(false)));
    assert!(faces.get(&id).is_none());
    let updated = watcher.recv().await.unwrap();
    assert_eq!(updated["participant"]["face"], "none", "{updated}");
    assert_eq!(updated["participant"]["swapped"], false);

    // The server is fine, and leaving forgets the face and the token.
    let (status, _) = post(&server, "/api/face?consent=true", &token, source_photo()).await;
    assert_eq!(status, 200);
    // The others hear of the face after the answer; a leave before that would rightly end
    // with participant-left alone.
    assert_eq!(watcher.recv().await.unwrap()["type"], "participant-updated");
    me.send(r#"{"type":"leave"}"#).await;
    assert_eq!(watcher.recv().await.unwrap()["type"], "participant-left");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        faces.get(&id).is_none(),
        "a face lives for the session only"
    );
    let (status, _) = post(&server, "/api/face?consent=true", &token, source_photo()).await;
    assert_eq!(status, 401);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_models_face_choices_are_refused_clearly() {
    let _serial = serial().await;
    let server = crate::support::start(Config::loopback()).await;
    let mut me = RawSocket::connect(&server).await;
    let welcome = me.join("plain", "Me").await;
    let token = welcome["token"].as_str().unwrap().to_owned();
    let (status, body) = post(&server, "/api/face?consent=true", &token, source_photo()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("swap_unavailable")),
        "{body}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gallery_faces_are_listed_served_and_picked() {
    let _serial = serial().await;
    let gallery = std::env::temp_dir().join(format!("facerelay-gallery-{}", std::process::id()));
    std::fs::create_dir_all(&gallery).unwrap();
    std::fs::write(gallery.join("ada.jpg"), source_photo()).unwrap();
    std::fs::write(gallery.join("notes.txt"), "not a face").unwrap();
    // Images the start-up check leaves out: three faces, none, not an image at all.
    std::fs::write(gallery.join("crowd.png"), three_faces()).unwrap();
    RgbImage::from_pixel(320, 240, image::Rgb([128, 128, 128]))
        .save(gallery.join("blank.png"))
        .unwrap();
    std::fs::write(gallery.join("broken.jpg"), b"\xff\xd8 not really a JPEG").unwrap();
    let mut config = Config::loopback();
    config.models = config.models.with_fixtures();
    config.swap.gallery = gallery.display().to_string();
    let swap = Swap::from_config(&config).expect("the live swap starts");
    let server = RunningServer::start_with_swap(config, swap).await.unwrap();
    let listing = crate::support::http_get(&format!("http://{}/api/gallery", server.addr)).await;
    assert!(listing.contains(r#""faces":["ada"]"#), "{listing}");
    assert!(listing.contains(r#""available":true"#), "{listing}");
    let (status, _) = request(&server, "GET", "/api/gallery/ada", "", Vec::new()).await;
    assert_eq!(status, 200);

    let mut me = RawSocket::connect(&server).await;
    let token = me.join("g", "Me").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = post(&server, "/api/face/gallery/ada", &token, Vec::new()).await;
    assert_eq!(status, 200, "{body}");
    // The face holds one of the server's swap places, and /metrics says so.
    let metrics = crate::support::http_get(&format!("http://{}/metrics", server.addr)).await;
    assert!(
        metrics.contains("\nfacerelay_swap_slots_in_use 1\n"),
        "{metrics}"
    );
    let capacity = format!(
        "\nfacerelay_swap_slots_capacity {}\n",
        server.app.config.swap.capacity
    );
    assert!(metrics.contains(&capacity), "{metrics}");
    assert!(
        metrics
            .contains("facerelay_infer_requests_total{model=\"detector\",outcome=\"completed\"}"),
        "{metrics}"
    );
    for left_out in ["notes", "crowd", "blank", "broken"] {
        let (status, body) = post(
            &server,
            &format!("/api/face/gallery/{left_out}"),
            &token,
            Vec::new(),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("not_in_gallery")),
            "{left_out}"
        );
    }
    let (status, _) = post(
        &server,
        "/api/face/gallery/..%2Fetc%2Fpasswd",
        &token,
        Vec::new(),
    )
    .await;
    assert_eq!(status, 404);
    server.shutdown().await.unwrap();
    std::fs::remove_dir_all(&gallery).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_need_consent_and_a_gallery_only_server_takes_none() {
    let _serial = serial().await;
    let Server { server, .. } = start_with_picker().await;
    let mut me = RawSocket::connect(&server).await;
    let token = me.join("consent", "Me").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in ["/api/face", "/api/face?consent=false", "/api/face?consent="] {
        let (status, body) = post(&server, path, &token, source_photo()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("consent_required")),
            "{path}"
        );
        assert!(
            body["message"].as_str().unwrap().contains("right to use"),
            "{body}"
        );
    }
    let (status, body) = post(&server, "/api/face?consent=true", &token, source_photo()).await;
    assert_eq!(status, 200, "{body}");
    server.shutdown().await.unwrap();

    // swap.sources = "gallery": no uploads, even with consent; the gallery still works.
    let gallery =
        std::env::temp_dir().join(format!("facerelay-gallery-only-{}", std::process::id()));
    std::fs::create_dir_all(&gallery).unwrap();
    std::fs::write(gallery.join("ada.jpg"), source_photo()).unwrap();
    let mut config = Config::loopback();
    config.models = config.models.with_fixtures();
    config.swap.gallery = gallery.display().to_string();
    config.swap.sources = facerelay::swap::FaceSources::Gallery;
    let swap = Swap::from_config(&config).expect("the live swap starts");
    let server = RunningServer::start_with_swap(config, swap).await.unwrap();
    let listing = crate::support::http_get(&format!("http://{}/api/gallery", server.addr)).await;
    assert!(listing.contains(r#""uploads":false"#), "{listing}");
    let mut me = RawSocket::connect(&server).await;
    let token = me.join("g", "Me").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = post(&server, "/api/face?consent=true", &token, source_photo()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("uploads_disabled")),
        "{body}"
    );
    let (status, body) = post(&server, "/api/face/gallery/ada", &token, Vec::new()).await;
    assert_eq!(status, 200, "{body}");
    server.shutdown().await.unwrap();
    std::fs::remove_dir_all(&gallery).unwrap();
}

/// Every file below `dir` with its length and modification time.
fn files_under(
    dir: &std::path::Path,
) -> std::collections::BTreeMap<std::path::PathBuf, (u64, std::time::SystemTime)> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m) => {
                    out.insert(p, (m.len(), m.modified().unwrap_or(std::time::UNIX_EPOCH)));
                }
                Err(_) => {}
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn face_photos_never_reach_the_disk_or_the_log() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let _serial = serial().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // The server as a user runs it, at debug level, with a working directory and a temp dir
    // of its own that start empty.
    let base = std::env::temp_dir().join(format!("facerelay-nodisk-{}", std::process::id()));
    let (work, tmp) = (base.join("work"), base.join("tmp"));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    let abs = |p: &str| root.join(p).display().to_string();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_facerelay"))
        .arg("serve")
        .current_dir(&work)
        .env("TMPDIR", &tmp)
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .env("FACERELAY_SERVER__LISTEN", "127.0.0.1:0")
        .env("FACERELAY_SERVER__WEB_ROOT", abs("web"))
        .env("FACERELAY_MODELS__DIR", abs("models"))
        .env("FACERELAY_MODELS__PACKAGED_DIR", abs("models/packaged"))
        .env(
            "FACERELAY_MODELS__ONNXRUNTIME_LIBRARY",
            abs(".deps/onnxruntime/lib/libonnxruntime.so"),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: std::net::SocketAddr = loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), out.next_line())
            .await
            .expect("the server starts")
            .unwrap()
            .expect("it prints its address");
        if let Some(a) = line.strip_prefix("facerelay listening on http://") {
            break a.trim_end_matches('/').parse().unwrap();
        }
    };
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let log = tokio::spawn(async move {
        let mut text = String::new();
        let mut line = String::new();
        while err.read_line(&mut line).await.unwrap_or(0) > 0 {
            text.push_str(&line);
            line.clear();
        }
        text
    });
    let before = (files_under(&work), files_under(&tmp));

    let photo = std::fs::read(root.join("models/packaged/photos/gauss.png")).unwrap();
    let mut me = RawSocket::connect_url(&format!("ws://{addr}/ws")).await;
    let token = me.join("private", "Me").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = crate::support::request_at(
        addr,
        "POST",
        "/api/face?consent=true",
        &token,
        photo.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) =
        crate::support::request_at(addr, "DELETE", "/api/face", &token, Vec::new()).await;
    assert_eq!(status, 200);
    drop(me);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = (files_under(&work), files_under(&tmp));
    assert_eq!(
        after.0, before.0,
        "files appeared or changed in the working directory"
    );
    assert_eq!(
        after.1, before.1,
        "files appeared or changed in the temp directory"
    );

    // Stop the server (its stderr then ends) and read its whole debug log.
    child.kill().await.unwrap();
    let text = tokio::time::timeout(std::time::Duration::from_secs(10), log)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    assert!(
        text.contains("face chosen"),
        "the debug log was captured:\n{text}"
    );
    use base64::Engine as _;
    for window in photo.chunks(48).skip(1).take(20) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(window);
        let hex: String = window.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            !text.contains(&b64[..32]) && !text.contains(&hex[..32]),
            "photo bytes in the log"
        );
    }
    assert!(
        !text.contains("IHDR") && !text.contains("\u{89}PNG"),
        "photo bytes in the log"
    );
    std::fs::remove_dir_all(&base).unwrap();
}

/// Sends an HTTP head (and `body`, which may be short of the declared length) and returns the
/// status and JSON the server answers within `wait`, or `None`.
async fn partial_upload(
    addr: std::net::SocketAddr,
    token: &str,
    declared: u64,
    body: &[u8],
    wait: std::time::Duration,
) -> (Option<(u16, serde_json::Value)>, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/face?consent=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {declared}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = vec![0u8; 4096];
    let answer = match tokio::time::timeout(wait, stream.read(&mut raw)).await {
        Ok(Ok(n)) if n > 0 => {
            let text = String::from_utf8_lossy(&raw[..n]).to_string();
            let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            let json = text
                .split_once("\r\n\r\n")
                .and_then(|(_, b)| serde_json::from_str(b.trim()).ok())
                .unwrap_or(serde_json::Value::Null);
            Some((status, json))
        }
        _ => None,
    };
    (answer, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_limits_timeouts_and_slots_hold_and_answer_in_json() {
    let _serial = serial().await;
    let mut config = Config::loopback();
    config.models = config.models.with_fixtures();
    config.swap.upload_timeout_ms = 1500;
    let swap = Swap::from_config(&config).expect("the live swap starts");
    let max = config.swap.max_image_bytes;
    let server = RunningServer::start_with_swap(config, swap).await.unwrap();
    let addr = server.addr;
    let token = |s: serde_json::Value| s["token"].as_str().unwrap().to_owned();
    let mut sockets = Vec::new();
    let mut tokens = Vec::new();
    for name in ["A", "B", "C"] {
        let mut s = RawSocket::connect(&server).await;
        tokens.push(token(s.join("limits", name).await));
        sockets.push(s);
    }
    let quick = std::time::Duration::from_secs(3);

    // The token and the declared length are checked before any body is read.
    let (answer, _) = partial_upload(addr, "nope", 1 << 30, b"", quick).await;
    assert_eq!(answer.map(|a| a.0), Some(401));
    let (answer, _) = partial_upload(addr, &tokens[0], max + 1, b"", quick).await;
    let (status, body) = answer.expect("an answer before the body");
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("image_too_large")),
        "{body}"
    );

    // A 3 MB photo is not refused for its size (the noise in it has no face).
    let noise = RgbImage::from_fn(1000, 1000, |x, y| {
        let h =
            (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)).wrapping_mul(2_246_822_519);
        image::Rgb([(h >> 8) as u8, (h >> 16) as u8, (h >> 24) as u8])
    });
    let big = png(&noise);
    assert!(big.len() > 2_500_000, "{}", big.len());
    let (status, body) = post(&server, "/api/face?consent=true", &tokens[0], big).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("no_face")),
        "{body}"
    );

    // A photo past swap.max_upload_pixels is refused from its header.
    let mut huge = png(&RgbImage::new(8, 8));
    huge[16..20].copy_from_slice(&5000u32.to_be_bytes());
    huge[20..24].copy_from_slice(&4000u32.to_be_bytes());
    let crc = crc32(&huge[12..29]);
    huge[29..33].copy_from_slice(&crc.to_be_bytes());
    let (status, body) = post(&server, "/api/face?consent=true", &tokens[0], huge).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("image_too_large")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("5000x4000"),
        "{body}"
    );

    // A body that stalls: its slot is held until the timeout, then a JSON 408. Meanwhile the
    // same participant cannot start another upload, and the server takes two at once.
    let (_, stalled_a) = partial_upload(
        addr,
        &tokens[0],
        1000,
        b"0123456789",
        std::time::Duration::ZERO,
    )
    .await;
    let (_, stalled_b) = partial_upload(
        addr,
        &tokens[1],
        1000,
        b"0123456789",
        std::time::Duration::ZERO,
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for (token, who) in [
        (&tokens[0], "same participant"),
        (&tokens[2], "third at once"),
    ] {
        let (status, body) = post(&server, "/api/face?consent=true", token, source_photo()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (429, Some("upload_busy")),
            "{who}: {body}"
        );
    }
    for mut stalled in [stalled_a, stalled_b] {
        use tokio::io::AsyncReadExt;
        let mut raw = vec![0u8; 4096];
        let n = tokio::time::timeout(quick, stalled.read(&mut raw))
            .await
            .expect("answered")
            .unwrap();
        let text = String::from_utf8_lossy(&raw[..n]);
        assert!(
            text.starts_with("HTTP/1.1 408") && text.contains("upload_timeout"),
            "{text}"
        );
    }
    // The slots are free again.
    let (status, body) = post(
        &server,
        "/api/face?consent=true",
        &tokens[2],
        source_photo(),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // An 8 KiB path: a clear 414, not a server error.
    let long = format!("/{}", "a".repeat(8192));
    let (status, body) = request(&server, "GET", &long, "", Vec::new()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (414, Some("path_too_long")),
        "{body}"
    );
    drop(sockets);
    server.shutdown().await.unwrap();
}

/// Every refusal the face API documents (docs/api.md) has a plain-language message in the page's
/// text table.
#[test]
fn the_page_explains_every_face_api_refusal_in_plain_words() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let api = std::fs::read_to_string(root.join("docs/api.md")).unwrap();
    let text = std::fs::read_to_string(root.join("web/text.js")).unwrap();
    // The page's words are in web/text.js: the face API's under `errors`, `face`.
    let table = text
        .split_once("\n  errors: {")
        .and_then(|(_, rest)| rest.split_once("\n    face: {"))
        .and_then(|(_, rest)| rest.split_once("\n    },"))
        .expect("errors.face in web/text.js")
        .0;
    // The face API's table: the one whose first row is `not_joined`.
    let section = api
        .split("| status | code | when |")
        .find(|t| t.contains("`not_joined`"))
        .expect("the face API's code table");
    let mut codes = Vec::new();
    for row in section.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cell = row.split('|').nth(2).unwrap_or("");
        codes.extend(cell.split('`').skip(1).step_by(2).map(str::to_owned));
    }
    assert!(codes.len() >= 12, "{codes:?}");
    for code in &codes {
        assert!(
            table.contains(&format!("\n      {code}: \"")),
            "web/text.js has no plain message for the face API's {code}"
        );
    }
}
