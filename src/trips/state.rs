//! The trip state machine: which action is legal in which state, and where it leads.
//!
//! ```text
//! REQUESTED --accept--> ACCEPTED --arrive--> ARRIVED --start--> STARTED --complete--> COMPLETED
//!     |                    |                    |
//!     +------cancel--------+-------cancel-------+--> CANCELLED
//! ```
//!
//! Offers, declines and ratings do not change the trip's state; they are legal only in
//! REQUESTED (offer, decline) or COMPLETED (rate).

use entity::enums::TripStatus;

/// Something a rider, driver or the server does to a trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TripAction {
    Offer,
    Decline,
    Accept,
    Arrive,
    Start,
    Complete,
    Cancel,
    Rate,
}

impl TripAction {
    pub fn name(self) -> &'static str {
        match self {
            TripAction::Offer => "offer",
            TripAction::Decline => "decline",
            TripAction::Accept => "accept",
            TripAction::Arrive => "arrive at pickup",
            TripAction::Start => "start",
            TripAction::Complete => "complete",
            TripAction::Cancel => "cancel",
            TripAction::Rate => "rate",
        }
    }
}

/// An action that is not legal in the trip's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} a trip that is {from:?}", action.name())]
pub struct IllegalTransition {
    pub from: TripStatus,
    pub action: TripAction,
}

/// Returns the state after `action`, which equals `from` for actions that leave it unchanged.
///
/// # Errors
/// [`IllegalTransition`] when the action is not legal in `from`.
pub fn next_status(from: TripStatus, action: TripAction) -> Result<TripStatus, IllegalTransition> {
    use TripAction as A;
    use TripStatus as S;
    let to = match (from, action) {
        (S::Requested, A::Offer | A::Decline) => S::Requested,
        (S::Requested, A::Accept) => S::Accepted,
        (S::Accepted, A::Arrive) => S::Arrived,
        (S::Arrived, A::Start) => S::Started,
        (S::Started, A::Complete) => S::Completed,
        (S::Requested | S::Accepted | S::Arrived, A::Cancel) => S::Cancelled,
        (S::Completed, A::Rate) => S::Completed,
        _ => return Err(IllegalTransition { from, action }),
    };
    Ok(to)
}

/// States in which a driver is bound to the trip. Must match the partial unique index
/// `uq_trips_active_driver` in the migrations.
pub const ACTIVE_STATES: [TripStatus; 3] = [
    TripStatus::Accepted,
    TripStatus::Arrived,
    TripStatus::Started,
];

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::Iterable;

    const ACTIONS: [TripAction; 8] = [
        TripAction::Offer,
        TripAction::Decline,
        TripAction::Accept,
        TripAction::Arrive,
        TripAction::Start,
        TripAction::Complete,
        TripAction::Cancel,
        TripAction::Rate,
    ];

    #[test]
    fn legal_transitions_table() {
        use TripAction as A;
        use TripStatus as S;
        let legal = [
            (S::Requested, A::Offer, S::Requested),
            (S::Requested, A::Decline, S::Requested),
            (S::Requested, A::Accept, S::Accepted),
            (S::Requested, A::Cancel, S::Cancelled),
            (S::Accepted, A::Arrive, S::Arrived),
            (S::Accepted, A::Cancel, S::Cancelled),
            (S::Arrived, A::Start, S::Started),
            (S::Arrived, A::Cancel, S::Cancelled),
            (S::Started, A::Complete, S::Completed),
            (S::Completed, A::Rate, S::Completed),
        ];
        for from in TripStatus::iter() {
            for action in ACTIONS {
                let want = legal
                    .iter()
                    .find(|(f, a, _)| *f == from && *a == action)
                    .map(|(_, _, to)| *to);
                let got = next_status(from, action).ok();
                assert_eq!(got, want, "{from:?} --{action:?}-->");
            }
        }
    }

    #[test]
    fn terminal_states_reject_everything_but_rate() {
        for action in ACTIONS {
            assert!(next_status(TripStatus::Cancelled, action).is_err());
            if action != TripAction::Rate {
                assert!(next_status(TripStatus::Completed, action).is_err());
            }
        }
    }

    #[test]
    fn illegal_message_names_state_and_action() {
        let err = next_status(TripStatus::Completed, TripAction::Cancel).unwrap_err();
        assert_eq!(err.to_string(), "cannot cancel a trip that is Completed");
    }
}
