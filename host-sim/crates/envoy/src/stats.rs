//! Plugin metrics from Envoy's admin interface. Envoy keeps metrics that
//! plugins define (`proxy_define_metric`) under the `wasmcustom.` prefix;
//! the admin filter `^wasmcustom\.` selects exactly those, so Envoy's own
//! stats (`envoy_*`) never show up.

use crate::abi::MetricType;
use crate::result::MetricValue;
use anyhow::{Context, Result};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

pub const CUSTOM_PREFIX: &str = "wasmcustom.";
const FILTER: &str = "filter=%5Ewasmcustom%5C.";

/// `/stats/prometheus` limited to plugin metrics (tags extracted by the
/// bootstrap's `stats_tags`, names without the `wasmcustom.` prefix).
pub fn prometheus(admin: SocketAddr, timeout: Duration) -> Result<String> {
    let (status, body) = super::http::get(admin, &format!("/stats/prometheus?{FILTER}"), timeout)?;
    anyhow::ensure!(status == 200, "/stats/prometheus answered {status}: {body}");
    Ok(body)
}

/// Every plugin metric by its full name (the name the plugin defined, tags
/// still inside), from `/stats?format=json`, one query per type.
pub fn metrics(admin: SocketAddr, timeout: Duration) -> Result<Vec<MetricValue>> {
    let mut out = Vec::new();
    for (kind, ty) in [(MetricType::Counter, "Counters"), (MetricType::Gauge, "Gauges")] {
        let path = format!("/stats?format=json&type={ty}&{FILTER}");
        let (status, body) = super::http::get(admin, &path, timeout)?;
        anyhow::ensure!(status == 200, "{path} answered {status}: {body}");
        let v: Value = serde_json::from_str(&body).with_context(|| format!("parsing {path}"))?;
        out.extend(parse_scalars(&v, kind));
    }
    let path = format!("/stats?format=json&type=Histograms&histogram_buckets=detailed&{FILTER}");
    let (status, body) = super::http::get(admin, &path, timeout)?;
    anyhow::ensure!(status == 200, "{path} answered {status}: {body}");
    let v: Value = serde_json::from_str(&body).with_context(|| format!("parsing {path}"))?;
    out.extend(parse_histograms(&v));
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// host-sim's warnings for labels no tag rule extracts, from the metrics
/// Envoy reports (full names, tags still inside) and the scenario's tags.
pub fn warnings(metrics: &[MetricValue], s: &crate::scenario::Scenario) -> Vec<String> {
    host_sim_scenario::prometheus::unextracted_label_warnings_in(
        metrics.iter().map(|m| m.name.as_str()),
        &s.effective_stats_tags(),
    )
}

fn strip(name: &str) -> String {
    name.strip_prefix(CUSTOM_PREFIX).unwrap_or(name).to_string()
}

/// `{"stats":[{"name":..,"value":..},..]}` entries.
pub fn parse_scalars(v: &Value, kind: MetricType) -> Vec<MetricValue> {
    let Some(stats) = v["stats"].as_array() else { return Vec::new() };
    stats
        .iter()
        .filter_map(|s| {
            let name = s["name"].as_str()?;
            let value = s["value"].as_i64().or_else(|| s["value"].as_u64().map(|u| u as i64))?;
            Some(MetricValue { name: strip(name), kind, value, sum: None })
        })
        .collect()
}

/// Histograms from `histogram_buckets=detailed`: `totals` lists Envoy's
/// cumulative bins (`lower_bound`, `width`, `count`). The count is exact.
/// Envoy keeps about two significant digits per sample, so the sum is
/// rebuilt from the bins' lower bounds: exact for whole samples below 100,
/// a slight under-estimate above. (`/stats/prometheus` shows Envoy's own,
/// interpolated `_sum`.)
pub fn parse_histograms(v: &Value) -> Vec<MetricValue> {
    let mut out = Vec::new();
    let Some(stats) = v["stats"].as_array() else { return out };
    for s in stats {
        let Some(details) = s["histograms"]["details"].as_array() else { continue };
        for h in details {
            let Some(name) = h["name"].as_str() else { continue };
            let mut count = 0i64;
            let mut sum = 0f64;
            for bin in h["totals"].as_array().into_iter().flatten() {
                let c = bin["count"].as_u64().unwrap_or(0);
                count += c as i64;
                sum += bin["lower_bound"].as_f64().unwrap_or(0.0) * c as f64;
            }
            out.push(MetricValue {
                name: strip(name),
                kind: MetricType::Histogram,
                value: count,
                sum: Some(sum.round() as u64),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_lose_the_custom_prefix() {
        let v = json!({"stats":[
            {"name":"wasmcustom.probe_requests_total","value":3},
            {"name":"wasmcustom.g;.;reporter=.=destination;.;","value":7}
        ]});
        let m = parse_scalars(&v, MetricType::Gauge);
        assert_eq!(
            m[0],
            MetricValue { name: "probe_requests_total".into(), kind: MetricType::Gauge, value: 3, sum: None }
        );
        assert_eq!(m[1].name, "g;.;reporter=.=destination;.;");
    }

    #[test]
    fn histograms_count_and_sum_from_detailed_bins() {
        // As Envoy 1.40 printed it after three samples of 42.
        let v = json!({"stats":[{"histograms":{"supported_percentiles":[0,50,100],"details":[
            {"name":"wasmcustom.probe_latency","totals":[{"lower_bound":42,"width":1,"count":3}],"intervals":[],"percentiles":[]},
            {"name":"wasmcustom.big","totals":[{"lower_bound":1200,"width":100,"count":1},{"lower_bound":7,"width":1,"count":2}]}
        ]}}]});
        let m = parse_histograms(&v);
        assert_eq!(
            m[0],
            MetricValue { name: "probe_latency".into(), kind: MetricType::Histogram, value: 3, sum: Some(126) }
        );
        assert_eq!((m[1].value, m[1].sum), (3, Some(1214)));
    }
}
