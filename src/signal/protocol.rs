//! The signalling protocol: JSON messages tagged by `type`, one WebSocket per participant.
//! `docs/signalling.md` documents it with an example exchange.

use serde::{Deserialize, Serialize};

use crate::config::IceServer;
use crate::room::roulette::NextReason;
use crate::room::ParticipantInfo;
use crate::rtc::IceCandidate;

/// Browser → server.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Enter a room by name under a display name, with a join token where the server asks
    /// for one (`server.token_secret`).
    Join {
        room: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// The participant's SDP offer (its camera and microphone).
    Offer { sdp: String },
    /// The participant's SDP answer to a server offer.
    Answer { sdp: String },
    /// A trickled ICE candidate; `null` marks the end of gathering.
    Candidate { candidate: Option<IceCandidate> },
    /// Leave the room or the roulette (the socket stays open for another join).
    Leave,
    /// The participant turned its camera or microphone on or off (the others are told).
    Media { camera: bool, microphone: bool },
    /// See yourself as the others would, before joining: a seat of your own, alone, that sends
    /// your video back after the frame stage (with the face you choose through the face API).
    /// `leave` ends it. Where the server asks for join tokens, any valid one admits a preview.
    Preview {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Enter the roulette: be paired with a random stranger.
    Roulette {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// A move ticket from `roulette-move`: the partner it names waits on this node.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ticket: Option<String>,
    },
    /// Roulette: end this pair and be paired with someone else.
    Next,
    /// Roulette: leave it (same as `leave`).
    Stop,
    /// Roulette: end this pair and never be paired with this partner again.
    Block,
    /// Roulette: report the partner (ends the pair and blocks; logged and counted).
    Report,
}

impl ClientMessage {
    pub const TYPES: &'static [&'static str] = &[
        "join",
        "offer",
        "answer",
        "candidate",
        "leave",
        "media",
        "preview",
        "roulette",
        "next",
        "stop",
        "block",
        "report",
    ];
}

/// Server → browser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage {
    /// The join succeeded: who you are, who is here, which ICE servers to use.
    #[serde(rename_all = "camelCase")]
    Welcome {
        id: String,
        /// The room joined; `null` in the roulette and in a preview.
        room: Option<String>,
        participants: Vec<ParticipantInfo>,
        ice_servers: Vec<IceServer>,
        /// Authorises this participant's calls to the face API (`Authorization: Bearer …`).
        token: String,
        /// In a cluster, the pages of the other live nodes: where to go if this one goes away.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        nodes: Vec<String>,
    },
    /// In a cluster: the room (or the roulette) lives on another node, whose page is `url`;
    /// open it there and join again.
    Redirect {
        url: String,
    },
    /// In a cluster: the roulette partner found for you waits on another node, whose page is
    /// `url`; the socket closes next. Open a socket there and send `roulette` with `ticket`
    /// (valid for a few seconds, once) to meet them.
    RouletteMove {
        url: String,
        ticket: String,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        id: String,
    },
    /// Someone's details changed, e.g. `swapped`: their video is now (or no longer) face-swapped.
    ParticipantUpdated {
        participant: ParticipantInfo,
    },
    Offer {
        sdp: String,
    },
    Answer {
        sdp: String,
    },
    Candidate {
        candidate: IceCandidate,
    },
    /// Something went wrong; `code` is stable, `message` is for people.
    Error {
        code: String,
        message: String,
    },
    /// The server ends the session (shutdown); the socket closes next.
    Bye {
        reason: String,
    },
    /// To the wearer of a chosen face: what the others see of it now (`reason` when the face
    /// could not be swapped: `no_face` or `busy`).
    FaceState {
        state: crate::room::FaceState,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        reason: Option<String>,
    },
    /// To a speaker with a voice chosen: what the others hear of it now (`reason` when the
    /// voice could not be disguised and silence goes out: `error`, `busy` or `stalled`).
    VoiceState {
        state: crate::voice::VoiceState,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        reason: Option<String>,
    },
    /// Roulette: waiting for a partner (`position` 1 = next in line).
    RouletteWaiting {
        position: usize,
        online: usize,
    },
    /// Roulette: a new partner; its media arrives with the next offer.
    RoulettePaired {
        partner: ParticipantInfo,
    },
    /// Roulette: the partner left (`next`, `stop` or `disconnected`); waiting again.
    RouletteEnded {
        reason: NextReason,
    },
}

impl ServerMessage {
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// A message that could not be taken, with the error to send back.
#[derive(Debug, PartialEq)]
pub struct Rejected {
    pub code: &'static str,
    pub message: String,
}

/// Parses one text message, telling malformed JSON apart from an unknown `type`.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, Rejected> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Rejected {
        code: "bad_message",
        message: format!("not valid JSON: {e}"),
    })?;
    let Some(kind) = value.get("type").and_then(|t| t.as_str()) else {
        return Err(Rejected {
            code: "bad_message",
            message: "a message must be a JSON object with a string field \"type\"".into(),
        });
    };
    let kind = kind.to_owned();
    if !ClientMessage::TYPES.contains(&kind.as_str()) {
        return Err(Rejected {
            code: "unknown_type",
            message: format!(
                "unknown message type {:?}; expected one of {}",
                truncate(&kind, 40),
                ClientMessage::TYPES.join(", ")
            ),
        });
    }
    serde_json::from_value(value).map_err(|e| Rejected {
        code: "bad_message",
        message: format!("invalid {kind} message: {e}"),
    })
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_client_message() {
        assert_eq!(
            parse_client_message(r#"{"type":"join","room":"r","name":"Ann"}"#),
            Ok(ClientMessage::Join {
                room: "r".into(),
                name: "Ann".into(),
                token: None,
            })
        );
        assert_eq!(
            parse_client_message(r#"{"type":"roulette","name":"Ann","token":"t"}"#),
            Ok(ClientMessage::Roulette {
                name: "Ann".into(),
                token: Some("t".into()),
                ticket: None,
            })
        );
        assert_eq!(
            parse_client_message(r#"{"type":"leave"}"#),
            Ok(ClientMessage::Leave)
        );
        assert_eq!(
            parse_client_message(r#"{"type":"preview"}"#),
            Ok(ClientMessage::Preview { token: None })
        );
        let c = parse_client_message(
            r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
        )
        .unwrap();
        assert!(
            matches!(c, ClientMessage::Candidate { candidate: Some(c) } if c.sdp_mid.as_deref() == Some("0"))
        );
        assert_eq!(
            parse_client_message(r#"{"type":"candidate","candidate":null}"#),
            Ok(ClientMessage::Candidate { candidate: None })
        );
    }

    #[test]
    fn malformed_and_unknown_messages_get_distinct_codes() {
        let code = |t: &str| parse_client_message(t).unwrap_err().code;
        assert_eq!(code("{not json"), "bad_message");
        assert_eq!(code(""), "bad_message");
        assert_eq!(code("[1,2]"), "bad_message");
        assert_eq!(code(r#"{"type":42}"#), "bad_message");
        assert_eq!(code(r#"{"type":"dance"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"join","room":"r"}"#), "bad_message");
        assert_eq!(
            code(r#"{"type":"join","room":"r","name":"a","x":1}"#),
            "bad_message"
        );
        assert_eq!(code(r#"{"type":"offer","sdp":5}"#), "bad_message");
        // The type is echoed cut to 40 characters, whatever its length.
        let long = format!(r#"{{"type":"{}"}}"#, "é".repeat(1000));
        let short = format!(r#"{{"type":"{}"}}"#, "é".repeat(40));
        assert_eq!(
            parse_client_message(&long).unwrap_err().message,
            parse_client_message(&short).unwrap_err().message
        );
    }

    #[test]
    fn server_messages_serialise_as_documented() {
        let m = ServerMessage::Welcome {
            id: "p1".into(),
            room: Some("r".into()),
            participants: vec![],
            ice_servers: vec![],
            token: "t".into(),
            nodes: vec![],
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"welcome","id":"p1","room":"r","participants":[],"iceServers":[],"token":"t"}"#
        );
        let e = ServerMessage::error("room_full", "room is full");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"error","code":"room_full","message":"room is full"}"#
        );
        let moved = ServerMessage::Redirect {
            url: "http://10.0.0.2:8080/".into(),
        };
        assert_eq!(
            serde_json::to_string(&moved).unwrap(),
            r#"{"type":"redirect","url":"http://10.0.0.2:8080/"}"#
        );
        let left = ServerMessage::ParticipantLeft { id: "p2".into() };
        assert_eq!(
            serde_json::to_string(&left).unwrap(),
            r#"{"type":"participant-left","id":"p2"}"#
        );
    }
}
