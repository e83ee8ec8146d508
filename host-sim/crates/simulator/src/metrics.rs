//! Plugin metrics with Envoy's semantics. Stats are process-wide (every VM
//! that defines the same name shares the stat); ids are per VM and carry the
//! metric type in their low two bits, as in Envoy.

use crate::abi::{HostResult, MetricType, Status};
use crate::result::MetricValue;
use std::collections::HashMap;

pub use crate::prometheus::Stat;

#[derive(Default)]
pub struct MetricStore {
    stats: Vec<Stat>,
    by_name: HashMap<String, usize>,
}

impl MetricStore {
    /// Finds or creates the stat; returns its index. A name defined with a
    /// different type is a separate stat in Envoy too (different scopes).
    pub fn define(&mut self, kind: MetricType, name: &str) -> usize {
        let key = format!("{}:{name}", kind as u8);
        if let Some(&i) = self.by_name.get(&key) {
            return i;
        }
        self.stats.push(Stat { name: name.to_string(), kind, value: 0, samples: Vec::new() });
        self.by_name.insert(key, self.stats.len() - 1);
        self.stats.len() - 1
    }

    pub fn increment(&mut self, index: usize, offset: i64) -> HostResult<()> {
        let s = &mut self.stats[index];
        match s.kind {
            // Envoy: counters only go up; a non-positive offset is refused.
            MetricType::Counter if offset > 0 => s.value = s.value.saturating_add(offset),
            MetricType::Counter => return Err(Status::BadArgument),
            MetricType::Gauge => s.value = s.value.saturating_add(offset),
            MetricType::Histogram => return Err(Status::BadArgument),
        }
        Ok(())
    }

    pub fn record(&mut self, index: usize, value: u64) -> HostResult<()> {
        let s = &mut self.stats[index];
        match s.kind {
            // Envoy adds the value to a counter and sets a gauge.
            MetricType::Counter => s.value = s.value.saturating_add(value as i64),
            MetricType::Gauge => s.value = value as i64,
            MetricType::Histogram => s.samples.push(value),
        }
        Ok(())
    }

    pub fn get(&self, index: usize) -> HostResult<u64> {
        let s = &self.stats[index];
        match s.kind {
            MetricType::Histogram => Err(Status::BadArgument),
            _ => Ok(s.value as u64),
        }
    }

    pub fn all(&self) -> &[Stat] {
        &self.stats
    }

    pub fn values(&self) -> Vec<MetricValue> {
        self.stats
            .iter()
            .map(|s| MetricValue {
                name: s.name.clone(),
                kind: s.kind,
                value: if s.kind == MetricType::Histogram { s.samples.len() as i64 } else { s.value },
                sum: (s.kind == MetricType::Histogram).then(|| s.samples.iter().sum()),
            })
            .collect()
    }
}

/// Per-VM metric ids: `(sequence << 2) | type`, the type bits as in Envoy
/// (counter 0, gauge 1, histogram 2), with one sequence per type: the first
/// counter is 4, the first gauge 5, the first histogram 6.
#[derive(Default)]
pub struct MetricIds {
    ids: HashMap<u32, usize>,
    next: [u32; 3],
}

impl MetricIds {
    pub fn assign(&mut self, kind: MetricType, stat: usize) -> u32 {
        let next = &mut self.next[kind as usize];
        *next += 1;
        let id = (*next << 2) | kind as u32;
        self.ids.insert(id, stat);
        id
    }

    pub fn resolve(&self, id: u32) -> HostResult<usize> {
        self.ids.get(&id).copied().ok_or(Status::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_refuse_non_positive_increments_and_histograms_refuse_reads() {
        let mut m = MetricStore::default();
        let c = m.define(MetricType::Counter, "c");
        assert_eq!(m.increment(c, 0), Err(Status::BadArgument));
        assert_eq!(m.increment(c, -1), Err(Status::BadArgument));
        m.increment(c, 2).unwrap();
        m.record(c, 3).unwrap();
        assert_eq!(m.get(c), Ok(5));
        let g = m.define(MetricType::Gauge, "g");
        m.increment(g, -4).unwrap();
        assert_eq!(m.get(g), Ok((-4i64) as u64));
        m.record(g, 7).unwrap();
        assert_eq!(m.get(g), Ok(7));
        let h = m.define(MetricType::Histogram, "h");
        assert_eq!(m.increment(h, 1), Err(Status::BadArgument));
        m.record(h, 10).unwrap();
        assert_eq!(m.get(h), Err(Status::BadArgument));
    }

    #[test]
    fn same_name_shares_a_stat_and_ids_carry_the_type() {
        let mut m = MetricStore::default();
        assert_eq!(m.define(MetricType::Counter, "x"), m.define(MetricType::Counter, "x"));
        let mut ids = MetricIds::default();
        let id = ids.assign(MetricType::Histogram, 0);
        assert_eq!(id & 3, 2);
        assert_eq!(id, 6, "first histogram");
        assert_eq!(ids.assign(MetricType::Counter, 0), 4, "first counter, whatever was defined before");
        assert_eq!(ids.assign(MetricType::Gauge, 0), 5, "first gauge");
        assert_eq!(ids.assign(MetricType::Counter, 0), 8, "second counter");
        assert_eq!(ids.resolve(id), Ok(0));
        assert_eq!(ids.resolve(id + 4), Err(Status::NotFound));
    }
}
