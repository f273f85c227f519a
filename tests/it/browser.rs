//! The web client in a real browser: Debian Chromium with a fake camera, driven by
//! playwright-core (tests/browser/room.mjs). Needs `node`, `node_modules/playwright-core` and
//! `/usr/bin/chromium`; `scripts/setup.sh` installs them.

use std::path::Path;
use std::time::Duration;

use facerelay::config::Config;

use crate::support::{serial, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_chromium_pages_see_each_other() {
    let _serial = serial().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
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
    let mut config = Config::defaults();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.web_root = root.join("web");
    let server = start(config).await;
    let artifacts = root.join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("room.png");
    let _ = std::fs::remove_file(&shot);
    let run = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/room.mjs"))
        .arg(format!("http://{}/", server.addr))
        .arg(&shot)
        .current_dir(root)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the browser test finishes within 90 s")
        .expect("node runs (install Node.js: scripts/setup.sh)");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "both pages must play each other's video"
    );
    assert!(
        shot.exists(),
        "a screenshot is written to {}",
        shot.display()
    );
    server.shutdown().await.expect("clean shutdown");
}
