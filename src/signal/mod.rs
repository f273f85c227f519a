//! The HTTP edge: static web client, `GET /healthz`, `GET /metrics`, the face API, and
//! WebSocket signalling at `/ws`. Maps domain errors to messages with stable codes. A session
//! drives its participant's peer connection (`rtc`) and room membership (`room`); the face API
//! hands photos to the picker (`swap`). [`crate::app`] builds its state.

mod client;
mod faces;
pub mod participant;
pub mod protocol;
mod session;
pub mod tls;
pub mod token;
mod voices;
pub mod whip;

pub use client::client_ip;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::net::TcpListener;

use tokio::sync::{mpsc, watch};
use tower_http::services::ServeDir;

use crate::cluster::SharedRouter;
use crate::config::Config;
use crate::metrics::{Counter, Family, Labels, Registry, Scraped};
use crate::room::hub::RouletteHub;
use crate::room::FaceState;
use crate::room::RoomDirectory;
use crate::rtc::RtcEngine;
use crate::swap::live::FrameState;
use crate::swap::picker::{FacePicker, FaceRegistry};
use crate::voice::{VoiceState, Voices};

/// Everything the handlers share.
pub struct App {
    pub config: Arc<Config>,
    pub engine: Arc<RtcEngine>,
    pub directory: Arc<dyn RoomDirectory>,
    pub roulette: Arc<RouletteHub>,
    /// Turns photos into faces; `None` when this server runs without the swap models.
    pub picker: Option<FacePicker>,
    /// Which swapper runs (`"mesh"`, a deep family such as `"inswapper_128"`, `"off"`).
    pub swapper: &'static str,
    /// Every subsystem's metrics, served at `/metrics`.
    pub(crate) registry: Registry,
    edge: EdgeMetrics,
    /// Where the frame stage looks up each participant's face.
    pub faces: Arc<dyn FaceRegistry>,
    /// Where the audio streams look up each participant's voice.
    pub voices: Arc<Voices>,
    /// Where rooms live (this node alone, or a cluster).
    pub router: SharedRouter,
    /// Face-API tokens of the sessions in a room or the roulette.
    tokens: Mutex<HashMap<String, TokenHolder>>,
    /// Turns true when the server starts draining.
    shutdown: watch::Receiver<bool>,
    /// Photo uploads in progress (bounded per participant and server-wide).
    pub(crate) uploads: faces::Uploads,
    /// Signalling connections by address (`server.max_sessions`, `max_sessions_per_ip`).
    connections: Arc<Connections>,
    sessions: SessionCounter,
    /// WHIP and WHEP sessions, by resource.
    whip: whip::Resources,
}

/// What the HTTP edge may ask of a session.
pub(crate) enum SessionCommand {
    /// What the participant's video carries changed (a face picked or cleared, or the live
    /// swap's report): tell the others and the participant.
    Face {
        state: crate::room::FaceState,
        reason: Option<String>,
    },
    /// What the participant's audio carries changed (a voice chosen, or its stream's report).
    Voice {
        state: VoiceState,
        reason: Option<String>,
    },
}

struct TokenHolder {
    participant: String,
    commands: mpsc::Sender<SessionCommand>,
    rights: token::Rights,
}

/// What [`App::new`] is made of; [`crate::app`] builds it from the configuration.
pub struct AppParts {
    pub config: Arc<Config>,
    pub engine: Arc<RtcEngine>,
    pub directory: Arc<dyn RoomDirectory>,
    pub roulette: Arc<RouletteHub>,
    pub picker: Option<FacePicker>,
    pub swapper: &'static str,
    pub faces: Arc<dyn FaceRegistry>,
    pub voices: Arc<Voices>,
    /// Where rooms live (this node alone, or a cluster).
    pub router: SharedRouter,
    /// Every subsystem's metrics, registered; the edge adds its own.
    pub registry: Registry,
}

impl App {
    /// The edge's state over the parts; also returns the sender that starts draining.
    pub fn new(parts: AppParts) -> (Arc<Self>, watch::Sender<bool>) {
        let AppParts {
            config,
            engine,
            directory,
            roulette,
            picker,
            swapper,
            faces,
            voices,
            router,
            mut registry,
        } = parts;
        let (tx, rx) = watch::channel(false);
        let sessions = SessionCounter::default();
        let edge = EdgeMetrics::default();
        edge.register(&mut registry, &sessions);
        let app = Arc::new(Self {
            config,
            engine,
            directory,
            roulette,
            picker,
            swapper,
            faces,
            voices,
            router,
            registry,
            edge,
            tokens: Mutex::new(HashMap::new()),
            shutdown: rx,
            uploads: faces::Uploads::default(),
            connections: Arc::default(),
            sessions,
            whip: whip::Resources::default(),
        });
        // What each wearer's frames carry goes to its session (which tells the room and the
        // wearer). Weak: the stage must not keep the app alive.
        let weak = Arc::downgrade(&app);
        app.faces.watch(Arc::new(move |participant, state, reason| {
            if let Some(app) = weak.upgrade() {
                app.tell_face(participant, state, reason);
            }
        }));
        let weak = Arc::downgrade(&app);
        app.voices
            .watch(Arc::new(move |participant, state, reason| {
                if let Some(app) = weak.upgrade() {
                    app.tell(
                        participant,
                        SessionCommand::Voice {
                            state,
                            reason: reason.map(str::to_owned),
                        },
                    );
                }
            }));
        (app, tx)
    }

    /// Hands the live stage's report on a wearer's frames to that participant's session.
    fn tell_face(&self, participant: &str, state: FrameState, reason: Option<&'static str>) {
        let state = match state {
            FrameState::Swapped => FaceState::Swapped,
            FrameState::Held => FaceState::Held,
            FrameState::Blurred => FaceState::Blurred,
            FrameState::Unswapped => FaceState::Unswapped,
        };
        self.tell(
            participant,
            SessionCommand::Face {
                state,
                reason: reason.map(str::to_owned),
            },
        );
    }

    /// Hands `command` to `participant`'s session, if it has one.
    fn tell(&self, participant: &str, command: SessionCommand) {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(holder) = tokens.values().find(|h| h.participant == participant) {
            let _ = holder.commands.try_send(command);
        }
    }

    /// A new face-API token for a participant's session.
    pub(crate) fn register_session(
        &self,
        participant: &str,
        commands: mpsc::Sender<SessionCommand>,
        rights: token::Rights,
    ) -> String {
        let token = format!("{:032x}", rand::random::<u128>());
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                token.clone(),
                TokenHolder {
                    participant: participant.to_owned(),
                    commands,
                    rights,
                },
            );
        token
    }

    /// The session is over: its token stops working, its face and its voice are forgotten.
    pub(crate) fn unregister_session(&self, token: &str, participant: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
        self.faces.clear(participant);
        self.voices.clear(participant);
    }

    /// The participant a token belongs to, its session's command channel and its rights.
    fn session_of(
        &self,
        token: &str,
    ) -> Option<(String, mpsc::Sender<SessionCommand>, token::Rights)> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let holder = tokens.get(token)?;
        Some((
            holder.participant.clone(),
            holder.commands.clone(),
            holder.rights,
        ))
    }

    /// WHIP and WHEP sessions alive now.
    pub fn whip_sessions(&self) -> usize {
        self.whip.len()
    }

    /// WebSocket sessions alive now (joined or not).
    pub fn live_sessions(&self) -> usize {
        self.sessions.0.load(Ordering::Relaxed)
    }
}

#[derive(Default, Clone)]
struct SessionCounter(Arc<AtomicUsize>);

struct LiveSession(Arc<AtomicUsize>);

impl SessionCounter {
    fn enter(&self) -> LiveSession {
        self.0.fetch_add(1, Ordering::Relaxed);
        LiveSession(self.0.clone())
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub fn router(app: Arc<App>) -> Router {
    let web = ServeDir::new(&app.config.server.web_root).append_index_html_on_directories(true);
    let mut face = Router::new()
        .route(
            "/api/face",
            axum::routing::post(faces::upload)
                .delete(faces::clear)
                // The handler reads the body itself, within swap.max_image_bytes.
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route(
            "/api/face/gallery/{name}",
            axum::routing::post(faces::pick_gallery),
        )
        .route("/api/voice", get(voices::current).put(voices::choose));
    if !app.config.cluster.redis_url.is_empty() {
        // A roulette page that moved to this node keeps its first node's origin and sets its
        // face here. The calls carry the session's bearer token, never cookies.
        use axum::http::{header, Method};
        face = face.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::Any)
                .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        );
    }
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(face)
        .route(
            "/whip/{room}",
            axum::routing::post(whip::publish).layer(sdp_limit()),
        )
        .route(
            "/whip/{room}/{id}",
            axum::routing::patch(whip::whip_patch)
                .delete(whip::whip_delete)
                .layer(sdp_limit()),
        )
        .route(
            "/whep/{room}/{participant}",
            axum::routing::post(whip::watch).layer(sdp_limit()),
        )
        .route(
            "/whep/{room}/{participant}/{id}",
            axum::routing::patch(whip::whep_patch)
                .delete(whip::whep_delete)
                .layer(sdp_limit()),
        )
        .route_service(
            "/watch/{room}/{participant}",
            tower_http::services::ServeFile::new(app.config.server.web_root.join("watch.html")),
        )
        .route("/api/gallery", get(faces::gallery))
        .route("/api/gallery/{name}", get(faces::gallery_image))
        .route("/ws", get(websocket))
        .fallback_service(web)
        .layer(axum::middleware::from_fn(refuse_long_paths))
        .with_state(app)
}

/// Largest SDP offer or candidate fragment a WHIP or WHEP request may carry.
fn sdp_limit() -> axum::extract::DefaultBodyLimit {
    axum::extract::DefaultBodyLimit::max(64 * 1024)
}

/// Longest URL path served: past it, 414 with a JSON error (the file server would fail on it).
const MAX_PATH: usize = 1024;

async fn refuse_long_paths(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.uri().path().len() > MAX_PATH {
        return (
            StatusCode::URI_TOO_LONG,
            Json(serde_json::json!({
                "code": "path_too_long",
                "message": format!("the path is longer than {MAX_PATH} bytes"),
            })),
        )
            .into_response();
    }
    next.run(request).await
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    let stats = app.directory.stats();
    let draining = *app.shutdown.borrow();
    let body = serde_json::json!({
        "status": if draining { "draining" } else { "ok" },
        "rooms": stats.rooms,
        "participants": stats.participants,
        "roulette": app.roulette.stats().online,
        "swapper": app.swapper,
    });
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        crate::metrics::render(&app.registry),
    )
        .into_response()
}

/// What the edge counts: joins, and joins and connections refused, by the code the client got.
#[derive(Debug, Default)]
pub(crate) struct EdgeMetrics {
    joins: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
}

impl EdgeMetrics {
    fn register(&self, registry: &mut Registry, sessions: &SessionCounter) {
        registry.register(
            "facerelay_joins",
            "Participants who joined, by place (room or roulette)",
            self.joins.clone(),
        );
        registry.register(
            "facerelay_joins_refused",
            "Joins and signalling connections refused, by the error code the client got",
            self.refused.clone(),
        );
        let sessions = sessions.clone();
        let mut scraped = Scraped::default();
        scraped.gauge(
            "facerelay_signalling_sessions",
            "Open signalling WebSockets.",
            move || sessions.0.load(Ordering::Relaxed) as u64,
        );
        scraped.register(registry);
    }

    pub(crate) fn joined(&self, place: &'static str) {
        self.joins.get_or_create(&vec![("place", place)]).inc();
    }

    pub(crate) fn refused(&self, code: &'static str) {
        self.refused.get_or_create(&vec![("reason", code)]).inc();
    }
}

async fn websocket(
    State(app): State<Arc<App>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if *app.shutdown.borrow() {
        app.edge.refused("shutting_down");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "code": "shutting_down",
                "message": "this server is shutting down; try again in a moment",
            })),
        )
            .into_response();
    }
    // Caps before the upgrade: a refused connection costs no session.
    let client = client_ip(peer.ip(), &headers, &app.config.server);
    let slot = match app.connections.enter(client, &app.config.server) {
        Ok(slot) => slot,
        Err((status, code, message)) => {
            app.edge.refused(code);
            return (
                status,
                Json(serde_json::json!({ "code": code, "message": message })),
            )
                .into_response();
        }
    };
    // The transport accepts up to 16x the protocol limit so that an oversized message can be
    // answered with a clear error before the socket closes; beyond that the socket just drops.
    let hard_limit = app.config.server.max_message_bytes.saturating_mul(16);
    upgrade
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| async move {
            session::run(socket, app).await;
            drop(slot);
        })
}

/// Signalling connections by IP address, for `server.max_sessions` and
/// `server.max_sessions_per_ip`.
#[derive(Default)]
pub(crate) struct Connections {
    by_ip: Mutex<HashMap<std::net::IpAddr, usize>>,
}

/// One counted connection; dropping it uncounts it.
pub(crate) struct ConnectionSlot {
    connections: Arc<Connections>,
    ip: std::net::IpAddr,
}

impl Connections {
    fn enter(
        self: &Arc<Self>,
        ip: std::net::IpAddr,
        config: &crate::config::ServerConfig,
    ) -> Result<ConnectionSlot, (StatusCode, &'static str, String)> {
        let mut by_ip = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = by_ip.values().sum();
        if total >= config.max_sessions {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "server_full",
                "this server has no room for another connection; try again later".into(),
            ));
        }
        let here = by_ip.entry(ip).or_default();
        if *here >= config.max_sessions_per_ip {
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                format!(
                    "more than {} connections from one address",
                    config.max_sessions_per_ip
                ),
            ));
        }
        *here += 1;
        Ok(ConnectionSlot {
            connections: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut by_ip = self
            .connections
            .by_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

/// Serves until `shutdown` resolves, then drains for the grace period
/// (`server.shutdown_grace_secs`): every session says bye and closes its peer connection, joins
/// and new signalling sockets are refused (`shutting_down`), and the server goes on accepting
/// connections, so that a load balancer's probe of `/healthz` reads 503 `draining` instead of
/// hanging. The drain ends when the grace period is over, or earlier when `finish` resolves;
/// then requests in flight finish, idle connections close, and this returns.
///
/// Each connection is served by hyper's HTTP/1 server with a header-read timeout
/// (`server.header_timeout_secs`, which also bounds the TLS handshake when `tls` is given): a
/// client that never finishes its request head is disconnected. WebSocket upgrades leave hyper
/// once upgraded.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<Arc<rustls::ServerConfig>>,
    drain: watch::Sender<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    finish: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = Duration::from_secs(app.config.server.shutdown_grace_secs);
    let header_timeout = Duration::from_secs(app.config.server.header_timeout_secs);
    let routes = router(app.clone());
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    // Every connection task holds a receiver; the server waits for them all to go.
    let (open_tx, open_rx) = watch::channel(());
    let (stop_tx, _) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut finish = std::pin::pin!(finish);
    // When the drain ends, once it has begun.
    let mut drain_ends: Option<tokio::time::Instant> = None;
    loop {
        let drain_over = async {
            match drain_ends {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown, if drain_ends.is_none() => {
                tracing::info!(
                    grace_secs = grace.as_secs(),
                    "shutting down: refusing new joins, closing sessions, /healthz answers 503"
                );
                app.router.leave().await;
                app.directory.begin_shutdown();
                app.roulette.begin_shutdown();
                let _ = drain.send(true);
                drain_ends = Some(tokio::time::Instant::now() + grace);
                continue;
            }
            _ = drain_over => break,
            _ = &mut finish, if drain_ends.is_some() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(
            routes
                .clone()
                .layer(axum::Extension(axum::extract::ConnectInfo(addr))),
        );
        let stop = stop_tx.subscribe();
        let open = open_rx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, service, header_timeout, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, service, header_timeout, stop).await
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
            drop(open);
        });
    }
    drop(listener);
    let left = app.live_sessions();
    if left > 0 {
        tracing::warn!(
            sessions = left,
            "grace period over; exiting with sessions open"
        );
    }
    // Requests in flight finish; idle connections close.
    let _ = stop_tx.send(true);
    drop(open_rx);
    let _ = tokio::time::timeout(Duration::from_secs(1), open_tx.closed()).await;
    Ok(())
}

/// One HTTP/1 connection (plain or TLS) until it ends, or until `stop` asks it to finish its
/// request in flight and close.
async fn serve_connection<I, S>(
    io: I,
    service: S,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Send,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = http
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP connection ended");
                }
                break;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
