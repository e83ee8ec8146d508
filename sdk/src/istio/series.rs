//! Metric ids by label set, with a cap on distinct label sets.

use std::collections::HashMap;

// ------------------------------------------------------------------ series cache

/// What a [`SeriesCache`] lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeriesLookup {
    /// The label set has a metric id.
    Hit(u32),
    /// A new label set, and there is room for it.
    Miss,
    /// A new label set past the cap: record into the overflow series.
    Full,
}

/// Metric ids of one metric by label set (the [`StatNaming::series_key`](super::StatNaming::series_key) of
/// its values), so `proxy_define_metric` runs once per series, with an
/// optional cap on the number of distinct label sets. Past the cap, new
/// label sets go to one overflow series (every label `overflow`).
#[derive(Clone, Debug, Default)]
pub struct SeriesCache {
    ids: HashMap<String, u32>,
    /// 0 = no cap.
    max_series: usize,
    overflow: Option<u32>,
}

impl SeriesCache {
    /// `max_series` 0 means unlimited.
    pub fn new(max_series: usize) -> Self {
        SeriesCache { ids: HashMap::new(), max_series, overflow: None }
    }

    pub fn lookup(&self, key: &str) -> SeriesLookup {
        match self.ids.get(key) {
            Some(id) => SeriesLookup::Hit(*id),
            None if self.max_series != 0 && self.ids.len() >= self.max_series => SeriesLookup::Full,
            None => SeriesLookup::Miss,
        }
    }

    pub fn insert(&mut self, key: String, id: u32) {
        self.ids.insert(key, id);
    }

    pub fn overflow_id(&self) -> Option<u32> {
        self.overflow
    }

    pub fn set_overflow_id(&mut self, id: u32) {
        self.overflow = Some(id);
    }

    /// Distinct label sets with an id (the overflow series not counted).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The id of the series for `key`: cached, or defined with
    /// `define(stat_name_is_overflow)` and cached. `define(false)` defines
    /// the regular series, `define(true)` the overflow one. Returns the id
    /// and whether the value went to the overflow series; None when the
    /// host refused to define the metric (nothing is cached then).
    pub fn resolve(&mut self, key: &str, define: impl FnOnce(bool) -> Option<u32>) -> Option<(u32, bool)> {
        match self.lookup(key) {
            SeriesLookup::Hit(id) => Some((id, false)),
            SeriesLookup::Miss => {
                let id = define(false)?;
                self.insert(key.to_string(), id);
                Some((id, false))
            }
            SeriesLookup::Full => {
                if let Some(id) = self.overflow {
                    return Some((id, true));
                }
                let id = define(true)?;
                self.overflow = Some(id);
                Some((id, true))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_cache_defines_once_and_caps() {
        let mut c = SeriesCache::new(2);
        let mut defined = Vec::new();
        let mut next = 10;
        let mut define = |overflow: bool| {
            defined.push(overflow);
            next += 1;
            Some(next)
        };
        assert_eq!(c.resolve("a", &mut define), Some((11, false)));
        assert_eq!(c.resolve("a", &mut define), Some((11, false)));
        assert_eq!(c.resolve("b", &mut define), Some((12, false)));
        assert_eq!(c.lookup("c"), SeriesLookup::Full);
        assert_eq!(c.resolve("c", &mut define), Some((13, true)));
        assert_eq!(c.resolve("d", &mut define), Some((13, true)));
        assert_eq!(c.resolve("b", &mut define), Some((12, false)));
        assert_eq!(defined, [false, false, true]);
        assert_eq!(c.len(), 2);
        let mut unlimited = SeriesCache::new(0);
        for i in 0..100 {
            unlimited.insert(i.to_string(), i);
        }
        assert_eq!(unlimited.lookup("new"), SeriesLookup::Miss);
        assert_eq!(SeriesCache::new(1).resolve("x", |_| None), None);
    }
}
