//! The web client in a real browser: Debian Chromium with a fake camera, driven by
//! playwright-core (tests/browser/*.mjs). Needs `node`, `node_modules/playwright-core` and
//! `/usr/bin/chromium`; `scripts/setup.sh` installs them. Screenshots go to test-artifacts/.

use std::path::{Path, PathBuf};
use std::time::Duration;

use facerelay::config::Config;

use facerelay::app::{RunningServer, Swap};
use facerelay::swap::{fixtures_dir, Engine};

use crate::support::serial;

pub(crate) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `tests/browser/<script>` against a fresh server; returns the screenshot folder.
async fn run_browser_script(script: &str) -> PathBuf {
    run_browser_script_with(script, Swap::none(), &[]).await
}

async fn run_browser_script_with(script: &str, swap: Swap, extra: &[&Path]) -> PathBuf {
    run_browser_script_env(script, swap, extra, &[]).await
}

pub(crate) async fn run_browser_script_env(
    script: &str,
    swap: Swap,
    extra: &[&Path],
    env: &[(&str, &Path)],
) -> PathBuf {
    run_browser(script, swap, extra, env, None).await
}

/// Runs `tests/browser/<script>` against a fresh server; with `tokens` (a token secret), over
/// HTTPS with a self-signed certificate (Chromium is told to accept that certificate's key
/// alone), and joins need tokens.
async fn run_browser(
    script: &str,
    swap: Swap,
    extra: &[&Path],
    env: &[(&str, &Path)],
    tokens: Option<&str>,
) -> PathBuf {
    // The server's log, when RUST_LOG asks for it (a failed run's detail).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let root = root();
    let mut config = Config::defaults();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.web_root = root.join("web");
    if let Some(secret) = tokens {
        config.server.token_secret = secret.to_owned();
    }
    let server = if tokens.is_some() {
        RunningServer::start_dev_tls(config, swap).await
    } else {
        RunningServer::start_with_swap(config, swap).await
    }
    .expect("server starts");
    let spki = server
        .tls
        .as_ref()
        .and_then(|t| t.spki_sha256.clone())
        .unwrap_or_default();
    let mut env: Vec<(&str, &std::ffi::OsStr)> =
        env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    env.push(("CHROMIUM_ACCEPT_SPKI", std::ffi::OsStr::new(&spki)));
    let artifacts = run_script_at(script, &server.url(), extra, &env).await;
    server.shutdown().await.expect("clean shutdown");
    artifacts
}

/// Runs `tests/browser/<script>` against the page at `url`; returns the screenshot folder.
pub(crate) async fn run_script_at(
    script: &str,
    url: &str,
    extra: &[&Path],
    env: &[(&str, &std::ffi::OsStr)],
) -> PathBuf {
    let root = root();
    for (need, path) in [
        ("Chromium", Path::new("/usr/bin/chromium").to_path_buf()),
        ("playwright-core", root.join("node_modules/playwright-core")),
    ] {
        assert!(
            path.exists(),
            "{need} is missing at {}: run scripts/setup.sh first",
            path.display()
        );
    }
    let artifacts = root.join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let run = tokio::process::Command::new("node")
        .arg(root.join("tests/browser").join(script))
        .arg(url)
        .arg(&artifacts)
        .args(extra)
        .envs(env.iter().copied())
        .current_dir(root)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser test finishes within 120 s")
        .expect("node runs (install Node.js: scripts/setup.sh)");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "{script} failed (its output is above)"
    );
    artifacts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_chromium_pages_see_each_other_in_a_room() {
    let _serial = serial().await;
    let dir = run_browser_script("room.mjs").await;
    assert!(dir.join("room.png").exists(), "a screenshot of the room");
}

/// `facerelay serve --dev-tls` with join tokens: the page, its signalling (WSS) and media work
/// over HTTPS with the self-signed certificate, which Chromium accepts by its public key alone,
/// and each page joins with the token of its link (which names it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_chromium_pages_meet_over_https_with_the_dev_certificate_and_tokens() {
    use facerelay::signal::token::{issue, Rights};
    let _serial = serial().await;
    let secret = "a secret for the browser test, long enough";
    let ttl = Duration::from_secs(600);
    let tokens = serde_json::json!({
        "Alice": issue(secret, Some("tokens"), "Alice", Rights::ALL, ttl).unwrap(),
        "Bob": issue(secret, Some("tokens"), "Bob", Rights::ALL, ttl).unwrap(),
    })
    .to_string();
    let dir = run_browser(
        "room.mjs",
        Swap::none(),
        &[],
        &[
            ("SHOT", Path::new("room-https.png")),
            ("ROOM", Path::new("tokens")),
            ("TOKENS", Path::new(&tokens)),
        ],
        Some(secret),
    )
    .await;
    assert!(
        dir.join("room-https.png").exists(),
        "a screenshot of the room over HTTPS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_chromium_pages_in_the_roulette() {
    let _serial = serial().await;
    let dir = run_browser_script("roulette.mjs").await;
    for shot in [
        "roulette-paired.png",
        "roulette-waiting.png",
        "roulette-left.png",
    ] {
        assert!(dir.join(shot).exists(), "a screenshot {shot}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_roulette_says_one_thing_at_a_time_and_only_offers_what_works() {
    let _serial = serial().await;
    let dir = run_browser_script("roulette_messages.mjs").await;
    assert!(dir.join("roulette-reported.png").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_face_picker_uploads_a_photo_refuses_a_non_image_and_names_the_gallery() {
    let _serial = serial().await;
    let photo = root().join(fixtures_dir()).join("testcard_source.jpg");
    // A gallery of one face and one image without a face, which the start-up check leaves out.
    let gallery = gallery_of_ada("face-gallery");
    image::RgbImage::from_pixel(320, 240, image::Rgb([128, 128, 128]))
        .save(gallery.join("Blank.png"))
        .unwrap();
    let (_, swap) = swap_over(&gallery);
    let dir = run_browser_script_with("faces.mjs", swap, &[&photo]).await;
    assert!(dir.join("face-picked.png").exists());
    assert!(dir.join("face-error.png").exists());
    assert!(dir.join("face-gallery.png").exists());
}

/// A live swap on the stand-in models whose gallery holds one face, "Ada" (the test card's
/// source face), in `test-artifacts/<folder>`.
fn swap_with_gallery(folder: &str) -> (Config, Swap) {
    swap_over(&gallery_of_ada(folder))
}

/// A fresh gallery folder `test-artifacts/<folder>` holding "Ada" (the test card's source face).
pub(crate) fn gallery_of_ada(folder: &str) -> PathBuf {
    let gallery = root().join("test-artifacts").join(folder);
    let _ = std::fs::remove_dir_all(&gallery);
    std::fs::create_dir_all(&gallery).unwrap();
    std::fs::copy(
        root().join(fixtures_dir()).join("testcard_source.jpg"),
        gallery.join("Ada.jpg"),
    )
    .unwrap();
    gallery
}

/// A live swap on the stand-in models with the gallery in `gallery`.
fn swap_over(gallery: &Path) -> (Config, Swap) {
    let mut config = Config::defaults();
    config.models = config.models.with_fixtures();
    config.swap.gallery = gallery.to_string_lossy().into_owned();
    let swap = Swap::from_config(&config).expect("the live swap starts");
    (config, swap)
}

/// axe-core finds no serious or critical accessibility violation on any screen (the gallery and
/// the face panel included).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_screen_passes_the_accessibility_check() {
    let _serial = serial().await;
    let (_, swap) = swap_with_gallery("a11y-gallery");
    run_browser_script_with("a11y.mjs", swap, &[]).await;
}

/// The call fills the window: the other's video covers half of a desktop window, and on a phone
/// both videos show without scrolling, in a room and in the roulette.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_call_uses_the_window_on_a_desktop_and_on_a_phone() {
    let _serial = serial().await;
    let dir = run_browser_script("layout.mjs").await;
    assert!(dir.join("layout-desktop.png").exists());
}

/// Camera off and microphone off are shown to the others: initials, a muted mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_others_see_a_camera_turned_off_and_a_microphone_muted() {
    let _serial = serial().await;
    let dir = run_browser_script("media_state.mjs").await;
    assert!(dir.join("camera-off.png").exists());
}

/// A room link is an invitation: the page says so, a gallery face chosen before joining shows
/// in a preview through the server, and is on before the others see any video.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invitation_names_the_room_previews_the_chosen_face_and_puts_it_on_before_any_video() {
    let _serial = serial().await;
    let (config, swap) = swap_with_gallery("invite-gallery");
    let (y4m, face_box) = testcard_camera(&config, "testcard-invite");
    let dir = run_browser_script_env(
        "invite.mjs",
        swap,
        &[Path::new(&face_box)],
        &[("FAKE_VIDEO", &y4m)],
    )
    .await;
    assert!(dir.join("invite.png").exists());
}

/// The test card as a y4m video (Chromium's fake camera plays and loops it).
fn testcard_y4m(path: &Path) -> facerelay::media::I420Frame {
    use std::io::Write;
    let card = image::open(root().join(fixtures_dir()).join("testcard_target.png"))
        .unwrap()
        .to_rgb8();
    let frame = facerelay::swap::color::rgb_to_i420(&card).unwrap();
    let mut f = std::fs::File::create(path).unwrap();
    write!(
        f,
        "YUV4MPEG2 W{} H{} F30:1 Ip A1:1 C420jpeg\n",
        frame.width(),
        frame.height()
    )
    .unwrap();
    for _ in 0..30 {
        f.write_all(b"FRAME\n").unwrap();
        f.write_all(frame.as_bytes()).unwrap();
    }
    frame
}

/// The drawn test card as a fake camera file, and where the stand-in swap (of `config`'s
/// fixture models) pastes the test card's source face on it: "x0,y0,x1,y1" (computed offline).
///
/// `name` names the file: each test writes its own, as Chromium reads the file while it plays
/// it, and a file another test rewrites meanwhile ends that camera's track (a test running
/// beside another that wrote the same file lost its camera mid-call).
fn testcard_camera(config: &Config, name: &str) -> (PathBuf, String) {
    let artifacts = root().join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let y4m = artifacts.join(format!("{name}.y4m"));
    let frame = testcard_y4m(&y4m);
    let photo = root().join(fixtures_dir()).join("testcard_source.jpg");
    let mut engine = Engine::load(&config.models, &config.swap).expect("fixture models load");
    let source = engine
        .source_face(&image::open(&photo).unwrap().to_rgb8())
        .unwrap();
    let mut swapped = frame.clone();
    let report = engine
        .swap_frame(&mut swapped, &source, &facerelay::swap::Selection::Largest)
        .unwrap();
    let [x0, y0, x1, y1] = report.swapped[0].paste_box;
    (y4m, format!("{x0},{y0},{x1},{y1}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_face_picked_in_chromium_is_swapped_live_for_the_others() {
    let _serial = serial().await;
    let mut config = Config::defaults();
    config.models = config.models.with_fixtures();
    let (y4m, face_box) = testcard_camera(&config, "testcard-live");
    let photo = root().join(fixtures_dir()).join("testcard_source.jpg");
    let swap = Swap::from_config(&config).expect("the live swap starts");
    let dir = run_browser_script_env(
        "live_swap.mjs",
        swap,
        &[&photo, Path::new(&face_box)],
        &[("FAKE_VIDEO", &y4m)],
    )
    .await;
    assert!(dir.join("live-swap.png").exists());
}

/// Every word of the page comes from web/text.js: with the pseudo-translation (?pseudo-text)
/// every text and label on every screen is wrapped, but for the user's own names and devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_word_of_the_page_comes_from_its_text_table() {
    let _serial = serial().await;
    let (_, swap) = swap_with_gallery("text-gallery");
    let dir = run_browser_script_with("text.mjs", swap, &[]).await;
    assert!(dir.join("text-call.png").exists());
}

/// A join clicked while the invitation is still starting the camera opens no second camera
/// stream (one the page would never stop), and leaving turns the camera off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_during_the_camera_start_opens_it_once_and_leaving_turns_it_off() {
    let _serial = serial().await;
    run_browser_script("camera.mjs").await;
}
