//! The face API: a participant picks the face it wants to wear (an uploaded photo, a gallery
//! face) or none. Calls carry the session's token (`Authorization: Bearer …`, given in
//! `welcome`). The photo is analysed in memory, off the async threads, and dropped; only the
//! identity latent stays, for the session only. A failed pick keeps the previous choice.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;

use super::{App, SessionCommand};
use crate::room::FaceState;
use crate::swap::picker::{ChosenFace, PickError};

pub(super) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({ "code": code, "message": message.into() })),
    )
        .into_response()
}

fn pick_error(e: PickError) -> Response {
    let status = match &e {
        PickError::TooLarge { .. } | PickError::TooManyPixels { .. } => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        PickError::NotAnImage(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        PickError::NoFace | PickError::SeveralFaces(_) => StatusCode::UNPROCESSABLE_ENTITY,
        PickError::NotInGallery(_) => StatusCode::NOT_FOUND,
        PickError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        PickError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.code(), e.to_string())
}

/// The participant the request's token belongs to; `choosing`: the request chooses a face,
/// which a join token may not allow (`not_allowed`).
pub(super) fn caller(
    app: &App,
    headers: &HeaderMap,
    choosing: bool,
) -> Result<(String, tokio::sync::mpsc::Sender<SessionCommand>), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let unauthorised = || {
        error(
            StatusCode::UNAUTHORIZED,
            "not_joined",
            "join a room or the roulette first, and send its token as Authorization: Bearer",
        )
    };
    let (participant, commands, rights) = app
        .session_of(token.ok_or_else(unauthorised)?)
        .ok_or_else(unauthorised)?;
    if choosing && !rights.face {
        return Err(error(
            StatusCode::FORBIDDEN,
            "not_allowed",
            "the link you joined with does not allow choosing a face",
        ));
    }
    Ok((participant, commands))
}

/// Runs a pick off the async threads, then makes it the participant's face.
/// `who`: the caller, as [`caller`] found it.
async fn choose(
    app: Arc<App>,
    who: (String, tokio::sync::mpsc::Sender<SessionCommand>),
    pick: impl FnOnce(&crate::swap::picker::FacePicker) -> Result<ChosenFace, PickError>
        + Send
        + 'static,
) -> Response {
    let (participant, commands) = who;
    if app.picker.is_none() {
        return pick_error(PickError::Unavailable(
            "the swap models are not installed (see models/README.md)".into(),
        ));
    }
    let worker = app.clone();
    let picked = tokio::task::spawn_blocking(move || match &worker.picker {
        Some(picker) => pick(picker),
        None => Err(PickError::Unavailable("no picker".into())),
    })
    .await
    .unwrap_or_else(|e| Err(PickError::Failed(e.to_string())));
    match picked {
        Ok(face) => {
            let first = app.faces.get(&participant).is_none();
            if let Err(full) = app.faces.set(&participant, face.source) {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    full.code(),
                    format!("{full}; you stay in the call without a swapped face"),
                );
            }
            if first {
                // Until the live swap reports its first frames, they fail closed: blurred
                // (held back), or as they are where the operator chose `pass`.
                let state = if app.config.swap.on_failure == crate::swap::live::OnFailure::Pass {
                    FaceState::Unswapped
                } else {
                    FaceState::Blurred
                };
                let _ = commands.try_send(SessionCommand::Face {
                    state,
                    reason: None,
                });
            }
            tracing::info!(participant = %participant, "face chosen");
            let preview = base64::engine::general_purpose::STANDARD.encode(&face.preview_png);
            Json(serde_json::json!({
                "swapped": true,
                "preview": format!("data:image/png;base64,{preview}"),
            }))
            .into_response()
        }
        Err(e) => pick_error(e),
    }
}

/// The query of `POST /api/face`.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct UploadQuery {
    /// The uploader confirms they have the right to use the face in the photo.
    #[serde(default)]
    consent: Option<String>,
}

/// `POST /api/face?consent=true`: the body is a JPEG, PNG or WebP photo of one face. The
/// uploader must confirm they have the right to use it; a server with
/// `swap.sources = "gallery"` takes no uploads at all.
///
/// Everything that costs nothing is checked before the body is read: the token, the mode, the
/// consent, the declared length, and the upload slots (one photo at a time per participant, a
/// few at a time per server, so uploads cannot pile up decoded images in memory). The body
/// must then arrive within `swap.upload_timeout_ms` and stay within `swap.max_image_bytes`.
pub(super) async fn upload(
    State(app): State<Arc<App>>,
    Query(query): Query<UploadQuery>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let who = match caller(&app, &parts.headers, true) {
        Ok(c) => c,
        Err(response) => return response,
    };
    if app.config.swap.sources == crate::swap::FaceSources::Gallery {
        return error(
            StatusCode::FORBIDDEN,
            "uploads_disabled",
            "this server takes no photo uploads: pick a face from its gallery",
        );
    }
    if !matches!(query.consent.as_deref(), Some("true" | "yes" | "1")) {
        return error(
            StatusCode::BAD_REQUEST,
            "consent_required",
            "confirm that you have the right to use the face in this photo (it is yours, or its owner agreed): send consent=true",
        );
    }
    let max = app.config.swap.max_image_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return pick_error(PickError::TooLarge {
            len: declared.unwrap_or(0) as usize,
            max,
        });
    }
    let holder = app.clone();
    let Some(_slot) = holder.uploads.enter(&who.0) else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "upload_busy",
            "another photo is being analysed; try again in a moment",
        );
    };
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let timeout = std::time::Duration::from_millis(app.config.swap.upload_timeout_ms);
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "upload_timeout",
                "the photo did not arrive in time",
            )
        }
        Ok(Err(_)) => {
            return pick_error(PickError::TooLarge {
                len: limit + 1,
                max,
            })
        }
        Ok(Ok(bytes)) => bytes,
    };
    choose(app, who, move |picker| picker.from_photo(&bytes)).await
}

/// Who is uploading a photo now: one upload at a time per participant, at most
/// [`UPLOADS_AT_ONCE`] per server.
#[derive(Debug, Default)]
pub(crate) struct Uploads {
    busy: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Photos analysed at once, server-wide: each may take a decoded image of up to
/// `swap.max_upload_pixels` in memory.
pub(crate) const UPLOADS_AT_ONCE: usize = 2;

/// A taken upload slot; dropping it frees it.
pub(crate) struct UploadSlot<'a> {
    uploads: &'a Uploads,
    participant: String,
}

impl Uploads {
    pub(crate) fn enter(&self, participant: &str) -> Option<UploadSlot<'_>> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if busy.len() >= UPLOADS_AT_ONCE || busy.contains(participant) {
            return None;
        }
        busy.insert(participant.to_owned());
        Some(UploadSlot {
            uploads: self,
            participant: participant.to_owned(),
        })
    }
}

impl Drop for UploadSlot<'_> {
    fn drop(&mut self) {
        let mut busy = self.uploads.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.remove(&self.participant);
    }
}

/// `POST /api/face/gallery/{name}`: wear a face of the operator's gallery.
pub(super) async fn pick_gallery(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let who = match caller(&app, &headers, true) {
        Ok(c) => c,
        Err(response) => return response,
    };
    choose(app, who, move |picker| picker.from_gallery(&name)).await
}

/// `DELETE /api/face`: no swap.
pub(super) async fn clear(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let (participant, commands) = match caller(&app, &headers, false) {
        Ok(c) => c,
        Err(response) => return response,
    };
    app.faces.clear(&participant);
    let _ = commands.try_send(SessionCommand::Face {
        state: FaceState::None,
        reason: None,
    });
    Json(serde_json::json!({ "swapped": false })).into_response()
}

/// `GET /api/gallery`: the names of the gallery's faces, whether swapping is available, and
/// which swapper runs.
pub(super) async fn gallery(State(app): State<Arc<App>>) -> Response {
    let names = app.picker.as_ref().map(|p| p.gallery()).unwrap_or_default();
    Json(serde_json::json!({
        "available": app.picker.is_some(),
        "swapper": app.swapper,
        "uploads": app.config.swap.sources == crate::swap::FaceSources::Any,
        "faces": names,
    }))
    .into_response()
}

/// `GET /api/gallery/{name}`: a gallery image (the operator put it there to be shown).
pub(super) async fn gallery_image(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Response {
    let Some(picker) = &app.picker else {
        return pick_error(PickError::NotInGallery(name));
    };
    match picker.gallery_image(&name) {
        Ok(bytes) => {
            let kind = image::guess_format(&bytes)
                .map(|f| f.to_mime_type())
                .unwrap_or("application/octet-stream");
            ([(header::CONTENT_TYPE, kind)], bytes).into_response()
        }
        Err(e) => pick_error(e),
    }
}
