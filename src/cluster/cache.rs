//! Read-through cache of driver, rider and vehicle rows in Redis, for the DataLoaders.
//!
//! A batch of ids is read with one `MGET`. The ids Redis does not have are loaded from the
//! database in one query and written back with `SET ... EX` in one pipeline, which a
//! background task sends so the request does not wait for it. Each row is stored as the JSON of its entity model under `<prefix>:driver:<id>`, `<prefix>:rider:<id>`
//! or `<prefix>:vehicle:<id>`. Every write of such a row deletes its key after the commit.
//!
//! A Redis error does not fail a request, because no method of [`ProfileCache`] returns one.
//! The rows come from the database, the error is counted through
//! [`RedisLink::record_error`], and nothing is written back.
//!
//! NOTE: a row that a loader reads from the database just before a write, and writes back
//! just after the write's invalidation, stays stale until its TTL ends. A failed invalidation
//! (Redis unreachable during the write) leaves the old row for the TTL too.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::RedisLink;
use crate::metrics::CACHE_REQUESTS;

/// Kind of cached row; its name is the `cache` label of the metric and part of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    Driver,
    Rider,
    Vehicle,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Driver => "driver",
            Profile::Rider => "rider",
            Profile::Vehicle => "vehicle",
        }
    }
}

/// One cached row: its kind and its primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProfileKey {
    pub profile: Profile,
    pub id: i64,
}

impl ProfileKey {
    pub fn driver(id: i64) -> Self {
        Self {
            profile: Profile::Driver,
            id,
        }
    }

    pub fn rider(id: i64) -> Self {
        Self {
            profile: Profile::Rider,
            id,
        }
    }

    pub fn vehicle(id: i64) -> Self {
        Self {
            profile: Profile::Vehicle,
            id,
        }
    }

    /// Key name without the deployment prefix, such as `driver:17`.
    pub fn name(self) -> String {
        format!("{}:{}", self.profile.name(), self.id)
    }
}

/// Outcome of a cache read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No cache is configured; nothing is counted or written back.
    Disabled,
    /// The cache failed; every id counts as a miss and nothing is written back.
    Failed,
    /// The cached JSON of each requested id, in request order; `None` for a miss.
    Values(Vec<Option<String>>),
}

/// Storage of cached rows as JSON text. Implementations handle their own errors, so a cache
/// failure never reaches the caller.
#[async_trait]
pub trait ProfileCache: Send + Sync + fmt::Debug {
    /// Returns whether reads and invalidations reach a cache.
    fn is_enabled(&self) -> bool;

    /// Reads the cached JSON of `ids` of one kind.
    async fn get(&self, profile: Profile, ids: &[i64]) -> Lookup;

    /// Stores `(id, json)` entries of one kind until the TTL ends. The entries may become
    /// readable after this returns.
    async fn put(&self, profile: Profile, entries: &[(i64, String)]);

    /// Deletes `keys`. Callers run it after the database commit of the write.
    async fn invalidate(&self, keys: &[ProfileKey]);
}

/// The cache shared by the loaders and by the services that write the rows.
pub type SharedProfileCache = Arc<dyn ProfileCache>;

/// No cache: every read goes to the database and invalidation does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProfileCache;

#[async_trait]
impl ProfileCache for NoProfileCache {
    fn is_enabled(&self) -> bool {
        false
    }

    async fn get(&self, _profile: Profile, _ids: &[i64]) -> Lookup {
        Lookup::Disabled
    }

    async fn put(&self, _profile: Profile, _entries: &[(i64, String)]) {}

    async fn invalidate(&self, _keys: &[ProfileKey]) {}
}

/// Time after a failed command during which reads and write-backs skip Redis. While Redis is
/// down, a command waits for the connection manager's reconnection attempt (up to its
/// reconnect delay), so without this pause every request would wait.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The cache in Redis, with one TTL for every row.
#[derive(Debug, Clone)]
pub struct RedisProfileCache {
    link: RedisLink,
    ttl_seconds: u64,
    /// End of the pause after the last failure.
    paused_until: Arc<Mutex<Option<Instant>>>,
}

impl RedisProfileCache {
    pub fn new(link: RedisLink, ttl_seconds: u32) -> Self {
        Self {
            link,
            ttl_seconds: u64::from(ttl_seconds),
            paused_until: Arc::new(Mutex::new(None)),
        }
    }

    fn key(&self, key: ProfileKey) -> String {
        self.link.key(&key.name())
    }

    /// Returns whether a command failed less than [`RETRY_AFTER`] ago.
    pub fn is_paused(&self) -> bool {
        self.paused_until
            .lock()
            .is_some_and(|until| Instant::now() < until)
    }

    fn record_error(&self, error: &redis::RedisError) {
        self.link.record_error("cache", error);
        *self.paused_until.lock() = Some(Instant::now() + RETRY_AFTER);
    }
}

#[async_trait]
impl ProfileCache for RedisProfileCache {
    fn is_enabled(&self) -> bool {
        true
    }

    async fn get(&self, profile: Profile, ids: &[i64]) -> Lookup {
        if ids.is_empty() {
            return Lookup::Values(Vec::new());
        }
        if self.is_paused() {
            return Lookup::Failed;
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|&id| self.key(ProfileKey { profile, id }))
            .collect();
        let mut connection = self.link.connection();
        let result: redis::RedisResult<Vec<Option<String>>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut connection)
            .await;
        match result {
            Ok(values) if values.len() == ids.len() => {
                self.link.record_ok();
                Lookup::Values(values)
            }
            Ok(values) => {
                let error = redis::RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "MGET returned a different number of values than keys",
                    format!("{} keys, {} values", ids.len(), values.len()),
                ));
                self.record_error(&error);
                Lookup::Failed
            }
            Err(e) => {
                self.record_error(&e);
                Lookup::Failed
            }
        }
    }

    /// Sends the `SET ... EX` pipeline from a new task, so a request does not wait for the
    /// write-back.
    async fn put(&self, profile: Profile, entries: &[(i64, String)]) {
        if entries.is_empty() || self.is_paused() {
            return;
        }
        let mut pipe = redis::pipe();
        for (id, json) in entries {
            let key = self.key(ProfileKey { profile, id: *id });
            pipe.cmd("SET")
                .arg(key)
                .arg(json)
                .arg("EX")
                .arg(self.ttl_seconds)
                .ignore();
        }
        let cache = self.clone();
        tokio::spawn(async move {
            let mut connection = cache.link.connection();
            match pipe.query_async::<()>(&mut connection).await {
                Ok(()) => cache.link.record_ok(),
                Err(e) => cache.record_error(&e),
            }
        });
    }

    /// Runs even while paused, because a key left behind serves the old row until its TTL
    /// ends. A write during an outage therefore waits for the reconnection attempt.
    async fn invalidate(&self, keys: &[ProfileKey]) {
        if keys.is_empty() {
            return;
        }
        let names: Vec<String> = keys.iter().map(|&key| self.key(key)).collect();
        let mut connection = self.link.connection();
        let result: redis::RedisResult<i64> = redis::cmd("DEL")
            .arg(&names)
            .query_async(&mut connection)
            .await;
        match result {
            Ok(_) => self.link.record_ok(),
            Err(e) => {
                self.record_error(&e);
                // Logged each time, unlike other Redis failures, because the old rows stay
                // readable until their TTL ends. Writes of these rows are rare.
                tracing::warn!(keys = ?names, error = %e, "cache invalidation failed");
            }
        }
    }
}

/// Chooses the cache once at start: Redis when a link is given and `enabled`, else none.
pub fn select(redis: Option<&RedisLink>, enabled: bool, ttl_seconds: u32) -> SharedProfileCache {
    match redis {
        Some(link) if enabled => {
            tracing::info!(ttl_seconds, "profile cache in Redis");
            Arc::new(RedisProfileCache::new(link.clone(), ttl_seconds))
        }
        _ => Arc::new(NoProfileCache),
    }
}

/// Runs [`ProfileCache::invalidate`] in a new task, for code that cannot wait, such as
/// synchronous code after a commit. Does nothing without a cache.
pub fn invalidate_in_background(cache: &SharedProfileCache, keys: Vec<ProfileKey>) {
    if !cache.is_enabled() || keys.is_empty() {
        return;
    }
    let cache = cache.clone();
    tokio::spawn(async move { cache.invalidate(&keys).await });
}

/// Loads the rows of `ids` through the cache: cached rows come from `cache`, the others
/// from `load` in one call, and those are written back. Ids that `load` does not return are
/// absent from the map and not cached.
///
/// # Errors
/// Only the error of `load`; cache failures fall back to `load`.
pub async fn read_through<T, E, F, Fut>(
    cache: &dyn ProfileCache,
    profile: Profile,
    ids: &[i64],
    id_of: fn(&T) -> i64,
    load: F,
) -> Result<HashMap<i64, T>, E>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce(Vec<i64>) -> Fut,
    Fut: Future<Output = Result<Vec<T>, E>>,
{
    let (mut found, missing, write_back) = match cache.get(profile, ids).await {
        Lookup::Disabled => (HashMap::new(), ids.to_vec(), false),
        Lookup::Failed => {
            count(profile, 0, ids.len());
            (HashMap::new(), ids.to_vec(), false)
        }
        Lookup::Values(values) => {
            let (found, missing) = decode_hits::<T>(profile, ids, values);
            count(profile, found.len(), missing.len());
            (found, missing, true)
        }
    };
    if missing.is_empty() {
        return Ok(found);
    }
    let rows = load(missing).await?;
    if write_back && !rows.is_empty() {
        let entries = encode_rows(profile, &rows, id_of);
        cache.put(profile, &entries).await;
    }
    found.extend(rows.into_iter().map(|row| (id_of(&row), row)));
    Ok(found)
}

/// Splits cached values into decoded rows and the ids to load. A value that does not decode,
/// such as one written by a version with other columns, counts as a miss and is overwritten.
pub fn decode_hits<T: DeserializeOwned>(
    profile: Profile,
    ids: &[i64],
    values: Vec<Option<String>>,
) -> (HashMap<i64, T>, Vec<i64>) {
    let mut found = HashMap::with_capacity(ids.len());
    let mut missing = Vec::new();
    for (&id, value) in ids.iter().zip(values) {
        let Some(json) = value else {
            missing.push(id);
            continue;
        };
        match serde_json::from_str(&json) {
            Ok(row) => {
                found.insert(id, row);
            }
            Err(e) => {
                tracing::debug!(cache = profile.name(), id, error = %e, "cached row does not decode");
                missing.push(id);
            }
        }
    }
    (found, missing)
}

fn encode_rows<T: Serialize>(
    profile: Profile,
    rows: &[T],
    id_of: fn(&T) -> i64,
) -> Vec<(i64, String)> {
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        match serde_json::to_string(row) {
            Ok(json) => entries.push((id_of(row), json)),
            Err(e) => {
                tracing::debug!(cache = profile.name(), id = id_of(row), error = %e, "row does not encode");
            }
        }
    }
    entries
}

fn count(profile: Profile, hits: usize, misses: usize) {
    let cache = profile.name();
    if hits > 0 {
        metrics::counter!(CACHE_REQUESTS, "cache" => cache, "result" => "hit")
            .increment(hits as u64);
    }
    if misses > 0 {
        metrics::counter!(CACHE_REQUESTS, "cache" => cache, "result" => "miss")
            .increment(misses as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Row {
        id: i64,
        name: String,
    }

    fn row(id: i64) -> Row {
        Row {
            id,
            name: format!("row {id}"),
        }
    }

    fn json(id: i64) -> String {
        serde_json::to_string(&row(id)).unwrap()
    }

    /// In-memory cache that records what the read-through does with it.
    #[derive(Debug, Default)]
    struct MemoryCache {
        fail: bool,
        entries: Mutex<HashMap<ProfileKey, String>>,
        puts: Mutex<Vec<(i64, String)>>,
    }

    #[async_trait]
    impl ProfileCache for MemoryCache {
        fn is_enabled(&self) -> bool {
            true
        }

        async fn get(&self, profile: Profile, ids: &[i64]) -> Lookup {
            if self.fail {
                return Lookup::Failed;
            }
            let entries = self.entries.lock();
            Lookup::Values(
                ids.iter()
                    .map(|&id| entries.get(&ProfileKey { profile, id }).cloned())
                    .collect(),
            )
        }

        async fn put(&self, profile: Profile, entries: &[(i64, String)]) {
            self.puts.lock().extend(entries.iter().cloned());
            let mut stored = self.entries.lock();
            for (id, json) in entries {
                stored.insert(ProfileKey { profile, id: *id }, json.clone());
            }
        }

        async fn invalidate(&self, keys: &[ProfileKey]) {
            let mut stored = self.entries.lock();
            for key in keys {
                stored.remove(key);
            }
        }
    }

    /// A database of rows 1 to 10 that records the ids of each query.
    #[derive(Default)]
    struct Database {
        queries: Mutex<Vec<Vec<i64>>>,
    }

    impl Database {
        async fn load(&self, ids: Vec<i64>) -> Result<Vec<Row>, String> {
            self.queries.lock().push(ids.clone());
            Ok(ids
                .into_iter()
                .filter(|id| (1..=10).contains(id))
                .map(row)
                .collect())
        }
    }

    fn id_of(row: &Row) -> i64 {
        row.id
    }

    #[test]
    fn key_names() {
        assert_eq!(ProfileKey::driver(17).name(), "driver:17");
        assert_eq!(ProfileKey::rider(3).name(), "rider:3");
        assert_eq!(ProfileKey::vehicle(-1).name(), "vehicle:-1");
    }

    #[test]
    fn decode_splits_hits_and_misses() {
        let values = vec![
            Some(json(1)),
            None,
            Some("{\"id\":3}".into()),
            Some(json(4)),
        ];
        let (found, missing) = decode_hits::<Row>(Profile::Driver, &[1, 2, 3, 4], values);
        assert_eq!(found.len(), 2);
        assert_eq!(found[&1], row(1));
        assert_eq!(found[&4], row(4));
        assert_eq!(missing, vec![2, 3], "a row that does not decode is a miss");
    }

    #[tokio::test]
    async fn misses_loaded_once_and_written_back() {
        let cache = MemoryCache::default();
        cache.entries.lock().insert(ProfileKey::driver(1), json(1));
        let db = Database::default();

        let rows = read_through(&cache, Profile::Driver, &[1, 2, 3, 99], id_of, |ids| {
            db.load(ids)
        })
        .await
        .unwrap();

        assert_eq!(rows.len(), 3, "99 does not exist");
        assert_eq!(rows[&1], row(1));
        assert_eq!(rows[&3], row(3));
        assert_eq!(
            *db.queries.lock(),
            vec![vec![2, 3, 99]],
            "one query, misses only"
        );
        let puts = cache.puts.lock().clone();
        assert_eq!(
            puts,
            vec![(2, json(2)), (3, json(3))],
            "absent ids are not cached"
        );
    }

    #[tokio::test]
    async fn all_hits_skip_database() {
        let cache = MemoryCache::default();
        cache.entries.lock().insert(ProfileKey::rider(5), json(5));
        let db = Database::default();

        let rows = read_through(&cache, Profile::Rider, &[5], id_of, |ids| db.load(ids))
            .await
            .unwrap();

        assert_eq!(rows[&5], row(5));
        assert!(db.queries.lock().is_empty());
        assert!(cache.puts.lock().is_empty());
    }

    #[tokio::test]
    async fn kinds_do_not_share_keys() {
        let cache = MemoryCache::default();
        cache.entries.lock().insert(ProfileKey::driver(2), json(2));
        let db = Database::default();

        read_through(&cache, Profile::Vehicle, &[2], id_of, |ids| db.load(ids))
            .await
            .unwrap();

        assert_eq!(*db.queries.lock(), vec![vec![2]]);
    }

    #[tokio::test]
    async fn failed_cache_falls_back_without_write_back() {
        let cache = MemoryCache {
            fail: true,
            ..MemoryCache::default()
        };
        let db = Database::default();

        let rows = read_through(&cache, Profile::Driver, &[1, 2], id_of, |ids| db.load(ids))
            .await
            .unwrap();

        assert_eq!(rows.len(), 2);
        assert_eq!(*db.queries.lock(), vec![vec![1, 2]]);
        assert!(cache.puts.lock().is_empty());
    }

    #[tokio::test]
    async fn disabled_cache_reads_database() {
        let db = Database::default();

        let rows = read_through(&NoProfileCache, Profile::Driver, &[4], id_of, |ids| {
            db.load(ids)
        })
        .await
        .unwrap();

        assert_eq!(rows[&4], row(4));
        assert_eq!(*db.queries.lock(), vec![vec![4]]);
    }

    #[tokio::test]
    async fn invalidated_row_reloaded() {
        let cache = MemoryCache::default();
        let db = Database::default();
        read_through(&cache, Profile::Driver, &[7], id_of, |ids| db.load(ids))
            .await
            .unwrap();
        cache.invalidate(&[ProfileKey::driver(7)]).await;

        read_through(&cache, Profile::Driver, &[7], id_of, |ids| db.load(ids))
            .await
            .unwrap();

        assert_eq!(*db.queries.lock(), vec![vec![7], vec![7]]);
    }

    #[tokio::test]
    async fn database_error_returned() {
        let cache = MemoryCache::default();
        let result: Result<HashMap<i64, Row>, String> =
            read_through(&cache, Profile::Driver, &[1], id_of, |_| async {
                Err("connection reset".to_owned())
            })
            .await;
        assert_eq!(result.unwrap_err(), "connection reset");
        assert!(cache.puts.lock().is_empty());
    }

    #[test]
    fn select_without_redis_is_disabled() {
        assert!(!select(None, true, 300).is_enabled());
    }

    #[tokio::test]
    async fn unreachable_redis_pauses_reads() {
        // A loopback port that was free a moment ago, so connecting is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let link = RedisLink::open(&format!("redis://127.0.0.1:{port}"), "test").unwrap();
        assert!(select(Some(&link), true, 300).is_enabled());
        assert!(!select(Some(&link), false, 300).is_enabled());
        let cache = RedisProfileCache::new(link, 300);

        assert_eq!(cache.get(Profile::Driver, &[1]).await, Lookup::Failed);
        assert!(cache.is_paused());
        let started = Instant::now();
        assert_eq!(cache.get(Profile::Driver, &[1]).await, Lookup::Failed);
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "a paused read took {:?}",
            started.elapsed()
        );
    }
}
