//! Who calls the gateway, and what it tells auth-service about them.
//!
//! The client address is the peer of the connection, or, when the peer is one
//! of `TRUSTED_PROXIES`, what their `x-forwarded-for` says (see
//! `service_kit::client_address`). Every call forwarded to auth-service carries
//! exactly that address as its `x-forwarded-for`, whatever the client sent, so
//! it can count failed logins per client (calls to the other services carry
//! none); and registrations are
//! limited per client address here, at the edge, before any hashing.
//!
//! The registration counts live in this process's memory (`service_kit::quota`):
//! each gateway replica counts alone, so behind N replicas an address may
//! register up to N times the limit.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use agora_proto::errors::ErrorReason;
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use service_kit::{
    client_address::{TrustedNetworks, X_FORWARDED_FOR, counted_as},
    quota::Quota,
};

/// What the edge and the facade share about clients.
#[derive(Debug, Clone)]
pub struct Clients {
    trusted_proxies: TrustedNetworks,
    registrations: Quota<IpNet>,
}

impl Clients {
    /// Believes `trusted_proxies`; allows `registrations_per_hour` per client
    /// address, all at once if need be (0: no limit). Starts the purge of idle
    /// addresses, so needs a Tokio runtime.
    pub fn new(trusted_proxies: TrustedNetworks, registrations_per_hour: u32) -> Self {
        let registrations = Quota::new(
            registrations_per_hour,
            Duration::from_secs(60 * 60),
            registrations_per_hour,
        );
        registrations.purge_periodically();
        Self {
            trusted_proxies,
            registrations,
        }
    }

    /// The client of a call from `peer` (`None`: unknown, so nobody's header is
    /// believed) with `headers`.
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?;
        self.trusted_proxies.client(Some(peer), headers)
    }

    /// Counts a registration from `client`, or says how long until one is
    /// allowed. Clients of unknown address share one count.
    pub fn admit_registration(&self, client: Option<IpAddr>) -> Result<(), Duration> {
        let client = client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        self.registrations.check(&counted_as(client))
    }
}

/// The refusal of a registration over the limit, with the time to wait.
pub fn registration_refused(wait: Duration) -> tonic::Status {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ErrorReason::RegistrationThrottled.status(
        format!("too many registrations from this address; try again in {secs} s"),
        &[],
        tonic_types::ErrorDetails::with_retry_info(Some(wait)),
    )
}

/// Replaces any `x-forwarded-for` with exactly `client`, or removes it when the
/// client is unknown: what the client wrote there must never reach upstream.
pub fn forward_client(headers: &mut HeaderMap, client: Option<IpAddr>) {
    headers.remove(X_FORWARDED_FOR);
    if let Some(client) = client {
        let value = HeaderValue::from_str(&client.to_string())
            .expect("an IP address is a valid header value");
        headers.insert(X_FORWARDED_FOR, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_header_is_exactly_the_client() {
        let mut headers = HeaderMap::new();
        headers.append(X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        headers.append(
            X_FORWARDED_FOR,
            HeaderValue::from_static("2.2.2.2, 3.3.3.3"),
        );

        forward_client(&mut headers, Some("198.51.100.7".parse().unwrap()));
        let values: Vec<_> = headers.get_all(X_FORWARDED_FOR).iter().collect();
        assert_eq!(values, ["198.51.100.7"]);

        forward_client(&mut headers, None);
        assert!(
            headers.get(X_FORWARDED_FOR).is_none(),
            "an unknown client: none"
        );
    }

    #[tokio::test]
    async fn only_a_trusted_peer_names_the_client() {
        let clients = Clients::new("127.0.0.1".parse().unwrap(), 0);
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        let client =
            |peer: Option<&str>| clients.client(peer.map(|p| p.parse().unwrap()), &headers);

        assert_eq!(
            client(Some("127.0.0.1")),
            Some("203.0.113.7".parse().unwrap())
        );
        assert_eq!(
            client(Some("192.0.2.1")),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(client(None), None, "no peer: nobody's header is believed");
    }
}
