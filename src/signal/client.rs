//! Who a connection is from: the TCP peer, or, when the peer is a trusted reverse proxy
//! (`server.trusted_proxies`), the client its forwarding header names (`server.proxy_header`).

use std::net::IpAddr;

use axum::http::HeaderMap;

use crate::config::{ProxyHeader, ServerConfig};

/// The client address of a request that came from `peer`.
///
/// From an untrusted peer, the peer itself, whatever the headers say. From a trusted one, the
/// header's hops are read from the right (the hop nearest this server) and the first that is
/// not itself a trusted proxy is the client; a hop that is no address (`unknown`, an obfuscated
/// name, garbage) stops the walk at the last trusted hop, which is then the client (so a
/// forged or broken header never lets a client choose its address). Without the header, the
/// peer.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, config: &ServerConfig) -> IpAddr {
    let peer = peer.to_canonical();
    let trusted = |ip: IpAddr| config.trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(peer) {
        return peer;
    }
    let hops = hops(headers, config.proxy_header);
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if trusted(*ip) => client = *ip,
            Some(ip) => return *ip,
            None => return client,
        }
    }
    client
}

/// The header's hops, first (the original client) to last; `None` for a hop that names no
/// address. Several header lines are one list, in order.
fn hops(headers: &HeaderMap, header: ProxyHeader) -> Vec<Option<IpAddr>> {
    let name = match header {
        ProxyHeader::XForwardedFor => "x-forwarded-for",
        ProxyHeader::Forwarded => "forwarded",
    };
    let mut hops = Vec::new();
    for value in headers.get_all(name) {
        // A header that is no text cannot be read: one hop that names nobody.
        let Ok(value) = value.to_str() else {
            hops.push(None);
            continue;
        };
        for element in value.split(',') {
            hops.push(match header {
                ProxyHeader::XForwardedFor => parse_node(element),
                ProxyHeader::Forwarded => forwarded_for(element),
            });
        }
    }
    hops
}

/// The `for=` of one element of a `Forwarded` header (`for=192.0.2.1;proto=https`); an element
/// without one names nobody.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_node(value.trim().trim_matches('"')))
            .flatten()
    })
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]:4711`.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, _port) = rest.split_once(']')?;
        return ip.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    text.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(trusted: &[&str], header: ProxyHeader) -> ServerConfig {
        let mut c = Config::defaults().server;
        c.trusted_proxies = trusted.iter().map(|t| t.parse().unwrap()).collect();
        c.proxy_header = header;
        c
    }

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let c = config(&["10.0.0.2"], ProxyHeader::XForwardedFor);
        let forged = headers("x-forwarded-for", &["198.51.100.7"]);
        assert_eq!(client_ip(ip("203.0.113.5"), &forged, &c), ip("203.0.113.5"));
        let none = config(&[], ProxyHeader::XForwardedFor);
        assert_eq!(client_ip(ip("10.0.0.2"), &forged, &none), ip("10.0.0.2"));
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_forged_hops_left_of_it_are_ignored() {
        let c = config(&["10.0.0.0/24"], ProxyHeader::XForwardedFor);
        let proxy = ip("10.0.0.2");
        let one = headers("x-forwarded-for", &["198.51.100.7"]);
        assert_eq!(client_ip(proxy, &one, &c), ip("198.51.100.7"));
        // The client wrote a hop itself (1.2.3.4), an appending proxy added the real address.
        let appended = headers("x-forwarded-for", &["1.2.3.4, 198.51.100.7"]);
        assert_eq!(client_ip(proxy, &appended, &c), ip("198.51.100.7"));
        // Two trusted proxies in a row; two header lines are one list.
        let chain = headers("x-forwarded-for", &["1.2.3.4, 198.51.100.7", "10.0.0.9"]);
        assert_eq!(client_ip(proxy, &chain, &c), ip("198.51.100.7"));
        // A dual-stack socket's peer, and a hop with a port.
        let ported = headers("x-forwarded-for", &["198.51.100.7:5555"]);
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.2"), &ported, &c),
            ip("198.51.100.7")
        );
        // Garbage, or no header: the proxy is all that is known.
        let garbage = headers("x-forwarded-for", &["1.2.3.4, not-an-address"]);
        assert_eq!(client_ip(proxy, &garbage, &c), proxy);
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &c), proxy);
    }

    #[test]
    fn forwarded_is_read_only_when_configured() {
        let c = config(&["10.0.0.2"], ProxyHeader::Forwarded);
        let proxy = ip("10.0.0.2");
        let h = headers(
            "forwarded",
            &[r#"for=1.2.3.4, for="[2001:db8:cafe::17]:4711";proto=https"#],
        );
        assert_eq!(client_ip(proxy, &h, &c), ip("2001:db8:cafe::17"));
        let hidden = headers("forwarded", &["for=_hidden;proto=https"]);
        assert_eq!(client_ip(proxy, &hidden, &c), proxy);
        // The header the proxy does not write is the client's own: ignored.
        let mut both = headers("x-forwarded-for", &["1.2.3.4"]);
        both.append("forwarded", "for=198.51.100.7".parse().unwrap());
        assert_eq!(client_ip(proxy, &both, &c), ip("198.51.100.7"));
        let xff = config(&["10.0.0.2"], ProxyHeader::XForwardedFor);
        let forged = headers("forwarded", &["for=1.2.3.4"]);
        assert_eq!(client_ip(proxy, &forged, &xff), proxy);
    }
}
