//! Where a webhook may be delivered. A merchant names the URL, so the hub must not become
//! its way into the hub's own network: the host is resolved at delivery time and every
//! address must be public (not loopback, private, link-local, shared, multicast or
//! unspecified), unless the operator allowed it (`--webhook-allow-ip`, for tests and for
//! receivers inside the operator's network). The request then goes to exactly the
//! address checked (no second resolution to rebind), and redirects are not followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why a webhook URL may not be used. The text is what a merchant sees: it says the
/// destination is refused, never whether something listens there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not an http(s) URL with a host.
    #[error("webhook URL must be http or https with a host")]
    BadUrl,
    /// The host does not resolve.
    #[error("webhook host does not resolve")]
    Unresolved,
    /// The host is, or resolves to, an address the hub does not deliver to.
    #[error("webhook destination not allowed (a private, loopback or link-local address)")]
    Forbidden,
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        // 100.64.0.0/10, shared address space (carrier-grade NAT).
        || (a == 100 && (64..128).contains(&b))
        // 192.0.0.0/24 (IETF protocol assignments) and 198.18.0.0/15 (benchmarking).
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (b == 18 || b == 19))
        // 240.0.0.0/4, reserved.
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // fc00::/7 unique local, fe80::/10 link-local, 2001:db8::/32 documentation.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first == 0x2001 && ip.segments()[1] == 0x0db8))
}

/// The address to deliver to for `url`: its host resolved (or taken as an IP literal),
/// every address checked, the first one returned. `allow` lists addresses the operator
/// allows even though they are not public.
pub async fn resolve(url: &reqwest::Url, allow: &[IpAddr]) -> Result<SocketAddr, TargetError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError::BadUrl);
    }
    let host = url.host_str().ok_or(TargetError::BadUrl)?;
    let port = url.port_or_known_default().ok_or(TargetError::BadUrl)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| TargetError::Unresolved)?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(TargetError::Unresolved);
    }
    // All of them, not just the first: a name that resolves to one public and one private
    // address is refused too.
    if addrs
        .iter()
        .any(|a| !is_public(a.ip()) && !allow.contains(&a.ip()))
    {
        return Err(TargetError::Forbidden);
    }
    Ok(addrs[0])
}

/// An HTTP client pinned to `addr` for `url`'s host, following no redirects.
pub fn pinned_client(
    url: &reqwest::Url,
    addr: SocketAddr,
    timeout: std::time::Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(host) = url.host_str() {
        b = b.resolve(host, addr);
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn resolution_refuses_private_targets_unless_allowed() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        for u in [
            "http://127.0.0.1:8080/x",
            "http://[::1]:8080/x",
            "http://10.0.0.5/x",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost:9000/",
        ] {
            assert_eq!(
                resolve(&url(u), &[]).await,
                Err(TargetError::Forbidden),
                "{u}"
            );
        }
        assert_eq!(
            resolve(&url("ftp://example.com/"), &[]).await,
            Err(TargetError::BadUrl)
        );
        let allowed = [IpAddr::from([127, 0, 0, 1])];
        assert_eq!(
            resolve(&url("http://127.0.0.1:8080/x"), &allowed).await,
            Ok("127.0.0.1:8080".parse().unwrap())
        );
    }
}
