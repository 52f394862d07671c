//! Time in a replay: the speed-up, the mapping from data time to wall-clock time, and the data
//! clock that trip flows wait on.
//!
//! Data time is Unix seconds from the files. With a speed-up `s`, data time `ts` happens at
//! wall-clock `start + (ts - t0) / s` and location fixes carry that instant as `recordedAt`.
//! Without a speed-up (`--speed max`) events go out as fast as the server takes them and fixes
//! carry the wall-clock time at which they are sent.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

/// How much faster than real time the replay runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// Data seconds per wall-clock second, above 0.
    Factor(f64),
    /// No pacing: each event is sent as soon as the previous step is done.
    Unlimited,
}

impl FromStr for Speed {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Unlimited);
        }
        match s.parse::<f64>() {
            Ok(factor) if factor.is_finite() && factor > 0.0 => Ok(Speed::Factor(factor)),
            _ => Err(format!(
                "invalid speed {s:?}: expected a number above 0 (such as 60) or \"max\""
            )),
        }
    }
}

impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Speed::Factor(factor) => write!(f, "{factor}x"),
            Speed::Unlimited => f.write_str("max"),
        }
    }
}

/// Parses a data-time span: seconds as a plain number, or a number with the suffix `s`, `m`
/// or `h`, such as `90m`.
///
/// # Errors
/// A message naming the value when it is not such a span or not above 0.
pub fn parse_span_seconds(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (number, unit_s) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3_600),
        _ => (s, 1),
    };
    match number.trim().parse::<i64>() {
        Ok(n) if n > 0 => n
            .checked_mul(unit_s)
            .ok_or_else(|| format!("span {s:?} is too long")),
        _ => Err(format!(
            "invalid span {s:?}: expected a whole number above 0 with an optional unit s, m \
             or h, such as 90m"
        )),
    }
}

/// Wall-clock seconds from the replay start at which data time `ts` is due.
pub fn wall_offset_s(ts: i64, t0: i64, speed: f64) -> f64 {
    (ts - t0) as f64 / speed
}

/// The mapping between data time and wall-clock time of one run.
#[derive(Debug, Clone, Copy)]
pub struct TimeMap {
    /// Data time at the replay start, Unix seconds.
    pub t0: i64,
    pub speed: Speed,
    start_utc: DateTime<Utc>,
    start: Instant,
}

impl TimeMap {
    /// Starts the mapping now: data time `t0` is due at once.
    pub fn start_now(t0: i64, speed: Speed) -> Self {
        Self::new(t0, speed, Utc::now(), Instant::now())
    }

    pub fn new(t0: i64, speed: Speed, start_utc: DateTime<Utc>, start: Instant) -> Self {
        Self {
            t0,
            speed,
            start_utc,
            start,
        }
    }

    /// Returns the `recordedAt` of a fix at data time `ts`: the mapped instant when paced, the
    /// current wall-clock time when unpaced.
    pub fn recorded_at(&self, ts: i64) -> DateTime<Utc> {
        match self.speed {
            Speed::Factor(speed) => {
                let nanos = (wall_offset_s(ts, self.t0, speed) * 1e9).round() as i64;
                self.start_utc + TimeDelta::nanoseconds(nanos)
            }
            Speed::Unlimited => Utc::now(),
        }
    }

    /// Returns the instant at which data time `ts` is due; the start for an unpaced run.
    pub fn due_at(&self, ts: i64) -> Instant {
        match self.speed {
            Speed::Factor(speed) => {
                let offset = wall_offset_s(ts, self.t0, speed).max(0.0);
                self.start + Duration::from_secs_f64(offset)
            }
            Speed::Unlimited => self.start,
        }
    }

    /// Returns the data second that is due at `now` when paced; `None` when unpaced.
    pub fn data_time_at(&self, now: Instant) -> Option<i64> {
        match self.speed {
            Speed::Factor(speed) => {
                let elapsed_s = now.saturating_duration_since(self.start).as_secs_f64();
                Some(self.t0 + (elapsed_s * speed).floor() as i64)
            }
            Speed::Unlimited => None,
        }
    }

    /// Wall-clock time since the start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// The data time the replay has reached, for tasks that wait on data time. It only moves
/// forward.
#[derive(Debug)]
pub struct DataClock {
    sender: watch::Sender<i64>,
}

impl DataClock {
    pub fn new(t0: i64) -> Self {
        Self {
            sender: watch::Sender::new(t0),
        }
    }

    /// Moves the clock to `ts` unless it is already there or later.
    pub fn advance(&self, ts: i64) {
        self.sender.send_if_modified(|now| {
            if ts > *now {
                *now = ts;
                true
            } else {
                false
            }
        });
    }

    pub fn now(&self) -> i64 {
        *self.sender.borrow()
    }

    /// Waits until the clock reaches `ts`.
    pub async fn wait_until(&self, ts: i64) {
        let mut receiver = self.sender.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot fail here.
        let _ = receiver.wait_for(|now| *now >= ts).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_parses_factor_and_max() {
        assert_eq!("60".parse::<Speed>(), Ok(Speed::Factor(60.0)));
        assert_eq!("0.5".parse::<Speed>(), Ok(Speed::Factor(0.5)));
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Unlimited));
        assert_eq!("MAX".parse::<Speed>(), Ok(Speed::Unlimited));
        for bad in ["0", "-3", "NaN", "inf", "fast", ""] {
            assert!(bad.parse::<Speed>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn span_parses_units() {
        assert_eq!(parse_span_seconds("90"), Ok(90));
        assert_eq!(parse_span_seconds("90s"), Ok(90));
        assert_eq!(parse_span_seconds("15m"), Ok(900));
        assert_eq!(parse_span_seconds("2h"), Ok(7_200));
        for bad in ["", "h", "0", "-5m", "1.5h", "2d"] {
            assert!(parse_span_seconds(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn wall_offset_scales_by_speed() {
        assert_eq!(wall_offset_s(1_000, 1_000, 60.0), 0.0);
        assert_eq!(wall_offset_s(4_600, 1_000, 60.0), 60.0);
        assert_eq!(wall_offset_s(37_000, 1_000, 1_000.0), 36.0);
    }

    #[test]
    fn recorded_at_maps_data_time() {
        let start_utc = DateTime::parse_from_rfc3339("2025-01-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let map = TimeMap::new(1_000, Speed::Factor(60.0), start_utc, Instant::now());
        assert_eq!(map.recorded_at(1_000), start_utc);
        assert_eq!(
            map.recorded_at(1_090),
            start_utc + TimeDelta::milliseconds(1_500)
        );
        // Fixes 15 data seconds apart stay apart at a high speed-up.
        let fast = TimeMap::new(1_000, Speed::Factor(1_000.0), start_utc, Instant::now());
        assert_eq!(
            fast.recorded_at(1_015) - fast.recorded_at(1_000),
            TimeDelta::milliseconds(15)
        );
    }

    #[test]
    fn due_and_data_time_round_trip() {
        let start = Instant::now();
        let map = TimeMap::new(1_000, Speed::Factor(100.0), Utc::now(), start);
        assert_eq!(map.due_at(1_000), start);
        assert_eq!(map.due_at(1_250), start + Duration::from_millis(2_500));
        assert_eq!(
            map.data_time_at(start + Duration::from_millis(2_500)),
            Some(1_250)
        );
        // A data time before the start is due at once.
        assert_eq!(map.due_at(900), start);

        let unpaced = TimeMap::new(1_000, Speed::Unlimited, Utc::now(), start);
        assert_eq!(unpaced.due_at(5_000), start);
        assert_eq!(unpaced.data_time_at(start), None);
    }

    #[tokio::test]
    async fn clock_moves_forward_only() {
        let clock = std::sync::Arc::new(DataClock::new(10));
        clock.advance(5);
        assert_eq!(clock.now(), 10);
        let waiter = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.wait_until(20).await })
        };
        clock.advance(15);
        assert!(!waiter.is_finished());
        clock.advance(20);
        waiter.await.unwrap();
        assert_eq!(clock.now(), 20);
    }
}
