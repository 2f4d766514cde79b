//! A job's files: only those its finished passes wrote are kept; a job that succeeds has each of
//! its outputs published with a row count (and an empty file where it has no rows), one that
//! fails or is cancelled has them removed.

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::datatypes::SchemaRef;
use kalla_core::cache::sink::write_empty;
use kalla_core::cache::{CacheDir, WrittenFile};
use kalla_core::storage;

use super::run::{Pass, PassLog};
use super::{JobError, Jobs, failed};
use crate::metadata::JobRecord;

impl Jobs {
    /// Removes every file of the job's results but those its finished passes wrote.
    pub(super) async fn keep_files(&self, id: &str, finished: &[Pass]) -> Result<(), JobError> {
        let written: Vec<&WrittenFile> = finished.iter().flat_map(|pass| &pass.written).collect();
        let removed = self.retain_only(&self.results_dir(id), &written).await?;
        if removed > 0 {
            tracing::info!(job = %id, removed, "removed files of retried or interrupted tasks");
        }
        Ok(())
    }

    pub(super) async fn keep_finished_passes(&self, job: &JobRecord) -> Result<(), JobError> {
        self.keep_files(&job.id, &PassLog::of(job).finished).await
    }

    /// Keeps exactly the files the summaries name, gives every output without rows an empty
    /// file (so it has a schema), and counts rows per output.
    pub(super) async fn publish(
        &self,
        dir: &CacheDir,
        written: Vec<WrittenFile>,
        schemas: &HashMap<String, SchemaRef>,
        outputs: &[&str],
    ) -> Result<BTreeMap<String, u64>, JobError> {
        let removed = self.retain_only(dir, &written.iter().collect::<Vec<_>>()).await?;
        if removed > 0 {
            tracing::info!(dir = %dir.as_str(), removed, "removed files no task reported");
        }
        let store = storage::object_store_for(dir.url(), &self.inner.settings.s3).map_err(failed)?;
        for output in outputs_without_files(&written, outputs) {
            let schema = schemas
                .get(output)
                .cloned()
                .ok_or_else(|| failed(format!("no schema for output {output}")))?;
            let path = dir.join(&[output]).path().map_err(failed)?;
            write_empty(&store, path, schema).await.map_err(failed)?;
        }
        Ok(row_counts(&written, outputs))
    }

    /// Removes every file below `dir` but `written`; returns how many went.
    async fn retain_only(&self, dir: &CacheDir, written: &[&WrittenFile]) -> Result<usize, JobError> {
        let store = storage::object_store_for(dir.url(), &self.inner.settings.s3).map_err(failed)?;
        let keep: Vec<&str> = written.iter().map(|file| file.path.as_str()).collect();
        dir.retain_only(&store, &keep).await.map_err(failed)
    }

    pub(super) async fn discard_results(&self, id: &str) {
        let dir = self.results_dir(id);
        let deleted = match storage::object_store_for(dir.url(), &self.inner.settings.s3) {
            Ok(store) => dir.delete_all(&store).await.map(drop).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = deleted {
            tracing::warn!(job = %id, %error, "cannot remove a job's partial results");
        }
    }
}

/// The output a written file belongs to: its directory's name.
pub(super) fn output_of(path: &str) -> &str {
    path.rsplit('/').nth(1).unwrap_or_default()
}

/// Rows per output (every output listed, `0` where nothing was written).
pub(super) fn row_counts(written: &[WrittenFile], outputs: &[&str]) -> BTreeMap<String, u64> {
    let mut counts: BTreeMap<String, u64> = outputs.iter().map(|o| (o.to_string(), 0)).collect();
    for file in written {
        if let Some(count) = counts.get_mut(output_of(&file.path)) {
            *count += file.rows;
        }
    }
    counts
}

/// How a pass's rows spread over its tasks (Ballista may give a task several partitions): how
/// many wrote rows, the rows of the largest, and what they spilled to their executors' work dirs
/// with the keys that made them spill.
#[derive(Debug, Default, PartialEq, serde::Serialize)]
pub(super) struct Skew {
    pub(super) tasks: usize,
    pub(super) largest_task_rows: u64,
    pub(super) spilled_bytes: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) hot_keys: Vec<String>,
}

impl Skew {
    /// The skew of the pass that wrote `written` (a task's spills are on each of its files).
    pub(super) fn of(written: &[WrittenFile]) -> Self {
        let mut tasks: BTreeMap<u64, (u64, &WrittenFile)> = BTreeMap::new();
        for file in written {
            tasks.entry(file.execution).or_insert((0, file)).0 += file.rows;
        }
        Self {
            tasks: tasks.len(),
            largest_task_rows: tasks.values().map(|(rows, _)| *rows).max().unwrap_or(0),
            spilled_bytes: tasks.values().map(|(_, file)| file.spilled_bytes).sum(),
            hot_keys: tasks
                .values()
                .filter(|(_, file)| !file.hot_keys.is_empty())
                .map(|(_, file)| file.hot_keys.clone())
                .collect(),
        }
    }
}

/// The outputs no written file belongs to.
fn outputs_without_files<'a>(written: &[WrittenFile], outputs: &[&'a str]) -> Vec<&'a str> {
    outputs
        .iter()
        .copied()
        .filter(|output| !written.iter().any(|f| output_of(&f.path) == *output))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, rows: u64) -> WrittenFile {
        WrittenFile {
            partition: 0,
            path: path.into(),
            rows,
            bytes: 100,
            execution: 0,
            spilled_bytes: 0,
            hot_keys: String::new(),
        }
    }

    #[test]
    fn skew_names_the_largest_task_and_each_spill_once() {
        let in_partition = |execution, rows, spilled, keys: &str| WrittenFile {
            execution,
            spilled_bytes: spilled,
            hot_keys: keys.into(),
            ..file("r/matched/x.parquet", rows)
        };
        let written = [
            in_partition(0, 10, 0, ""),
            in_partition(1, 30, 500, "7 (20 rows)"),
            in_partition(1, 5, 500, "7 (20 rows)"),
            in_partition(2, 35, 0, ""),
        ];
        assert_eq!(
            Skew::of(&written),
            Skew {
                tasks: 3,
                largest_task_rows: 35,
                spilled_bytes: 500,
                hot_keys: vec!["7 (20 rows)".into()],
            }
        );
        assert_eq!(Skew::of(&[]), Skew::default());
    }

    #[test]
    fn rows_are_counted_per_output_directory() {
        let written = [
            file("results/job_1/matched/part-0.parquet", 5),
            file("results/job_1/matched/part-1.parquet", 7),
            file("results/job_1/left_only/part-0.parquet", 2),
            file("results/job_1/stray/part-0.parquet", 9),
        ];
        let outputs = ["matched", "left_only", "right_only"];
        let counts = row_counts(&written, &outputs);
        assert_eq!(
            counts,
            BTreeMap::from([
                ("left_only".into(), 2),
                ("matched".into(), 12),
                ("right_only".into(), 0)
            ])
        );
        assert_eq!(outputs_without_files(&written, &outputs), ["right_only"]);
        assert_eq!(output_of("no-directory.parquet"), "");
    }
}
