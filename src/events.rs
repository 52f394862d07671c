//! In-process fan-out of live events to GraphQL subscriptions.
//!
//! One `tokio::sync::broadcast` channel per event kind. A subscriber that falls more than the
//! configured buffer behind skips the oldest events and is told how many it lost in the log;
//! publishing never waits for a slow subscriber.

use chrono::{DateTime, Utc};
use entity::{trip, trip_event};
use tokio::sync::broadcast;

use crate::geometry::LatLng;

/// A driver's accepted location fix.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverLocationEvent {
    pub driver_id: i64,
    pub position: LatLng,
    pub heading_deg: Option<f64>,
    pub speed_mps: Option<f64>,
    pub accuracy_m: Option<f64>,
    pub recorded_at: DateTime<Utc>,
}

/// A change of a trip: its state after the change and the audit event that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct TripUpdateEvent {
    pub trip: trip::Model,
    pub event: trip_event::Model,
}

/// Sending halves of the event channels; clone freely.
#[derive(Debug, Clone)]
pub struct EventBus {
    locations: broadcast::Sender<DriverLocationEvent>,
    trips: broadcast::Sender<TripUpdateEvent>,
}

impl EventBus {
    /// Creates the channels; `buffer` events per channel are kept for slow subscribers.
    pub fn new(buffer: usize) -> Self {
        Self {
            locations: broadcast::channel(buffer).0,
            trips: broadcast::channel(buffer).0,
        }
    }

    pub fn publish_location(&self, event: DriverLocationEvent) {
        // An error only means no one is subscribed, which is normal.
        let _ = self.locations.send(event);
    }

    pub fn publish_trip(&self, event: TripUpdateEvent) {
        let _ = self.trips.send(event);
    }

    pub fn subscribe_locations(&self) -> broadcast::Receiver<DriverLocationEvent> {
        self.locations.subscribe()
    }

    pub fn subscribe_trips(&self) -> broadcast::Receiver<TripUpdateEvent> {
        self.trips.subscribe()
    }

    /// Current subscriber count of both channels, for health output.
    pub fn subscriber_count(&self) -> usize {
        self.locations.receiver_count() + self.trips.receiver_count()
    }
}
