//! `facerelay token`: prints a join token for a room (or the roulette), signed with the
//! configuration's `server.token_secret`, and the link that carries it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::config::Config;
use crate::signal::token::{self, Rights};

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The room the token opens.
    #[arg(
        long,
        conflicts_with = "roulette",
        required_unless_present = "roulette"
    )]
    pub room: Option<String>,
    /// A token for the roulette instead of a room.
    #[arg(long)]
    pub roulette: bool,
    /// The display name its holder joins under.
    #[arg(long)]
    pub name: String,
    /// How long it stays valid: a number and a unit (`s`, `m`, `h`, `d`), e.g. `90m` or `1h`.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// The holder receives the others but does not send its camera or microphone.
    #[arg(long)]
    pub no_publish: bool,
    /// The holder may not choose a face.
    #[arg(long)]
    pub no_face: bool,
    /// Base URL of the page, for the printed link (e.g. `https://call.example.org/`).
    #[arg(long, default_value = "")]
    pub url: String,
    /// TOML file laid over the built-in defaults (where `server.token_secret` is set).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Longest `--ttl`: ten years (a link that outlives that should be a new link).
const MAX_TTL_SECS: u64 = 3650 * 86_400;

/// Parses `90m`, `1h`, `2d`, `30s` (or a number of seconds), at most ten years.
pub fn parse_ttl(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .with_context(|| format!("--ttl {text}: expected a number and a unit, e.g. 1h"))?;
    let unit_secs: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => bail!("--ttl {text}: unknown unit {other:?} (s, m, h or d)"),
    };
    let secs = n
        .checked_mul(unit_secs)
        .filter(|s| *s <= MAX_TTL_SECS)
        .with_context(|| format!("--ttl {text}: at most 3650d (ten years)"))?;
    if secs == 0 {
        bail!("--ttl must be longer than 0");
    }
    Ok(Duration::from_secs(secs))
}

/// The token `args` ask for, with the secret of `config`.
pub fn make(args: &TokenArgs, config: &Config) -> anyhow::Result<String> {
    let secret = &config.server.token_secret;
    if secret.is_empty() {
        bail!("server.token_secret is not set: without it rooms are open and need no token (config/default.toml)");
    }
    let rights = Rights {
        publish: !args.no_publish,
        face: !args.no_face,
    };
    Ok(token::issue(
        secret,
        args.room.as_deref(),
        &args.name,
        rights,
        parse_ttl(&args.ttl)?,
    )?)
}

pub fn run(args: &TokenArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let token = make(args, &config)?;
    println!("{token}");
    if !args.url.is_empty() {
        let mut link = url_with_query(&args.url);
        if let Some(room) = &args.room {
            link.push_str(&format!("room={}&", percent_encode(room)));
        } else {
            link.push_str("roulette=1&");
        }
        link.push_str(&format!("token={token}"));
        println!("{link}");
    }
    Ok(())
}

fn url_with_query(base: &str) -> String {
    let mut link = base.to_owned();
    link.push(if link.contains('?') { '&' } else { '?' });
    link
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_as_people_write_them() {
        assert_eq!(parse_ttl("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_ttl("45").unwrap(), Duration::from_secs(45));
        for bad in ["", "h", "1w", "0m", "-1h", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
        // Past ten years, and numbers whose seconds overflow: refused with the limit, no panic.
        assert_eq!(
            parse_ttl("3650d").unwrap(),
            Duration::from_secs(MAX_TTL_SECS)
        );
        for huge in [
            "3651d",
            "18446744073709551615d",
            "213503982334601d",
            "99999999999999999999",
        ] {
            let e = format!("{:#}", parse_ttl(huge).unwrap_err());
            assert!(
                e.contains("at most 3650d") || e.contains("expected a number"),
                "{huge}: {e}"
            );
        }
        assert_eq!(percent_encode("lab 2/é"), "lab%202%2F%C3%A9");
    }
}
