//! Keeps the live state of every instance in step through one Redis pub/sub channel.
//!
//! Each instance publishes the events of its own changes (accepted fixes, trip changes,
//! drivers changed in storage) in batches, numbered per instance, on `<prefix>:events`, and
//! applies what the others publish to its live registry, open requests and local
//! subscribers. Pub/sub delivers at most once, so a receiver can miss a batch: a gap in the
//! numbers, a batch that reports dropped events, or a lost subscription. It then reloads the
//! live state from the database, which every instance writes before it publishes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use entity::trip_event;
use futures_util::StreamExt;
use sea_orm::{DbErr, EntityTrait, QuerySelect};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::app::Services;
use crate::cluster::RedisLink;
use crate::events::{Outbox, SharedEvent};
use crate::metrics::{CLUSTER_MESSAGES, CLUSTER_RESYNCS};
use crate::tracking::load_live_drivers;

/// Maximum events in one published batch; a location event is about 180 bytes of JSON.
const MAX_BATCH: usize = 500;
/// Events queued for other instances before new ones are dropped (and receivers resync).
pub const OUTBOX_CAPACITY: usize = 100_000;
/// Pause after a failed subscription before the next attempt.
const RETRY_DELAY: Duration = Duration::from_millis(500);
/// How often a pending reload is retried while the database fails.
const RESYNC_RETRY: Duration = Duration::from_secs(1);

/// One published batch.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// Instance that published the batch.
    origin: u64,
    /// 1 for the first batch of an instance, then one more per batch.
    seq: u64,
    /// Events the publisher dropped before this batch because its queue was full.
    dropped: u64,
    events: Vec<SharedEvent>,
}

/// This instance's part in the cluster: its Redis link, its id, and whether it currently
/// receives the other instances' events.
#[derive(Debug, Clone)]
pub struct Cluster {
    link: RedisLink,
    instance_id: u64,
    subscribed: Arc<AtomicBool>,
}

impl Cluster {
    pub fn new(link: RedisLink) -> Self {
        use std::hash::BuildHasher;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let instance_id =
            std::collections::hash_map::RandomState::new().hash_one((std::process::id(), nanos));
        Self {
            link,
            instance_id,
            subscribed: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn link(&self) -> &RedisLink {
        &self.link
    }

    pub fn instance_id(&self) -> u64 {
        self.instance_id
    }

    /// Returns whether this instance receives the other instances' events now.
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }

    fn channel(&self) -> String {
        self.link.key("events")
    }
}

/// Sends the outbox to Redis in batches until shutdown, then sends what is left.
pub async fn run_publisher(
    cluster: Cluster,
    outbox: Arc<Outbox>,
    mut shutdown: watch::Receiver<bool>,
) {
    let channel = cluster.channel();
    let mut seq = 0_u64;
    loop {
        let (events, dropped) = tokio::select! {
            taken = outbox.take() => taken,
            () = wait_stop(&mut shutdown) => break,
        };
        seq = publish(&cluster, &channel, seq, events, dropped).await;
    }
    // Changes made while shutting down still reach the others if Redis responds.
    let (events, dropped) = {
        let taken = tokio::time::timeout(Duration::from_millis(10), outbox.take()).await;
        taken.unwrap_or_default()
    };
    if !events.is_empty() || dropped > 0 {
        publish(&cluster, &channel, seq, events, dropped).await;
    }
}

/// Publishes `events` in batches numbered after `seq`; returns the last number used. A batch
/// that fails is lost, and its number with it, so receivers see the gap.
async fn publish(
    cluster: &Cluster,
    channel: &str,
    mut seq: u64,
    events: Vec<SharedEvent>,
    mut dropped: u64,
) -> u64 {
    let mut connection = cluster.link.connection();
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() || dropped > 0 {
        let batch: Vec<SharedEvent> = events.by_ref().take(MAX_BATCH).collect();
        for event in &batch {
            metrics::counter!(CLUSTER_MESSAGES, "direction" => "sent", "kind" => event.kind())
                .increment(1);
        }
        seq += 1;
        let envelope = Envelope {
            origin: cluster.instance_id,
            seq,
            dropped: std::mem::take(&mut dropped),
            events: batch,
        };
        let payload = match serde_json::to_vec(&envelope) {
            Ok(payload) => payload,
            Err(e) => {
                warn!(error = %e, "cannot encode events for other instances");
                continue;
            }
        };
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut connection)
            .await;
        match sent {
            Ok(_) => cluster.link.record_ok(),
            Err(e) => cluster.link.record_error("publish", &e),
        }
    }
    seq
}

/// Receives the other instances' events until shutdown, resubscribing after every loss and
/// reloading the live state from the database after every gap.
pub async fn run_subscriber(services: Services, cluster: Cluster, shutdown: watch::Receiver<bool>) {
    let channel = cluster.channel();
    let mut receiver = Receiver {
        services,
        cluster,
        last_seq: HashMap::new(),
        needs_resync: true,
    };
    let mut stop = shutdown.clone();
    loop {
        let stopping = *shutdown.borrow();
        if stopping {
            break;
        }
        let subscribed = async {
            let mut pubsub = receiver.cluster.link.client().get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            redis::RedisResult::Ok(pubsub)
        };
        let pubsub = tokio::select! {
            result = tokio::time::timeout(Duration::from_secs(2), subscribed) => result,
            () = wait_stop(&mut stop) => break,
        };
        let mut pubsub = match pubsub {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => {
                receiver.cluster.link.record_error("subscribe", &e);
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
            Err(_) => {
                let e = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
                receiver.cluster.link.record_error("subscribe", &e);
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
        };
        receiver.cluster.link.record_ok();
        receiver.cluster.subscribed.store(true, Ordering::Relaxed);
        info!(
            channel,
            instance = receiver.cluster.instance_id,
            "receiving other instances' events"
        );
        // Whatever was published before the subscription started is missed.
        receiver.needs_resync = true;
        receiver.resync_if_needed().await;
        let mut messages = pubsub.on_message();
        let mut retry = tokio::time::interval(RESYNC_RETRY);
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => receiver.handle(message.get_payload_bytes()).await,
                    None => break,
                },
                _ = retry.tick() => receiver.resync_if_needed().await,
                () = wait_stop(&mut stop) => return,
            }
        }
        receiver.cluster.subscribed.store(false, Ordering::Relaxed);
        let e = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        receiver.cluster.link.record_error("subscribe", &e);
        tokio::time::sleep(RETRY_DELAY).await;
    }
}

/// Resolves once `shutdown` turns true or its sender is gone.
async fn wait_stop(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

struct Receiver {
    services: Services,
    cluster: Cluster,
    /// Last batch number seen per publishing instance.
    last_seq: HashMap<u64, u64>,
    needs_resync: bool,
}

impl Receiver {
    async fn handle(&mut self, payload: &[u8]) {
        let envelope: Envelope = match serde_json::from_slice(payload) {
            Ok(envelope) => envelope,
            Err(e) => {
                // Another version of the server, or something else on the channel.
                warn!(error = %e, "ignored a message on the events channel that does not parse");
                return;
            }
        };
        if envelope.origin == self.cluster.instance_id {
            return;
        }
        let previous = self.last_seq.insert(envelope.origin, envelope.seq);
        if previous.is_some_and(|seq| seq + 1 != envelope.seq) || envelope.dropped > 0 {
            debug!(
                origin = envelope.origin,
                seq = envelope.seq,
                ?previous,
                dropped = envelope.dropped,
                "events from another instance were missed"
            );
            self.needs_resync = true;
        }
        for event in envelope.events {
            metrics::counter!(CLUSTER_MESSAGES, "direction" => "received", "kind" => event.kind())
                .increment(1);
            if let Err(e) = self.apply(event).await {
                warn!(error = %e, "cannot apply another instance's change; reloading");
                self.needs_resync = true;
            }
        }
        self.resync_if_needed().await;
    }

    async fn apply(&self, event: SharedEvent) -> Result<(), DbErr> {
        let tracking = &self.services.tracking;
        match event {
            SharedEvent::Location(fix) => {
                let driver_id = fix.driver_id;
                if !tracking.apply_remote_fix(fix) {
                    tracking.refresh_driver(driver_id).await?;
                }
            }
            SharedEvent::Trip(change) => self.services.trips.apply_remote(*change),
            SharedEvent::Driver { id } => tracking.refresh_driver(id).await?,
        }
        Ok(())
    }

    async fn resync_if_needed(&mut self) {
        if !self.needs_resync {
            return;
        }
        match resync(&self.services).await {
            Ok(()) => self.needs_resync = false,
            Err(e) => {
                crate::metrics::count_database_error();
                warn!(error = %e, "cannot reload the live state; retrying");
            }
        }
    }
}

/// Reloads drivers and open requests from the database into the live state.
///
/// # Errors
/// Any database error; the live state is then unchanged.
pub async fn resync(services: &Services) -> Result<(), DbErr> {
    let started = std::time::Instant::now();
    // Read before the drivers: every binding change up to this event is in the snapshot.
    let last_event_id: Option<i64> = trip_event::Entity::find()
        .select_only()
        .expr(sea_orm::sea_query::Func::max(
            sea_orm::sea_query::Expr::col(trip_event::Column::Id),
        ))
        .into_tuple::<Option<i64>>()
        .one(&services.db)
        .await?
        .flatten();
    let snapshot = load_live_drivers(&services.db).await?;
    services
        .tracking
        .live()
        .merge_snapshot(snapshot, last_event_id.unwrap_or(0));
    services.trips.reload_open_requests().await?;
    metrics::counter!(CLUSTER_RESYNCS).increment(1);
    info!(
        drivers = services.tracking.live().driver_count(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "live state reloaded from the database"
    );
    Ok(())
}
