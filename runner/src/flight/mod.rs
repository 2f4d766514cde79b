//! Arrow Flight SQL on the runner (`--flight-bind`): the API's tokens and roles, SQL over Kalla's
//! catalog planned as `/api/query` plans it and run on the cluster (or, reading one job output,
//! on the runner: [`output_reads`]), results relayed to the client batch by batch as they come
//! (clients never reach executors, and no result is collected whole).
//!
//! A token goes in each call's `authorization: Bearer <token>` header, or through the handshake
//! as HTTP Basic with the token as the password (the user name is ignored); the handshake answers
//! with the bearer header clients then send. Errors carry the HTTP API's messages, as the Flight
//! status closest to the HTTP one.
//!
//! Roles as the API's: SQL over sources and connections needs an operator; a viewer may read job
//! outputs (`results.*`) only, and list the catalog. Every read (`DoGet`) and every refusal is
//! written to the audit log, as results downloads are. Prepared statements take positional
//! parameters (`$1`, `$2`, …) and keep no state on the runner ([`prepared`]).

mod prepared;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::LazyLock;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo,
    CommandGetTables, CommandPreparedStatementQuery, CommandStatementQuery, DoPutPreparedStatementResult,
    ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, cast};
use datafusion::prelude::DataFrame;
use futures::{Stream, TryStreamExt};
use prost::Message;
use tokio::net::TcpListener;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

use self::prepared::{Handle, TOO_MANY_ROWS, parameter_schema, parameter_values};
use crate::access::{Principal, Role, bearer_token};
use crate::api::{ApiError, AppState};
use crate::catalog::{CatalogTable, RESULTS_CATALOG, TableRead, table_references};
use crate::metadata::NewAuditEntry;
use crate::output_reads;

/// The audit log's route for Flight SQL calls (the method column names the call).
const AUDIT_ROUTE: &str = "flight:sql";

type FlightStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What `GetSqlInfo` answers.
static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "Kalla");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    builder.append(SqlInfo::FlightSqlServerReadOnly, true);
    builder.append(SqlInfo::FlightSqlServerSql, true);
    builder.append(SqlInfo::FlightSqlServerSubstrait, false);
    builder.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    builder.append(SqlInfo::FlightSqlServerCancel, false);
    builder.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    builder
        .build()
        .expect("Kalla's SqlInfo values have their documented types")
});

/// Serves Flight SQL on `listener`, over TLS with the API's certificate and key (`https`), until
/// `shutdown` completes; calls under way are finished first.
pub async fn serve(
    listener: TcpListener,
    https: Option<(PathBuf, PathBuf)>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let service = FlightServiceServer::new(KallaFlightSql { state });
    let server = Server::builder().add_service(service);
    match https {
        Some((cert, key)) => {
            let mut tls = crate::https::TlsListener::grpc(listener, &cert, &key)?;
            let incoming = async_stream::stream! {
                loop {
                    let (stream, _) = axum::serve::Listener::accept(&mut tls).await;
                    yield Ok::<_, std::io::Error>(stream);
                }
            };
            server.serve_with_incoming_shutdown(incoming, shutdown).await?;
        }
        None => {
            let incoming = async_stream::stream! {
                loop {
                    yield listener.accept().await.map(|(stream, _)| stream);
                }
            };
            server.serve_with_incoming_shutdown(incoming, shutdown).await?;
        }
    }
    Ok(())
}

/// The address Flight SQL listens on, announced as the API's is.
pub fn announce(address: SocketAddr, tls: bool) {
    let scheme = if tls { "grpc+tls" } else { "grpc" };
    tracing::info!(%address, scheme, "Flight SQL listening");
    println!("kalla-runner Flight SQL on {scheme}://{address}");
}

pub struct KallaFlightSql {
    state: AppState,
}

impl KallaFlightSql {
    /// Who `token` is, if it is a live token.
    async fn authenticate(&self, token: &str) -> Result<Principal, Status> {
        self.state
            .tokens
            .authenticate(token)
            .await
            .map_err(|e| Status::unauthenticated(e.to_string()))
    }

    /// The principal whose token the call carries, whatever its role.
    async fn principal(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        let token = bearer(metadata)
            .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>` header"))?;
        self.authenticate(token).await
    }

    /// The principal whose token the call carries, if its role may run `sql`: an operator any
    /// SQL, a viewer SQL over job outputs (`results.*`) only. A refusal is audited as `call`.
    async fn authorize(&self, metadata: &MetadataMap, sql: &str, call: &str) -> Result<Principal, Status> {
        let principal = match self.principal(metadata).await {
            Ok(principal) => principal,
            Err(status) => {
                self.audit(call, None, sql, &[], status.code()).await;
                return Err(status);
            }
        };
        if principal.role >= Role::Operator || reads_only_results(sql) {
            return Ok(principal);
        }
        let status = Status::permission_denied(format!(
            "SQL over sources and connections needs the {} role; token {:?} is a {}, which may read \
             job outputs (results.<job_id>.<output>, results.latest_<recipe>.<output>) only",
            Role::Operator.as_str(),
            principal.name,
            principal.role.as_str()
        ));
        self.audit(call, Some(&principal.name), sql, &[], status.code())
            .await;
        Err(status)
    }

    /// `sql` planned as `/api/query` plans it, its string and binary views as plain strings and
    /// binaries, and how each table it names is read.
    async fn plan(&self, sql: &str) -> Result<(DataFrame, Vec<TableRead>), Status> {
        let (frame, reads) = self.state.queries.plan(sql).await.map_err(api_status)?;
        let frame =
            without_views(frame).map_err(|e| Status::internal(format!("cannot plan the result: {e}")))?;
        Ok((frame, reads))
    }

    /// A `FlightInfo` for `handle`'s statement, read back with one ticket holding `command`.
    async fn statement_info(
        &self,
        handle: &Handle,
        command: Any,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata(), &handle.sql, "GetFlightInfo")
            .await?;
        let (frame, _) = self.plan(&handle.sql).await?;
        info(frame.schema().as_arrow(), command, request.into_inner())
    }

    /// `handle`'s statement run with its bound values and relayed batch by batch as the cluster
    /// sends it; audited as a read.
    async fn read(
        &self,
        handle: &Handle,
        metadata: &MetadataMap,
    ) -> Result<Response<FlightStream<arrow_flight::FlightData>>, Status> {
        let principal = self.authorize(metadata, &handle.sql, "DoGet").await?;
        let (outcome, reads) = match self.plan(&handle.sql).await {
            Ok((frame, reads)) => (self.stream(frame, handle).await, reads),
            Err(status) => (Err(status), Vec::new()),
        };
        let code = outcome.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok);
        self.audit("DoGet", Some(&principal.name), &handle.sql, &reads, code)
            .await;
        outcome.map(Response::new)
    }

    /// `frame` with `handle`'s values in its placeholders, executed where [`output_reads`] says.
    async fn stream(
        &self,
        frame: DataFrame,
        handle: &Handle,
    ) -> Result<FlightStream<arrow_flight::FlightData>, Status> {
        let frame = match handle.values()? {
            Some(row) => {
                let types = frame.logical_plan().get_parameter_types().map_err(invalid)?;
                let values = parameter_values(&row, &types)?;
                frame.with_param_values(values).map_err(invalid)?
            }
            None => frame,
        };
        let batches = output_reads::execute(frame)
            .await
            .map_err(|e| Status::internal(format!("the query failed: {e}")))?
            .map_err(|e| FlightError::ExternalError(Box::new(e)));
        Ok(Box::pin(
            FlightDataEncoderBuilder::new()
                .build(batches)
                .map_err(Status::from),
        ))
    }

    /// Records a call in the audit log: the tables `sql` names, and the job outputs it read.
    async fn audit(
        &self,
        call: &str,
        token: Option<&str>,
        sql: &str,
        reads: &[TableRead],
        code: tonic::Code,
    ) {
        let named: Vec<String> = table_references(sql)
            .map(|tables| tables.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        let outputs: Vec<String> = reads
            .iter()
            .filter(|read| read.read == "results")
            .map(|read| {
                let output = read.name.rsplit('.').next().unwrap_or_default();
                format!("{}/{output}", read.version.as_deref().unwrap_or_default())
            })
            .collect();
        let status = http_status(code);
        let resource = (!outputs.is_empty()).then(|| outputs.join(","));
        let entry = NewAuditEntry {
            token_name: token,
            method: call,
            route: AUDIT_ROUTE,
            path: &named.join(","),
            resource: resource.as_deref(),
            status: status.as_u16(),
            outcome: crate::api::outcome(status),
        };
        if let Err(error) = self.state.metadata.record_audit(entry).await {
            tracing::error!(call, %error, "cannot record a Flight SQL call in the audit log");
        }
    }

    /// A `FlightInfo` for a catalog listing of `schema`, for any token.
    async fn listing(
        &self,
        request: Request<FlightDescriptor>,
        schema: SchemaRef,
        command: Any,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(request.metadata()).await?;
        info(&schema, command, request.into_inner())
    }

    /// Every table the catalog lists.
    async fn tables(&self) -> Result<Vec<CatalogTable>, Status> {
        self.state.queries.tables().await.map_err(api_status)
    }
}

#[tonic::async_trait]
impl FlightSqlService for KallaFlightSql {
    type FlightService = KallaFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<FlightStream<HandshakeResponse>>, Status> {
        let token = basic_password(request.metadata()).ok_or_else(|| {
            Status::unauthenticated("send the token as the password of HTTP Basic authorization")
        })?;
        self.authenticate(&token).await?;
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        };
        let mut response: Response<FlightStream<HandshakeResponse>> =
            Response::new(Box::pin(futures::stream::once(async { Ok(answer) })));
        let header = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Status::unauthenticated("the token is not a valid header value"))?;
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = Handle::new(query.query);
        let ticket = TicketStatementQuery {
            statement_handle: handle.to_bytes(),
        };
        self.statement_info(&handle, ticket.as_any(), request).await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let handle = Handle::from_bytes(&ticket.statement_handle)?;
        self.read(&handle, request.metadata()).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.authorize(request.metadata(), &query.query, "CreatePreparedStatement")
            .await?;
        let (frame, _) = self.plan(&query.query).await?;
        let types = frame.logical_plan().get_parameter_types().map_err(invalid)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: Handle::new(query.query).to_bytes(),
            dataset_schema: ipc_schema(frame.schema().as_arrow())?,
            parameter_schema: ipc_schema(&parameter_schema(&types)?)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.principal(request.metadata()).await?;
        let handle = Handle::from_bytes(&query.prepared_statement_handle)?;
        let mut batches =
            FlightRecordBatchStream::new_from_flight_data(request.into_inner().map_err(FlightError::from));
        // One row, one batch: `Handle::bind` refuses a batch of any other size.
        let handle = match batches.try_next().await? {
            Some(row) if batches.try_next().await?.is_none() => handle.bind(&row)?,
            Some(_) => return Err(Status::invalid_argument(TOO_MANY_ROWS)),
            None => handle,
        };
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.to_bytes()),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = Handle::from_bytes(&query.prepared_statement_handle)?;
        self.statement_info(&handle, query.as_any(), request).await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let handle = Handle::from_bytes(&query.prepared_statement_handle)?;
        self.read(&handle, request.metadata()).await
    }

    /// Nothing to release: the handle holds the whole statement.
    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.principal(request.metadata()).await?;
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.listing(request, query.into_builder().schema(), query.as_any())
            .await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(request.metadata()).await?;
        let mut builder = query.into_builder();
        let mut catalogs: Vec<String> = self.tables().await?.into_iter().map(|t| t.catalog).collect();
        catalogs.dedup();
        for catalog in catalogs {
            builder.append(catalog);
        }
        Ok(Response::new(one_batch(builder.build())))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.listing(request, query.clone().into_builder().schema(), query.as_any())
            .await
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(request.metadata()).await?;
        let mut builder = query.into_builder();
        let mut schemas: Vec<(String, String)> = self
            .tables()
            .await?
            .into_iter()
            .map(|t| (t.catalog, t.schema))
            .collect();
        schemas.dedup();
        for (catalog, schema) in schemas {
            builder.append(catalog, schema);
        }
        Ok(Response::new(one_batch(builder.build())))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.listing(request, query.clone().into_builder().schema(), query.as_any())
            .await
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(request.metadata()).await?;
        let mut builder = query.into_builder();
        for listed in self.tables().await? {
            builder
                .append(
                    listed.catalog,
                    listed.schema,
                    listed.table,
                    "TABLE",
                    &listed.columns,
                )
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(Response::new(one_batch(builder.build())))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.listing(
            request,
            query.clone().into_builder(&SQL_INFO).schema(),
            query.as_any(),
        )
        .await
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(request.metadata()).await?;
        Ok(Response::new(one_batch(query.into_builder(&SQL_INFO).build())))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// `frame` with `Utf8View` and `BinaryView` columns cast to `Utf8` and `Binary`: many Flight SQL
/// clients (the JDBC driver's Arrow Java among them) cannot read view types yet.
fn without_views(frame: DataFrame) -> datafusion::error::Result<DataFrame> {
    let has_views = frame
        .schema()
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Utf8View | DataType::BinaryView));
    if !has_views {
        return Ok(frame);
    }
    let columns: Vec<Expr> = frame
        .schema()
        .iter()
        .map(|(qualifier, field)| {
            let column = Expr::Column(Column::from((qualifier, field)));
            match field.data_type() {
                DataType::Utf8View => cast(column, DataType::Utf8).alias(field.name()),
                DataType::BinaryView => cast(column, DataType::Binary).alias(field.name()),
                _ => column,
            }
        })
        .collect();
    frame.select(columns)
}

/// A `FlightInfo` for a result of `schema`, read back with one ticket holding `command`.
fn info(schema: &Schema, command: Any, descriptor: FlightDescriptor) -> Result<Response<FlightInfo>, Status> {
    let ticket = Ticket {
        ticket: command.encode_to_vec().into(),
    };
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("cannot encode the result's schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

fn one_batch(batch: Result<RecordBatch, FlightError>) -> FlightStream<arrow_flight::FlightData> {
    Box::pin(
        FlightDataEncoderBuilder::new()
            .build(futures::stream::once(async { batch }))
            .map_err(Status::from),
    )
}

/// The HTTP API's error as the Flight status closest to its HTTP status, with its message.
fn api_status(error: impl Into<ApiError>) -> Status {
    let error: ApiError = error.into();
    let message = error.message.clone();
    match error.status() {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Status::invalid_argument(message),
        StatusCode::UNAUTHORIZED => Status::unauthenticated(message),
        StatusCode::FORBIDDEN => Status::permission_denied(message),
        StatusCode::NOT_FOUND => Status::not_found(message),
        StatusCode::CONFLICT => Status::failed_precondition(message),
        StatusCode::TOO_MANY_REQUESTS => Status::resource_exhausted(message),
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
            Status::unavailable(message)
        }
        _ => Status::internal(message),
    }
}

fn bearer(metadata: &MetadataMap) -> Option<&str> {
    bearer_token(metadata.get("authorization")?.to_str().ok()?)
}

/// Whether `sql` reads job outputs (`results.*`) and nothing else: what a viewer may run.
fn reads_only_results(sql: &str) -> bool {
    table_references(sql).is_ok_and(|tables| {
        !tables.is_empty()
            && tables
                .iter()
                .all(|table| table.catalog() == Some(RESULTS_CATALOG))
    })
}

/// `schema` as the IPC message Flight SQL describes results and parameters with.
fn ipc_schema(schema: &Schema) -> Result<prost::bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: datafusion::arrow::error::ArrowError| {
            Status::internal(format!("cannot encode a schema: {e}"))
        })?;
    Ok(bytes)
}

fn invalid(error: impl std::fmt::Display) -> Status {
    Status::invalid_argument(error.to_string())
}

/// The HTTP status closest to a Flight status, for the audit log.
fn http_status(code: tonic::Code) -> StatusCode {
    match code {
        tonic::Code::Ok => StatusCode::OK,
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The password of an HTTP Basic `authorization` header.
fn basic_password(metadata: &MetadataMap) -> Option<String> {
    let encoded = metadata
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
    let (_, password) = decoded.split_once(':')?;
    Some(password.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_as_bearer_headers_or_basic_passwords() {
        let with = |value: &str| {
            let mut metadata = MetadataMap::new();
            metadata.insert("authorization", value.parse().unwrap());
            metadata
        };
        assert_eq!(bearer(&with("Bearer kalla_x ")), Some("kalla_x"));
        assert_eq!(bearer(&with("Basic a2FsbGE=")), None);
        let basic = format!("Basic {}", BASE64.encode("anyone:kalla_secret:with:colons"));
        assert_eq!(
            basic_password(&with(&basic)).as_deref(),
            Some("kalla_secret:with:colons")
        );
        assert_eq!(basic_password(&with("Bearer kalla_x")), None);
        assert_eq!(basic_password(&MetadataMap::new()), None);
    }

    #[test]
    fn viewers_may_read_job_outputs_and_nothing_else() {
        for allowed in [
            "SELECT * FROM results.job_x.matched",
            "WITH m AS (SELECT * FROM results.latest_r.matched) SELECT count(*) FROM m",
            "SELECT * FROM results.job_x.matched JOIN results.job_y.result USING (id)",
        ] {
            assert!(reads_only_results(allowed), "{allowed}");
        }
        for refused in [
            "SELECT 1",
            "SELECT * FROM shop.public.orders",
            "SELECT * FROM results.job_x.matched JOIN invoices USING (id)",
            "SELECT * FROM information_schema.tables",
            "SELECT * FROM results.job_x.matched; SELECT * FROM invoices",
            "not sql",
        ] {
            assert!(!reads_only_results(refused), "{refused}");
        }
    }

    #[test]
    fn api_errors_keep_their_messages_as_flight_statuses() {
        let status = api_status(ApiError::new(crate::api::ErrorCode::NotFound, "no job job_x"));
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::NotFound, "no job job_x")
        );
    }
}
