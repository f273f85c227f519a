//! Builds a facerelay node from its configuration: the room directory and the roulette, the
//! relay (`rtc`), one set of models (the live face swap, whose schedulers also serve the face
//! picker), and the metrics registry every subsystem registers into. `facerelay serve`, the
//! tests and the benches all start servers here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::cluster::{
    self, ClusterError, Load, NodeState, RedisPairing, RedisRouter, Router, SharedRouter,
    Standalone,
};
use crate::config::Config;
use crate::infer::scheduler::Admission;
use crate::media::FrameStage;
use crate::metrics::{Family, Gauge, Labels, Registry, Scraped};
use crate::room::hub::{Pairing, RouletteHub};
use crate::room::roulette::{InMemoryMatchmaker, RouletteConfig};
use crate::room::{InMemoryDirectory, ParticipantId, RoomDirectory};
use crate::rtc::{RtcEngine, RtcSettings};
use crate::signal::tls::{self, Tls, TlsError};
use crate::signal::{self, App, AppParts};
use crate::swap::live::{LiveFaces, LiveSwap};
use crate::swap::picker::{FacePicker, FaceRegistry};
use crate::swap::SwapperChoice;
use crate::voice::Voices;

/// The swap engine's parts the server uses; [`Swap::none`] runs a pure relay.
pub struct Swap {
    pub stage: Arc<dyn FrameStage>,
    pub picker: Option<FacePicker>,
    pub faces: Arc<dyn FaceRegistry>,
    /// Which swapper runs (`"mesh"`, a deep family such as `"inswapper_128"`, or `"off"`), for
    /// `/healthz` and the page.
    pub swapper: &'static str,
    /// The live stage, whose metrics `/metrics` serves (none without the swap).
    pub live: Option<Arc<LiveSwap>>,
    /// Who disguises which voice, and the disguise the audio streams run (the face's
    /// counterpart for the voice; on whether or not faces are swapped).
    pub voices: Arc<Voices>,
}

impl Swap {
    /// No face swap: frames pass through, face choices are refused.
    pub fn none() -> Self {
        Self {
            stage: Arc::new(crate::media::IdentityStage),
            picker: None,
            // Capacity 0: nobody can hold a face on a server that does not swap.
            faces: Arc::new(LiveFaces::new(Admission::new(0))),
            swapper: "off",
            live: None,
            voices: Arc::default(),
        }
    }

    /// Frames through `stage`, no face swap (relay tests and benches).
    pub fn stage(stage: Arc<dyn FrameStage>) -> Self {
        Self {
            stage,
            ..Self::none()
        }
    }

    /// The live face swap with the models of `config` (start-up errors are returned: a missing
    /// or wrong model never silently turns the swap off), or none when `swap.swapper = "auto"`
    /// finds neither the deep models nor the packaged set. The face picker runs on the live
    /// stage's schedulers: one copy of each model.
    pub fn from_config(config: &Config) -> Result<Self, SwapStartError> {
        let models = &config.models;
        if config.swap.swapper == SwapperChoice::Auto && SwapperChoice::auto(models).is_none() {
            tracing::warn!(
                dir = %models.dir.display(),
                packaged_dir = %models.packaged_dir.display(),
                "face swap is off: no model files (run scripts/setup.sh for the packaged set; models/README.md)"
            );
            return Ok(Self::none());
        }
        let live =
            LiveSwap::load(models, &config.swap).map_err(|e| SwapStartError(e.to_string()))?;
        let gallery = (!config.swap.gallery.is_empty())
            .then(|| std::path::PathBuf::from(&config.swap.gallery));
        let live = Arc::new(live);
        tracing::info!(
            swapper = live.swapper_name(),
            provider = %models.provider,
            capacity = config.swap.capacity,
            "face swap on"
        );
        Ok(Self {
            stage: live.clone(),
            picker: Some(FacePicker::live(live.clone(), &config.swap, gallery)),
            swapper: live.swapper_name(),
            faces: live.clone(),
            live: Some(live),
            voices: Arc::default(),
        })
    }
}

/// The swap was configured (model files present) but cannot start.
#[derive(Debug, thiserror::Error)]
#[error("face swap cannot start: {0}")]
pub struct SwapStartError(String);

/// Wires a node on its own (no cluster): directory, roulette, relay and swap, every
/// subsystem's metrics in one registry. Returns the edge's state and the sender that starts
/// draining.
pub fn build(config: Config, swap: Swap) -> (Arc<App>, watch::Sender<bool>) {
    Pieces::new(config, swap, false).finish(Arc::new(Standalone))
}

/// Wires a node, in the cluster of `cluster.redis_url` when it names one: the node registers
/// there with its page at `cluster.node_url`, or `page_url` (where it listens) when that is
/// empty.
pub async fn build_node(
    config: Config,
    swap: Swap,
    page_url: String,
) -> Result<(Arc<App>, watch::Sender<bool>), ClusterError> {
    let clustered = !config.cluster.redis_url.is_empty();
    let mut pieces = Pieces::new(config, swap, clustered);
    let cluster = &pieces.config.cluster;
    if !clustered {
        return Ok(pieces.finish(Arc::new(Standalone)));
    }
    let url = if cluster.node_url.is_empty() {
        page_url
    } else {
        cluster.node_url.clone()
    };
    let state = Arc::new(NodeView {
        directory: pieces.directory.clone(),
        roulette: pieces.roulette.clone(),
        admission: pieces.admission.clone(),
        capacity: pieces.config.rooms.max_total_participants,
    });
    let router = RedisRouter::connect(cluster, url, state).await?;
    ParticipantId::set_node(router.number());
    if let Some(shared) = &pieces.shared_roulette {
        shared.attach(router.clone());
        tokio::spawn(rematch(
            Arc::downgrade(&pieces.roulette),
            Duration::from_millis(pieces.config.cluster.heartbeat_ms),
        ));
    }
    router.clone().register_metrics(&mut pieces.registry);
    Ok(pieces.finish(router))
}

/// Every `every`, the shared roulette looks again for partners of this node's longest waiters
/// (until the node is dropped).
async fn rematch(hub: std::sync::Weak<RouletteHub>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        hub.rematch().await;
    }
}

/// A node's parts before it knows where its rooms live.
struct Pieces {
    config: Arc<Config>,
    engine: Arc<RtcEngine>,
    directory: Arc<dyn RoomDirectory>,
    roulette: Arc<RouletteHub>,
    /// The cluster's roulette, once the node has joined it.
    shared_roulette: Option<Arc<RedisPairing>>,
    swap: Swap,
    admission: Option<Admission>,
    registry: Registry,
}

impl Pieces {
    /// `clustered`: the roulette's queue is the cluster's (in Redis), not this node's.
    fn new(config: Config, swap: Swap, clustered: bool) -> Self {
        let mut registry = Registry::default();
        register_process(&mut registry);
        let engine = RtcEngine::new(
            RtcSettings::from_config(&config),
            swap.stage.clone(),
            swap.voices.clone(),
        );
        engine.register_metrics(&mut registry);
        if let Some(live) = &swap.live {
            live.register_metrics(&mut registry);
        }
        let directory: Arc<dyn RoomDirectory> = Arc::new(InMemoryDirectory::new(
            config.rooms.max_participants,
            config.rooms.max_total_participants,
            config.rooms.max_name_chars,
        ));
        let cooldown = Duration::from_secs(config.roulette.cooldown_secs);
        let max_participants = config.roulette.max_participants;
        let shared_roulette =
            clustered.then(|| Arc::new(RedisPairing::new(cooldown, max_participants)));
        let pairing: Arc<dyn Pairing> = match &shared_roulette {
            Some(shared) => shared.clone(),
            None => Arc::new(InMemoryMatchmaker::new(RouletteConfig {
                cooldown,
                max_participants,
            })),
        };
        let roulette = Arc::new(RouletteHub::new(pairing));
        crate::room::register_metrics(directory.clone(), roulette.clone(), &mut registry);
        let admission = swap.live.as_ref().map(|l| l.faces().admission().clone());
        Self {
            config: Arc::new(config),
            engine,
            directory,
            roulette,
            shared_roulette,
            swap,
            admission,
            registry,
        }
    }

    fn finish(self, router: SharedRouter) -> (Arc<App>, watch::Sender<bool>) {
        App::new(AppParts {
            config: self.config,
            engine: self.engine,
            directory: self.directory,
            roulette: self.roulette,
            picker: self.swap.picker,
            swapper: self.swap.swapper,
            faces: self.swap.faces,
            voices: self.swap.voices,
            router,
            registry: self.registry,
        })
    }
}

/// What this node tells the cluster at each heartbeat.
struct NodeView {
    directory: Arc<dyn RoomDirectory>,
    roulette: Arc<RouletteHub>,
    admission: Option<Admission>,
    capacity: usize,
}

impl NodeState for NodeView {
    fn load(&self) -> Load {
        Load {
            participants: self.directory.stats().participants + self.roulette.stats().online,
            capacity: self.capacity,
            swap_free: self
                .admission
                .as_ref()
                .map_or(0, |a| a.capacity().saturating_sub(a.in_use())),
            cpu: cluster::cpu_load(),
        }
    }

    fn rooms(&self) -> Vec<String> {
        self.directory.rooms()
    }
}

/// Build information (`facerelay_build_info{version}` = 1) and the time since start.
fn register_process(registry: &mut Registry) {
    let info = Family::<Labels, Gauge>::default();
    info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))])
        .set(1);
    registry.register(
        "facerelay_build_info",
        "The running build; the value is always 1",
        info,
    );
    let started = Instant::now();
    let mut scraped = Scraped::default();
    scraped.gauge(
        "facerelay_uptime_seconds",
        "Seconds since this server started.",
        move || started.elapsed().as_secs(),
    );
    scraped.register(registry);
}

/// How a node serves HTTP: in the clear when the configuration names no certificate, over
/// TLS with `server.tls_cert`/`server.tls_key`, or (`dev_tls`) with a self-signed certificate
/// for this machine.
pub fn tls(config: &Config, dev_tls: bool) -> Result<Option<Tls>, TlsError> {
    let server = &config.server;
    if dev_tls {
        return tls::self_signed(&[server.listen.ip()]).map(Some);
    }
    if server.tls_cert.is_empty() {
        return Ok(None);
    }
    tls::load(
        std::path::Path::new(&server.tls_cert),
        std::path::Path::new(&server.tls_key),
    )
    .map(Some)
}

/// A server running in the background (tests and benches).
pub struct RunningServer {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    /// Its certificate, when it serves HTTPS.
    pub tls: Option<Tls>,
    stop: Option<oneshot::Sender<()>>,
    /// Ends the drain before its grace period is over.
    finish: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Binds `config.server.listen` (port 0 for an ephemeral one) and serves frames through
    /// `stage`, without the face swap.
    pub async fn start(config: Config, stage: Arc<dyn FrameStage>) -> std::io::Result<Self> {
        Self::start_with_swap(config, Swap::stage(stage)).await
    }

    /// Serves as `config` says (HTTPS with its certificate, if it names one).
    pub async fn start_with_swap(config: Config, swap: Swap) -> std::io::Result<Self> {
        Self::start_full(config, swap, false).await
    }

    /// Serves HTTPS with a self-signed certificate, as `facerelay serve --dev-tls` does.
    pub async fn start_dev_tls(config: Config, swap: Swap) -> std::io::Result<Self> {
        Self::start_full(config, swap, true).await
    }

    async fn start_full(config: Config, swap: Swap, dev_tls: bool) -> std::io::Result<Self> {
        let tls = tls(&config, dev_tls).map_err(std::io::Error::other)?;
        let listener = TcpListener::bind(config.server.listen).await?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (app, drain) = build_node(config, swap, format!("{scheme}://{addr}/"))
            .await
            .map_err(std::io::Error::other)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let (finish, finished) = oneshot::channel::<()>();
        let server_tls = tls.as_ref().map(|t| t.config.clone());
        let task = tokio::spawn(signal::serve(
            listener,
            app.clone(),
            server_tls,
            drain,
            async move {
                let _ = stopped.await;
            },
            async move {
                let _ = finished.await;
            },
        ));
        Ok(Self {
            addr,
            app,
            tls,
            stop: Some(stop),
            finish: Some(finish),
            task,
        })
    }

    /// The page's address.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/", self.addr)
    }

    /// The signalling socket's address (plain servers: the test client speaks no TLS).
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Starts draining, as the first SIGTERM does; the server goes on answering (503 at
    /// `/healthz`) until [`RunningServer::shutdown`] or the end of the grace period.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Graceful shutdown: drains, and ends the drain once every session has closed (or the
    /// grace period is over) rather than at the end of the grace period as `facerelay serve`
    /// does, so that tests do not wait it out.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.begin_shutdown();
        let grace = Duration::from_secs(self.app.config.server.shutdown_grace_secs);
        let deadline = tokio::time::Instant::now() + grace;
        while self.app.live_sessions() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(finish) = self.finish.take() {
            let _ = finish.send(());
        }
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_has_every_subsystems_families_once_with_one_sentence_of_help() {
        let (app, _drain) = build(Config::loopback(), Swap::none());
        let text = crate::metrics::render(&app.registry);
        for family in [
            "facerelay_build_info",
            "facerelay_uptime_seconds",
            "facerelay_participants",
            "facerelay_roulette_pairs_total",
            "facerelay_signalling_sessions",
            "facerelay_rooms",
            "facerelay_peer_connections",
            "facerelay_peer_failures_total",
            "facerelay_published_streams",
            "facerelay_frames_out_total",
            "facerelay_stage_seconds",
            "facerelay_server_latency_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family}: {text}"
            );
        }
        for line in text.lines().filter(|l| l.starts_with("# HELP")) {
            assert!(line.ends_with('.') && !line.ends_with(".."), "{line}");
        }
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
        }
    }
}
