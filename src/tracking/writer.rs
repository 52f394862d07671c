//! Group commit of accepted location fixes. Concurrent location updates hand their fixes to
//! a few writer tasks, and each task stores everything queued so far in one transaction: a
//! multi-row insert into `location_history` and one upsert of `driver_presence`.
//!
//! A request still gets its response only after its fixes are committed, so durability is
//! unchanged. What grouping saves is a transaction per request, and on SQLite the wait for its single
//! connection. With one fix per request from 16 clients, the server stored 3,114 fixes a
//! second with a transaction per request and 10,312 grouped (BENCHMARKS.md, on 2 cores).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use entity::{driver_presence, location_history};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    QueryTrait, RuntimeErr, TransactionTrait,
};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::{Instrument, debug, warn};

use super::rules::Fix;
use crate::error::database_unreachable;

/// Fixes in one group at most. A single request larger than this still goes alone.
const MAX_GROUP_FIXES: usize = 2_000;

/// Rows per statement: 1,000 rows of at most 10 columns stay under the bound-parameter
/// limits of SQLite (32,766) and PostgreSQL (65,535).
const ROWS_PER_STATEMENT: usize = 1_000;

/// Maximum number of requests queued for a writer. Further callers wait for room.
const QUEUE_CAPACITY: usize = 4_096;

/// Writer tasks on PostgreSQL, each with its own connection from the pool. SQLite gets one:
/// a second writer measured slower, because the two split the queue into smaller groups
/// that still wait for the single connection.
const POSTGRES_WRITERS: usize = 4;

/// The columns of `driver_presence` that hold the last fix.
pub(crate) const FIX_COLUMNS: [driver_presence::Column; 6] = [
    driver_presence::Column::Lat,
    driver_presence::Column::Lng,
    driver_presence::Column::HeadingDeg,
    driver_presence::Column::SpeedMps,
    driver_presence::Column::AccuracyM,
    driver_presence::Column::RecordedAt,
];

/// One request's accepted fixes, in input order, and where to report the commit.
struct Job {
    fixes: Vec<(i64, Fix)>,
    received_at: DateTime<Utc>,
    done: oneshot::Sender<Result<(), DbErr>>,
}

/// Handle to the writer tasks, shared by its clones. The tasks end when the last handle
/// is dropped and the queue is empty.
#[derive(Debug, Clone)]
pub struct FixWriter {
    jobs: mpsc::Sender<Job>,
}

impl FixWriter {
    /// Starts the writer tasks on the current tokio runtime.
    pub fn start(db: DatabaseConnection) -> Self {
        let writers = match db.get_database_backend() {
            DbBackend::Sqlite => 1,
            _ => POSTGRES_WRITERS,
        };
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let queue = Arc::new(Mutex::new(queue));
        for writer in 0..writers {
            let task = run(db.clone(), queue.clone());
            // NOTE: nothing restarts a writer that panics. On SQLite every later location
            // update then fails with "the location writer has stopped" until a restart.
            tokio::spawn(task.instrument(tracing::info_span!("fix_writer", writer)));
        }
        Self { jobs }
    }

    /// Stores `fixes` (driver id and fix, in input order) with other requests' fixes and
    /// returns once they are committed.
    ///
    /// # Errors
    /// The database error of the commit. When a group fails on an unreachable database,
    /// every request gets that error. On other errors each request is written again alone
    /// and gets the error of its own fixes.
    pub async fn store(
        &self,
        fixes: Vec<(i64, Fix)>,
        received_at: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        let (done, committed) = oneshot::channel();
        let job = Job {
            fixes,
            received_at,
            done,
        };
        let stopped = || DbErr::Custom("the location writer has stopped".into());
        self.jobs.send(job).await.map_err(|_| stopped())?;
        committed.await.map_err(|_| stopped())?
    }
}

/// Takes groups off the queue and writes them until every handle is dropped.
async fn run(db: DatabaseConnection, queue: Arc<Mutex<mpsc::Receiver<Job>>>) {
    while let Some(group) = next_group(&queue).await {
        let fixes: usize = group.iter().map(|job| job.fixes.len()).sum();
        debug!(requests = group.len(), fixes, "writing a group of fixes");
        match write(&db, &group).await {
            Ok(()) => {
                for job in group {
                    // A caller that went away no longer needs the result.
                    let _ = job.done.send(Ok(()));
                }
            }
            Err(e) if group.len() == 1 => {
                if let Some(job) = group.into_iter().next() {
                    let _ = job.done.send(Err(e));
                }
            }
            // A database that cannot be reached fails every request at once, because
            // writing them one by one would wait out a timeout each. The commit may also
            // have landed before the connection dropped, and a rewrite would store it twice.
            Err(e) if database_unreachable(&e) => {
                warn!(error = %e, requests = group.len(), "group write failed; database unreachable");
                for job in group {
                    let unreachable = DbErr::Conn(RuntimeErr::Internal(e.to_string()));
                    let _ = job.done.send(Err(unreachable));
                }
            }
            Err(e) => {
                warn!(error = %e, requests = group.len(), "group write failed; writing each request alone");
                for job in group {
                    let result = write(&db, std::slice::from_ref(&job)).await;
                    let _ = job.done.send(result);
                }
            }
        }
    }
}

/// Waits for one job, then takes whatever else is queued, up to [`MAX_GROUP_FIXES`] fixes.
/// `None` once the queue is closed and empty.
async fn next_group(queue: &Mutex<mpsc::Receiver<Job>>) -> Option<Vec<Job>> {
    let mut queue = queue.lock().await;
    let first = queue.recv().await?;
    let mut fixes = first.fixes.len();
    let mut group = vec![first];
    while fixes < MAX_GROUP_FIXES {
        let Ok(job) = queue.try_recv() else { break };
        fixes += job.fixes.len();
        group.push(job);
    }
    Some(group)
}

/// Writes the fixes of `group` in one transaction: every fix into the history, and each
/// driver's latest fix into its presence row unless the stored one is newer.
async fn write(db: &DatabaseConnection, group: &[Job]) -> Result<(), DbErr> {
    let history: Vec<location_history::ActiveModel> = group
        .iter()
        .flat_map(|job| {
            job.fixes
                .iter()
                .map(|(driver_id, fix)| history_row(*driver_id, fix, job.received_at))
        })
        .collect();
    let mut latest: HashMap<i64, (Fix, DateTime<Utc>)> = HashMap::new();
    // NOTE: two concurrent fixes of one driver with the same device time are both accepted.
    // Storage keeps the one first in the group and memory the one applied first, which can
    // differ.
    for job in group {
        for (driver_id, fix) in &job.fixes {
            let newer = latest
                .get(driver_id)
                .is_none_or(|(kept, _)| fix.recorded_at > kept.recorded_at);
            if newer {
                latest.insert(*driver_id, (*fix, job.received_at));
            }
        }
    }
    // Every writer locks presence rows in ascending id order, so two PostgreSQL writers never
    // wait on each other in a cycle.
    let mut latest: Vec<_> = latest.into_iter().collect();
    latest.sort_unstable_by_key(|(driver_id, _)| *driver_id);

    // Built before the transaction opens, so the connection is held only to execute them.
    let backend = db.get_database_backend();
    let mut statements = Vec::new();
    let mut history = history.into_iter().peekable();
    while history.peek().is_some() {
        let chunk: Vec<_> = history.by_ref().take(ROWS_PER_STATEMENT).collect();
        statements.push(location_history::Entity::insert_many(chunk).build(backend));
    }
    for chunk in latest.chunks(ROWS_PER_STATEMENT) {
        let rows = chunk
            .iter()
            .map(|(driver_id, (fix, received_at))| presence_row(*driver_id, fix, *received_at));
        let upsert = driver_presence::Entity::insert_many(rows).on_conflict(presence_upsert());
        statements.push(upsert.build(backend));
    }

    let txn = db.begin().await?;
    for statement in statements {
        txn.execute_raw(statement).await?;
    }
    txn.commit().await
}

fn history_row(
    driver_id: i64,
    fix: &Fix,
    received_at: DateTime<Utc>,
) -> location_history::ActiveModel {
    location_history::ActiveModel {
        driver_id: Set(driver_id),
        lat: Set(fix.position.lat),
        lng: Set(fix.position.lng),
        heading_deg: Set(fix.heading_deg),
        speed_mps: Set(fix.speed_mps),
        accuracy_m: Set(fix.accuracy_m),
        recorded_at: Set(fix.recorded_at),
        received_at: Set(received_at),
        ..Default::default()
    }
}

fn presence_row(
    driver_id: i64,
    fix: &Fix,
    received_at: DateTime<Utc>,
) -> driver_presence::ActiveModel {
    driver_presence::ActiveModel {
        driver_id: Set(driver_id),
        // Only used if the row is missing. It is not: going online creates the row, and only
        // fixes of online drivers are accepted.
        online: Set(true),
        lat: Set(Some(fix.position.lat)),
        lng: Set(Some(fix.position.lng)),
        heading_deg: Set(fix.heading_deg),
        speed_mps: Set(fix.speed_mps),
        accuracy_m: Set(fix.accuracy_m),
        recorded_at: Set(Some(fix.recorded_at)),
        available_since: Set(None),
        updated_at: Set(received_at),
    }
}

/// Moves a presence row to the inserted fix only when the stored fix is older, so writers
/// committing out of order still leave the newest fix.
fn presence_upsert() -> OnConflict {
    use driver_presence::Column as P;
    let stored = Expr::col((driver_presence::Entity, P::RecordedAt));
    let newer = stored
        .clone()
        .is_null()
        .or(stored.lt(Expr::col((Alias::new("excluded"), P::RecordedAt))));
    OnConflict::column(P::DriverId)
        .update_columns(FIX_COLUMNS.into_iter().chain([P::UpdatedAt]))
        .action_and_where(newer)
        .to_owned()
}
