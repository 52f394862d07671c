//! Request timing: a GraphQL extension that records each request's duration in the
//! [`GRAPHQL_REQUEST_SECONDS`] histogram, labelled by root field and outcome, and runs the
//! request in a `graphql` tracing span named by its root field and operation name.

use std::sync::Arc;
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery,
};
use async_graphql::parser::types::{ExecutableDocument, Selection};
use async_graphql::{Response, ServerResult, Variables};
use parking_lot::Mutex;
use tracing::Instrument;

use crate::metrics::GRAPHQL_REQUEST_SECONDS;

/// Factory of [`RequestTiming`], one instance per request.
pub struct RequestTimingFactory;

impl ExtensionFactory for RequestTimingFactory {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RequestTiming {
            started: Instant::now(),
            operation: Mutex::new(None),
        })
    }
}

/// Per-request state: start time and the root field of the parsed document.
pub struct RequestTiming {
    started: Instant,
    operation: Mutex<Option<String>>,
}

/// Name of the first root field of the first operation, such as `nearbyDrivers`.
fn root_field(document: &ExecutableDocument) -> Option<String> {
    let (_, operation) = document.operations.iter().next()?;
    operation
        .node
        .selection_set
        .node
        .items
        .iter()
        .find_map(|item| match &item.node {
            Selection::Field(field) => Some(field.node.name.node.to_string()),
            _ => None,
        })
}

#[async_trait::async_trait]
impl Extension for RequestTiming {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await;
        match &document {
            Ok(document) => *self.operation.lock() = root_field(document),
            Err(_) => {
                let elapsed = self.started.elapsed().as_secs_f64();
                metrics::histogram!(GRAPHQL_REQUEST_SECONDS, "operation" => "invalid", "outcome" => "GRAPHQL_PARSE_FAILED")
                    .record(elapsed);
            }
        }
        document
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        // Execution only starts for a valid document, so the root field is a schema field
        // and the label set stays bounded. Subscriptions are timed until their stream starts.
        let operation = self
            .operation
            .lock()
            .clone()
            .unwrap_or_else(|| "unknown".into());
        // Resolver spans, which carry the driver, trip and rider ids, nest under this one.
        let span = tracing::info_span!(
            "graphql",
            operation = %operation,
            operation_name = operation_name.unwrap_or_default(),
        );
        let response = next.run(ctx, operation_name).instrument(span).await;
        let outcome = match response.errors.first() {
            None => "ok".to_owned(),
            Some(error) => match error.extensions.as_ref().and_then(|ext| ext.get("code")) {
                Some(async_graphql::Value::String(code)) => code.clone(),
                _ => "unknown".to_owned(),
            },
        };
        metrics::histogram!(GRAPHQL_REQUEST_SECONDS, "operation" => operation, "outcome" => outcome)
            .record(self.started.elapsed().as_secs_f64());
        response
    }
}
