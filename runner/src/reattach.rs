//! Following a Ballista job that an earlier runner submitted: its state on the scheduler, and,
//! once it has succeeded, its result fetched from the executors that hold it.
//!
//! Ballista's scheduler runs a job to its end whether or not the client that submitted it is
//! still there, so a restarted runner can take a running job over instead of starting it again.

use std::sync::Arc;
use std::time::Duration;

use ballista_core::client::BallistaClient;
use ballista_core::extension::BallistaConfigGrpcEndpoint;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{GetJobStatusParams, PartitionLocation, SuccessfulJob, job_status};
use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use tonic::transport::Channel;

const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Results of Kalla's writes are a few rows per file; Ballista's own default limit.
const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;
const FETCH_RETRIES: u8 = 3;
const FETCH_RETRY_WAIT_MS: u64 = 200;

/// What the scheduler knows of a job.
#[derive(Debug)]
pub enum ClusterJob {
    /// Queued or running.
    Active,
    Succeeded(Vec<PartitionLocation>),
    /// Failed, cancelled, or unknown to this scheduler (e.g. it restarted).
    Gone(String),
}

impl ClusterJob {
    /// Whether a runner can still take the job over.
    pub fn can_follow(&self) -> bool {
        !matches!(self, ClusterJob::Gone(_))
    }
}

pub async fn state(scheduler: &mut SchedulerGrpcClient<Channel>, job_id: &str) -> ClusterJob {
    let answer = scheduler
        .get_job_status(GetJobStatusParams {
            job_id: job_id.to_string(),
        })
        .await;
    let status = match answer {
        Ok(answer) => answer.into_inner().status.and_then(|s| s.status),
        Err(error) => return ClusterJob::Gone(format!("the scheduler cannot say: {}", error.message())),
    };
    match status {
        None => ClusterJob::Gone("the scheduler does not know it".into()),
        Some(job_status::Status::Queued(_) | job_status::Status::Running(_)) => ClusterJob::Active,
        Some(job_status::Status::Successful(SuccessfulJob {
            partition_location, ..
        })) => ClusterJob::Succeeded(partition_location),
        Some(job_status::Status::Failed(failed)) => ClusterJob::Gone(failed.error),
    }
}

/// Waits for the job to end; its result's rows once it has succeeded, fetched from the executors
/// through `flight` (TLS; `None` for plaintext).
pub async fn wait_for_result(
    scheduler: &mut SchedulerGrpcClient<Channel>,
    job_id: &str,
    flight: Option<Arc<BallistaConfigGrpcEndpoint>>,
) -> Result<Vec<RecordBatch>, String> {
    loop {
        match state(scheduler, job_id).await {
            ClusterJob::Active => tokio::time::sleep(POLL_INTERVAL).await,
            ClusterJob::Succeeded(locations) => return fetch(locations, flight).await,
            ClusterJob::Gone(reason) => return Err(format!("Ballista job {job_id} ended: {reason}")),
        }
    }
}

async fn fetch(
    locations: Vec<PartitionLocation>,
    flight: Option<Arc<BallistaConfigGrpcEndpoint>>,
) -> Result<Vec<RecordBatch>, String> {
    let mut batches = Vec::new();
    for location in locations {
        let layout = location.layout();
        let (Some(executor), Some(partition)) = (location.executor_meta, location.partition_id) else {
            return Err("the scheduler named a result partition without its executor".into());
        };
        let port = u16::try_from(executor.port)
            .map_err(|_| format!("executor {} has port {}", executor.id, executor.port))?;
        let mut client = BallistaClient::try_new(
            &executor.host,
            port,
            MAX_MESSAGE_SIZE,
            flight.is_some(),
            flight.clone(),
            FETCH_RETRIES,
            FETCH_RETRY_WAIT_MS,
            0,
            0,
        )
        .await
        .map_err(|e| format!("cannot reach executor {}: {e}", executor.id))?;
        let stream = client
            .fetch_partition_proxied(
                &executor.id,
                &partition.into(),
                location.file_id,
                layout,
                &executor.host,
                port,
                true,
            )
            .await
            .map_err(|e| format!("cannot fetch a result from executor {}: {e}", executor.id))?;
        let fetched: Vec<RecordBatch> = stream
            .try_collect()
            .await
            .map_err(|e| format!("cannot read a result from executor {}: {e}", executor.id))?;
        batches.extend(fetched);
    }
    Ok(batches)
}
