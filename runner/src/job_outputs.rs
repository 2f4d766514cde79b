//! Where a job's outputs are read from: `root/results/{job_id}/{output}/` of a succeeded job whose
//! results are kept, and the latest such job of a recipe. The HTTP API's result routes and the
//! SQL catalog's `results.<job_id>.<output>` and `results.latest_<recipe>.<output>` both ask here.

use kalla_core::cache::CacheDir;
use kalla_core::recon::plan::OUTPUTS;
use thiserror::Error;

use crate::metadata::{JobFilter, JobRecord, JobStatus, MetadataDb, MetadataError, RecipeRecord};

/// The output of a query job.
pub const QUERY_OUTPUT: &str = "result";

/// The prefix of a job-id-like name that means a recipe's latest succeeded run.
pub const LATEST_PREFIX: &str = "latest_";

#[derive(Debug, Error)]
pub enum OutputError {
    #[error("output {output:?} does not exist; this job has: {}", available.join(", "))]
    UnknownOutput { output: String, available: Vec<String> },
    #[error("job {0} has no results: it has not succeeded")]
    NoResults(String),
    #[error("the results of job {id} were deleted at {at}")]
    ResultsDeleted { id: String, at: String },
    #[error("recipe {0:?} has no succeeded run yet")]
    NoRun(String),
    #[error("more than one job's id is {0:?} but for case: quote the id (results.\"job_…\".output)")]
    Ambiguous(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// The outputs a job of `job_type` writes.
pub fn outputs_of(job_type: &str) -> &'static [&'static str] {
    match job_type {
        "recon" => &OUTPUTS,
        _ => &[QUERY_OUTPUT],
    }
}

/// Finds job outputs in the metadata DB and under the results root.
#[derive(Clone)]
pub struct JobOutputs {
    db: MetadataDb,
    root: CacheDir,
}

impl JobOutputs {
    pub fn new(db: MetadataDb, root: CacheDir) -> Self {
        Self { db, root }
    }

    /// The directory of a job's results.
    pub fn results_dir(&self, id: &str) -> CacheDir {
        self.root.join(&["results", id])
    }

    /// A succeeded job's output directory, checked against the outputs the job has.
    pub async fn output_dir(&self, id: &str, output: &str) -> Result<CacheDir, OutputError> {
        let job = self.db.job(id).await?;
        readable(&job, output)?;
        Ok(self.results_dir(id).join(&[output]))
    }

    /// The job `name` stands for (a job id, or `latest_<recipe>`) and its output directory. A job
    /// id is matched ignoring case where it is unambiguous, so SQL may name it unquoted.
    pub async fn named_output(&self, name: &str, output: &str) -> Result<(String, CacheDir), OutputError> {
        let job = match name.strip_prefix(LATEST_PREFIX) {
            Some(recipe) => self.latest_run(&self.db.recipe(recipe).await?).await?,
            None => self.job_named(name).await?,
        };
        readable(&job, output)?;
        Ok((job.id.clone(), self.results_dir(&job.id).join(&[output])))
    }

    async fn job_named(&self, name: &str) -> Result<JobRecord, OutputError> {
        let not_found = match self.db.job(name).await {
            Err(error @ MetadataError::NotFound { .. }) => error,
            found => return Ok(found?),
        };
        let mut matches = self.db.jobs_ignoring_case(name).await?;
        match (matches.pop(), matches.pop()) {
            (Some(job), None) => Ok(job),
            (Some(_), Some(_)) => Err(OutputError::Ambiguous(name.to_string())),
            (None, _) => Err(not_found.into()),
        }
    }

    /// Every recipe's latest succeeded run whose results are kept, as `(recipe name, job)`.
    pub async fn latest_runs(&self) -> Result<Vec<(String, JobRecord)>, OutputError> {
        let mut runs = Vec::new();
        for recipe in self.db.list_recipes().await? {
            match self.latest_run(&recipe).await {
                Ok(job) if job.results_deleted_at.is_none() => runs.push((recipe.name, job)),
                Ok(_) | Err(OutputError::NoRun(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(runs)
    }

    /// The newest succeeded job of `recipe`.
    async fn latest_run(&self, recipe: &RecipeRecord) -> Result<JobRecord, OutputError> {
        let filter = JobFilter {
            status: Some(JobStatus::Succeeded),
            recipe_id: Some(&recipe.id),
            since: None,
            until: None,
        };
        let newest = self.db.list_jobs(&filter, 1, 0).await?;
        newest
            .into_iter()
            .next()
            .ok_or_else(|| OutputError::NoRun(recipe.name.clone()))
    }
}

/// Whether `job`'s `output` can be read now.
fn readable(job: &JobRecord, output: &str) -> Result<(), OutputError> {
    let available = outputs_of(&job.job_type);
    if !available.contains(&output) {
        return Err(OutputError::UnknownOutput {
            output: output.to_string(),
            available: available.iter().map(|o| o.to_string()).collect(),
        });
    }
    if job.status != JobStatus::Succeeded {
        return Err(OutputError::NoResults(job.id.clone()));
    }
    if let Some(at) = &job.results_deleted_at {
        return Err(OutputError::ResultsDeleted {
            id: job.id.clone(),
            at: at.clone(),
        });
    }
    Ok(())
}
