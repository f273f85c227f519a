//! The voice API: a participant chooses the voice the others hear (`none` or a disguise
//! preset). `PUT /api/voice` with `{"voice": "lower"}` sets it, `GET /api/voice` reads it with
//! the presets on offer; both carry the session's token (`Authorization: Bearer …`, given in
//! `welcome`) like the face API, and a join link that does not allow choosing a face does
//! not allow choosing a voice either.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{App, SessionCommand};
use crate::voice::{Voice, VoiceState};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VoiceRequest {
    voice: String,
}

fn available() -> Vec<&'static str> {
    Voice::ALL.iter().map(|v| v.as_str()).collect()
}

/// `GET /api/voice`: the caller's voice and the presets.
pub(super) async fn current(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let (participant, _) = match super::faces::caller(&app, &headers, false) {
        Ok(c) => c,
        Err(response) => return response,
    };
    Json(serde_json::json!({
        "voice": app.voices.get(&participant),
        "available": available(),
    }))
    .into_response()
}

/// `PUT /api/voice`: sets the caller's voice (from its next audio packet on).
pub(super) async fn choose(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (participant, commands) = match super::faces::caller(&app, &headers, true) {
        Ok(c) => c,
        Err(response) => return response,
    };
    let voice = match serde_json::from_slice::<VoiceRequest>(&body)
        .map_err(|e| format!("send {{\"voice\": NAME}}: {e}"))
        .and_then(|r| r.voice.parse::<Voice>())
    {
        Ok(v) => v,
        Err(message) => return super::faces::error(StatusCode::BAD_REQUEST, "bad_voice", message),
    };
    set(&app, &participant, &commands, voice);
    Json(serde_json::json!({ "voice": voice })).into_response()
}

/// Makes `voice` the participant's and discloses it at once: the others and the speaker know
/// before the next packet is disguised (the stream's reports follow: disguised, silenced).
pub(super) fn set(
    app: &App,
    participant: &str,
    commands: &tokio::sync::mpsc::Sender<SessionCommand>,
    voice: Voice,
) {
    app.voices.set(participant, voice);
    let state = if voice == Voice::None {
        VoiceState::None
    } else {
        VoiceState::Disguised
    };
    tracing::info!(participant = %participant, voice = voice.as_str(), "voice chosen");
    let _ = commands.try_send(SessionCommand::Voice {
        state,
        reason: None,
    });
}
