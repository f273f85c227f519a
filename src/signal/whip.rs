//! WHIP ingest (RFC 9725) and WHEP egress: publishing into a room, and watching one
//! participant, with one HTTP request instead of a signalling socket.
//!
//! Each WHIP or WHEP session is a participant like a page's: the endpoint runs the same
//! session driver and state machine ([`super::session::run_channel`]) and speaks for its
//! client over channels, so it joins the room, counts against the same limits, has its face
//! swapped and disclosed the same way. A WHIP publisher receives nothing
//! ([`Receives::Nobody`]); a WHEP viewer receives the one participant it asked for, fixed in
//! its answer ([`Receives::Only`]; the session ends when that participant leaves).
//!
//! The answer carries the server's ICE candidates (gathered before it is sent); the client
//! may trickle its own with `PATCH` (`application/trickle-ice-sdpfrag`, `If-Match` with the
//! resource's `ETag`). `DELETE` ends the session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::mpsc;

use super::participant::Receives;
use super::protocol::{ClientMessage, ServerMessage};
use super::{token, App};
use crate::config::IceServer;
use crate::room::RoomId;
use crate::rtc::IceCandidate;
use crate::voice::Voice;

/// The header of a WHIP response that carries the face-API token of the new participant.
pub const TOKEN_HEADER: &str = "facerelay-token";

/// How long the server waits for its session to join and answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// After the answer, the server's candidates come within this quiet time (host candidates are
/// gathered at once); at most `GATHER_MAX` in all.
const GATHER_QUIET: Duration = Duration::from_millis(200);
const GATHER_MAX: Duration = Duration::from_secs(2);

/// Live WHIP and WHEP sessions, by resource id.
#[derive(Default)]
pub(crate) struct Resources(Mutex<HashMap<String, Resource>>);

struct Resource {
    /// `/whip/ROOM` or `/whep/ROOM/PARTICIPANT`: the collection the resource belongs to.
    collection: String,
    etag: String,
    client: mpsc::Sender<ClientMessage>,
}

impl Resources {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Resource>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions alive now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

fn problem(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({ "code": code, "message": message.into() })),
    )
        .into_response()
}

/// The HTTP status of a join or negotiation refusal, by its signalling code.
fn status_of(code: &str) -> StatusCode {
    match code {
        "token_required" | "bad_token" | "token_expired" | "token_wrong_room" => {
            StatusCode::UNAUTHORIZED
        }
        "not_allowed" => StatusCode::FORBIDDEN,
        "no_h264" => StatusCode::UNPROCESSABLE_ENTITY,
        "room_full" | "server_full" | "shutting_down" | "cluster_unavailable" => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        "internal" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next()?.trim().to_ascii_lowercase())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether the key sent is the room's key, in a time that tells nothing of where they differ
/// or how long the key is: both are hashed (SHA-256) and the digests compared in constant time.
fn same_secret(sent: &str, key: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let (sent, key) = (
        Sha256::digest(sent.as_bytes()),
        Sha256::digest(key.as_bytes()),
    );
    sent.as_slice().ct_eq(key.as_slice()).into()
}

#[derive(serde::Deserialize, Default)]
pub(super) struct Options {
    /// The display name (without join tokens; a token names the participant itself).
    name: Option<String>,
    /// A gallery face to wear from the first frame (WHIP).
    face: Option<String>,
    /// A voice disguise from the first audio packet (WHIP): `lower`, `higher`, `neutral`,
    /// `robot` (or `none`).
    voice: Option<String>,
}

/// `POST /whip/{room}`: publish into `room`.
pub(super) async fn publish(
    State(app): State<Arc<App>>,
    Path(room): Path<String>,
    Query(options): Query<Options>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let unauthorised = |message: &str| problem(StatusCode::UNAUTHORIZED, "unauthorised", message);
    let secret = &app.config.server.token_secret;
    let (name, join_token) = if secret.is_empty() {
        let keys = &app.config.server.whip_keys;
        let Some(key) = keys.get(room.trim()).or_else(|| keys.get("*")) else {
            return unauthorised("WHIP is not open for this room: the server has no publish key for it (server.whip_keys) and no join tokens");
        };
        match bearer(&headers) {
            Some(sent) if same_secret(sent, key) => {}
            Some(_) => return unauthorised("wrong publish key"),
            None => return unauthorised("send the room's publish key as Authorization: Bearer"),
        }
        (options.name.unwrap_or_else(|| "WHIP".into()), None)
    } else {
        let Some(sent) = bearer(&headers) else {
            return unauthorised("send a join token for this room as Authorization: Bearer");
        };
        match token::verify(secret, sent, Some(room.as_str())) {
            Ok(claims) if !claims.publish => {
                return problem(
                    StatusCode::FORBIDDEN,
                    "not_allowed",
                    "this token does not allow publishing",
                )
            }
            Ok(claims) => (claims.name, Some(sent.to_owned())),
            Err(e) => return problem(StatusCode::UNAUTHORIZED, e.code(), e.to_string()),
        }
    };
    let voice = match options
        .voice
        .as_deref()
        .map(str::parse::<Voice>)
        .transpose()
    {
        Ok(v) => v,
        Err(message) => return problem(StatusCode::BAD_REQUEST, "bad_voice", &message),
    };
    let collection = format!("/whip/{room}");
    let open = Open {
        collection,
        room,
        name,
        join_token,
        receives: Receives::Nobody,
        face: options.face,
        voice,
    };
    negotiate(app, open, &headers, body).await
}

/// `POST /whep/{room}/{participant}`: watch one participant of `room` (its id or its display
/// name).
pub(super) async fn watch(
    State(app): State<Arc<App>>,
    Path((room, who)): Path<(String, String)>,
    Query(options): Query<Options>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let secret = &app.config.server.token_secret;
    let (name, join_token) = if secret.is_empty() {
        (options.name.unwrap_or_else(|| "Viewer".into()), None)
    } else {
        let Some(sent) = bearer(&headers) else {
            return problem(
                StatusCode::UNAUTHORIZED,
                "token_required",
                "send a join token for this room as Authorization: Bearer",
            );
        };
        match token::verify(secret, sent, Some(room.as_str())) {
            Ok(claims) => (claims.name, Some(sent.to_owned())),
            Err(e) => return problem(StatusCode::UNAUTHORIZED, e.code(), e.to_string()),
        }
    };
    let max = app.config.rooms.max_name_chars;
    let publisher = RoomId::parse(&room, max)
        .ok()
        .and_then(|id| app.directory.video_publisher(&id, &who));
    let Some(publisher) = publisher else {
        return problem(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("nobody called {who} publishes video in room {room} on this server"),
        );
    };
    let open = Open {
        collection: format!("/whep/{room}/{who}"),
        room,
        name,
        join_token,
        receives: Receives::Only(publisher),
        face: None,
        voice: None,
    };
    negotiate(app, open, &headers, body).await
}

/// A WHIP or WHEP session to open.
struct Open {
    collection: String,
    room: String,
    name: String,
    join_token: Option<String>,
    receives: Receives,
    face: Option<String>,
    voice: Option<Voice>,
}

/// Joins, sets the face, answers the offer; registers the resource.
async fn negotiate(app: Arc<App>, open: Open, headers: &HeaderMap, body: Bytes) -> Response {
    if media_type(headers).as_deref() != Some("application/sdp") {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_sdp",
            "the body must be an SDP offer (Content-Type: application/sdp)",
        );
    }
    let Ok(offer) = String::from_utf8(body.to_vec()) else {
        return problem(StatusCode::BAD_REQUEST, "bad_sdp", "the SDP is not UTF-8");
    };
    if let Err(e) = crate::rtc::check_offer(&offer) {
        let code = match e {
            crate::rtc::RtcError::NoH264 => "no_h264",
            _ => "bad_sdp",
        };
        return problem(status_of(code), code, e.to_string());
    }
    if app.live_sessions() >= app.config.server.max_sessions {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_full",
            "this server has no room for another session",
        );
    }
    let (client, client_rx) = mpsc::channel(64);
    let (server_tx, mut server) = mpsc::channel(256);
    tokio::spawn(super::session::run_channel(
        app.clone(),
        open.receives,
        client_rx,
        server_tx,
    ));
    let refused = |msg: ServerMessage| match msg {
        ServerMessage::Error { code, message } => problem(status_of(&code), &code, message),
        _ => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "unexpected answer",
        ),
    };
    let _ = client
        .send(ClientMessage::Join {
            room: open.room.clone(),
            name: open.name,
            token: open.join_token,
        })
        .await;
    // The join: a welcome, a redirect (another node hosts the room) or a refusal.
    let (face_token, ice_servers) = loop {
        match next(&mut server).await {
            Some(ServerMessage::Welcome {
                token, ice_servers, ..
            }) => break (token, ice_servers),
            Some(ServerMessage::Redirect { url }) => {
                let location = format!("{}{}", url.trim_end_matches('/'), open.collection);
                return (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, location)],
                )
                    .into_response();
            }
            Some(msg @ ServerMessage::Error { .. }) => return refused(msg),
            Some(_) => continue,
            None => return gone(),
        }
    };
    // A chosen face is on before any video is relayed.
    if let Some(face) = open.face {
        let mut auth = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {face_token}")) {
            auth.insert(header::AUTHORIZATION, value);
        }
        let picked = super::faces::pick_gallery(State(app.clone()), Path(face), auth).await;
        if !picked.status().is_success() {
            return picked;
        }
    }
    // So is a chosen voice, before any audio.
    if let Some(voice) = open.voice {
        match app.session_of(&face_token) {
            Some((_, _, rights)) if !rights.face => {
                return problem(
                    StatusCode::FORBIDDEN,
                    "not_allowed",
                    "this token does not allow choosing a face or a voice",
                )
            }
            Some((participant, commands, _)) => {
                super::voices::set(&app, &participant, &commands, voice)
            }
            None => return gone(),
        }
    }
    let _ = client.send(ClientMessage::Offer { sdp: offer }).await;
    let answer = loop {
        match next(&mut server).await {
            Some(ServerMessage::Answer { sdp }) => break sdp,
            Some(msg @ ServerMessage::Error { .. }) => return refused(msg),
            Some(_) => continue,
            None => return gone(),
        }
    };
    let mut candidates = Vec::new();
    let gathering = tokio::time::Instant::now() + GATHER_MAX;
    while let Ok(Some(msg)) = tokio::time::timeout_at(
        gathering.min(tokio::time::Instant::now() + GATHER_QUIET),
        server.recv(),
    )
    .await
    {
        if let ServerMessage::Candidate { candidate } = msg {
            candidates.push(candidate.candidate);
        }
    }
    let answer = with_candidates(&answer, &candidates);

    let id = format!("{:032x}", rand::random::<u128>());
    let etag = format!("\"{:016x}\"", rand::random::<u64>());
    let location = format!("{}/{id}", open.collection);
    app.whip.lock().insert(
        id.clone(),
        Resource {
            collection: open.collection,
            etag: etag.clone(),
            client,
        },
    );
    // The session's later messages have no client to go to; when it ends, so does the resource.
    let app2 = app.clone();
    tokio::spawn(async move {
        while let Some(msg) = server.recv().await {
            if let ServerMessage::Error { code, message } = msg {
                tracing::debug!(resource = %id, code, message, "WHIP/WHEP session");
            }
        }
        app2.whip.lock().remove(&id);
    });
    let mut response = (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_owned()),
            (header::LOCATION, location),
            (header::ETAG, etag),
        ],
        answer,
    )
        .into_response();
    if matches!(open.receives, Receives::Nobody) {
        if let Ok(value) = HeaderValue::from_str(&face_token) {
            response.headers_mut().insert(TOKEN_HEADER, value);
        }
    }
    for link in ice_links(&ice_servers) {
        response.headers_mut().append(header::LINK, link);
    }
    response
}

/// The session's STUN/TURN servers (those a browser gets in its `welcome`, TURN credentials
/// included) as WHIP and WHEP give them to a client: one `Link` header per URL with
/// `rel="ice-server"`, and `username`, `credential` and `credential-type="password"` where the
/// server has them.
fn ice_links(servers: &[IceServer]) -> Vec<HeaderValue> {
    let quoted = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut links = Vec::new();
    for server in servers {
        for url in &server.urls {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(user), Some(credential)) = (&server.username, &server.credential) {
                link.push_str(&format!(
                    "; username={}; credential={}; credential-type=\"password\"",
                    quoted(user),
                    quoted(credential)
                ));
            }
            // A URL or credential no header can carry is left out, not sent broken.
            links.extend(HeaderValue::from_str(&link).ok());
        }
    }
    links
}

async fn next(server: &mut mpsc::Receiver<ServerMessage>) -> Option<ServerMessage> {
    tokio::time::timeout(ANSWER_TIMEOUT, server.recv())
        .await
        .ok()
        .flatten()
}

fn gone() -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the session ended before it answered",
    )
}

/// The answer with the server's candidates in its first media section (the others are
/// bundled with it) and the end of candidates.
fn with_candidates(sdp: &str, candidates: &[String]) -> String {
    let Some(first) = sdp.find("\r\nm=") else {
        return sdp.to_owned();
    };
    let end = sdp[first + 2..]
        .find("\r\nm=")
        .map_or(sdp.len(), |i| first + 2 + i);
    let end = if end == sdp.len() && sdp.ends_with("\r\n") {
        end - 2
    } else {
        end
    };
    let mut lines = String::new();
    for c in candidates {
        lines.push_str("\r\na=");
        lines.push_str(c);
    }
    lines.push_str("\r\na=end-of-candidates");
    format!("{}{}{}", &sdp[..end], lines, &sdp[end..])
}

/// The resource at `collection/id`, if it lives.
fn resource(
    app: &App,
    collection: &str,
    id: &str,
) -> Option<(String, mpsc::Sender<ClientMessage>)> {
    let resources = app.whip.lock();
    let r = resources.get(id).filter(|r| r.collection == collection)?;
    Some((r.etag.clone(), r.client.clone()))
}

fn unknown() -> Response {
    problem(StatusCode::NOT_FOUND, "not_found", "no such session")
}

/// `PATCH` on a session: trickled ICE candidates of the client.
async fn trickle(
    app: &App,
    collection: &str,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let Some((etag, client)) = resource(app, collection, id) else {
        return unknown();
    };
    if media_type(headers).as_deref() != Some("application/trickle-ice-sdpfrag") {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_sdpfrag",
            "the body must be application/trickle-ice-sdpfrag",
        );
    }
    match headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        None => {
            return problem(
                StatusCode::PRECONDITION_REQUIRED,
                "if_match_required",
                "send the session's ETag in If-Match",
            )
        }
        Some("*") => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no_ice_restart",
                "ICE restarts are not supported: start a new session",
            )
        }
        Some(tag) if tag.trim() != etag => {
            return problem(
                StatusCode::PRECONDITION_FAILED,
                "etag_mismatch",
                "If-Match does not name this session's ETag",
            )
        }
        Some(_) => {}
    }
    let Ok(frag) = std::str::from_utf8(body) else {
        return problem(StatusCode::BAD_REQUEST, "bad_sdpfrag", "not UTF-8");
    };
    let mut mid = None;
    for line in frag.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m.to_owned());
        } else if let Some(c) = line.strip_prefix("a=") {
            if c.starts_with("candidate:") {
                let candidate = IceCandidate {
                    candidate: c.to_owned(),
                    sdp_mid: mid.clone().or_else(|| Some("0".into())),
                    sdp_mline_index: Some(0),
                    username_fragment: None,
                };
                if client
                    .send(ClientMessage::Candidate {
                        candidate: Some(candidate),
                    })
                    .await
                    .is_err()
                {
                    return unknown();
                }
            }
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `DELETE` on a session: it ends, and everything it held is freed.
fn end(app: &App, collection: &str, id: &str) -> Response {
    let Some(r) = app
        .whip
        .lock()
        .remove(id)
        .filter(|r| r.collection == collection)
    else {
        return unknown();
    };
    // Dropping the channel ends the session: it leaves the room and closes its connection.
    let _ = r.client.try_send(ClientMessage::Leave);
    StatusCode::OK.into_response()
}

pub(super) async fn whip_patch(
    State(app): State<Arc<App>>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    trickle(&app, &format!("/whip/{room}"), &id, &headers, &body).await
}

pub(super) async fn whip_delete(
    State(app): State<Arc<App>>,
    Path((room, id)): Path<(String, String)>,
) -> Response {
    end(&app, &format!("/whip/{room}"), &id)
}

pub(super) async fn whep_patch(
    State(app): State<Arc<App>>,
    Path((room, who, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    trickle(&app, &format!("/whep/{room}/{who}"), &id, &headers, &body).await
}

pub(super) async fn whep_delete(
    State(app): State<Arc<App>>,
    Path((room, who, id)): Path<(String, String, String)>,
) -> Response {
    end(&app, &format!("/whep/{room}/{who}"), &id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_go_into_the_first_media_section() {
        let sdp = "v=0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n";
        let out = with_candidates(sdp, &["candidate:1 1 udp 1 127.0.0.1 5000 typ host".into()]);
        assert_eq!(
            out,
            "v=0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n"
        );
        let one = "v=0\r\nm=video 9 X 96\r\na=mid:0\r\n";
        assert_eq!(
            with_candidates(one, &[]),
            "v=0\r\nm=video 9 X 96\r\na=mid:0\r\na=end-of-candidates\r\n"
        );
        assert!(
            same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("ab", "abc")
        );
    }

    #[test]
    fn ice_servers_become_link_headers_one_per_url() {
        let servers = [
            IceServer {
                urls: vec!["stun:stun.example.net:3478".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec![
                    "turn:turn.example.net:3478?transport=udp".into(),
                    "turns:turn.example.net:5349".into(),
                ],
                username: Some("1700000000:ann".into()),
                credential: Some(r#"a"b\c"#.into()),
            },
            IceServer {
                urls: vec!["turn:bad\nline".into()],
                username: None,
                credential: None,
            },
        ];
        let links: Vec<String> = ice_links(&servers)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let turn = r#"; rel="ice-server"; username="1700000000:ann"; credential="a\"b\\c"; credential-type="password""#;
        assert_eq!(
            links,
            [
                r#"<stun:stun.example.net:3478>; rel="ice-server""#.to_owned(),
                format!("<turn:turn.example.net:3478?transport=udp>{turn}"),
                format!("<turns:turn.example.net:5349>{turn}"),
            ]
        );
    }
}
