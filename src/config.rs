//! Configuration: `config/default.toml` (embedded in the binary), an optional `--config FILE`
//! laid over it, then `FACERELAY_*` environment variables; the result is validated into
//! [`Config`]. Unknown keys are an error at every level, so a typo never goes unnoticed.
//!
//! Environment variables name a key as `FACERELAY_<SECTION>__<KEY>`, for example
//! `FACERELAY_SERVER__LISTEN=0.0.0.0:8080`. The value is read by the type of the key's default:
//! a text key takes the variable's text as it is (an all-digit secret stays text); any other
//! key reads it as a TOML value (`42`, `true`, `["a", "b"]`, `{ room = "key" }`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod proxy;
mod turn;
pub use proxy::ProxyNet;
pub use turn::turn_credential;

/// The defaults, documented key by key.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

const ENV_PREFIX: &str = "FACERELAY_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The cause (not found, not allowed) follows from the error chain, once.
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid TOML in {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub ice: IceConfig,
    pub media: MediaConfig,
    pub rooms: RoomsConfig,
    pub roulette: RouletteSettings,
    pub cluster: ClusterConfig,
    pub models: crate::infer::ModelsConfig,
    pub swap: crate::swap::SwapConfig,
    pub log: LogConfig,
}

/// `[cluster]`: several nodes sharing rooms through Redis (`crate::cluster`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://…` of the store the nodes share; empty: one node, nothing shared.
    pub redis_url: String,
    /// This node's page as browsers reach it (`https://node1.example.org/`); empty: the
    /// address `server.listen` is bound to (when that is a specific address).
    pub node_url: String,
    /// This node's name in the registry; empty: `node<N>` with a number from Redis.
    pub node_id: String,
    /// How often the node reports its load and renews its leases, milliseconds.
    pub heartbeat_ms: u64,
    /// How long a node, and a room on it, count as live without a heartbeat, milliseconds.
    pub lease_ms: u64,
    /// Longest a Redis call of a join may take before the join fails, milliseconds.
    pub redis_timeout_ms: u64,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// How the server writes its log (to standard error).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line per event; colour only on a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the HTTP/WebSocket server binds.
    pub listen: SocketAddr,
    /// Folder of static files served at `/`.
    pub web_root: PathBuf,
    /// Largest accepted signalling message, bytes.
    pub max_message_bytes: usize,
    /// Seconds the first shutdown signal waits for peers to close before exiting anyway.
    pub shutdown_grace_secs: u64,
    /// Seconds a signalling connection may stay without joining a room or the roulette.
    pub join_timeout_secs: u64,
    /// Seconds a client may take to send a request's head (the request line and headers).
    pub header_timeout_secs: u64,
    /// Seconds one signalling message may take to be written; a client that does not read its
    /// socket for that long is disconnected (and leaves its room).
    pub send_timeout_secs: u64,
    /// Most signalling connections at once, and from one IP address.
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    /// Secret of the join tokens (HS256); empty: rooms are open, no token asked.
    pub token_secret: String,
    /// PEM certificate chain and private key: HTTPS and WSS served directly. Both empty:
    /// plain HTTP (behind a TLS proxy, or on localhost).
    pub tls_cert: String,
    pub tls_key: String,
    /// WHIP publish keys by room (`"*"`: any room), for servers without join tokens; a WHIP
    /// client sends its room's key as `Authorization: Bearer …`.
    pub whip_keys: std::collections::BTreeMap<String, String>,
    /// Reverse proxies (addresses or CIDR ranges) whose `proxy_header` names the client: for a
    /// TCP peer among them, the client address (per-address cap, logs) is read from that
    /// header; from any other peer the header is ignored. Empty: the TCP peer is the client.
    pub trusted_proxies: Vec<ProxyNet>,
    /// Which header the trusted proxies write: `x-forwarded-for` or `forwarded` (RFC 7239).
    pub proxy_header: ProxyHeader,
}

/// The header a trusted proxy names the client in (`server.proxy_header`). Only one is read: a
/// proxy passes the other one through as the client sent it.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyHeader {
    #[default]
    XForwardedFor,
    Forwarded,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IceConfig {
    /// IP address the server advertises in its ICE candidates (1:1 NAT); empty = the real one.
    #[serde(deserialize_with = "empty_is_none")]
    pub public_ip: Option<IpAddr>,
    /// Address the media sockets bind; `0.0.0.0` gathers every interface.
    pub bind_ip: IpAddr,
    /// First and last UDP port for media sockets, inclusive; `[0, 0]` = ephemeral ports.
    pub udp_port_range: [u16; 2],
    /// STUN/TURN servers handed to browsers (through [`IceConfig::servers_for`]).
    pub servers: Vec<IceServer>,
    /// Secret shared with the TURN server (coturn's `static-auth-secret`): with it, `turn:`
    /// entries without their own credentials get time-limited ones per participant. Empty: off.
    pub turn_secret: String,
    /// How long such a credential is valid after the join, seconds.
    pub turn_ttl_secs: u64,
    /// Include loopback candidates (tests and single-machine demos).
    pub include_loopback: bool,
    /// Seconds without ICE traffic before a participant counts as gone.
    pub disconnect_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Target bitrate of each re-encoded stream, bits per second.
    pub video_bitrate_bps: u32,
    /// Frame rate the encoder's rate control assumes.
    pub max_frame_rate: f32,
    /// Frames between forced IDRs (0 = only on request).
    pub keyframe_interval: u32,
    /// Minimum milliseconds between two PLIs sent to one publisher.
    pub pli_throttle_ms: u64,
    /// Largest accepted video frame, pixels (width × height).
    pub max_frame_pixels: u32,
    /// Threads for decode/encode work; 0 = one per CPU.
    pub codec_threads: usize,
    /// Send each participant its own processed video, so it sees itself as the others do.
    pub self_view: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoomsConfig {
    /// Most participants in one room.
    pub max_participants: usize,
    /// Most participants on the whole server.
    pub max_total_participants: usize,
    /// Longest room name, characters.
    pub max_name_chars: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouletteSettings {
    /// Seconds two people whose pair ended are kept apart while others wait.
    pub cooldown_secs: u64,
    /// Most participants in the roulette at once.
    pub max_participants: usize,
}

impl Config {
    /// The embedded defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment passed in (tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut value = parse_toml(DEFAULT_TOML, "the built-in defaults")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let overlay = parse_toml(&text, &path.display().to_string())?;
            merge(&mut value, overlay);
        }
        let mut vars: Vec<_> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        vars.sort();
        for (name, raw) in vars {
            apply_env(&mut value, &name, &raw)?;
        }
        // The path of the offending key goes with the message (`ice.udp_port_range: …`).
        let config: Config = serde_path_to_error::deserialize(value).map_err(
            |e: serde_path_to_error::Error<toml::de::Error>| {
                ConfigError::Invalid(format!("{}: {}", e.path(), e.inner().message()))
            },
        )?;
        config.validate()?;
        Ok(config)
    }

    /// The defaults alone (tests and tools).
    pub fn defaults() -> Self {
        Self::load_with_env(None, std::iter::empty()).expect("built-in defaults are valid")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        let [lo, hi] = self.ice.udp_port_range;
        if (lo == 0) != (hi == 0) || lo > hi {
            return bad("ice.udp_port_range must be [first, last] with first <= last, or [0, 0]");
        }
        if self.server.max_message_bytes < 1024 {
            return bad("server.max_message_bytes must be at least 1024");
        }
        if self.server.join_timeout_secs == 0 {
            return bad("server.join_timeout_secs must be at least 1");
        }
        if self.server.header_timeout_secs == 0 {
            return bad("server.header_timeout_secs must be at least 1");
        }
        if self.server.send_timeout_secs == 0 {
            return bad("server.send_timeout_secs must be at least 1");
        }
        if self.server.max_sessions == 0 || self.server.max_sessions_per_ip == 0 {
            return bad("server.max_sessions and server.max_sessions_per_ip must be at least 1");
        }
        let c = &self.cluster;
        if !c.redis_url.is_empty() {
            if c.heartbeat_ms == 0 || c.lease_ms < 2 * c.heartbeat_ms {
                return bad("cluster.lease_ms must be at least twice cluster.heartbeat_ms (and that at least 1)");
            }
            if c.redis_timeout_ms == 0 {
                return bad("cluster.redis_timeout_ms must be at least 1");
            }
            if c.node_url.is_empty() && self.server.listen.ip().is_unspecified() {
                return bad("cluster.node_url must name this node's page when server.listen binds every address");
            }
        }
        if self.server.tls_cert.is_empty() != self.server.tls_key.is_empty() {
            return bad("server.tls_cert and server.tls_key go together: set both, or neither");
        }
        if self.server.whip_keys.values().any(|k| k.len() < 16) {
            return bad("server.whip_keys: each publish key must be at least 16 characters");
        }
        let secret = self.server.token_secret.len();
        if secret > 0 && secret < 32 {
            return bad("server.token_secret must be empty (rooms open) or at least 32 characters");
        }
        if self.media.video_bitrate_bps < 50_000 {
            return bad("media.video_bitrate_bps must be at least 50000");
        }
        if !(1.0..=120.0).contains(&self.media.max_frame_rate) {
            return bad("media.max_frame_rate must be between 1 and 120");
        }
        if self.media.max_frame_pixels < 64 * 64 {
            return bad("media.max_frame_pixels is too small");
        }
        if self.rooms.max_participants < 2 {
            return bad("rooms.max_participants must be at least 2");
        }
        if self.rooms.max_total_participants == 0 || self.rooms.max_name_chars == 0 {
            return bad("rooms.max_total_participants and rooms.max_name_chars must be positive");
        }
        for server in &self.ice.servers {
            if server.urls.is_empty() {
                return bad("every ice.servers entry needs at least one URL");
            }
        }
        let turn_secret = self.ice.turn_secret.len();
        if turn_secret > 0 && turn_secret < 16 {
            return bad(
                "ice.turn_secret must be empty (no TURN credentials) or at least 16 characters",
            );
        }
        if self.ice.turn_ttl_secs < 60 {
            return bad("ice.turn_ttl_secs must be at least 60");
        }
        self.models.validate().map_err(ConfigError::Invalid)?;
        self.swap.validate().map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The defaults, on loopback only: an ephemeral HTTP port and loopback ICE candidates.
    /// For tests and benches that run server and clients in one process.
    pub fn loopback() -> Self {
        let mut c = Self::defaults();
        c.server.listen = "127.0.0.1:0".parse().expect("valid address");
        c.ice.bind_ip = "127.0.0.1".parse().expect("valid address");
        c.ice.include_loopback = true;
        c
    }

    /// Threads of the codec pool.
    pub fn codec_threads(&self) -> usize {
        match self.media.codec_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

fn parse_toml(text: &str, origin: &str) -> Result<toml::Value, ConfigError> {
    text.parse::<toml::Table>()
        .map(toml::Value::Table)
        .map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.message().to_owned(),
        })
}

/// Lays `overlay` over `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn apply_env(value: &mut toml::Value, name: &str, raw: &str) -> Result<(), ConfigError> {
    let err = |message: String| ConfigError::Env {
        name: name.to_owned(),
        message,
    };
    let path = &name[ENV_PREFIX.len()..];
    let Some((section, key)) = path.split_once("__") else {
        return Err(err(
            "expected FACERELAY_<SECTION>__<KEY>, e.g. FACERELAY_SERVER__LISTEN".into(),
        ));
    };
    let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
    let table = value
        .as_table_mut()
        .and_then(|t| t.get_mut(&section))
        .and_then(|s| s.as_table_mut())
        .ok_or_else(|| err(format!("unknown section [{section}]")))?;
    let Some(default) = table.get(&key) else {
        return Err(err(format!("unknown key {key} in [{section}]")));
    };
    // A text key takes the text as it is: `1234567890123456` is a secret, not a number.
    let parsed = if default.is_str() {
        toml::Value::String(raw.to_owned())
    } else {
        // A value that is no TOML (`nonsense` for a number) goes on as text, so that the
        // error names the key and the type it wants.
        format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
    };
    table.insert(key, parsed);
    Ok(())
}

/// An optional value whose default is written `""` (every key has a default in
/// `config/default.toml`): the empty string is `None`, anything else is parsed.
fn empty_is_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text = String::deserialize(deserializer)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn errors_name_the_key_and_a_missing_file_says_why_once() {
        let e = Config::load_with_env(None, env(&[("FACERELAY_ICE__UDP_PORT_RANGE", "[1]")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ice.udp_port_range: invalid length 1"), "{e}");
        let e = Config::load_with_env(None, env(&[("FACERELAY_ROOMS__MAX_PARTICIPANTS", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rooms.max_participants: invalid type"), "{e}");
        let e = Config::load_with_env(Some(Path::new("/nonexistent/facerelay.toml")), env(&[]))
            .unwrap_err();
        let chain = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(chain.matches("No such file").count(), 1, "{chain}");
        assert!(chain.contains("/nonexistent/facerelay.toml"), "{chain}");
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::defaults();
        assert_eq!(c.media.keyframe_interval, 120);
        assert!(c.rooms.max_participants >= 2);
    }

    #[test]
    fn env_overrides_values_of_any_type() {
        let c = Config::load_with_env(
            None,
            env(&[
                ("FACERELAY_SERVER__LISTEN", "127.0.0.1:9999"),
                ("FACERELAY_ROOMS__MAX_PARTICIPANTS", "3"),
                ("FACERELAY_ICE__INCLUDE_LOOPBACK", "true"),
                ("OTHER_VAR", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:9999");
        assert_eq!(c.rooms.max_participants, 3);
        assert!(c.ice.include_loopback);
    }

    #[test]
    fn env_values_are_read_by_the_type_of_their_key() {
        let c = Config::load_with_env(
            None,
            env(&[
                // All digits, for a text key: the secret, not the number.
                ("FACERELAY_ICE__TURN_SECRET", "1234567890123456"),
                (
                    "FACERELAY_SERVER__TOKEN_SECRET",
                    "12345678901234567890123456789012",
                ),
                // Spaces and TOML-looking text stay as they are.
                ("FACERELAY_CLUSTER__NODE_ID", "node one [eu] = 2"),
                ("FACERELAY_ICE__PUBLIC_IP", "203.0.113.10"),
                (
                    "FACERELAY_SERVER__TRUSTED_PROXIES",
                    r#"["172.30.0.2", "fd00::/8"]"#,
                ),
                ("FACERELAY_SERVER__PROXY_HEADER", "forwarded"),
                ("FACERELAY_ICE__UDP_PORT_RANGE", "[40000, 40199]"),
                (
                    "FACERELAY_SERVER__WHIP_KEYS",
                    r#"{ studio = "0123456789abcdef" }"#,
                ),
            ]),
        )
        .unwrap();
        assert_eq!(c.ice.turn_secret, "1234567890123456");
        assert_eq!(c.server.token_secret, "12345678901234567890123456789012");
        assert_eq!(c.cluster.node_id, "node one [eu] = 2");
        assert_eq!(c.ice.public_ip, Some("203.0.113.10".parse().unwrap()));
        let proxies: Vec<String> = c
            .server
            .trusted_proxies
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(proxies, ["172.30.0.2/32", "fd00::/8"]);
        assert_eq!(c.server.proxy_header, ProxyHeader::Forwarded);
        assert_eq!(c.ice.udp_port_range, [40000, 40199]);
        assert_eq!(c.server.whip_keys["studio"], "0123456789abcdef");
        assert_eq!(Config::defaults().ice.public_ip, None, "empty by default");
        // A bad value names its key and why.
        for (name, value, why) in [
            ("FACERELAY_ICE__PUBLIC_IP", "203.0.113", "ice.public_ip"),
            (
                "FACERELAY_SERVER__TRUSTED_PROXIES",
                "10.0.0.2",
                "expected a sequence",
            ),
            (
                "FACERELAY_SERVER__TRUSTED_PROXIES",
                r#"["10.0.0.7/24"]"#,
                "10.0.0.0/24",
            ),
        ] {
            let e = Config::load_with_env(None, env(&[(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{name}={value}: {e}");
        }
    }

    /// `${NAME}`, `${NAME:-default}` and `${NAME:?message}` of a Compose file, with `values`.
    fn compose_substitute(text: &str, values: &[(&str, &str)]) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = start + rest[start..].find('}').expect("closed ${");
            let inner = &rest[start + 2..end];
            let name = inner.split([':', '-', '?']).next().unwrap();
            let value = values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
            match (value, inner.split_once(":-")) {
                (Some(v), _) => out.push_str(v),
                (None, Some((_, default))) => out.push_str(default),
                (None, None) => panic!("the test gives no value for ${{{name}}}"),
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn every_variable_the_deployment_and_the_docs_set_is_a_key_that_loads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // docker-compose.yml: each node's environment, as Compose gives it (one node's own
        // variables after the shared ones), with a numeric secret.
        let compose = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
        let values = [
            ("DOMAIN", "call.example.org"),
            ("PUBLIC_IP", "203.0.113.10"),
            ("TURN_SECRET", "1234567890123456"),
            ("MODELS_PROVIDER", "cpu"),
        ];
        let mut shared = Vec::new();
        let mut nodes: Vec<Vec<(String, String)>> = Vec::new();
        for line in compose.lines() {
            let line = line.trim_start();
            if line.starts_with("facerelay-") && line.ends_with(':') {
                nodes.push(Vec::new());
            }
            let Some((name, value)) = line.split_once(": ") else {
                continue;
            };
            if !name.starts_with(ENV_PREFIX) {
                continue;
            }
            let value = value.trim();
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            let pair = (name.to_owned(), compose_substitute(unquoted, &values));
            match nodes.last_mut() {
                Some(node) => node.push(pair),
                None => shared.push(pair),
            }
        }
        assert_eq!(nodes.len(), 2, "two nodes in docker-compose.yml");
        assert!(
            shared.len() >= 8,
            "the shared environment was read: {shared:?}"
        );
        for node in &nodes {
            let vars = shared.iter().chain(node).cloned();
            let c = Config::load_with_env(None, vars).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.ice.public_ip, Some("203.0.113.10".parse().unwrap()));
            assert_eq!(c.ice.turn_secret, "1234567890123456");
            assert!(!c.server.trusted_proxies.is_empty());
            assert!(c.cluster.node_url.starts_with("https://call.example.org"));
        }

        // Every FACERELAY_ variable the docs, scripts and Dockerfile name is a key: set to its
        // own default, it loads.
        let defaults = parse_toml(DEFAULT_TOML, "defaults").unwrap();
        let mut files = vec![root.join("README.md"), root.join("Dockerfile")];
        for dir in ["docs", "scripts", "deploy", "config"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                files.push(entry.unwrap().path());
            }
        }
        let mut seen = 0;
        for file in files {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            for (at, _) in text.match_indices(ENV_PREFIX) {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                let Some((section, key)) = name[ENV_PREFIX.len()..].split_once("__") else {
                    continue; // FACERELAY_PACKAGED_DIR and the like: the tools' own variables
                };
                if section.is_empty() || key.is_empty() {
                    continue; // the pattern itself, FACERELAY_<SECTION>__<KEY>
                }
                let default = defaults
                    .get(section.to_ascii_lowercase())
                    .and_then(|s| s.get(key.to_ascii_lowercase()))
                    .unwrap_or_else(|| panic!("{}: {name} is no key", file.display()));
                let value = match default {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Config::load_with_env(None, [(name.clone(), value)])
                    .unwrap_or_else(|e| panic!("{}: {name}: {e}", file.display()));
                seen += 1;
            }
        }
        assert!(seen >= 20, "the docs name variables: {seen} found");
    }

    #[test]
    fn unknown_keys_are_rejected_everywhere() {
        let e = Config::load_with_env(None, env(&[("FACERELAY_SERVER__LISTN", "x")]));
        assert!(matches!(e, Err(ConfigError::Env { .. })), "{e:?}");
        let e = Config::load_with_env(None, env(&[("FACERELAY_NOPE", "x")]));
        assert!(matches!(e, Err(ConfigError::Env { .. })), "{e:?}");

        let dir = std::env::temp_dir().join(format!("facerelay-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "[server]\nlisen = \"0.0.0.0:1\"\n").unwrap();
        let e = Config::load_with_env(Some(&file), env(&[])).unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
        std::fs::write(&file, "[rooms]\nmax_participants = 5\n").unwrap();
        let c = Config::load_with_env(Some(&file), env(&[])).unwrap();
        assert_eq!(c.rooms.max_participants, 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_values_are_explained() {
        let e = Config::load_with_env(
            None,
            env(&[("FACERELAY_ICE__UDP_PORT_RANGE", "[5000, 10]")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("udp_port_range"), "{e}");
        let e = Config::load_with_env(None, env(&[("FACERELAY_SERVER__LISTEN", "nonsense")]))
            .unwrap_err();
        assert!(matches!(e, ConfigError::Invalid(_)), "{e:?}");
        // A model file in a subfolder: its prepared variants would be looked for in models.dir.
        for (key, name) in [
            ("FACERELAY_MODELS__SWAPPER", "deep/inswapper_128.onnx"),
            ("FACERELAY_MODELS__DETECTOR", "/elsewhere/det_10g.onnx"),
        ] {
            let e = Config::load_with_env(None, env(&[(key, name)])).unwrap_err();
            assert!(e.to_string().contains("file name inside models.dir"), "{e}");
        }
    }
}
