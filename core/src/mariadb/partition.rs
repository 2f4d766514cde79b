//! Planning a MariaDB table's partitions as ranges of an integer key.

use serde::{Deserialize, Serialize};

/// A half-open range `[start, end)` of the partitioning key; an open end reads every key beyond,
/// so rows whose keys were added outside the planned bounds are still read, exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub start: Option<i128>,
    pub end: Option<i128>,
}

impl KeyRange {
    pub const WHOLE: Self = Self {
        start: None,
        end: None,
    };

    /// The predicate on `key` (already quoted) selecting this range, or `None` for every row.
    pub fn predicate(&self, key: &str) -> Option<String> {
        match (self.start, self.end) {
            (None, None) => None,
            (None, Some(end)) => Some(format!("{key} < {end}")),
            (Some(start), None) => Some(format!("{key} >= {start}")),
            (Some(start), Some(end)) => Some(format!("{key} >= {start} AND {key} < {end}")),
        }
    }
}

/// `count` contiguous ranges over the keys `min..=max` (fewer if there are fewer keys), the
/// first and last open-ended.
pub fn split_keys(min: i128, max: i128, count: usize) -> Vec<KeyRange> {
    let keys = (max - min + 1).max(1);
    let count = (count.max(1) as i128).min(keys);
    let bound = |i: i128| min + keys * i / count;
    (0..count)
        .map(|i| KeyRange {
            start: (i > 0).then(|| bound(i)),
            end: (i + 1 < count).then(|| bound(i + 1)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_contiguous_disjoint_and_open_ended() {
        let max_unsigned = i128::from(u64::MAX);
        for (min, max, count) in [
            (1, 1000, 7),
            (0, 15, 16),
            (5, 7, 16),
            (-50, 50, 2),
            (0, max_unsigned, 16),
        ] {
            let ranges = split_keys(min, max, count);
            assert_eq!(ranges[0].start, None);
            assert_eq!(ranges.last().unwrap().end, None);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end, pair[1].start);
            }
            let bounds: Vec<i128> = ranges.iter().filter_map(|r| r.end).collect();
            assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{ranges:?}");
            assert!(bounds.iter().all(|b| (min..=max).contains(b)), "{ranges:?}");
            assert!(ranges.len() <= count);
        }
        assert_eq!(split_keys(5, 7, 16).len(), 3);
    }

    #[test]
    fn predicates() {
        let range = KeyRange {
            start: Some(-5),
            end: Some(10),
        };
        assert_eq!(range.predicate("`id`").unwrap(), "`id` >= -5 AND `id` < 10");
        assert_eq!(KeyRange::WHOLE.predicate("`id`"), None);
    }
}
