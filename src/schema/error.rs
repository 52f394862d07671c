//! The one mapping from service errors to GraphQL errors, and the extension that gives
//! `extensions.code` to the errors async-graphql raises itself.
//!
//! Codes: `BAD_USER_INPUT` (with `field`), `NOT_FOUND`, `INVALID_TRANSITION`, `CONFLICT`,
//! `FORBIDDEN`, `UNAUTHENTICATED`, `RATE_LIMITED` (with `retryAfterSeconds`),
//! `SERVICE_UNAVAILABLE` (database unreachable; retry), `INTERNAL_SERVER_ERROR`,
//! `GRAPHQL_PARSE_FAILED`, `GRAPHQL_VALIDATION_FAILED`, and `LIMIT_EXCEEDED` from
//! [`crate::limits`] (a request over a size limit). The HTTP handlers in [`crate::app`] add
//! `BAD_REQUEST`, `METHOD_NOT_ALLOWED` and `IDEMPOTENCY_KEY_REUSED` for requests that never
//! reach execution.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextRequest,
    NextSubscribe, NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{
    Error, ErrorExtensions, ID, Response, ServerError, ServerResult, ValidationResult, Variables,
};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tracing::error;

use crate::error::ServiceError;

/// Returns the `extensions.code` of a service error, the stable name a client matches on.
pub fn error_code(e: &ServiceError) -> &'static str {
    match e {
        ServiceError::InvalidInput { .. } => "BAD_USER_INPUT",
        ServiceError::NotFound { .. } | ServiceError::OfferNotFound { .. } => "NOT_FOUND",
        ServiceError::InvalidTransition { .. } | ServiceError::OfferNotPending { .. } => {
            "INVALID_TRANSITION"
        }
        ServiceError::Conflict(_) => "CONFLICT",
        ServiceError::Forbidden(_) => "FORBIDDEN",
        ServiceError::Unauthenticated(_) => "UNAUTHENTICATED",
        ServiceError::Database(_) if e.is_unavailable() => "SERVICE_UNAVAILABLE",
        ServiceError::Database(_) => "INTERNAL_SERVER_ERROR",
    }
}

/// Converts a service error for the client. Internal errors are logged here, once, with their
/// cause, and the client sees a generic message.
pub fn api_error(e: ServiceError) -> Error {
    let code = error_code(&e);
    let message = e.to_string();
    match e {
        ServiceError::InvalidInput { field, .. } => Error::new(message).extend_with(|_, ext| {
            ext.set("code", code);
            ext.set("field", field);
        }),
        ServiceError::InvalidTransition { source, .. } => {
            Error::new(message).extend_with(|_, ext| {
                ext.set("code", code);
                ext.set(
                    "tripStatus",
                    crate::schema::enums::TripStatus::from(source.from),
                );
            })
        }
        ServiceError::Database(cause) if code == "SERVICE_UNAVAILABLE" => {
            crate::metrics::count_database_error();
            error!(error = %cause, "database unreachable");
            with_code("database unreachable; retry later".into(), code)
        }
        ServiceError::Database(cause) => {
            crate::metrics::count_database_error();
            error!(error = %cause, cause = ?cause, "database error");
            internal()
        }
        _ => with_code(message, code),
    }
}

/// The error a client sees for any internal failure.
/// Converts a failed DataLoader read for the client: retryable when the database is unreachable,
/// internal otherwise. Logged here with `what`, such as `driver 42`.
pub fn load_error(e: &sea_orm::DbErr, what: std::fmt::Arguments<'_>) -> Error {
    crate::metrics::count_database_error();
    if crate::error::database_unreachable(e) {
        error!(error = %e, "{what} load failed: database unreachable");
        return with_code(
            "database unreachable; retry later".into(),
            "SERVICE_UNAVAILABLE",
        );
    }
    error!(error = %e, "{what} load failed");
    internal()
}

pub fn internal() -> Error {
    with_code(
        "internal server error; the cause is in the server log".into(),
        "INTERNAL_SERVER_ERROR",
    )
}

/// A `BAD_USER_INPUT` error on `field`.
pub fn bad_input(field: &str, message: impl Into<String>) -> Error {
    api_error(ServiceError::invalid(field, message))
}

fn with_code(message: String, code: &'static str) -> Error {
    Error::new(message).extend_with(|_, ext| ext.set("code", code))
}

/// Parses a GraphQL `ID` argument into a row id.
pub fn parse_id(id: &ID, field: &str) -> Result<i64, Error> {
    match id.parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad_input(
            field,
            format!("{:?} is not a valid id (a positive integer)", id.as_str()),
        )),
    }
}

/// Adds a code to errors raised by async-graphql before or around the resolvers: parse and
/// validation errors, and argument coercion errors during execution (`BAD_USER_INPUT`).
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodesExtension)
    }
}

struct ErrorCodesExtension;

fn ensure_code(mut err: ServerError, code: &str) -> ServerError {
    let extensions = err.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", code);
    }
    err
}

#[async_trait::async_trait]
impl Extension for ErrorCodesExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        // async-graphql 7.2.1 selects the operation after the validation hook, so an
        // `operationName` that names no operation of the document, or its absence from a
        // document of several, reaches here without a code.
        response.errors = std::mem::take(&mut response.errors)
            .into_iter()
            .map(|e| ensure_code(e, "GRAPHQL_VALIDATION_FAILED"))
            .collect();
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        // Subscriptions skip the `request` and `execute` hooks, so their errors get codes here.
        // An error without a path is about the request, such as an `operationName` that selects
        // no operation. An error with a path comes from coercing an argument.
        next.run(ctx, stream)
            .map(|mut response| {
                response.errors = std::mem::take(&mut response.errors)
                    .into_iter()
                    .map(|e| {
                        let code = if e.path.is_empty() {
                            "GRAPHQL_VALIDATION_FAILED"
                        } else {
                            "BAD_USER_INPUT"
                        };
                        ensure_code(e, code)
                    })
                    .collect();
                response
            })
            .boxed()
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        // Checked before the parser runs, which would overflow the stack on deep nesting.
        if let Err(message) = super::nesting::check(query) {
            return Err(ensure_code(
                ServerError::new(message, None),
                "GRAPHQL_PARSE_FAILED",
            ));
        }
        next.run(ctx, query, variables)
            .await
            .map_err(|e| ensure_code(e, "GRAPHQL_PARSE_FAILED"))
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|e| ensure_code(e, "GRAPHQL_VALIDATION_FAILED"))
                .collect()
        })
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut response = next.run(ctx, operation_name).await;
        // Resolver errors already carry a code, so an error without one comes from coercing
        // an argument or variable, which is the client's input.
        response.errors = std::mem::take(&mut response.errors)
            .into_iter()
            .map(|e| ensure_code(e, "BAD_USER_INPUT"))
            .collect();
        response
    }
}
