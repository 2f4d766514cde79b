//! Arrow Flight SQL on the runner (`--flight-bind`): the API's tokens and roles, SQL over Kalla's
//! catalog planned as `/api/query` plans it and run on the cluster, results relayed to the client
//! batch by batch as the cluster sends them (clients never reach executors, and no result is
//! collected whole).
//!
//! A token goes in each call's `authorization: Bearer <token>` header, or through the handshake
//! as HTTP Basic with the token as the password (the user name is ignored); the handshake answers
//! with the bearer header clients then send. Errors carry the HTTP API's messages, as the Flight
//! status closest to the HTTP one.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::LazyLock;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    Any, CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTables, CommandStatementQuery,
    ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, cast};
use datafusion::prelude::DataFrame;
use futures::{Stream, TryStreamExt};
use prost::Message;
use tokio::net::TcpListener;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

use crate::access::{Principal, Role};
use crate::api::{ApiError, AppState};

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

/// Serves Flight SQL on `listener`, over TLS with the API's certificate (`https`), until the
/// process stops.
pub async fn serve(
    listener: TcpListener,
    https: Option<(&Path, &Path)>,
    state: AppState,
) -> anyhow::Result<()> {
    let service = FlightServiceServer::new(KallaFlightSql { state });
    let server = Server::builder().add_service(service);
    match https {
        Some((cert, key)) => {
            let mut tls = crate::https::TlsListener::new(listener, cert, key)?;
            let incoming = async_stream::stream! {
                loop {
                    let (stream, _) = axum::serve::Listener::accept(&mut tls).await;
                    yield Ok::<_, std::io::Error>(stream);
                }
            };
            server.serve_with_incoming(incoming).await?;
        }
        None => {
            let incoming = async_stream::stream! {
                loop {
                    yield listener.accept().await.map(|(stream, _)| stream);
                }
            };
            server.serve_with_incoming(incoming).await?;
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
    /// The principal whose token the call carries, at least `required`.
    async fn principal(&self, metadata: &MetadataMap, required: Role) -> Result<Principal, Status> {
        let token = bearer(metadata)
            .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>` header"))?;
        let principal = self
            .state
            .tokens
            .authenticate(token)
            .await
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        if principal.role < required {
            return Err(Status::permission_denied(format!(
                "SQL over sources and connections needs the {} role; token {:?} is a {}",
                required.as_str(),
                principal.name,
                principal.role.as_str()
            )));
        }
        Ok(principal)
    }

    /// `sql` planned, its string and binary views as plain strings and binaries.
    async fn plan(&self, sql: &str) -> Result<DataFrame, Status> {
        let frame = self.state.queries.plan(sql).await.map_err(api_status)?;
        without_views(frame).map_err(|e| Status::internal(format!("cannot plan the result: {e}")))
    }

    /// `sql`'s result, relayed batch by batch as the cluster sends it.
    async fn run(&self, sql: &str) -> Result<FlightStream<arrow_flight::FlightData>, Status> {
        let batches = self
            .plan(sql)
            .await?
            .execute_stream()
            .await
            .map_err(|e| Status::internal(format!("the query failed: {e}")))?
            .map_err(|e| FlightError::ExternalError(Box::new(e)));
        Ok(Box::pin(
            FlightDataEncoderBuilder::new()
                .build(batches)
                .map_err(Status::from),
        ))
    }

    /// A `FlightInfo` for a catalog listing of `schema`, for any token.
    async fn listing(
        &self,
        request: Request<FlightDescriptor>,
        schema: SchemaRef,
        command: Any,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(request.metadata(), Role::Viewer).await?;
        info(&schema, command, request.into_inner())
    }

    /// Every table of every connection, as `information_schema` lists them.
    async fn tables(&self) -> Result<Vec<(String, String, String, Schema)>, Status> {
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
        self.state
            .tokens
            .authenticate(&token)
            .await
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
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
        self.principal(request.metadata(), Role::Operator).await?;
        let frame = self.plan(&query.query).await?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        info(frame.schema().as_arrow(), ticket.as_any(), request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = self.principal(request.metadata(), Role::Operator).await?;
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("the ticket is not one this runner issued"))?;
        tracing::info!(token = %principal.name, "Flight SQL statement");
        Ok(Response::new(self.run(&sql).await?))
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
        self.principal(request.metadata(), Role::Viewer).await?;
        let mut builder = query.into_builder();
        let mut catalogs: Vec<String> = self.tables().await?.into_iter().map(|t| t.0).collect();
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
        self.principal(request.metadata(), Role::Viewer).await?;
        let mut builder = query.into_builder();
        let mut schemas: Vec<(String, String)> =
            self.tables().await?.into_iter().map(|t| (t.0, t.1)).collect();
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
        self.principal(request.metadata(), Role::Viewer).await?;
        let mut builder = query.into_builder();
        for (catalog, schema, table, columns) in self.tables().await? {
            builder
                .append(catalog, schema, table, "TABLE", &columns)
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
        self.principal(request.metadata(), Role::Viewer).await?;
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
    metadata
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
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
    fn api_errors_keep_their_messages_as_flight_statuses() {
        let status = api_status(ApiError::new(crate::api::ErrorCode::NotFound, "no job job_x"));
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::NotFound, "no job job_x")
        );
    }
}
