//! Time-limited TURN credentials (`ice.turn_secret`, `ice.turn_ttl_secs`).
//!
//! A TURN server that shares a secret with facerelay (coturn's `use-auth-secret` with the same
//! `static-auth-secret`) accepts any username of the form `<unix expiry>:<anything>` until that
//! time, with the credential `base64(HMAC-SHA1(secret, username))`. facerelay makes one such
//! pair for each participant in its `welcome`, so no long-lived TURN password reaches a browser
//! and a credential stops working `ice.turn_ttl_secs` after the join.

use std::fmt::Display;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::{IceConfig, IceServer};

impl IceConfig {
    /// [`IceConfig::servers_for`] a participant joining now (its `welcome`).
    pub fn servers_now(&self, participant: impl Display) -> Vec<IceServer> {
        self.servers_for(participant, SystemTime::now())
    }

    /// The STUN/TURN servers to hand one participant at `now`: `ice.servers` as configured,
    /// except that, with `ice.turn_secret` set, every entry with a `turn:` or `turns:` URL and
    /// neither username nor credential gets a username `"<expiry>:<participant>"` (expiry =
    /// `now` + `ice.turn_ttl_secs`, in Unix seconds) and its credential. Entries with their own
    /// username or credential, and STUN-only entries, are left as they are.
    pub fn servers_for(&self, participant: impl Display, now: SystemTime) -> Vec<IceServer> {
        if self.turn_secret.is_empty() {
            return self.servers.clone();
        }
        let unix = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let username = format!("{}:{participant}", unix.saturating_add(self.turn_ttl_secs));
        let credential = turn_credential(&self.turn_secret, &username);
        self.servers
            .iter()
            .map(|server| {
                let mut server = server.clone();
                if server.username.is_none()
                    && server.credential.is_none()
                    && server.urls.iter().any(|u| is_turn_url(u))
                {
                    server.username = Some(username.clone());
                    server.credential = Some(credential.clone());
                }
                server
            })
            .collect()
    }
}

/// `turn:…` or `turns:…`, the scheme in any case.
fn is_turn_url(url: &str) -> bool {
    let scheme = url.split(':').next().unwrap_or_default();
    scheme.eq_ignore_ascii_case("turn") || scheme.eq_ignore_ascii_case("turns")
}

/// The password a TURN server with the shared `secret` expects for `username`:
/// base64 (standard alphabet, padded) of HMAC-SHA1(secret, username).
pub fn turn_credential(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::time::Duration;

    fn at(unix: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix)
    }

    fn server(urls: &[&str], user: Option<&str>, pass: Option<&str>) -> IceServer {
        IceServer {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            username: user.map(str::to_owned),
            credential: pass.map(str::to_owned),
        }
    }

    #[test]
    fn turn_credential_known_answer() {
        // Expected values computed independently with Python's standard library:
        //   python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(
        //     b"north-wind-turn-secret-0123456789", b"1700086400:p42", hashlib.sha1).digest()).decode())'
        // and the same with b"0123456789abcdef", b"1700000060:p1".
        assert_eq!(
            turn_credential("north-wind-turn-secret-0123456789", "1700086400:p42"),
            "LbF8sh+wTWIJEimZSOVXxyW/KDw="
        );
        assert_eq!(
            turn_credential("0123456789abcdef", "1700000060:p1"),
            "FfHyzJA4pNxEzHpCfaKdWI4TYbE="
        );
    }

    #[test]
    fn turn_entries_get_expiring_credentials_and_others_stay() {
        let mut ice = Config::defaults().ice;
        ice.turn_secret = "north-wind-turn-secret-0123456789".into();
        ice.turn_ttl_secs = 86_400;
        ice.servers = vec![
            server(&["stun:stun.example.org:3478"], None, None),
            server(
                &[
                    "turn:turn.example.org:3478?transport=udp",
                    "TURNS:turn.example.org:5349",
                ],
                None,
                None,
            ),
            server(&["turn:other.example.org:3478"], Some("u"), Some("p")),
            server(&["turn:half.example.org:3478"], Some("only-user"), None),
        ];
        let got = ice.servers_for("p42", at(1_700_000_000));
        assert_eq!(got.len(), 4);
        // STUN only: untouched.
        assert_eq!(got[0], ice.servers[0]);
        // Expiry = now + ttl; the credential is the known answer above.
        assert_eq!(got[1].urls, ice.servers[1].urls);
        assert_eq!(got[1].username.as_deref(), Some("1700086400:p42"));
        assert_eq!(
            got[1].credential.as_deref(),
            Some("LbF8sh+wTWIJEimZSOVXxyW/KDw=")
        );
        // Entries that bring their own username or credential: untouched.
        assert_eq!(got[2], ice.servers[2]);
        assert_eq!(got[3], ice.servers[3]);

        // Another secret, participant and ttl: the second known answer.
        ice.turn_secret = "0123456789abcdef".into();
        ice.turn_ttl_secs = 60;
        let other = ice.servers_for("p1", at(1_700_000_000));
        assert_eq!(other[1].username.as_deref(), Some("1700000060:p1"));
        assert_eq!(
            other[1].credential.as_deref(),
            Some("FfHyzJA4pNxEzHpCfaKdWI4TYbE=")
        );
    }

    #[test]
    fn without_a_secret_the_servers_are_handed_out_as_configured() {
        let mut ice = Config::defaults().ice;
        assert!(ice.turn_secret.is_empty());
        assert_eq!(ice.turn_ttl_secs, 86_400);
        ice.servers = vec![server(&["turn:turn.example.org:3478"], None, None)];
        assert_eq!(ice.servers_for("p1", SystemTime::now()), ice.servers);
    }

    #[test]
    fn keys_are_read_from_the_environment_and_checked() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        // As docker-compose.yml sets them.
        let c = Config::load_with_env(
            None,
            env(&[
                (
                    "FACERELAY_ICE__SERVERS",
                    r#"[{ urls = ["turn:call.example.org:3478?transport=udp", "turn:call.example.org:3478?transport=tcp"] }]"#,
                ),
                ("FACERELAY_ICE__TURN_SECRET", "3f9c2a7b1d5e8f60a4c7b2e9d1f3a5c7"),
                ("FACERELAY_ICE__TURN_TTL_SECS", "3600"),
            ]),
        )
        .unwrap();
        let got = c.ice.servers_for("p7", at(1_000));
        assert_eq!(got[0].urls.len(), 2);
        assert_eq!(got[0].username.as_deref(), Some("4600:p7"));
        assert_eq!(
            got[0].credential,
            Some(turn_credential(
                "3f9c2a7b1d5e8f60a4c7b2e9d1f3a5c7",
                "4600:p7"
            ))
        );

        let e = Config::load_with_env(None, env(&[("FACERELAY_ICE__TURN_SECRET", "short")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ice.turn_secret"), "{e}");
        let e = Config::load_with_env(None, env(&[("FACERELAY_ICE__TURN_TTL_SECS", "59")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ice.turn_ttl_secs"), "{e}");
    }
}
