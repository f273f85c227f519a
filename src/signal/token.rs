//! Room access tokens (`server.token_secret`): signed, expiring join tokens (JWT, HS256) that
//! name a room (or the roulette), the display name and the rights of whoever holds one.
//! `facerelay token` issues them; a join must carry one when the secret is set. Without the
//! secret, rooms are open.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Seconds a token may be past its expiry (clocks of the issuer and the server differ).
const LEEWAY_SECS: u64 = 5;

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinClaims {
    /// The room it opens; none for the roulette.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The display name the holder joins under (the one the page sends is ignored).
    pub name: String,
    /// The holder may send its camera and microphone.
    pub publish: bool,
    /// The holder may choose a face (upload or gallery).
    pub face: bool,
    /// Expiry and issue time, seconds since the Unix epoch.
    pub exp: u64,
    pub iat: u64,
}

/// What a holder may do once joined (everything when tokens are off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rights {
    pub publish: bool,
    pub face: bool,
}

impl Rights {
    pub const ALL: Rights = Rights {
        publish: true,
        face: true,
    };
}

/// Why a join's token was refused; each has a stable error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("this server needs a join token (ask whoever invited you for a link)")]
    Required,
    #[error("the join token is not valid: {0}")]
    Bad(String),
    #[error("the join token has expired (ask for a new link)")]
    Expired,
    #[error("the join token is for {expected}, not {asked}")]
    WrongRoom { expected: String, asked: String },
}

impl TokenError {
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Required => "token_required",
            TokenError::Bad(_) => "bad_token",
            TokenError::Expired => "token_expired",
            TokenError::WrongRoom { .. } => "token_wrong_room",
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token for `room` (`None`: the roulette) valid for `ttl`.
pub fn issue(
    secret: &str,
    room: Option<&str>,
    name: &str,
    rights: Rights,
    ttl: Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    let iat = now_secs();
    let claims = JoinClaims {
        room: room.map(str::to_owned),
        name: name.to_owned(),
        publish: rights.publish,
        face: rights.face,
        exp: iat.saturating_add(ttl.as_secs()),
        iat,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes())?,
    )
}

/// The claims of `token` if it is signed with `secret`, unexpired and opens `room` (`None`:
/// the roulette).
pub fn verify(secret: &str, token: &str, room: Option<&str>) -> Result<JoinClaims, TokenError> {
    let claims = decode(secret, token)?;
    let place = |r: Option<&str>| r.map_or("the roulette".to_owned(), |r| format!("room {r}"));
    if claims.room.as_deref() != room {
        return Err(TokenError::WrongRoom {
            expected: place(claims.room.as_deref()),
            asked: place(room),
        });
    }
    Ok(claims)
}

/// The claims of a token signed with `secret` and not expired, whatever place it opens.
pub fn decode(secret: &str, token: &str) -> Result<JoinClaims, TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = LEEWAY_SECS;
    validation.set_required_spec_claims(&["exp"]);
    let key = DecodingKey::from_secret(secret.as_bytes())
        .map_err(|e| TokenError::Bad(format!("unusable secret: {e}")))?;
    let claims = jsonwebtoken::decode::<JoinClaims>(token, &key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::InvalidSignature => TokenError::Bad("wrong signature".into()),
            ErrorKind::Json(_) | ErrorKind::MissingRequiredClaim(_) => {
                TokenError::Bad("it does not name a room, a name and rights".into())
            }
            _ => TokenError::Bad("malformed".into()),
        })?
        .claims;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a secret of the operator";

    #[test]
    fn a_token_opens_its_room_only_until_it_expires() {
        let rights = Rights {
            publish: false,
            face: true,
        };
        let t = issue(
            SECRET,
            Some("lab"),
            "Ann",
            rights,
            Duration::from_secs(3600),
        )
        .unwrap();
        let c = verify(SECRET, &t, Some("lab")).unwrap();
        assert_eq!((c.name.as_str(), c.publish, c.face), ("Ann", false, true));
        assert!(matches!(
            verify(SECRET, &t, Some("other")),
            Err(TokenError::WrongRoom { .. })
        ));
        assert_eq!(
            verify(SECRET, &t, None).unwrap_err().code(),
            "token_wrong_room"
        );
        assert_eq!(
            verify("another secret", &t, Some("lab"))
                .unwrap_err()
                .code(),
            "bad_token"
        );
        assert_eq!(
            verify(SECRET, "not.a.token", Some("lab"))
                .unwrap_err()
                .code(),
            "bad_token"
        );
        assert_eq!(
            verify(SECRET, "", Some("lab")).unwrap_err().code(),
            "bad_token"
        );
        let roulette = issue(SECRET, None, "Ann", Rights::ALL, Duration::from_secs(60)).unwrap();
        assert!(verify(SECRET, &roulette, None).is_ok());
    }

    #[test]
    fn an_expired_or_unsigned_token_is_refused() {
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &JoinClaims {
                room: Some("lab".into()),
                name: "Ann".into(),
                publish: true,
                face: true,
                exp: now_secs() - 600,
                iat: now_secs() - 4200,
            },
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            verify(SECRET, &expired, Some("lab")).unwrap_err(),
            TokenError::Expired
        );
        // "alg": "none" is not accepted, nor are claims without rights.
        let header = base64_url(r#"{"alg":"none","typ":"JWT"}"#);
        let body = base64_url(
            r#"{"room":"lab","name":"Ann","publish":true,"face":true,"exp":99999999999,"iat":0}"#,
        );
        let unsigned = format!("{header}.{body}.");
        assert_eq!(
            verify(SECRET, &unsigned, Some("lab")).unwrap_err().code(),
            "bad_token"
        );
        #[derive(Serialize)]
        struct Partial {
            room: &'static str,
            exp: u64,
        }
        let partial = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Partial {
                room: "lab",
                exp: now_secs() + 60,
            },
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            verify(SECRET, &partial, Some("lab")).unwrap_err().code(),
            "bad_token"
        );
    }

    fn base64_url(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }
}
