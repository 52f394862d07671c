//! In-process fan-out of live events to GraphQL subscriptions.
//!
//! Driver locations and trip changes go to keyed channels (one per driver or trip that has
//! subscribers), so an update wakes only the subscribers of that driver or trip, not every
//! open subscription. Trip changes also go to one global channel for `liveTrips`.
//!
//! Channels are `tokio::sync::broadcast`: a subscriber that falls more than its buffer behind
//! skips the oldest events, and publishing never waits for a slow subscriber.
//!
//! With several instances, the bus also has an [`Outbox`]: every event published here is
//! queued for the other instances (see [`crate::cluster`]), and events they send arrive
//! through the `deliver_*` methods, which reach local subscribers only.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use entity::{trip, trip_event};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};

use crate::geometry::LatLng;

/// Events one keyed subscriber may lag before it skips ahead. One driver sends a fix every few
/// seconds and one trip changes a handful of times, so a small buffer is plenty.
const KEYED_BUFFER: usize = 64;

/// A driver's accepted location fix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverLocationEvent {
    pub driver_id: i64,
    pub position: LatLng,
    pub heading_deg: Option<f64>,
    pub speed_mps: Option<f64>,
    pub accuracy_m: Option<f64>,
    pub recorded_at: DateTime<Utc>,
}

/// A change of a trip: its state after the change and the audit event that caused it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TripUpdateEvent {
    pub trip: trip::Model,
    pub event: trip_event::Model,
}

/// A change other instances must apply to their live state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum SharedEvent {
    Location(DriverLocationEvent),
    Trip(Box<TripUpdateEvent>),
    /// A driver was registered, or its presence, vehicle or counters changed in storage;
    /// receivers read the driver again.
    Driver {
        id: i64,
    },
}

impl SharedEvent {
    /// Short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Location(_) => "location",
            Self::Trip(_) => "trip",
            Self::Driver { .. } => "driver",
        }
    }
}

/// Events waiting to be sent to the other instances, in publication order.
///
/// Bounded: when the sender falls behind (Redis slow or down), new events are dropped and
/// counted, and the next batch reports how many, so receivers reload from storage.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<OutboxQueue>,
    ready: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct OutboxQueue {
    events: Vec<SharedEvent>,
    dropped: u64,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::new(OutboxQueue::default()),
            ready: Notify::new(),
            capacity,
        }
    }

    pub fn push(&self, event: SharedEvent) {
        let mut queue = self.queue.lock();
        if queue.events.len() >= self.capacity {
            queue.dropped += 1;
            return;
        }
        let was_empty = queue.events.is_empty();
        queue.events.push(event);
        drop(queue);
        if was_empty {
            self.ready.notify_one();
        }
    }

    /// Waits until an event is queued, then takes every queued event and the count of events
    /// dropped since the last call.
    pub async fn take(&self) -> (Vec<SharedEvent>, u64) {
        loop {
            let notified = self.ready.notified();
            {
                let mut queue = self.queue.lock();
                if !queue.events.is_empty() || queue.dropped > 0 {
                    let dropped = std::mem::take(&mut queue.dropped);
                    return (std::mem::take(&mut queue.events), dropped);
                }
            }
            notified.await;
        }
    }
}

/// Broadcast channels created on first subscription and dropped when their last subscriber
/// leaves.
#[derive(Debug)]
struct KeyedChannels<E> {
    channels: RwLock<HashMap<i64, broadcast::Sender<E>>>,
}

impl<E: Clone> KeyedChannels<E> {
    fn new() -> Self {
        Self {
            channels: RwLock::new(HashMap::new()),
        }
    }

    fn subscribe(&self, key: i64) -> broadcast::Receiver<E> {
        let mut channels = self.channels.write();
        channels
            .entry(key)
            .or_insert_with(|| broadcast::channel(KEYED_BUFFER).0)
            .subscribe()
    }

    fn publish(&self, key: i64, event: E) {
        let delivered = match self.channels.read().get(&key) {
            Some(sender) => sender.send(event).is_ok(),
            None => return,
        };
        if !delivered {
            // Every receiver is gone: drop the channel unless someone subscribed meanwhile.
            self.prune(key);
        }
    }

    /// Drops the channel of `key` if it has no subscribers.
    fn prune(&self, key: i64) {
        let mut channels = self.channels.write();
        if channels.get(&key).is_some_and(|s| s.receiver_count() == 0) {
            channels.remove(&key);
        }
    }

    fn subscriber_count(&self) -> usize {
        self.channels
            .read()
            .values()
            .map(broadcast::Sender::receiver_count)
            .sum()
    }
}

/// Publishing and subscribing halves of the event channels; clone freely.
#[derive(Debug, Clone)]
pub struct EventBus {
    locations: Arc<KeyedChannels<DriverLocationEvent>>,
    trips: Arc<KeyedChannels<TripUpdateEvent>>,
    all_trips: broadcast::Sender<TripUpdateEvent>,
    /// Queue to the other instances; `None` when this instance runs alone.
    outbox: Option<Arc<Outbox>>,
}

impl EventBus {
    /// Creates the channels; `buffer` is the lag allowed on the all-trips channel.
    pub fn new(buffer: usize) -> Self {
        Self {
            locations: Arc::new(KeyedChannels::new()),
            trips: Arc::new(KeyedChannels::new()),
            all_trips: broadcast::channel(buffer).0,
            outbox: None,
        }
    }

    /// Also queues every published event for the other instances.
    #[must_use]
    pub fn with_outbox(mut self, outbox: Arc<Outbox>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    pub fn outbox(&self) -> Option<&Arc<Outbox>> {
        self.outbox.as_ref()
    }

    /// A fix accepted by this instance: to local subscribers and the other instances.
    pub fn publish_location(&self, event: DriverLocationEvent) {
        if let Some(outbox) = &self.outbox {
            outbox.push(SharedEvent::Location(event.clone()));
        }
        self.deliver_location(event);
    }

    /// A trip change committed by this instance: to local subscribers and the other
    /// instances.
    pub fn publish_trip(&self, event: TripUpdateEvent) {
        if let Some(outbox) = &self.outbox {
            outbox.push(SharedEvent::Trip(Box::new(event.clone())));
        }
        self.deliver_trip(event);
    }

    /// Tells the other instances that a driver changed in storage; nothing local.
    pub fn publish_driver_changed(&self, driver_id: i64) {
        if let Some(outbox) = &self.outbox {
            outbox.push(SharedEvent::Driver { id: driver_id });
        }
    }

    /// Sends a fix to local subscribers only, such as one received from another instance.
    pub fn deliver_location(&self, event: DriverLocationEvent) {
        self.locations.publish(event.driver_id, event);
    }

    /// Sends a trip change to local subscribers only.
    pub fn deliver_trip(&self, event: TripUpdateEvent) {
        self.trips.publish(event.trip.id, event.clone());
        // An error only means no dashboard is subscribed, which is normal.
        let _ = self.all_trips.send(event);
    }

    /// Fixes of one driver.
    pub fn subscribe_location(&self, driver_id: i64) -> broadcast::Receiver<DriverLocationEvent> {
        self.locations.subscribe(driver_id)
    }

    /// Changes of one trip.
    pub fn subscribe_trip(&self, trip_id: i64) -> broadcast::Receiver<TripUpdateEvent> {
        self.trips.subscribe(trip_id)
    }

    /// Drops the channel of a trip whose subscription was refused, such as for an unknown id.
    pub fn prune_trip(&self, trip_id: i64) {
        self.trips.prune(trip_id);
    }

    /// Changes of every trip.
    pub fn subscribe_all_trips(&self) -> broadcast::Receiver<TripUpdateEvent> {
        self.all_trips.subscribe()
    }

    /// Open subscriptions of all kinds, for health output and metrics.
    pub fn subscriber_count(&self) -> usize {
        self.locations.subscriber_count()
            + self.trips.subscriber_count()
            + self.all_trips.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(driver_id: i64) -> DriverLocationEvent {
        DriverLocationEvent {
            driver_id,
            position: LatLng { lat: 1.0, lng: 2.0 },
            heading_deg: None,
            speed_mps: None,
            accuracy_m: None,
            recorded_at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn keyed_subscriber_gets_only_its_driver() {
        let bus = EventBus::new(16);
        let mut one = bus.subscribe_location(1);
        bus.publish_location(fix(2));
        bus.publish_location(fix(1));
        assert_eq!(one.try_recv().unwrap().driver_id, 1);
        assert!(one.try_recv().is_err());
    }

    #[tokio::test]
    async fn outbox_keeps_order_and_counts_drops() {
        let outbox = Arc::new(Outbox::new(2));
        let bus = EventBus::new(16).with_outbox(outbox.clone());
        bus.publish_location(fix(1));
        bus.publish_driver_changed(2);
        bus.publish_driver_changed(3);
        let (events, dropped) = outbox.take().await;
        assert_eq!(dropped, 1);
        assert_eq!(
            events,
            vec![SharedEvent::Location(fix(1)), SharedEvent::Driver { id: 2 }]
        );
        bus.publish_driver_changed(4);
        assert_eq!(
            outbox.take().await,
            (vec![SharedEvent::Driver { id: 4 }], 0)
        );
    }

    #[test]
    fn delivered_events_stay_local() {
        let outbox = Arc::new(Outbox::new(8));
        let bus = EventBus::new(16).with_outbox(outbox.clone());
        let mut one = bus.subscribe_location(1);
        bus.deliver_location(fix(1));
        assert_eq!(one.try_recv().unwrap().driver_id, 1);
        assert!(outbox.queue.lock().events.is_empty());
    }

    #[test]
    fn channel_dropped_after_last_subscriber() {
        let bus = EventBus::new(16);
        let receiver = bus.subscribe_location(7);
        assert_eq!(bus.subscriber_count(), 1);
        drop(receiver);
        bus.publish_location(fix(7));
        assert!(bus.locations.channels.read().is_empty());
        assert_eq!(bus.subscriber_count(), 0);
    }
}
