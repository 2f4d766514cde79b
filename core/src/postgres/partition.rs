//! Planning a relation's partitions as ctid block ranges.

use serde::{Deserialize, Serialize};

use super::catalog::{RelationInfo, RelationKind};

/// A half-open range of heap blocks `[start, end)`; `end == None` reads to the end of the
/// relation, so rows in blocks added after planning are still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRange {
    pub start: u32,
    pub end: Option<u32>,
}

impl BlockRange {
    pub const WHOLE: Self = Self { start: 0, end: None };

    /// The ctid predicate selecting this range, or `None` for the whole relation.
    pub fn predicate(&self) -> Option<String> {
        match (self.start, self.end) {
            (0, None) => None,
            (0, Some(end)) => Some(format!("ctid < '({end},0)'::tid")),
            (start, None) => Some(format!("ctid >= '({start},0)'::tid")),
            (start, Some(end)) => Some(format!("ctid >= '({start},0)'::tid AND ctid < '({end},0)'::tid")),
        }
    }
}

/// How many partitions a scan is split into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOptions {
    /// An exact partition count; `None` derives it from the relation's size.
    pub partitions: Option<usize>,
    /// With no exact count, one partition per this many heap bytes…
    pub target_partition_bytes: u64,
    /// …but never more than this many.
    pub max_partitions: usize,
}

impl Default for PartitionOptions {
    fn default() -> Self {
        Self {
            partitions: None,
            target_partition_bytes: 128 * 1024 * 1024,
            max_partitions: 64,
        }
    }
}

impl PartitionOptions {
    /// How many partitions a table of `bytes` is read in (any engine's).
    pub fn count_for(&self, bytes: u64) -> usize {
        self.partitions.unwrap_or_else(|| {
            let by_size = bytes.div_ceil(self.target_partition_bytes.max(1));
            (by_size as usize).clamp(1, self.max_partitions.max(1))
        })
    }
}

/// Splits `relation` into block ranges covering every row exactly once.
pub fn plan(relation: &RelationInfo, options: &PartitionOptions) -> Vec<BlockRange> {
    if relation.kind != RelationKind::Heap {
        return vec![BlockRange::WHOLE];
    }
    split_blocks(relation.heap_blocks, options.count_for(relation.heap_bytes))
}

/// `count` contiguous ranges over `blocks` blocks (fewer if there are fewer blocks), the last open-ended.
pub fn split_blocks(blocks: u64, count: usize) -> Vec<BlockRange> {
    let blocks = blocks.min(u32::MAX as u64);
    let count = (count.max(1) as u64).min(blocks.max(1));
    (0..count)
        .map(|i| BlockRange {
            start: (blocks * i / count) as u32,
            end: (i + 1 < count).then(|| (blocks * (i + 1) / count) as u32),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heap(blocks: u64) -> RelationInfo {
        RelationInfo {
            kind: RelationKind::Heap,
            heap_blocks: blocks,
            heap_bytes: blocks * 8192,
            columns: vec![],
        }
    }

    #[test]
    fn ranges_are_contiguous_disjoint_and_open_ended() {
        for (blocks, count) in [(1000, 7), (16, 16), (3, 16), (0, 4), (12345, 2)] {
            let ranges = split_blocks(blocks, count);
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges.last().unwrap().end, None);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end, Some(pair[1].start));
                assert!(pair[0].start < pair[1].start, "{blocks} {count}: {ranges:?}");
            }
            assert!(ranges.len() <= count.max(1));
        }
    }

    #[test]
    fn tiny_tables_get_one_partition_and_views_are_never_split() {
        assert_eq!(
            plan(&heap(10), &PartitionOptions::default()),
            vec![BlockRange::WHOLE]
        );
        let view = RelationInfo {
            kind: RelationKind::Other,
            ..heap(0)
        };
        let exact = PartitionOptions {
            partitions: Some(8),
            ..PartitionOptions::default()
        };
        assert_eq!(plan(&view, &exact), vec![BlockRange::WHOLE]);
        assert_eq!(plan(&heap(1000), &exact).len(), 8);
    }

    #[test]
    fn size_based_count_is_capped() {
        let options = PartitionOptions {
            target_partition_bytes: 8192 * 10,
            max_partitions: 5,
            partitions: None,
        };
        assert_eq!(plan(&heap(35), &options).len(), 4);
        assert_eq!(plan(&heap(1_000_000), &options).len(), 5);
    }

    #[test]
    fn predicates() {
        assert_eq!(BlockRange::WHOLE.predicate(), None);
        assert_eq!(
            BlockRange {
                start: 0,
                end: Some(5)
            }
            .predicate()
            .unwrap(),
            "ctid < '(5,0)'::tid"
        );
        assert_eq!(
            BlockRange {
                start: 5,
                end: Some(9)
            }
            .predicate()
            .unwrap(),
            "ctid >= '(5,0)'::tid AND ctid < '(9,0)'::tid"
        );
        assert_eq!(
            BlockRange { start: 9, end: None }.predicate().unwrap(),
            "ctid >= '(9,0)'::tid"
        );
    }
}
