//! Workload facts from node metadata or a peer's exchanged metadata.

use super::{CANONICAL_NAME_LABEL, CANONICAL_REVISION_LABEL, LATEST, UNKNOWN};
use crate::attributes::AttrValue;

// ------------------------------------------------------------------ workloads

/// What Istio knows about a workload, from its proxy's node metadata (the
/// local one, `xds.node.metadata`) or from a peer's exchanged metadata.
/// Empty strings are facts nobody provided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadInfo {
    /// `NAME`: the pod name.
    pub name: String,
    /// `NAMESPACE`.
    pub namespace: String,
    /// `WORKLOAD_NAME`: the deployment (or other owner) name.
    pub workload_name: String,
    /// `LABELS.app`.
    pub app: String,
    /// `LABELS.version`.
    pub version: String,
    /// `LABELS["service.istio.io/canonical-name"]`.
    pub canonical_service: String,
    /// `LABELS["service.istio.io/canonical-revision"]`.
    pub canonical_revision: String,
    /// `CLUSTER_ID`.
    pub cluster_id: String,
    /// `MESH_ID`.
    pub mesh_id: String,
    /// `ISTIO_VERSION`.
    pub istio_version: String,
}

impl WorkloadInfo {
    /// From node metadata: `field` reads a top-level string (`NAMESPACE`),
    /// `label` a key of `LABELS`.
    pub fn from_metadata(field: impl Fn(&str) -> Option<String>, label: impl Fn(&str) -> Option<String>) -> Self {
        let f = |k: &str| field(k).unwrap_or_default();
        let l = |k: &str| label(k).unwrap_or_default();
        WorkloadInfo {
            name: f("NAME"),
            namespace: f("NAMESPACE"),
            workload_name: f("WORKLOAD_NAME"),
            app: l("app"),
            version: l("version"),
            canonical_service: l(CANONICAL_NAME_LABEL),
            canonical_revision: l(CANONICAL_REVISION_LABEL),
            cluster_id: f("CLUSTER_ID"),
            mesh_id: f("MESH_ID"),
            istio_version: f("ISTIO_VERSION"),
        }
    }

    /// From node metadata as a struct value (a decoded
    /// `google.protobuf.Struct`). Non-string values are ignored.
    pub fn from_struct(metadata: &AttrValue) -> Self {
        let field = |k: &str| metadata.get(k).and_then(AttrValue::as_str).map(str::to_string);
        let labels = metadata.get("LABELS");
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(AttrValue::as_str).map(str::to_string);
        Self::from_metadata(field, label)
    }

    /// From the upstream endpoint's metadata `filter_metadata.istio.workload`,
    /// which Istio's control plane writes as
    /// `workload;namespace;canonical-service;canonical-revision;cluster-id`.
    /// As Istio's `convertEndpointMetadata` (istio/proxy
    /// extensions/common/metadata_object.cc): fewer than five fields give
    /// nothing, fields past the fifth are ignored, empty fields stay empty
    /// (so their labels read `unknown`, the revision `latest`), and app,
    /// version and pod name are not in the encoding.
    pub fn from_endpoint_metadata(encoding: &str) -> Option<Self> {
        let mut parts = encoding.split(';');
        let mut next = || parts.next().map(str::to_string);
        let (workload_name, namespace, canonical_service, canonical_revision, cluster_id) =
            (next()?, next()?, next()?, next()?, next()?);
        Some(WorkloadInfo {
            workload_name,
            namespace,
            canonical_service,
            canonical_revision,
            cluster_id,
            ..Default::default()
        })
    }

    /// Nothing is known.
    pub fn is_empty(&self) -> bool {
        *self == WorkloadInfo::default()
    }
}

/// A peer as stats' CEL expressions see it (`upstream_peer.*`,
/// `downstream_peer.*`), from its exchanged metadata (a decoded Struct with
/// node-metadata keys). Both of Istio's vocabularies are offered, so the
/// configurations of either era evaluate:
/// * the Wasm-era plugin's flat node fields (istio/proxy
///   extensions/common/node_info.fbs): `name`, `namespace`, `owner`,
///   `workload_name`, `istio_version`, `mesh_id`, `cluster_id`, `labels`,
///   `platform_metadata`, `app_containers`, `instance_ips` (the last two
///   lists, split at commas as that plugin did);
/// * the native filter's peer object (istio/proxy
///   extensions/common/metadata_object.h): `workload`, `cluster`,
///   `service` and `revision` (the canonical labels), `app`, `version`,
///   `identity`, `region`, `availability_zone`, `type` (from `OWNER` as
///   its `parseOwner` reads it: `deployment`, `job`, `cronjob`, else
///   `pod`).
///
/// Missing keys stay absent (the expression reads them as missing, e.g.
/// the native era sends no `ISTIO_VERSION`).
pub fn peer_attributes(metadata: &AttrValue) -> AttrValue {
    let mut out: Vec<(String, AttrValue)> = Vec::new();
    let string = |k: &str| metadata.get(k).and_then(AttrValue::as_str).map(str::to_string);
    let labels = metadata.get("LABELS");
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(AttrValue::as_str).map(str::to_string);
    let mut put = |name: &str, v: Option<AttrValue>| {
        if let Some(v) = v {
            out.push((name.to_string(), v));
        }
    };
    let s = |v: Option<String>| v.map(AttrValue::String);
    let list = |v: Option<String>| {
        v.map(|v| {
            AttrValue::List(v.split(',').filter(|x| !x.is_empty()).map(|x| AttrValue::String(x.into())).collect())
        })
    };
    put("name", s(string("NAME")));
    put("namespace", s(string("NAMESPACE")));
    put("owner", s(string("OWNER")));
    put("workload_name", s(string("WORKLOAD_NAME")));
    put("istio_version", s(string("ISTIO_VERSION")));
    put("mesh_id", s(string("MESH_ID")));
    put("cluster_id", s(string("CLUSTER_ID")));
    put("labels", labels.filter(|l| matches!(l, AttrValue::Map(_))).cloned());
    put("platform_metadata", metadata.get("PLATFORM_METADATA").filter(|m| matches!(m, AttrValue::Map(_))).cloned());
    put("app_containers", list(string("APP_CONTAINERS")));
    put("instance_ips", list(string("INSTANCE_IPS")));
    put("workload", s(string("WORKLOAD_NAME")));
    put("cluster", s(string("CLUSTER_ID")));
    put("service", s(label(CANONICAL_NAME_LABEL)));
    put("revision", s(label(CANONICAL_REVISION_LABEL)));
    put("app", s(label("app")));
    put("version", s(label("version")));
    put("identity", s(string("IDENTITY")));
    put("region", s(string("REGION")));
    put("availability_zone", s(string("AVAILABILITY_ZONE")));
    let owner = string("OWNER").unwrap_or_default();
    put("type", s(Some(owner_type(&owner, &string("WORKLOAD_NAME").unwrap_or_default()))));
    AttrValue::Map(out)
}

/// The workload type in an `OWNER` such as
/// `kubernetes://apis/apps/v1/namespaces/ns/deployments/name`, as Istio's
/// `parseOwner` reads it: the segment before `s/<workload>` when it is
/// `deployment`, `job` or `cronjob`, else `pod`.
fn owner_type(owner: &str, workload: &str) -> String {
    let kind = owner
        .strip_suffix(workload)
        .and_then(|rest| rest.strip_suffix("s/"))
        .and_then(|rest| rest.rsplit('/').next())
        .filter(|k| matches!(*k, "deployment" | "job" | "cronjob"));
    kind.unwrap_or("pod").to_string()
}

/// `value`, or `unknown` when it is empty.
pub fn or_unknown(value: &str) -> &str {
    if value.is_empty() {
        UNKNOWN
    } else {
        value
    }
}

/// A canonical revision, or `latest` when it is empty.
pub fn or_latest(value: &str) -> &str {
    if value.is_empty() {
        LATEST
    } else {
        value
    }
}

/// The namespace in a SPIFFE principal
/// (`spiffe://cluster.local/ns/<namespace>/sa/<account>`), as Istio reads
/// it: the text after `/ns/` up to the next `/`.
pub fn principal_namespace(principal: &str) -> Option<&str> {
    let start = principal.find("/ns/")? + 4;
    let rest = &principal[start..];
    let ns = rest.split('/').next().unwrap_or("");
    if ns.is_empty() {
        None
    } else {
        Some(ns)
    }
}

// ------------------------------------------------------------------ peer metadata

/// Decodes Istio's `x-envoy-peer-metadata` header: base64 of the peer's node
/// metadata serialized as a `google.protobuf.Struct`
/// ([`meshwasm_wire::istio::decode_peer_metadata`]). None when it is not
/// valid base64 or not a Struct.
pub fn decode_peer_metadata_header(value: &[u8]) -> Option<WorkloadInfo> {
    decode_peer_metadata_struct(value).map(|s| WorkloadInfo::from_struct(&s))
}

/// The Struct in an `x-envoy-peer-metadata` value, as a map value; None
/// when it is not valid base64 or not a Struct.
pub fn decode_peer_metadata_struct(value: &[u8]) -> Option<AttrValue> {
    let metadata = meshwasm_wire::istio::decode_peer_metadata(value)?;
    Some(crate::property::struct_to_attr(&metadata))
}

/// A serialized `google.protobuf.Struct` as a map value
/// ([`crate::property::decode_struct`]).
pub use crate::property::decode_struct;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_facts_and_fallbacks() {
        let meta = AttrValue::Map(vec![
            ("NAME".into(), AttrValue::String("reviews-v1-abc".into())),
            ("NAMESPACE".into(), AttrValue::String("default".into())),
            ("WORKLOAD_NAME".into(), AttrValue::String("reviews-v1".into())),
            ("CLUSTER_ID".into(), AttrValue::String("Kubernetes".into())),
            ("MESH_ID".into(), AttrValue::String("mesh1".into())),
            ("ISTIO_VERSION".into(), AttrValue::String("1.16.0".into())),
            (
                "LABELS".into(),
                AttrValue::Map(vec![
                    ("app".into(), AttrValue::String("reviews".into())),
                    ("version".into(), AttrValue::String("v1".into())),
                    (CANONICAL_NAME_LABEL.into(), AttrValue::String("reviews".into())),
                ]),
            ),
            ("PLATFORM".into(), AttrValue::Double(1.0)),
        ]);
        let w = WorkloadInfo::from_struct(&meta);
        assert_eq!(w.workload_name, "reviews-v1");
        assert_eq!(w.app, "reviews");
        assert_eq!(w.canonical_service, "reviews");
        assert_eq!(w.canonical_revision, "");
        assert_eq!(or_latest(&w.canonical_revision), "latest");
        assert_eq!(or_unknown(""), "unknown");
        assert_eq!(or_unknown("x"), "x");
        assert!(WorkloadInfo::from_struct(&AttrValue::Null).is_empty());
        assert_eq!(principal_namespace("spiffe://cluster.local/ns/foo/sa/bar"), Some("foo"));
        assert_eq!(principal_namespace("spiffe://cluster.local/ns/foo"), Some("foo"));
        assert_eq!(principal_namespace("spiffe://cluster.local/sa/bar"), None);
        assert_eq!(principal_namespace("spiffe://x/ns//sa"), None);
    }

    #[test]
    fn peer_attributes_in_both_vocabularies() {
        let s = |v: &str| AttrValue::String(v.into());
        let wasm_era = AttrValue::Map(vec![
            ("NAME".into(), s("ratings-v1-abc")),
            ("NAMESPACE".into(), s("default")),
            ("WORKLOAD_NAME".into(), s("ratings-v1")),
            ("OWNER".into(), s("kubernetes://apis/apps/v1/namespaces/default/deployments/ratings-v1")),
            ("ISTIO_VERSION".into(), s("1.16.0")),
            ("MESH_ID".into(), s("mesh1")),
            ("CLUSTER_ID".into(), s("c1")),
            ("INSTANCE_IPS".into(), s("10.0.0.1,fe80::1")),
            (
                "LABELS".into(),
                AttrValue::Map(vec![("app".into(), s("ratings")), (CANONICAL_REVISION_LABEL.into(), s("v1"))]),
            ),
            ("PLATFORM_METADATA".into(), AttrValue::Map(vec![("gcp_project".into(), s("p"))])),
            ("N".into(), AttrValue::Double(1.0)),
        ]);
        let p = peer_attributes(&wasm_era);
        let at = |k: &str| p.get(k).cloned();
        assert_eq!(at("istio_version"), Some(s("1.16.0")));
        assert_eq!(at("workload_name"), Some(s("ratings-v1")));
        assert_eq!(at("workload"), Some(s("ratings-v1")));
        assert_eq!(at("cluster_id"), Some(s("c1")));
        assert_eq!(at("cluster"), Some(s("c1")));
        assert_eq!(at("app"), Some(s("ratings")));
        assert_eq!(at("revision"), Some(s("v1")));
        assert_eq!(at("service"), None, "no canonical name label");
        assert_eq!(at("type"), Some(s("deployment")));
        assert_eq!(at("instance_ips"), Some(AttrValue::List(vec![s("10.0.0.1"), s("fe80::1")])));
        assert_eq!(p.get("labels").and_then(|l| l.get("app")), Some(&s("ratings")));
        assert_eq!(p.get("platform_metadata").and_then(|l| l.get("gcp_project")), Some(&s("p")));
        assert_eq!(at("N"), None, "only the documented names");
        // The native era's key set: no ISTIO_VERSION, an IDENTITY.
        let native = AttrValue::Map(vec![("WORKLOAD_NAME".into(), s("w")), ("IDENTITY".into(), s("spiffe://x"))]);
        let p = peer_attributes(&native);
        assert_eq!(p.get("identity"), Some(&s("spiffe://x")));
        assert_eq!(p.get("istio_version"), None);
        assert_eq!(peer_attributes(&AttrValue::Null), AttrValue::Map(vec![("type".into(), s("pod"))]));
        assert_eq!(p.get("type"), Some(&s("pod")), "no OWNER: Istio's default");
        assert_eq!(owner_type("kubernetes://apis/batch/v1/namespaces/n/cronjobs/w", "w"), "cronjob");
        assert_eq!(owner_type("kubernetes://apis/apps/v1/namespaces/n/statefulsets/w", "w"), "pod");
        assert_eq!(owner_type("x", "w"), "pod");
    }

    #[test]
    fn endpoint_metadata_as_istio_reads_it() {
        let w = WorkloadInfo::from_endpoint_metadata("ratings-v1;default;ratings;version-1;server-cluster").unwrap();
        assert_eq!(w.workload_name, "ratings-v1");
        assert_eq!(w.namespace, "default");
        assert_eq!(w.canonical_service, "ratings");
        assert_eq!(w.canonical_revision, "version-1");
        assert_eq!(w.cluster_id, "server-cluster");
        assert_eq!((w.app.as_str(), w.version.as_str(), w.name.as_str()), ("", "", ""));
        // Fewer than five fields: nothing; more: the first five.
        assert_eq!(WorkloadInfo::from_endpoint_metadata("a;b;c;d"), None);
        assert_eq!(WorkloadInfo::from_endpoint_metadata(""), None);
        let more = WorkloadInfo::from_endpoint_metadata("a;b;c;d;e;f").unwrap();
        assert_eq!(more.cluster_id, "e");
        // Empty fields stay empty.
        let empty = WorkloadInfo::from_endpoint_metadata(";;;;").unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn peer_metadata_header_decodes() {
        use meshwasm_wire::istio::encode_peer_metadata;
        use meshwasm_wire::protobuf::{encode_json_struct, struct_from_json};
        let serde_json::Value::Object(meta) = serde_json::json!({
            "WORKLOAD_NAME": "productpage-v1",
            "NAMESPACE": "bookinfo",
            "LABELS": {"app": "productpage", CANONICAL_REVISION_LABEL: "v1"},
            "N": 3.5,
            "L": ["x"],
            "B": true,
        }) else {
            panic!("an object")
        };
        let header = encode_peer_metadata(&struct_from_json(&meta));
        let w = decode_peer_metadata_header(header.as_bytes()).expect("decodes");
        assert_eq!(w.workload_name, "productpage-v1");
        assert_eq!(w.namespace, "bookinfo");
        assert_eq!(w.app, "productpage");
        assert_eq!(w.canonical_revision, "v1");
        // Unpadded and URL-safe forms decode too; garbage does not panic.
        assert!(decode_peer_metadata_header(header.trim_end_matches('=').as_bytes()).is_some());
        for bad in [&b"!!!!"[..], b"a", b"ab=c", b"abc===", b"\xff\xfe", b"AAAA////"] {
            assert_eq!(decode_peer_metadata_header(bad), None, "{bad:?}");
        }
        // Truncated or absurd protobuf is rejected, not trusted.
        let bytes = encode_json_struct(&meta);
        assert_eq!(decode_struct(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode_struct(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), None);
        // A repeated key: the last value wins (this module kept both before
        // it used the wire crate).
        let twice = [
            encode_json_struct(&serde_json::Map::from_iter([("NAMESPACE".to_string(), "a".into())])),
            encode_json_struct(&serde_json::Map::from_iter([("NAMESPACE".to_string(), "b".into())])),
        ]
        .concat();
        let header = meshwasm_wire::istio::base64_encode(&twice);
        assert_eq!(decode_peer_metadata_header(header.as_bytes()).map(|w| w.namespace), Some("b".to_string()));
    }
}
