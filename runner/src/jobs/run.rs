//! Running a job on the cluster: its passes, each a Ballista job writing files, taken over from
//! an interrupted run when the scheduler still has it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballista_core::execution_plans::DistributedQueryExec;
use ballista_core::serde::protobuf::CancelJobParams;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::collect;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion_proto::protobuf::LogicalPlanNode;
use kalla_core::cache::sink::{SinkSpec, Split};
use kalla_core::cache::write::WritePlanTable;
use kalla_core::cache::{CacheDir, WrittenFile, parquet_dir_table, written_files};
use kalla_core::preview::predicate;
use kalla_core::recon::plan::{self, OUTPUTS};
use kalla_core::recon::{CheckedRecipe, ParamValues, Recipe, Side};
use serde::{Deserialize, Serialize};

use super::carry::OpenItemsSummary;
use super::outputs::{Skew, output_of, row_counts};
use super::submit::{QuerySpec, RunInputs};
use super::{JobError, Jobs, failed};
use crate::job_outputs::QUERY_OUTPUT;
use crate::metadata::JobRecord;
use crate::reattach;
use crate::recipes::RecipeError;

impl Jobs {
    pub(super) async fn execute(&self, job: &JobRecord) -> Result<RunSummary, JobError> {
        match job.job_type.as_str() {
            "recon" => {
                let recipe: Recipe = serde_json::from_str(&job.spec_json).map_err(failed)?;
                self.reconcile(job, &recipe).await
            }
            _ => {
                let spec: QuerySpec = serde_json::from_str(&job.spec_json).map_err(failed)?;
                self.query(job, &spec).await
            }
        }
    }

    async fn reconcile(&self, job: &JobRecord, recipe: &Recipe) -> Result<RunSummary, JobError> {
        let inputs: RunInputs = match &job.inputs_json {
            Some(inputs) => serde_json::from_str(inputs).map_err(failed)?,
            None => RunInputs::default(),
        };
        let carry = match recipe.carry_forward {
            true => Some(self.carry_in(job, &inputs).await?),
            false => None,
        };
        let session = self.inner.cluster.query_session().await;
        let left = self.side(&session, &recipe.left, &inputs.params).await?;
        let right = self.side(&session, &recipe.right, &inputs.params).await?;
        let checked = recipe
            .check(left.schema().as_arrow(), right.schema().as_arrow())
            .map_err(RecipeError::from)?;
        let mut sides = (filtered(left, &recipe.left)?, filtered(right, &recipe.right)?);
        if let Some(carry) = &carry {
            sides = (
                self.with_open_items(&session, carry, sides.0, &checked, true)?,
                self.with_open_items(&session, carry, sides.1, &checked, false)?,
            );
        }
        let dir = self.results_dir(&job.id);
        let mut log = PassLog::of(job);
        let mut summary = RunSummary::default();
        let mut outputs = Vec::new();
        let mut everything = Vec::new();
        let mut schemas = HashMap::new();
        for (index, pass) in checked.passes.iter().enumerate() {
            if index > 0 {
                sides = (
                    remaining(&session, &dir, &checked, &schemas, index - 1, true)?,
                    remaining(&session, &dir, &checked, &schemas, index - 1, false)?,
                );
            }
            let timer = Instant::now();
            let partition_bytes = self.inner.settings.pair_partition_bytes;
            let (classified, split) =
                plan::classify(sides.0.clone(), sides.1.clone(), &checked, index, partition_bytes)
                    .map_err(failed)?;
            schemas.extend(output_schemas(classified.schema().as_arrow(), &split));
            let table = split_write(&classified, &dir, split);
            let phase = match checked.passes.len() {
                1 => "classifying".to_string(),
                n => format!("classifying: pass {} of {n} ({})", index + 1, pass.name),
            };
            let written = self.run_pass(&session, job, &mut log, &phase, table).await?;
            let timing = match checked.passes.len() {
                1 => "classify".to_string(),
                _ => format!("classify_{}", pass.name),
            };
            summary.timings.insert(timing, timer.elapsed().as_millis() as u64);
            summary.pass_counts.push(PassCounts::of(
                &pass.name,
                index,
                index + 1 == checked.passes.len(),
                &written,
            ));
            outputs.extend(
                written
                    .iter()
                    .filter(|f| OUTPUTS.contains(&output_of(&f.path)))
                    .cloned(),
            );
            everything.extend(written);
        }

        summary.skew = Some(Skew::of(&everything));
        self.inner.db.set_job_phase(&job.id, "publishing").await?;
        let timer = Instant::now();
        summary.counts = self.publish(&dir, outputs, &schemas, &OUTPUTS).await?;
        summary
            .timings
            .insert("publish".into(), timer.elapsed().as_millis() as u64);
        // Last, so a run whose results are not all written records no open items.
        if let Some(carry) = &carry {
            self.inner
                .db
                .set_job_phase(&job.id, "carrying open items forward")
                .await?;
            summary.open_items = Some(self.carry_out(job, carry, &checked, &dir, &schemas).await?);
        }
        Ok(summary)
    }

    async fn query(&self, job: &JobRecord, spec: &QuerySpec) -> Result<RunSummary, JobError> {
        let (frame, _) = self.inner.catalog.plan(&spec.sql, spec.live).await?;
        let dir = self.results_dir(&job.id);
        let output = dir.join(&[QUERY_OUTPUT]);
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let session = self.inner.cluster.query_session().await;
        let table = WritePlanTable::new(
            frame.logical_plan().clone(),
            SinkSpec {
                directory: output.as_str().to_string(),
                split: None,
            },
        );
        let timer = Instant::now();
        let written = self
            .run_pass(&session, job, &mut PassLog::of(job), "running", table)
            .await?;
        let mut summary = RunSummary::default();
        summary
            .timings
            .insert("query".into(), timer.elapsed().as_millis() as u64);
        let schemas = HashMap::from([(QUERY_OUTPUT.to_string(), schema)]);
        summary.counts = self.publish(&dir, written, &schemas, &[QUERY_OUTPUT]).await?;
        Ok(summary)
    }

    async fn side(
        &self,
        session: &SessionContext,
        side: &Side,
        values: &ParamValues,
    ) -> Result<DataFrame, JobError> {
        Ok(self
            .inner
            .catalog
            .read(session, &side.source, false, values)
            .await?)
    }

    /// Runs the job's next pass, unless an earlier run finished it; takes over the Ballista job of
    /// an interrupted run if the scheduler still runs it. Once the pass is done, files its tasks
    /// wrote that no summary names (retried tasks) are removed, and the pass is recorded.
    async fn run_pass(
        &self,
        session: &SessionContext,
        job: &JobRecord,
        log: &mut PassLog,
        phase: &str,
        table: WritePlanTable,
    ) -> Result<Vec<WrittenFile>, JobError> {
        if let Some(pass) = log.finished.get(log.next) {
            log.next += 1;
            return Ok(pass.written.clone());
        }
        self.inner.db.set_job_phase(&job.id, phase).await?;
        if job.callback_url.is_some() {
            self.notify(&self.inner.db.job(&job.id).await?, "progress").await;
        }
        let followed = match self.followable(log).await {
            // It may still end without a result: e.g. one cancelled after a stall that read as
            // running a moment longer.
            Some(ballista) => self.follow(&ballista).await.inspect_err(|error| {
                tracing::warn!(job = %job.id, %error, "cannot take over the Ballista job; running the pass again");
            }),
            None => Err(failed("no Ballista job to take over")),
        };
        log.follow = None;
        let pass = match followed {
            Ok(pass) => pass,
            Err(_) => {
                self.keep_files(&job.id, &log.finished).await?;
                self.run_on_cluster(session, job, table).await?
            }
        };
        log.finished.push(pass.clone());
        log.next += 1;
        let record = serde_json::to_string(&log.finished).map_err(failed)?;
        self.keep_files(&job.id, &log.finished).await?;
        self.inner.db.set_job_passes(&job.id, &record).await?;
        Ok(pass.written)
    }

    /// The Ballista job an interrupted run left, if the scheduler still runs it (or has finished it).
    pub(super) async fn followable(&self, log: &PassLog) -> Option<String> {
        let ballista = log.follow.clone()?;
        let mut scheduler = self.inner.cluster.scheduler().await.ok()?;
        reattach::state(&mut scheduler, &ballista)
            .await
            .can_follow()
            .then_some(ballista)
    }

    async fn follow(&self, ballista: &str) -> Result<Pass, JobError> {
        let mut scheduler = self.inner.cluster.scheduler().await.map_err(failed)?;
        let batches =
            reattach::wait_for_result(&mut scheduler, ballista, self.inner.cluster.flight_endpoint())
                .await
                .map_err(failed)?;
        pass(ballista, &batches)
    }

    /// Submits a pass to the cluster and waits for it; gives up on it if it stalls after the
    /// cluster lost an executor.
    async fn run_on_cluster(
        &self,
        session: &SessionContext,
        job: &JobRecord,
        table: WritePlanTable,
    ) -> Result<Pass, JobError> {
        let plan = session
            .read_table(Arc::new(table))
            .map_err(failed)?
            .create_physical_plan()
            .await
            .map_err(failed)?;
        let distributed = plan
            .downcast_ref::<DistributedQueryExec<LogicalPlanNode>>()
            .ok_or_else(|| failed("the runner's plan is not a Ballista plan"))?;
        let executors = match &self.inner.stall {
            Some(watch) => watch.executors().await.ok(),
            None => None,
        };
        let query = collect(plan.clone(), session.task_ctx());
        tokio::pin!(query);
        // Until the scheduler has accepted the query: its Ballista job id, recorded at once so
        // that the job can be cancelled or taken over.
        let ballista = tokio::select! {
            ballista = accepted(distributed) => ballista,
            finished = &mut query => {
                let batches = finished.map_err(failed)?;
                let ballista = distributed
                    .job_id()
                    .ok_or_else(|| failed("the cluster did not say which Ballista job ran this pass"))?;
                self.record_ballista_job(job, ballista.as_str()).await;
                return pass(ballista.as_str(), &batches);
            }
        };
        self.record_ballista_job(job, &ballista).await;
        let stalled = async {
            match (&self.inner.stall, executors) {
                (Some(watch), Some(executors)) => watch.stalled(&ballista, executors).await,
                _ => std::future::pending().await,
            }
        };
        let batches = tokio::select! {
            batches = &mut query => batches.map_err(failed)?,
            reason = stalled => return Err(JobError::Stalled(reason)),
        };
        pass(&ballista, &batches)
    }

    async fn record_ballista_job(&self, job: &JobRecord, ballista: &str) {
        if let Err(error) = self.inner.db.add_ballista_job(&job.id, ballista).await {
            tracing::warn!(job = %job.id, %error, "cannot record the Ballista job id");
        }
    }

    pub(super) async fn cancel_ballista_jobs(&self, job: &JobRecord) {
        if job.ballista_job_ids.is_empty() {
            return;
        }
        let mut scheduler = match self.inner.cluster.scheduler().await {
            Ok(scheduler) => scheduler,
            Err(error) => {
                tracing::warn!(job = %job.id, %error, "cannot cancel the job's Ballista jobs");
                return;
            }
        };
        for ballista in &job.ballista_job_ids {
            let cancelled = scheduler
                .cancel_job(CancelJobParams {
                    job_id: ballista.clone(),
                })
                .await;
            if let Err(error) = cancelled {
                tracing::warn!(job = %job.id, ballista, %error, "cannot cancel a Ballista job");
            }
        }
    }
}

/// A finished pass of a job: its Ballista job and the files it wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Pass {
    ballista_job_id: String,
    pub(super) written: Vec<WrittenFile>,
}

/// The passes of one run of a job: those an earlier run finished are not run again, and the
/// first unfinished one may take over the Ballista job the interrupted run left.
pub(super) struct PassLog {
    pub(super) finished: Vec<Pass>,
    /// The next pass the run asks for.
    next: usize,
    /// The interrupted run's last Ballista job, if it is not a finished pass.
    follow: Option<String>,
}

impl PassLog {
    pub(super) fn of(job: &JobRecord) -> Self {
        let finished: Vec<Pass> = serde_json::from_str(&job.passes_json).unwrap_or_else(|error| {
            tracing::warn!(job = %job.id, %error, "unreadable record of finished passes; running them again");
            Vec::new()
        });
        let follow = job
            .ballista_job_ids
            .last()
            .filter(|last| !finished.iter().any(|p| &p.ballista_job_id == *last))
            .cloned();
        Self {
            finished,
            next: 0,
            follow,
        }
    }
}

/// What a run produced: rows per output, how long each pass took, and (for a reconciliation)
/// how its pairing spread over the tasks.
#[derive(Debug, Default)]
pub(super) struct RunSummary {
    pub(super) counts: BTreeMap<String, u64>,
    /// For a reconciliation: what each pass decided, in order.
    pub(super) pass_counts: Vec<PassCounts>,
    pub(super) timings: BTreeMap<String, u64>,
    pub(super) skew: Option<Skew>,
    /// For a carry_forward recipe: what the run did to its open items.
    pub(super) open_items: Option<OpenItemsSummary>,
}

/// What one pass of a reconciliation decided: rows per output it wrote and, before the last
/// pass, the rows of each side it passed on to the next.
#[derive(Debug, Serialize)]
pub(super) struct PassCounts {
    pub(super) pass: String,
    pub(super) outputs: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) passed_on: Option<BTreeMap<String, u64>>,
}

impl PassCounts {
    fn of(name: &str, index: usize, last: bool, written: &[WrittenFile]) -> Self {
        if last {
            return Self {
                pass: name.to_string(),
                outputs: row_counts(written, &OUTPUTS),
                passed_on: None,
            };
        }
        let (left, right) = (plan::remaining(index, true), plan::remaining(index, false));
        let passed_on = row_counts(written, &[left.as_str(), right.as_str()]);
        Self {
            pass: name.to_string(),
            outputs: row_counts(
                written,
                &[plan::MATCHED, plan::MISMATCHED, plan::EXCEPTIONS, plan::AMBIGUOUS],
            ),
            passed_on: Some(BTreeMap::from([
                ("left".to_string(), passed_on[&left]),
                ("right".to_string(), passed_on[&right]),
            ])),
        }
    }
}

fn output_schemas(schema: &Schema, split: &Split) -> HashMap<String, SchemaRef> {
    split
        .outputs
        .iter()
        .filter_map(|o| Some((o.name.clone(), Arc::new(schema.project(&o.columns).ok()?))))
        .collect()
}

/// What pass `index` left undecided of one side, as the next pass reads it.
fn remaining(
    session: &SessionContext,
    dir: &CacheDir,
    recipe: &CheckedRecipe,
    schemas: &HashMap<String, SchemaRef>,
    index: usize,
    left: bool,
) -> Result<DataFrame, JobError> {
    let name = plan::remaining(index, left);
    let schema = schemas
        .get(&name)
        .cloned()
        .ok_or_else(|| failed(format!("no schema for {name}")))?;
    let table = parquet_dir_table(dir.join(&[&name]).as_str(), schema).map_err(failed)?;
    let frame = session.read_table(table).map_err(failed)?;
    plan::as_source(frame, recipe, left).map_err(failed)
}

fn filtered(frame: DataFrame, side: &Side) -> Result<DataFrame, JobError> {
    let fields: Vec<_> = frame.schema().fields().iter().cloned().collect();
    match predicate(&fields, &side.filters).map_err(|e| JobError::InvalidRequest(e.to_string()))? {
        Some(predicate) => frame.filter(predicate).map_err(failed),
        None => Ok(frame),
    }
}

/// The Ballista job id of a query once the scheduler has accepted it.
async fn accepted(query: &DistributedQueryExec<LogicalPlanNode>) -> String {
    loop {
        if let Some(ballista) = query.job_id() {
            return ballista.as_str().to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writing `frame` into `dir`, its rows routed to outputs by `split`.
fn split_write(frame: &DataFrame, dir: &CacheDir, split: Split) -> WritePlanTable {
    WritePlanTable::new(
        frame.logical_plan().clone(),
        SinkSpec {
            directory: dir.as_str().to_string(),
            split: Some(split),
        },
    )
}

/// A finished pass: the files its summary rows name.
fn pass(ballista: &str, summary: &[RecordBatch]) -> Result<Pass, JobError> {
    Ok(Pass {
        ballista_job_id: ballista.to_string(),
        written: written_files(summary).map_err(failed)?,
    })
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field};
    use kalla_core::cache::sink::SplitOutput;

    use super::*;
    use crate::jobs::test_job;
    use crate::metadata::JobStatus;

    #[test]
    fn an_interrupted_run_follows_only_an_unfinished_ballista_job() {
        let mut job = test_job("recon", JobStatus::Running);
        job.ballista_job_ids = vec!["b1".into(), "b2".into()];
        job.passes_json = r#"[{"ballista_job_id": "b1", "written": []}]"#.into();
        let log = PassLog::of(&job);
        assert_eq!((log.finished.len(), log.follow.as_deref()), (1, Some("b2")));

        job.passes_json = r#"[{"ballista_job_id": "b1", "written": []},
                              {"ballista_job_id": "b2", "written": []}]"#
            .into();
        assert_eq!(PassLog::of(&job).follow, None);

        job.passes_json = "not json".into();
        let log = PassLog::of(&job);
        assert!(
            log.finished.is_empty(),
            "an unreadable record runs every pass again"
        );
        assert_eq!(log.follow.as_deref(), Some("b2"));
    }

    #[test]
    fn each_output_has_the_columns_its_split_routes_to_it() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("amount", DataType::Float64, true),
            Field::new("note", DataType::Utf8, true),
        ]);
        let split = Split {
            route_column: 0,
            outputs: vec![
                SplitOutput {
                    name: "matched".into(),
                    columns: vec![0, 1],
                },
                SplitOutput {
                    name: "broken".into(),
                    columns: vec![7],
                },
            ],
        };
        let schemas = output_schemas(&schema, &split);
        let names: Vec<&str> = schemas["matched"]
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["id", "amount"]);
        assert!(
            !schemas.contains_key("broken"),
            "a projection out of range is left out"
        );
    }
}
