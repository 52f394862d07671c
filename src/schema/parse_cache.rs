//! A cache of parsed GraphQL documents keyed by query text, so the clients that send the same
//! query with new variables (the WhatsApp bridge, dashboards, drivers' apps) skip parsing.
//!
//! Validation still runs on every request, so depth and complexity limits apply as before.
//! A document enters the cache only after it parsed and passed the recursion and directive
//! checks that run with parsing.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ServerResult, Variables};
use parking_lot::RwLock;

/// Documents kept at most. When full the cache is emptied and refills with what is in use,
/// which bounds memory for clients that inline values and never repeat a query.
const MAX_DOCUMENTS: usize = 512;

/// Longest query text cached, in bytes; longer documents are parsed every time.
const MAX_QUERY_BYTES: usize = 8 * 1024;

/// Extension factory that shares one cache between requests.
#[derive(Clone, Default)]
pub struct ParseCache {
    documents: Arc<RwLock<HashMap<String, ExecutableDocument>>>,
}

impl ExtensionFactory for ParseCache {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Extension for ParseCache {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if let Some(document) = self.documents.read().get(query) {
            return Ok(document.clone());
        }
        let document = next.run(ctx, query, variables).await?;
        if query.len() <= MAX_QUERY_BYTES {
            let mut documents = self.documents.write();
            if documents.len() >= MAX_DOCUMENTS {
                documents.clear();
            }
            documents.insert(query.to_owned(), document.clone());
        }
        Ok(document)
    }
}
