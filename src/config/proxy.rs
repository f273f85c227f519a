//! `server.trusted_proxies`: addresses and CIDR ranges of the reverse proxies whose forwarding
//! header is believed (`crate::signal::client_ip` reads it).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One address (`10.0.0.2`) or range (`172.30.0.0/24`, `fd00::/8`). IPv4 addresses seen as
/// IPv6 (`::ffff:10.0.0.2`, a dual-stack socket's peers) match their IPv4 form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNet {
    network: IpAddr,
    prefix: u8,
}

impl ProxyNet {
    /// Whether `ip` lies in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_matches(net: &[u8], ip: &[u8], prefix: u8) -> bool {
    let (whole, rest) = (usize::from(prefix / 8), prefix % 8);
    if net[..whole] != ip[..whole] {
        return false;
    }
    rest == 0 || (net[whole] ^ ip[whole]) >> (8 - rest) == 0
}

impl FromStr for ProxyNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network = addr
            .parse::<IpAddr>()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?
            .to_canonical();
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {bits}"))?,
        };
        let net = ProxyNet { network, prefix };
        // `10.0.0.7/24` names a host inside a range: a slip, not a range.
        if net.masked() != network {
            return Err(format!(
                "{text:?} has bits set past its prefix; write the range as {}/{prefix}",
                net.masked()
            ));
        }
        Ok(net)
    }
}

impl ProxyNet {
    fn masked(&self) -> IpAddr {
        fn mask(bytes: &mut [u8], prefix: u8) {
            for (i, b) in bytes.iter_mut().enumerate() {
                let keep = (i32::from(prefix) - 8 * i as i32).clamp(0, 8) as u32;
                *b &= (0xffu16 << (8 - keep)) as u8;
            }
        }
        match self.network {
            IpAddr::V4(a) => {
                let mut o = a.octets();
                mask(&mut o, self.prefix);
                IpAddr::from(o)
            }
            IpAddr::V6(a) => {
                let mut o = a.octets();
                mask(&mut o, self.prefix);
                IpAddr::from(o)
            }
        }
    }
}

impl fmt::Display for ProxyNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl<'de> serde::Deserialize<'de> for ProxyNet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_and_ranges_match_what_they_name() {
        let host: ProxyNet = "10.0.0.2".parse().unwrap();
        assert!(host.contains(ip("10.0.0.2")));
        assert!(
            host.contains(ip("::ffff:10.0.0.2")),
            "a dual-stack socket's IPv4 peer"
        );
        assert!(!host.contains(ip("10.0.0.3")));
        let range: ProxyNet = "172.30.0.0/20".parse().unwrap();
        assert!(range.contains(ip("172.30.15.255")));
        assert!(!range.contains(ip("172.30.16.0")));
        assert!(!range.contains(ip("::1")));
        let v6: ProxyNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fdab::1")) && !v6.contains(ip("fe80::1")));
        let all: ProxyNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert_eq!(range.to_string(), "172.30.0.0/20");
    }

    #[test]
    fn slips_are_refused_with_their_reason() {
        for (text, why) in [
            ("10.0.0.7/24", "write the range as 10.0.0.0/24"),
            ("10.0.0.0/33", "prefix length must be 0 to 32"),
            ("proxy.local", "not an IP address"),
            ("::/x", "prefix length must be 0 to 128"),
        ] {
            let e = text.parse::<ProxyNet>().unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
