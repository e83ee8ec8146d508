//! Metric ids by label set, with a cap on distinct label sets per metric
//! and a bound on the bytes all of a VM's series may take.

use crate::fingerprint::{Fingerprint, FingerprintMap};

// ------------------------------------------------------------------ series key

/// A label set's identity: the [`Fingerprint`] of its values.
///
/// Why not the values themselves: a report looks its label set up in
/// every metric's cache, and with the values as the key (about 600 bytes
/// for Istio's 25 labels) each lookup hashed and compared them all; in
/// wasm, where `memcmp` goes a byte at a time, that was a quarter of
/// `stats`' work per request (host-sim profile, issue 18). Now a report
/// fingerprints its values once and every lookup compares 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeriesKey(Fingerprint);

impl SeriesKey {
    pub fn of<'a>(values: impl IntoIterator<Item = &'a str>) -> SeriesKey {
        SeriesKey(Fingerprint::of(values.into_iter().map(str::as_bytes)))
    }
}

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

/// Default bound on the bytes of a VM's series (meshwasm; Istio had none):
/// 32 MiB. An Istio series (25 labels of everyday values) costs about
/// 1.6 KB ([`series_cost`]), so about 20,000 fit (5,000 label sets of the
/// four HTTP metrics); a series whose 25 values are all 512 bytes costs
/// about 27 KB, so about 1,200 of those fit.
pub const DEFAULT_MAX_SERIES_BYTES: usize = 32 << 20;

/// What a series costs besides its bytes (the map entry, the key's
/// allocation, the id), so that many tiny series also meet the bound.
pub const SERIES_ENTRY_OVERHEAD: usize = 64;

/// The bytes a series is counted for: its cache key, its stat name (which
/// the host keeps too) and [`SERIES_ENTRY_OVERHEAD`].
pub fn series_cost(key_len: usize, stat_name_len: usize) -> usize {
    key_len.saturating_add(stat_name_len).saturating_add(SERIES_ENTRY_OVERHEAD)
}

/// The bytes every [`SeriesCache`] of a VM may hold together: a series
/// that would go past it is not defined, and its values go to the overflow
/// series, as past the per-metric cap. Memory then stays flat whatever
/// label values clients send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeriesBudget {
    /// 0 = unbounded.
    max_bytes: usize,
    used: usize,
}

impl SeriesBudget {
    /// `max_bytes` 0 means unbounded.
    pub fn new(max_bytes: usize) -> Self {
        SeriesBudget { max_bytes, used: 0 }
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Bytes taken so far.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Whether `cost` more bytes fit.
    pub fn fits(&self, cost: usize) -> bool {
        self.max_bytes == 0 || self.used.saturating_add(cost) <= self.max_bytes
    }

    fn take(&mut self, cost: usize) {
        self.used = self.used.saturating_add(cost);
    }
}

/// Metric ids of one metric by label set ([`SeriesKey`] of the sanitized,
/// cut values), so `proxy_define_metric` runs once per series, with an
/// optional cap on the number of distinct label sets. Past the cap, new
/// label sets go to one overflow series (every label `overflow`).
#[derive(Clone, Debug, Default)]
pub struct SeriesCache {
    ids: FingerprintMap<u32>,
    /// 0 = no cap.
    max_series: usize,
    overflow: Option<u32>,
}

impl SeriesCache {
    /// `max_series` 0 means unlimited.
    pub fn new(max_series: usize) -> Self {
        SeriesCache { ids: FingerprintMap::default(), max_series, overflow: None }
    }

    pub fn lookup(&self, key: SeriesKey) -> SeriesLookup {
        match self.ids.get(&key.0) {
            Some(id) => SeriesLookup::Hit(*id),
            None if self.max_series != 0 && self.ids.len() >= self.max_series => SeriesLookup::Full,
            None => SeriesLookup::Miss,
        }
    }

    pub fn insert(&mut self, key: SeriesKey, id: u32) {
        self.ids.insert(key.0, id);
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
    /// the regular series, `define(true)` the overflow one. A new series
    /// costing `cost` bytes ([`series_cost`]) is taken from `budget`; when
    /// it does not fit, or the cap is reached, the value goes to the
    /// overflow series. Returns the id and whether the value went to the
    /// overflow series; None when the host refused to define the metric
    /// (nothing is cached or taken then).
    pub fn resolve(
        &mut self,
        key: SeriesKey,
        cost: usize,
        budget: &mut SeriesBudget,
        define: impl FnOnce(bool) -> Option<u32>,
    ) -> Option<(u32, bool)> {
        let found = match self.lookup(key) {
            SeriesLookup::Miss if !budget.fits(cost) => SeriesLookup::Full,
            found => found,
        };
        match found {
            SeriesLookup::Hit(id) => Some((id, false)),
            SeriesLookup::Miss => {
                let id = define(false)?;
                self.insert(key, id);
                budget.take(cost);
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

    fn k(value: &str) -> SeriesKey {
        SeriesKey::of([value])
    }

    #[test]
    fn series_keys_tell_label_sets_apart() {
        assert_eq!(SeriesKey::of(["a", "bc"]), SeriesKey::of(["a", "bc"]));
        assert_ne!(SeriesKey::of(["a", "bc"]), SeriesKey::of(["ab", "c"]));
        assert_ne!(SeriesKey::of(["a", ""]), SeriesKey::of(["a"]));
    }

    #[test]
    fn series_cache_defines_once_and_caps() {
        let mut c = SeriesCache::new(2);
        let mut budget = SeriesBudget::new(0);
        let mut defined = Vec::new();
        let mut next = 10;
        let mut define = |overflow: bool| {
            defined.push(overflow);
            next += 1;
            Some(next)
        };
        assert_eq!(c.resolve(k("a"), 1, &mut budget, &mut define), Some((11, false)));
        assert_eq!(c.resolve(k("a"), 1, &mut budget, &mut define), Some((11, false)));
        assert_eq!(c.resolve(k("b"), 1, &mut budget, &mut define), Some((12, false)));
        assert_eq!(c.lookup(k("c")), SeriesLookup::Full);
        assert_eq!(c.resolve(k("c"), 1, &mut budget, &mut define), Some((13, true)));
        assert_eq!(c.resolve(k("d"), 1, &mut budget, &mut define), Some((13, true)));
        assert_eq!(c.resolve(k("b"), 1, &mut budget, &mut define), Some((12, false)));
        assert_eq!(defined, [false, false, true]);
        assert_eq!(c.len(), 2);
        assert_eq!(budget.used(), 2, "an unbounded budget still counts");
        let mut unlimited = SeriesCache::new(0);
        for i in 0..100 {
            unlimited.insert(k(&i.to_string()), i);
        }
        assert_eq!(unlimited.lookup(k("new")), SeriesLookup::Miss);
        assert_eq!(SeriesCache::new(1).resolve(k("x"), 1, &mut budget, |_| None), None);
        assert_eq!(budget.used(), 2, "nothing taken for a refused definition");
    }

    #[test]
    fn the_byte_budget_is_shared_and_overflows() {
        // Two metrics share a budget of 250 bytes; series cost 100.
        let mut budget = SeriesBudget::new(250);
        let (mut m1, mut m2) = (SeriesCache::new(0), SeriesCache::new(0));
        let mut next = 0;
        let mut define = |overflow: bool| {
            next += 1;
            Some(if overflow { 1000 + next } else { next })
        };
        assert_eq!(m1.resolve(k("a"), 100, &mut budget, &mut define), Some((1, false)));
        assert_eq!(m2.resolve(k("a"), 100, &mut budget, &mut define), Some((2, false)));
        assert!(budget.fits(50) && !budget.fits(51));
        // Past the budget: the overflow series, for either metric.
        assert_eq!(m1.resolve(k("b"), 100, &mut budget, &mut define), Some((1003, true)));
        assert_eq!(m2.resolve(k("b"), 100, &mut budget, &mut define), Some((1004, true)));
        assert_eq!(m1.resolve(k("c"), 100, &mut budget, &mut define), Some((1003, true)));
        // Known series still resolve; a small one still fits.
        assert_eq!(m1.resolve(k("a"), 100, &mut budget, &mut define), Some((1, false)));
        assert_eq!(m1.resolve(k("d"), 50, &mut budget, &mut define), Some((5, false)));
        assert_eq!(budget.used(), 250);
        assert_eq!((m1.len(), m2.len()), (2, 1));
        assert_eq!(series_cost(10, 20), 10 + 20 + SERIES_ENTRY_OVERHEAD);
    }
}
