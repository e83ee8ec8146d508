//! What the shell tells the core about a request or a connection: who
//! reports ([`Reporter`]), and the facts read from the host
//! ([`RequestFacts`], [`ClusterService`]). Plain data, no host calls.

use crate::config::ReporterConfig;
use meshwasm_sdk::istio::WorkloadInfo;

/// Who reports: Istio's `reporter` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reporter {
    /// A client sidecar (outbound listener): `source`.
    Source,
    /// A server sidecar (inbound listener): `destination`.
    Destination,
    /// `reporter: SERVER_GATEWAY` (a waypoint): `waypoint`.
    Waypoint,
}

impl Reporter {
    pub fn label(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
            Reporter::Waypoint => "waypoint",
        }
    }

    /// Server side: the peer is downstream.
    pub fn is_server(self) -> bool {
        self != Reporter::Source
    }

    /// Istio's choice: `SERVER_GATEWAY` → waypoint; otherwise the old Wasm
    /// plugin's root ids (`stats_inbound`, `stats_outbound`) when used, else
    /// the listener direction (`xds.listener_direction`: 1 inbound, 2
    /// outbound); an unspecified direction reports as a client, as Istio's
    /// filter does.
    pub fn choose(config: ReporterConfig, root_id: &str, listener_direction: Option<i64>) -> Reporter {
        Self::fixed(config, root_id).unwrap_or(match listener_direction {
            Some(1) => Reporter::Destination,
            _ => Reporter::Source,
        })
    }

    /// The reporter when the configuration or the root id decides it,
    /// None when it depends on the listener direction.
    pub fn fixed(config: ReporterConfig, root_id: &str) -> Option<Reporter> {
        match (config, root_id) {
            (ReporterConfig::ServerGateway, _) => Some(Reporter::Waypoint),
            (_, "stats_inbound") => Some(Reporter::Destination),
            (_, "stats_outbound") => Some(Reporter::Source),
            _ => None,
        }
    }
}

/// The first service of the upstream cluster's `istio` metadata
/// (`filter_metadata.istio.services[0]`), as Istio's control plane writes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterService {
    pub host: String,
    pub name: String,
    pub namespace: String,
}

/// What the shell learned about a finished HTTP request.
#[derive(Clone, Debug, Default)]
pub struct RequestFacts {
    /// The request's `content-type` is gRPC.
    pub grpc: bool,
    /// `response.code`.
    pub response_code: Option<i64>,
    /// `response.grpc_status`.
    pub grpc_status: Option<i64>,
    /// `response.flags`.
    pub response_flags: u64,
    /// `request.duration`, in nanoseconds.
    pub duration_ns: Option<i64>,
    /// `request.total_size`.
    pub request_size: Option<i64>,
    /// `response.total_size`.
    pub response_size: Option<i64>,
    /// `:authority` (only read when the host-header fallback is on).
    pub host: Option<String>,
    /// The downstream peer's metadata (server side and waypoint).
    pub downstream_peer: Option<WorkloadInfo>,
    /// The upstream peer's metadata (client side and waypoint).
    pub upstream_peer: Option<WorkloadInfo>,
    /// First URI SAN of the downstream peer's / the listener's certificate.
    pub downstream_peer_san: String,
    pub downstream_local_san: String,
    /// First URI SAN of the upstream's / our client certificate.
    pub upstream_peer_san: String,
    pub upstream_local_san: String,
    /// `xds.route_name`.
    pub route_name: String,
    /// `xds.cluster_name`.
    pub cluster_name: String,
    /// The upstream cluster's Istio service, when its metadata has one.
    pub cluster_service: Option<ClusterService>,
    /// gRPC message counts (request, response) from Envoy's grpc_stats filter.
    pub grpc_messages: Option<(u64, u64)>,
    /// A TCP connection (network filter), not an HTTP request.
    pub tcp: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reporter_choice() {
        use ReporterConfig::*;
        assert_eq!(Reporter::choose(Unspecified, "", Some(1)), Reporter::Destination);
        assert_eq!(Reporter::choose(Unspecified, "", Some(2)), Reporter::Source);
        assert_eq!(Reporter::choose(Unspecified, "", None), Reporter::Source);
        assert_eq!(Reporter::choose(Unspecified, "stats_inbound", Some(2)), Reporter::Destination);
        assert_eq!(Reporter::choose(Unspecified, "stats_outbound", Some(1)), Reporter::Source);
        assert_eq!(Reporter::choose(ServerGateway, "stats_outbound", Some(2)), Reporter::Waypoint);
        assert_eq!(Reporter::fixed(Unspecified, "stats"), None);
        assert_eq!(Reporter::fixed(Unspecified, "stats_inbound"), Some(Reporter::Destination));
    }
}
