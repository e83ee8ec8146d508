//! The configuration: Istio's `metadata_exchange.PluginConfig` (one field,
//! `max_peer_cache_size`, a `UInt32Value`) read with protobuf's JSON mapping
//! (the SDK's `config::protojson`), plus meshwasm's opt-ins, each off or
//! generous by default so that Istio's own configurations (`{}`,
//! `{"max_peer_cache_size": 20}`) behave as in Istio.
//!
//! Ill-typed values are refused, naming the field. Unknown fields are
//! tolerated as Istio's plugin tolerated them (it read only
//! `max_peer_cache_size` from the JSON): each is reported to be logged and
//! counted, and `strict: true` refuses them instead.

use meshwasm_sdk::config::protojson::{self, Unknown};
use meshwasm_sdk::config::ConfigError;
use serde::Deserialize;

/// Istio's default peer cache size (istio/proxy
/// `extensions/metadata_exchange/plugin.h`, `DefaultNodeCacheMaxSize`).
pub const DEFAULT_MAX_PEER_CACHE_SIZE: u64 = 500;
/// Default cap on a peer's header value and TCP frame payload.
pub const DEFAULT_MAX_PEER_METADATA_BYTES: u64 = 64 * 1024;

/// Which connections a peer's metadata is accepted over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Trust {
    /// Any connection (Istio's behaviour).
    #[default]
    #[serde(rename = "any", alias = "ANY")]
    Any,
    /// Only a connection whose peer presented a certificate: downstream,
    /// `connection.mtls`; upstream, a peer certificate and our own.
    #[serde(rename = "mtls_only", alias = "MTLS_ONLY")]
    MtlsOnly,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PluginConfig {
    /// Istio: peers cached per VM, by peer id; 0 turns the cache off.
    #[serde(alias = "maxPeerCacheSize", deserialize_with = "protojson::opt_uint64")]
    pub max_peer_cache_size: Option<u64>,
    /// meshwasm: `any` (default) or `mtls_only`.
    pub trust: Trust,
    /// meshwasm (current Istio's option of the same name): do not send our
    /// metadata to `PassthroughCluster` or a cluster whose metadata has
    /// `istio.external: true`.
    #[serde(alias = "skipExternalClusters", deserialize_with = "protojson::bool")]
    pub skip_external_clusters: bool,
    /// meshwasm: a peer's header value or TCP frame payload above this many
    /// bytes is ignored and counted; default 64 KiB, 0 = no cap.
    #[serde(alias = "maxPeerMetadataBytes", deserialize_with = "protojson::opt_uint64")]
    pub max_peer_metadata_bytes: Option<u64>,
    /// Istio's TCP exchange: the ALPN the exchange runs under.
    #[serde(deserialize_with = "protojson::string")]
    pub protocol: String,
    /// meshwasm: refuse the configuration on what is otherwise tolerated
    /// (unknown fields) instead of logging and counting it.
    #[serde(deserialize_with = "protojson::bool")]
    pub strict: bool,
    /// Fields Istio's proto does not have: tolerated, reported.
    #[serde(flatten)]
    pub unknown: Unknown,
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            max_peer_cache_size: None,
            trust: Trust::Any,
            skip_external_clusters: false,
            max_peer_metadata_bytes: None,
            protocol: String::new(),
            strict: false,
            unknown: Unknown::default(),
        }
    }
}

/// The configuration with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub max_peer_cache_size: usize,
    pub trust: Trust,
    pub skip_external_clusters: bool,
    /// `usize::MAX` when uncapped.
    pub max_peer_metadata_bytes: usize,
    pub protocol: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings::from(PluginConfig::default())
    }
}

impl From<PluginConfig> for Settings {
    fn from(c: PluginConfig) -> Self {
        let max_bytes = c.max_peer_metadata_bytes.unwrap_or(DEFAULT_MAX_PEER_METADATA_BYTES);
        Settings {
            max_peer_cache_size: usize::try_from(c.max_peer_cache_size.unwrap_or(DEFAULT_MAX_PEER_CACHE_SIZE))
                .unwrap_or(usize::MAX),
            trust: c.trust,
            skip_external_clusters: c.skip_external_clusters,
            max_peer_metadata_bytes: if max_bytes == 0 {
                usize::MAX
            } else {
                usize::try_from(max_bytes).unwrap_or(usize::MAX)
            },
            protocol: if c.protocol.is_empty() {
                meshwasm_sdk::istio::peer::TCP_EXCHANGE_ALPN.to_string()
            } else {
                c.protocol
            },
        }
    }
}

/// Parses a configuration (empty = all defaults): the settings and what
/// was tolerated (to log and count), or the error, naming the field, that
/// refuses it (with `strict`, the first tolerated one).
pub fn parse(bytes: &[u8]) -> Result<(Settings, Vec<ConfigError>), ConfigError> {
    let config: PluginConfig = meshwasm_sdk::config::parse(bytes)?;
    if let Some(n) = config.max_peer_cache_size {
        // The field is a UInt32Value in Istio's proto.
        if n > u64::from(u32::MAX) {
            return Err(ConfigError::new("max_peer_cache_size", format!("integer `{n}` out of range for uint32")));
        }
    }
    let tolerated: Vec<ConfigError> = config.unknown.errors("").collect();
    if config.strict {
        if let Some(first) = tolerated.into_iter().next() {
            return Err(ConfigError::new(first.path, format!("{} (refused: strict)", first.message)));
        }
        return Ok((config.into(), Vec::new()));
    }
    Ok((config.into(), tolerated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_configurations_are_accepted() {
        let settings = |json: &[u8]| parse(json).unwrap().0;
        assert_eq!(parse(b"").unwrap(), (Settings::default(), Vec::new()));
        assert_eq!(settings(b"{}").max_peer_cache_size, 500);
        assert_eq!(settings(br#"{"max_peer_cache_size": 20}"#).max_peer_cache_size, 20);
        assert_eq!(settings(br#"{"maxPeerCacheSize": "0"}"#).max_peer_cache_size, 0);
        let s = settings(b"{}");
        assert_eq!(s.trust, Trust::Any);
        assert!(!s.skip_external_clusters);
        assert_eq!(s.max_peer_metadata_bytes, 65536);
        assert_eq!(s.protocol, "istio-peer-exchange");
        let s = settings(
            br#"{"trust": "mtls_only", "skip_external_clusters": "true", "max_peer_metadata_bytes": 0, "protocol": "x"}"#,
        );
        assert_eq!(s.trust, Trust::MtlsOnly);
        assert!(s.skip_external_clusters);
        assert_eq!(s.max_peer_metadata_bytes, usize::MAX);
        assert_eq!(s.protocol, "x");
    }

    #[test]
    fn bad_configurations_name_the_field() {
        for (config, field) in [
            (r#"{"max_peer_cache_size": -1}"#, "max_peer_cache_size"),
            (r#"{"max_peer_cache_size": 4294967296}"#, "max_peer_cache_size"),
            (r#"{"max_peer_cache_size": "x"}"#, "max_peer_cache_size"),
            (r#"{"trust": "always"}"#, "trust"),
            (r#"{"skip_external_clusters": 3}"#, "skip_external_clusters"),
            (r#"{"max_peer_metadata_bytes": true}"#, "max_peer_metadata_bytes"),
            (r#"{"protocol": 1}"#, "protocol"),
            (r#"{"strict": "maybe"}"#, "strict"),
            (r#"{"max_peer_cache_sise": 1, "strict": true}"#, "max_peer_cache_sise"),
            ("[]", "."),
        ] {
            let e = parse(config.as_bytes()).unwrap_err();
            assert_eq!(e.path, field, "{config}: {e}");
        }
    }

    /// Istio's plugin read only `max_peer_cache_size`: other fields were
    /// never seen. They are tolerated, each reported to be logged and
    /// counted, with everything else in force.
    #[test]
    fn unknown_fields_are_tolerated_unless_strict() {
        let (s, tolerated) = parse(br#"{"max_peer_cache_sise": 1, "max_peer_cache_size": 7, "x": {"y": []}}"#).unwrap();
        assert_eq!(s.max_peer_cache_size, 7);
        let paths: Vec<&str> = tolerated.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["max_peer_cache_sise", "x"]);
        assert!(tolerated[0].to_string().contains("unknown field"), "{}", tolerated[0]);
        let e = parse(br#"{"x": 1, "strict": "true"}"#).unwrap_err();
        assert_eq!(e.path, "x");
        assert!(e.message.contains("strict"), "{e}");
        assert_eq!(parse(br#"{"strict": true}"#).unwrap().1, Vec::new());
    }
}
