//! The token store: creation, revocation, listing and the cached look-up of each request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use entity::{api_token, driver, rider};
use parking_lot::Mutex;
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder,
};
use sha2::{Digest, Sha256};
use tracing::{info, instrument};

use super::{Principal, Role};
use crate::error::{ServiceError, ServiceResult};

/// Lifetime of a cached look-up, valid or not. A revoked token keeps working on other
/// instances for at most this long.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// Cached look-ups kept at most; past this the cache starts over, so random tokens sent by an
/// attacker cannot grow it without bound.
const CACHE_CAPACITY: usize = 10_000;
/// Token prefix, so a leaked token is recognizable in logs and by secret scanners.
const PREFIX: &str = "mob_";
/// Maximum length of a token name, in characters.
const MAX_NAME_CHARS: usize = 100;

/// A look-up result by token hash, with the time it was read.
type CachedLookup = (Option<Principal>, Instant);

/// A token just created: its row and the secret, which is shown once and never stored.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    pub token: api_token::Model,
    pub secret: String,
}

/// Token service; clone freely.
#[derive(Debug, Clone)]
pub struct Tokens {
    db: DatabaseConnection,
    cache: Arc<Mutex<HashMap<String, CachedLookup>>>,
}

/// Returns the stored form of a token: lower-case hex SHA-256.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Returns a new random token.
///
/// # Panics
/// If the operating system has no random source, which leaves nothing safe to do.
fn generate() -> String {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system random source works");
    format!("{PREFIX}{}", hex::encode(bytes))
}

fn principal_of(row: &api_token::Model) -> Option<Principal> {
    Some(Principal {
        token_id: row.id,
        name: row.name.clone(),
        role: row.role.parse().ok()?,
        subject_id: row.subject_id,
    })
}

impl Tokens {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Returns the principal of a token, or `None` for a token that is unknown, revoked or
    /// malformed.
    ///
    /// # Errors
    /// A database error; the caller cannot tell the token's validity then.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Principal>, DbErr> {
        if !secret.starts_with(PREFIX) || secret.len() != PREFIX.len() + 64 {
            return Ok(None);
        }
        let hash = hash_token(secret);
        if let Some((principal, at)) = self.cache.lock().get(&hash)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(principal.clone());
        }
        let row = api_token::Entity::find()
            .filter(api_token::Column::TokenHash.eq(hash.as_str()))
            .filter(api_token::Column::RevokedAt.is_null())
            .one(&self.db)
            .await?;
        let principal = row.as_ref().and_then(principal_of);
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(hash, (principal.clone(), Instant::now()));
        Ok(principal)
    }

    /// Creates a token. Driver and rider tokens name an existing driver or rider.
    ///
    /// # Errors
    /// `InvalidInput` for a blank or long name, a subject missing for a driver or rider
    /// token or given for another role; `NotFound` for an unknown subject.
    #[instrument(skip(self, name), fields(role = %role))]
    pub async fn create(
        &self,
        name: &str,
        role: Role,
        subject_id: Option<i64>,
    ) -> ServiceResult<CreatedToken> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(ServiceError::invalid(
                "name",
                format!("must be 1 to {MAX_NAME_CHARS} characters"),
            ));
        }
        match (role, subject_id) {
            (Role::Driver, Some(id)) => {
                if driver::Entity::find_by_id(id).count(&self.db).await? == 0 {
                    return Err(ServiceError::NotFound {
                        entity: "driver",
                        id,
                    });
                }
            }
            (Role::Rider, Some(id)) => {
                if rider::Entity::find_by_id(id).count(&self.db).await? == 0 {
                    return Err(ServiceError::NotFound {
                        entity: "rider",
                        id,
                    });
                }
            }
            (Role::Driver | Role::Rider, None) => {
                return Err(ServiceError::invalid(
                    "subjectId",
                    format!("a {role} token needs the {role} id it acts for"),
                ));
            }
            (_, Some(_)) => {
                return Err(ServiceError::invalid(
                    "subjectId",
                    format!("a {role} token acts for no single driver or rider; omit it"),
                ));
            }
            (_, None) => {}
        }
        let secret = generate();
        let token = api_token::ActiveModel {
            name: Set(name.to_owned()),
            role: Set(role.as_str().to_owned()),
            subject_id: Set(subject_id),
            token_hash: Set(hash_token(&secret)),
            created_at: Set(Utc::now()),
            revoked_at: Set(None),
            ..Default::default()
        }
        .insert(&self.db)
        .await?;
        info!(token.id = token.id, "api token created");
        Ok(CreatedToken { token, secret })
    }

    /// Revokes a token; it stops working at once on this instance and within [`CACHE_TTL`]
    /// on the others. Revoking a revoked token changes nothing.
    ///
    /// # Errors
    /// `NotFound` for an unknown id.
    #[instrument(skip(self))]
    pub async fn revoke(&self, id: i64) -> ServiceResult<api_token::Model> {
        let row = api_token::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(ServiceError::NotFound {
                entity: "api token",
                id,
            })?;
        if row.revoked_at.is_some() {
            return Ok(row);
        }
        let mut active: api_token::ActiveModel = row.into();
        active.revoked_at = Set(Some(Utc::now()));
        let row = active.update(&self.db).await?;
        self.cache.lock().remove(&row.token_hash);
        info!("api token revoked");
        Ok(row)
    }

    /// Returns every token, newest first, revoked ones included.
    ///
    /// # Errors
    /// Any database error.
    pub async fn list(&self) -> ServiceResult<Vec<api_token::Model>> {
        Ok(api_token::Entity::find()
            .order_by_desc(api_token::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Makes sure an administrator can get in, at start:
    ///
    /// - with `configured` (from `MOBILITY_ADMIN_TOKEN`), stores it as an admin token if it is
    ///   not stored yet, and returns `None`;
    /// - otherwise, when no usable token exists, creates an admin token and returns its
    ///   secret, for the caller to print once;
    /// - otherwise returns `None`.
    ///
    /// # Errors
    /// A configured token that is not `mob_` and 64 hex digits, or a database error.
    pub async fn ensure_admin(&self, configured: Option<&str>) -> anyhow::Result<Option<String>> {
        if let Some(secret) = configured {
            let well_formed = secret
                .strip_prefix(PREFIX)
                .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
            if !well_formed {
                anyhow::bail!(
                    "MOBILITY_ADMIN_TOKEN must be {PREFIX} followed by 64 hex digits; \
                     `mobility token generate` prints one"
                );
            }
            let hash = hash_token(secret);
            let stored = api_token::Entity::find()
                .filter(api_token::Column::TokenHash.eq(hash.as_str()))
                .count(&self.db)
                .await?;
            if stored == 0 {
                api_token::ActiveModel {
                    name: Set("MOBILITY_ADMIN_TOKEN".into()),
                    role: Set(Role::Admin.as_str().into()),
                    subject_id: Set(None),
                    token_hash: Set(hash),
                    created_at: Set(Utc::now()),
                    revoked_at: Set(None),
                    ..Default::default()
                }
                .insert(&self.db)
                .await?;
            }
            return Ok(None);
        }
        let usable = api_token::Entity::find()
            .filter(api_token::Column::RevokedAt.is_null())
            .filter(api_token::Column::Role.eq(Role::Admin.as_str()))
            .count(&self.db)
            .await?;
        if usable > 0 {
            return Ok(None);
        }
        let created = self.create("first admin", Role::Admin, None).await?;
        Ok(Some(created.secret))
    }
}

/// Returns a new token secret without storing it, for `MOBILITY_ADMIN_TOKEN`.
pub fn generate_secret() -> String {
    generate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_hashed_to_hex() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX));
        assert_eq!(a.len(), PREFIX.len() + 64);
        let hash = hash_token(&a);
        assert_eq!(hash.len(), 64);
        assert!(
            hash.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(hash, hash_token(&b));
    }

    #[test]
    fn hash_matches_the_sha256_test_vector() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
