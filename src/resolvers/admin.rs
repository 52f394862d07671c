//! Token management for admins, and the contact handoff between the parties of a trip.

use async_graphql::{Context, ID, Object, Result};

use super::access::{allowed, caller};
use crate::app::Services;
use crate::schema::access_types::{ApiToken, Contact, CreateApiTokenInput, CreatedApiToken};
use crate::schema::error::{api_error, parse_id};
use crate::schema::inputs::ActorInput;
use crate::trips::Actor;

#[derive(Default)]
pub struct AdminQuery;

#[Object]
impl AdminQuery {
    /// Lists every API token, newest first, revoked ones included. Admins only.
    async fn api_tokens(&self, ctx: &Context<'_>) -> Result<Vec<ApiToken>> {
        allowed(caller(ctx)?.administer("list tokens"))?;
        let tokens = &ctx.data::<Services>()?.tokens;
        let rows = tokens.list().await.map_err(api_error)?;
        Ok(rows.into_iter().map(ApiToken::from).collect())
    }
}

#[derive(Default)]
pub struct AdminMutation;

#[Object]
impl AdminMutation {
    /// Creates a token; the response is the only place its secret appears. Admins only.
    async fn create_api_token(
        &self,
        ctx: &Context<'_>,
        input: CreateApiTokenInput,
    ) -> Result<CreatedApiToken> {
        allowed(caller(ctx)?.administer("create tokens"))?;
        let subject_id = input
            .subject_id
            .map(|id| parse_id(&id, "input.subjectId"))
            .transpose()?;
        let tokens = &ctx.data::<Services>()?.tokens;
        let created = tokens
            .create(&input.name, input.role.into(), subject_id)
            .await
            .map_err(api_error)?;
        Ok(CreatedApiToken {
            token: created.token.into(),
            secret: created.secret,
        })
    }

    /// Revokes a token. It stops working at once on this instance and within 5 seconds on
    /// the others. Admins only.
    async fn revoke_api_token(&self, ctx: &Context<'_>, id: ID) -> Result<ApiToken> {
        allowed(caller(ctx)?.administer("revoke tokens"))?;
        let id = parse_id(&id, "id")?;
        let tokens = &ctx.data::<Services>()?.tokens;
        Ok(tokens.revoke(id).await.map_err(api_error)?.into())
    }

    /// Gives a party of a trip the other party's full phone number and a chat link: the rider
    /// gets the driver's once a driver accepted, a driver the rider's once it has a pending
    /// offer or the accepted trip. Every handoff is recorded as a CONTACT_SHARED trip event,
    /// and each token may ask 10 times an hour by default.
    async fn request_contact(
        &self,
        ctx: &Context<'_>,
        trip_id: ID,
        #[graphql(name = "actor")] actor_input: ActorInput,
    ) -> Result<Contact> {
        let trip_id = parse_id(&trip_id, "tripId")?;
        let actor_id = parse_id(&actor_input.id, "actor.id")?;
        let actor = Actor {
            role: actor_input.role.into(),
            id: Some(actor_id),
        };
        let principal = caller(ctx)?;
        allowed(match actor.role {
            entity::enums::ActorRole::Rider => principal.act_for_rider(actor_id),
            _ => principal.act_for_driver(actor_id),
        })?;
        let services = ctx.data::<Services>()?;
        services
            .contact_limiter
            .check(principal.token_id)
            .map_err(|e| e.into_error("contact requests"))?;
        let handoff = services
            .trips
            .request_contact(trip_id, actor)
            .await
            .map_err(api_error)?;
        Ok(handoff.into())
    }
}
