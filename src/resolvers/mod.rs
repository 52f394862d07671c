//! GraphQL root objects. A resolver parses its arguments, checks that the caller's role may
//! do this (see [`crate::auth`]), calls one service method and converts the result. The rules
//! live in the services.

mod access;
mod accounts;
mod admin;
mod matching;
mod query;
mod subscription;
mod tracking;
mod trips;

use async_graphql::{MergedObject, MergedSubscription};

/// Root of all queries.
#[derive(MergedObject, Default)]
pub struct QueryRoot(query::Query, matching::MatchingQuery, admin::AdminQuery);

/// Root of all mutations.
#[derive(MergedObject, Default)]
pub struct MutationRoot(
    accounts::AccountMutation,
    tracking::TrackingMutation,
    trips::TripMutation,
    admin::AdminMutation,
);

/// Root of all subscriptions.
#[derive(MergedSubscription, Default)]
pub struct SubscriptionRoot(subscription::Subscription);
