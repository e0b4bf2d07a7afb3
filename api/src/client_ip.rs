//! The client's address, for per-address limits. The TCP peer is the client unless it is a
//! trusted proxy (`TRUSTED_PROXIES`); then the proxy headers are read from the right (the
//! entry the nearest proxy appended) leftwards, skipping trusted proxies, and the first
//! address that is not one is the client. Entries left of it were written by the client
//! itself and are never believed. `Forwarded` (RFC 7239) is used when present, else
//! `X-Forwarded-For`. An entry that is not an address (`unknown`, an obfuscated name, garbage)
//! stops the walk at the last address reached.
//!
//! Per-address limits (logins, registrations, open connections) count a client under
//! [`limit_key`]: its IPv4 address, or the /64 of its IPv6 address — one subscriber's
//! network, in which an attacker picks any of 2^64 addresses at will.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

fn trusted(proxies: &[IpNet], ip: &IpAddr) -> bool {
    proxies.iter().any(|n| n.contains(ip))
}

/// `1.2.3.4`, `1.2.3.4:80`, `[::1]`, `[::1]:80`, `::1`, optionally quoted.
fn parse_node(raw: &str) -> Option<IpAddr> {
    let s = raw.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
}

/// The `for=` nodes of every `Forwarded` header, in order.
fn forwarded_for(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| v.trim().to_string())
            })
        })
        .collect()
}

fn x_forwarded_for(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

pub fn client_ip(proxies: &[IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let peer = canonical(peer);
    if !trusted(proxies, &peer) {
        return peer;
    }
    let mut chain = forwarded_for(headers);
    if chain.is_empty() {
        chain = x_forwarded_for(headers);
    }
    let mut client = peer;
    for node in chain.iter().rev() {
        let Some(ip) = parse_node(node).map(canonical) else {
            break;
        };
        client = ip;
        if !trusted(proxies, &ip) {
            break;
        }
    }
    client
}

/// What per-address limits count a client under: an IPv4 address as it is, an IPv6
/// address's /64 (printed `2001:db8:1:2::/64`).
pub fn limit_key(ip: IpAddr) -> IpNet {
    let prefix = match canonical(ip) {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 64,
    };
    IpNet::new(canonical(ip), prefix)
        .expect("a valid prefix length")
        .trunc()
}

/// An IPv4 address seen through an IPv6 socket (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulk_import_core::limits::parse_cidrs;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn only_trusted_proxies_are_believed() {
        let none = parse_cidrs("").unwrap();
        let proxies = parse_cidrs("10.0.0.0/8, 127.0.0.1").unwrap();
        let xff = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.2")]);
        // No trusted proxies: the header is ignored.
        assert_eq!(client_ip(&none, ip("127.0.0.1"), &xff), ip("127.0.0.1"));
        // An untrusted peer: ignored as well.
        assert_eq!(client_ip(&proxies, ip("8.8.8.8"), &xff), ip("8.8.8.8"));
        // Trusted peer: rightmost untrusted entry; the spoofed 6.6.6.6 is never reached.
        assert_eq!(client_ip(&proxies, ip("127.0.0.1"), &xff), ip("1.2.3.4"));
        // Several header lines are one list.
        let two = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "5.5.5.5"),
        ]);
        assert_eq!(client_ip(&proxies, ip("10.1.1.1"), &two), ip("5.5.5.5"));
        // Garbage stops the walk at the last address reached.
        let junk = headers(&[("x-forwarded-for", "1.2.3.4, nonsense, 10.0.0.9")]);
        assert_eq!(client_ip(&proxies, ip("10.1.1.1"), &junk), ip("10.0.0.9"));
        // No header: the peer.
        assert_eq!(
            client_ip(&proxies, ip("10.1.1.1"), &HeaderMap::new()),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn ipv6_clients_are_limited_per_64_and_ipv4_per_address() {
        let a = limit_key(ip("2001:db8:1:2:aaaa::1"));
        let b = limit_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        let other = limit_key(ip("2001:db8:1:3::1"));
        assert_eq!(a, b, "one /64, one key");
        assert_ne!(a, other, "the next /64 is another client");
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_ne!(limit_key(ip("192.0.2.1")), limit_key(ip("192.0.2.2")));
        assert_eq!(limit_key(ip("192.0.2.1")).to_string(), "192.0.2.1/32");
        // An IPv4 client seen through an IPv6 socket is that IPv4 address, not a /64 of
        // every IPv4 client.
        assert_eq!(
            limit_key(ip("::ffff:192.0.2.1")),
            limit_key(ip("192.0.2.1"))
        );
        assert_ne!(
            limit_key(ip("::ffff:192.0.2.1")),
            limit_key(ip("::ffff:192.0.2.2"))
        );
    }

    #[test]
    fn forwarded_is_preferred_and_parsed() {
        let proxies = parse_cidrs("10.0.0.0/8").unwrap();
        let h = headers(&[
            (
                "forwarded",
                "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.3",
            ),
            ("x-forwarded-for", "7.7.7.7"),
        ]);
        assert_eq!(client_ip(&proxies, ip("10.0.0.1"), &h), ip("2001:db8::1"));
        let h = headers(&[("forwarded", "for=1.2.3.4:5678")]);
        assert_eq!(client_ip(&proxies, ip("10.0.0.1"), &h), ip("1.2.3.4"));
        assert_eq!(
            client_ip(&proxies, ip("::ffff:10.0.0.1"), &h),
            ip("1.2.3.4")
        );
    }
}
