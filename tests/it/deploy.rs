//! The deployment that docker-compose.yml describes, started for real as processes: no
//! container engine and no base images here, so each service runs from Debian's packages with
//! the command and environment that `docker-compose config` renders for it. Redis, two
//! facerelay nodes, coturn and Caddy (the repository's Caddyfile, with Caddy's internal CA for
//! the test name `facerelay.test`); Chromium resolves that name to this machine's own address
//! and opens the room over HTTPS, every peer connection relayed by coturn
//! (tests/browser/deploy.mjs). Then the room's node is stopped as compose stops it, and the
//! pages meet on the other.
//!
//! What differs from compose, and why: each process listens where a shared host lets it (the
//! nodes' HTTP on loopback ports instead of each container's 8080, Redis on a free port), the
//! service names become those addresses (`redis:6379`, Caddy's upstreams), Caddy's address in
//! `server.trusted_proxies` becomes loopback (where Caddy connects from here), the models
//! volume is an empty folder (the image's `FACERELAY_MODELS__DIR`), and coturn may relay to this
//! machine's own address (compose denies private ranges, which a test machine's address may be
//! in). Not covered: building the image and the GPU reservation.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cluster::{free_port, Node, Redis};
use crate::support::serial;

const DOMAIN: &str = "facerelay.test";
/// All digits: an environment value that once stopped the nodes (read as a TOML integer).
const TURN_SECRET: &str = "4242424242424242";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// This machine's first IPv4 address other than loopback: what compose's PUBLIC_IP would be.
fn host_address() -> String {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .expect("this machine has an IPv4 address besides loopback (hostname -I)")
        .to_owned()
}

/// `docker-compose config` for these variables, as JSON (Debian's docker-compose renders YAML;
/// its own python3-yaml reads it).
fn render(public_ip: &str) -> serde_json::Value {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            "docker-compose -f docker-compose.yml config | \
             python3 -c 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'",
        )
        .env("DOMAIN", DOMAIN)
        .env("PUBLIC_IP", public_ip)
        .env("TURN_SECRET", TURN_SECRET)
        // Compose's own switch for a machine without a GPU (docs/deploy.md).
        .env("MODELS_PROVIDER", "cpu")
        .current_dir(root())
        .output()
        .expect("docker-compose runs (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the rendered compose file")
}

fn service<'a>(compose: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    &compose["services"][name]
}

fn command(service: &serde_json::Value) -> Vec<String> {
    service["command"]
        .as_array()
        .expect("a command list")
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

fn environment(service: &serde_json::Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_object()
        .expect("an environment")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// A child's output lines, kept (for what coturn reports) and drained (so it never blocks).
fn collect(
    out: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    lines: Arc<Mutex<Vec<String>>>,
) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(out).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            lines.lock().unwrap().push(line);
        }
    });
}

/// Fails with `what` and the child's output when the child has exited.
fn exited(child: &mut tokio::process::Child, what: &str, log: &Mutex<Vec<String>>) {
    if let Ok(Some(status)) = child.try_wait() {
        panic!("{what} ({status}):\n{}", log.lock().unwrap().join("\n"));
    }
}

async fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The SHA-256 of a certificate's public key, base64: what Chromium is told to accept.
fn spki_sha256(pem: &Path) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -pubkey -noout -in '{}' | openssl pkey -pubin -outform der | \
             openssl dgst -sha256 -binary | base64",
            pem.display()
        ))
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_compose_deployment_serves_a_swapped_call_over_https_and_turn_and_survives_a_node_stop()
{
    let _serial = serial().await;
    let host = host_address();
    let compose = render(&host);
    let tmp = &std::env::temp_dir().join(format!("facerelay-deploy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(tmp);
    std::fs::create_dir_all(tmp).unwrap();

    // Redis, with compose's command.
    let redis_port = free_port();
    let redis_command = command(service(&compose, "redis"));
    let redis_dir = tmp.join("redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    let mut redis_args: Vec<&str> = redis_command.iter().map(String::as_str).collect();
    redis_args.extend(["--dir", redis_dir.to_str().unwrap()]);
    let redis = Redis::spawn(&redis_args, redis_port).await;

    // The two nodes, each with its rendered environment.
    let caddy_trusted = service(&compose, "caddy")["networks"]["default"]["ipv4_address"]
        .as_str()
        .expect("compose pins Caddy's address")
        .to_owned();
    let models = tmp.join("models");
    std::fs::create_dir_all(&models).unwrap();
    let mut nodes = Vec::new();
    let mut upstreams = Vec::new();
    for name in ["facerelay-1", "facerelay-2"] {
        let mut env = environment(service(&compose, name));
        assert_eq!(
            env.get("FACERELAY_SERVER__TRUSTED_PROXIES")
                .map(String::as_str),
            Some(format!("[\"{caddy_trusted}\"]").as_str()),
            "{name} trusts Caddy's address, and only it"
        );
        assert_eq!(
            env.get("FACERELAY_CLUSTER__REDIS_URL").map(String::as_str),
            Some("redis://redis:6379/")
        );
        let port = free_port();
        env.insert(
            "FACERELAY_SERVER__LISTEN".into(),
            format!("127.0.0.1:{port}"),
        );
        env.insert("FACERELAY_CLUSTER__REDIS_URL".into(), redis.url());
        env.insert(
            "FACERELAY_SERVER__TRUSTED_PROXIES".into(),
            "[\"127.0.0.1\"]".into(),
        );
        env.insert("FACERELAY_MODELS__DIR".into(), models.display().to_string());
        let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_facerelay"));
        serve.arg("serve").envs(&env);
        nodes.push(Node::spawn(serve).await);
        upstreams.push(format!("127.0.0.1:{port}"));
    }

    // coturn, with compose's flags, leave to relay to this machine's own address, and verbose
    // (its usage reports), line-buffered into a pipe.
    let turn_log = Arc::new(Mutex::new(Vec::new()));
    let mut coturn = tokio::process::Command::new("stdbuf")
        .args(["-oL", "turnserver"])
        .args(command(service(&compose, "coturn")))
        .arg(format!("--allowed-peer-ip={host}"))
        .arg("--verbose")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("turnserver runs (scripts/setup.sh installs Debian's coturn)");
    collect(coturn.stdout.take().unwrap(), turn_log.clone());
    wait_for("coturn listens on 3478", || {
        exited(&mut coturn, "turnserver exited", &turn_log);
        std::net::TcpStream::connect(("127.0.0.1", 3478)).is_ok()
    })
    .await;

    // Caddy: the repository's Caddyfile, behind global options for a test (its internal CA,
    // no admin endpoint, its HTTP port free, its state in the temporary folder).
    let caddyfile = tmp.join("Caddyfile");
    std::fs::write(
        &caddyfile,
        format!(
            "{{\n\tlocal_certs\n\tskip_install_trust\n\tadmin off\n\thttp_port {}\n\
             \tstorage file_system {}\n}}\nimport {}\n",
            free_port(),
            tmp.join("caddy").display(),
            root().join("deploy/Caddyfile").display()
        ),
    )
    .unwrap();
    let caddy_log = Arc::new(Mutex::new(Vec::new()));
    let mut caddy = tokio::process::Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&caddyfile)
        .envs(environment(service(&compose, "caddy")))
        .env("FACERELAY_1_UPSTREAM", &upstreams[0])
        .env("FACERELAY_2_UPSTREAM", &upstreams[1])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("caddy runs (scripts/setup.sh installs Debian's caddy)");
    collect(caddy.stderr.take().unwrap(), caddy_log.clone());
    wait_for("Caddy has its certificate for facerelay.test", || {
        exited(
            &mut caddy,
            "caddy exited; it binds 443 and 8444 as compose publishes them, which needs root \
             or CAP_NET_BIND_SERVICE",
            &caddy_log,
        );
        caddy_log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("certificate obtained successfully"))
    })
    .await;
    let ca = tmp.join("caddy/pki/authorities/local/intermediate.crt");
    assert!(ca.exists(), "Caddy's internal CA at {}", ca.display());

    // Both nodes know each other before anyone joins.
    for node in &nodes {
        crate::cluster::wait_for_metric(&node.url, "facerelay_cluster_nodes 2").await;
    }

    let artifacts = root().join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let y4m = artifacts.join("deploy.y4m");
    crate::real_faces::write_y4m(&y4m, &crate::real_faces::newton_panned());
    let photos = root().join("models/packaged/photos");
    let pids = format!(
        "https://{DOMAIN}={},https://{DOMAIN}:8444={}",
        nodes[0].pid(),
        nodes[1].pid()
    );
    let direct = format!(
        "https://{DOMAIN}={},https://{DOMAIN}:8444={}",
        nodes[0].url, nodes[1].url
    );
    let crowd = format!("{}ws", nodes[0].url.replace("http://", "ws://"));
    let (rules, spki) = (format!("MAP {DOMAIN} {host}"), spki_sha256(&ca));
    let (gauss, newton) = (photos.join("gauss.png"), photos.join("newton.png"));
    let os = std::ffi::OsStr::new;
    let artifacts = crate::browser::run_script_at(
        "deploy.mjs",
        &format!("https://{DOMAIN}/"),
        &[&gauss, &newton],
        &[
            // Node's own WebSocket client, for the sockets of the crowd.
            ("NODE_OPTIONS", os("--experimental-websocket")),
            ("FAKE_VIDEO", y4m.as_os_str()),
            ("CHROMIUM_HOST_RULES", os(&rules)),
            ("CHROMIUM_ACCEPT_SPKI", os(&spki)),
            ("NODE_PIDS", os(&pids)),
            ("NODE_DIRECT", os(&direct)),
            ("CROWD_WS", os(&crowd)),
            ("CROWD_SIZE", os("50")),
        ],
    )
    .await;

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(artifacts.join("deploy.json")).unwrap()).unwrap();
    let rounds = report["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{report}");
    for round in rounds {
        for path in round["paths"].as_array().unwrap() {
            // The page's end of the pair is a coturn relay (its port in compose's range) and the
            // node's end is the address it advertises (PUBLIC_IP).
            assert_eq!(path["local"], "relay", "{round}");
            let relay_port: u16 = path["localAddress"]
                .as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!((49160..=49959).contains(&relay_port), "{round}");
            assert!(
                path["remoteAddress"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{host}:")),
                "{round}"
            );
        }
    }
    assert_ne!(rounds[0]["origins"][0], rounds[1]["origins"][0], "{report}");

    // coturn's own account of it: what its relays received from the nodes. It reports each
    // allocation's traffic when the allocation ends (the pages have closed).
    drop(caddy);
    let relayed = || {
        turn_log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| received_bytes(l))
            .sum::<u64>()
    };
    wait_for("coturn reports the relayed traffic", || relayed() > 500_000).await;
    println!("coturn relayed {} bytes (its usage reports)", relayed());
    let _ = coturn.kill().await;
    for node in nodes {
        node.kill().await;
    }
    redis.stop().await;
    let _ = std::fs::remove_dir_all(tmp);
}

/// The bytes a coturn "peer usage" line says an allocation's relay received from its peer
/// ("rb=N").
fn received_bytes(line: &str) -> Option<u64> {
    let (_, rest) = line.split_once("peer usage:")?;
    rest.split([',', ' '])
        .find_map(|f| f.strip_prefix("rb="))
        .and_then(|n| n.parse().ok())
}
