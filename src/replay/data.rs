//! Loading of the Porto taxi data (`porto_taxi_trips.csv` and `porto_taxi_pings.csv.gz`) and
//! the selection of the part a run replays.
//!
//! Columns are read by header name, so their order in the file does not matter. Times are
//! Unix seconds (UTC) and coordinates WGS84 decimal degrees, as in the files.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context, bail};
use flate2::read::GzDecoder;
use serde::Deserialize;

/// File of trip requests inside the data directory.
pub const TRIPS_FILE: &str = "porto_taxi_trips.csv";
/// File of GPS fixes inside the data directory, gzip-compressed CSV.
pub const PINGS_FILE: &str = "porto_taxi_pings.csv.gz";

/// A point in WGS84 decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub lat: f64,
    pub lon: f64,
}

/// Channel through which the passenger found the taxi, from the original `CALL_TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum CallType {
    /// Booked through the dispatch central by phone.
    Dispatch,
    /// Taken at a taxi stand.
    Stand,
    /// Hailed on the street.
    Street,
}

impl CallType {
    /// Returns the letter of the `call_type` column.
    pub fn letter(self) -> char {
        match self {
            CallType::Dispatch => 'A',
            CallType::Stand => 'B',
            CallType::Street => 'C',
        }
    }
}

/// One trip of the data: a ride request and the taxi that really served it.
#[derive(Debug, Clone, PartialEq)]
pub struct Trip {
    pub trip_id: String,
    pub taxi_id: String,
    pub call_type: CallType,
    /// Anonymised caller id, present only for dispatch calls.
    pub origin_call: Option<String>,
    /// Unix seconds of the first GPS fix.
    pub start_ts: i64,
    /// Unix seconds of the last GPS fix.
    pub end_ts: i64,
    /// First fix; `None` for the trips whose polyline is empty.
    pub pickup: Option<Point>,
    /// Last fix; `None` for the trips whose polyline is empty.
    pub dropoff: Option<Point>,
}

impl Trip {
    /// Seconds from first to last fix.
    pub fn duration_s(&self) -> i64 {
        self.end_ts - self.start_ts
    }
}

/// One GPS fix of a taxi carrying a passenger.
#[derive(Debug, Clone, PartialEq)]
pub struct Ping {
    /// Unix seconds.
    pub ts: i64,
    pub taxi_id: String,
    pub trip_id: String,
    pub position: Point,
}

/// Trips sorted by start time (then taxi id) and pings sorted by time (then taxi id).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dataset {
    pub trips: Vec<Trip>,
    pub pings: Vec<Ping>,
}

#[derive(Debug, Deserialize)]
struct TripRecord {
    trip_id: String,
    taxi_id: String,
    call_type: String,
    origin_call: Option<String>,
    start_ts: i64,
    end_ts: i64,
    pickup_lat: Option<f64>,
    pickup_lon: Option<f64>,
    dropoff_lat: Option<f64>,
    dropoff_lon: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct PingRecord {
    ts: i64,
    taxi_id: String,
    trip_id: String,
    lat: f64,
    lon: f64,
}

/// Reads both files from `dir`.
///
/// # Errors
/// A missing or unreadable file, or a row that fails [`parse_trips`] or [`parse_pings`].
pub fn load(dir: &Path) -> anyhow::Result<Dataset> {
    let trips_path = dir.join(TRIPS_FILE);
    let trips_file = File::open(&trips_path).with_context(|| {
        format!(
            "cannot open {}; pass --data-dir with the folder that contains {TRIPS_FILE} and \
             {PINGS_FILE}",
            trips_path.display()
        )
    })?;
    let trips = parse_trips(BufReader::new(trips_file))
        .with_context(|| format!("invalid {}", trips_path.display()))?;

    let pings_path = dir.join(PINGS_FILE);
    let pings_file =
        File::open(&pings_path).with_context(|| format!("cannot open {}", pings_path.display()))?;
    let pings = parse_pings(GzDecoder::new(BufReader::new(pings_file)))
        .with_context(|| format!("invalid {}", pings_path.display()))?;
    Ok(Dataset { trips, pings })
}

/// Parses the trips CSV and sorts it by start time, then taxi id.
///
/// # Errors
/// A row with a missing column, an unknown call type, an end before its start, a coordinate
/// out of range, or only one of a point's two coordinates.
pub fn parse_trips<R: Read>(reader: R) -> anyhow::Result<Vec<Trip>> {
    let mut csv = csv::Reader::from_reader(reader);
    let mut trips = Vec::new();
    for (index, record) in csv.deserialize::<TripRecord>().enumerate() {
        // The header is line 1, so data row `index` is on line `index + 2`.
        let line = index + 2;
        let record = record.with_context(|| format!("line {line}"))?;
        let trip = trip_from_record(record).with_context(|| format!("line {line}"))?;
        trips.push(trip);
    }
    trips.sort_by(|a, b| {
        (a.start_ts, &a.taxi_id, &a.trip_id).cmp(&(b.start_ts, &b.taxi_id, &b.trip_id))
    });
    Ok(trips)
}

fn trip_from_record(record: TripRecord) -> anyhow::Result<Trip> {
    let call_type = match record.call_type.as_str() {
        "A" => CallType::Dispatch,
        "B" => CallType::Stand,
        "C" => CallType::Street,
        other => bail!("call_type {other:?} is not A, B or C"),
    };
    if record.end_ts < record.start_ts {
        bail!(
            "trip {} ends at {} before it starts at {}",
            record.trip_id,
            record.end_ts,
            record.start_ts
        );
    }
    let pickup = point("pickup", record.pickup_lat, record.pickup_lon)?;
    let dropoff = point("dropoff", record.dropoff_lat, record.dropoff_lon)?;
    Ok(Trip {
        trip_id: record.trip_id,
        taxi_id: record.taxi_id,
        call_type,
        origin_call: record.origin_call.filter(|call| !call.trim().is_empty()),
        start_ts: record.start_ts,
        end_ts: record.end_ts,
        pickup,
        dropoff,
    })
}

fn point(name: &str, lat: Option<f64>, lon: Option<f64>) -> anyhow::Result<Option<Point>> {
    match (lat, lon) {
        (None, None) => Ok(None),
        (Some(lat), Some(lon)) => Ok(Some(checked_point(name, lat, lon)?)),
        _ => bail!("{name} has only one of its two coordinates"),
    }
}

fn checked_point(name: &str, lat: f64, lon: f64) -> anyhow::Result<Point> {
    let valid = lat.is_finite()
        && lon.is_finite()
        && (-90.0..=90.0).contains(&lat)
        && (-180.0..=180.0).contains(&lon);
    if !valid {
        bail!("{name} ({lat}, {lon}) is not a valid latitude and longitude");
    }
    Ok(Point { lat, lon })
}

/// Parses the pings CSV (already decompressed) and sorts it by time, then taxi id.
///
/// # Errors
/// A row with a missing column or a coordinate out of range.
pub fn parse_pings<R: Read>(reader: R) -> anyhow::Result<Vec<Ping>> {
    let mut csv = csv::Reader::from_reader(reader);
    let mut pings = Vec::new();
    for (index, record) in csv.deserialize::<PingRecord>().enumerate() {
        let line = index + 2;
        let record = record.with_context(|| format!("line {line}"))?;
        let position = checked_point("position", record.lat, record.lon)
            .with_context(|| format!("line {line}"))?;
        pings.push(Ping {
            ts: record.ts,
            taxi_id: record.taxi_id,
            trip_id: record.trip_id,
            position,
        });
    }
    // A stable sort keeps the file order of a taxi's fixes that share a second.
    pings.sort_by(|a, b| (a.ts, &a.taxi_id).cmp(&(b.ts, &b.taxi_id)));
    Ok(pings)
}

/// Bounds on the part of the data a run replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Selection {
    /// Keep only the first this many trips by start time.
    pub limit_trips: Option<usize>,
    /// Keep only trips and pings that start within this many seconds of the first trip.
    pub duration_s: Option<i64>,
}

impl Dataset {
    /// Unix seconds of the first trip start; `None` without trips.
    pub fn first_ts(&self) -> Option<i64> {
        let first_trip = self.trips.first().map(|t| t.start_ts);
        let first_ping = self.pings.first().map(|p| p.ts);
        first_trip.into_iter().chain(first_ping).min()
    }

    /// Unix seconds of the last trip end or ping; `None` without trips.
    pub fn last_ts(&self) -> Option<i64> {
        let last_end = self.trips.iter().map(|t| t.end_ts).max();
        let last_ping = self.pings.last().map(|p| p.ts);
        last_end.into_iter().chain(last_ping).max()
    }

    /// Returns the trips within `selection` and the pings of those trips. A ping after the
    /// duration bound is dropped even when its trip started inside it.
    pub fn select(&self, selection: Selection) -> Dataset {
        let Some(t0) = self.first_ts() else {
            return Dataset::default();
        };
        let before_end = |ts: i64| selection.duration_s.is_none_or(|d| ts < t0 + d);
        let limit = selection.limit_trips.unwrap_or(usize::MAX);
        let trips: Vec<Trip> = self
            .trips
            .iter()
            .filter(|t| before_end(t.start_ts))
            .take(limit)
            .cloned()
            .collect();
        let kept_trip_ids: HashSet<&str> = trips.iter().map(|t| t.trip_id.as_str()).collect();
        let pings = self
            .pings
            .iter()
            .filter(|p| before_end(p.ts) && kept_trip_ids.contains(p.trip_id.as_str()))
            .cloned()
            .collect();
        Dataset { trips, pings }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRIPS_HEADER: &str = "trip_id,taxi_id,call_type,origin_call,origin_stand,start_ts,\
        start_time_utc,start_time_local,end_ts,duration_s,n_points,pickup_lat,pickup_lon,\
        dropoff_lat,dropoff_lon,straight_line_m,path_length_m,day_type,missing_data\n";

    /// Three rows copied from `data/porto/porto_taxi_trips.csv`, out of order, one of them
    /// with an empty polyline.
    fn trips_csv() -> String {
        let rows = [
            "1372636854620000520,20000520,C,,,1372636854,2013-07-01T00:00:54+00:00,\
             2013-07-01T01:00:54+01:00,1372637484,630,43,41.151951,-8.574678,41.142915,\
             -8.607996,2965.2,7968.1,A,False",
            "1372636853620000380,20000380,C,,,1372636853,2013-07-01T00:00:53+00:00,\
             2013-07-01T01:00:53+01:00,1372637213,360,25,41.140746,-8.610291,41.145345,\
             -8.60589,630.3,2012.6,A,False",
            "1372665673620000353,20000353,A,2002,,1372665673,2013-07-01T08:01:13+00:00,\
             2013-07-01T09:01:13+01:00,1372665673,0,0,,,,,,,A,False",
        ];
        format!("{TRIPS_HEADER}{}\n", rows.join("\n"))
    }

    #[test]
    fn trips_parse_and_sort() {
        let trips = parse_trips(trips_csv().as_bytes()).unwrap();
        assert_eq!(trips.len(), 3);
        assert_eq!(trips[0].trip_id, "1372636853620000380");
        assert_eq!(trips[1].trip_id, "1372636854620000520");
        assert_eq!(trips[0].call_type, CallType::Street);
        assert_eq!(trips[0].origin_call, None);
        assert_eq!(trips[0].duration_s(), 360);
        assert_eq!(
            trips[0].pickup,
            Some(Point {
                lat: 41.140746,
                lon: -8.610291
            })
        );
        assert_eq!(
            trips[0].dropoff,
            Some(Point {
                lat: 41.145345,
                lon: -8.60589
            })
        );
    }

    #[test]
    fn trip_without_polyline_has_no_points() {
        let trips = parse_trips(trips_csv().as_bytes()).unwrap();
        let empty = &trips[2];
        assert_eq!(empty.call_type, CallType::Dispatch);
        assert_eq!(empty.origin_call.as_deref(), Some("2002"));
        assert_eq!(empty.pickup, None);
        assert_eq!(empty.dropoff, None);
        assert_eq!(empty.duration_s(), 0);
    }

    #[test]
    fn trips_reject_bad_rows() {
        let bad_call_type = trips_csv().replace(",C,,,1372636853,", ",X,,,1372636853,");
        let error = parse_trips(bad_call_type.as_bytes()).unwrap_err();
        assert!(format!("{error:#}").contains("line 3"), "{error:#}");

        let half_point = trips_csv().replace("41.140746,-8.610291", "41.140746,");
        assert!(parse_trips(half_point.as_bytes()).is_err());

        let ends_early = trips_csv().replace(",1372637213,360,", ",1372636000,360,");
        assert!(parse_trips(ends_early.as_bytes()).is_err());

        let out_of_range = trips_csv().replace("41.151951,-8.574678", "141.151951,-8.574678");
        assert!(parse_trips(out_of_range.as_bytes()).is_err());
    }

    #[test]
    fn pings_parse_and_sort() {
        let csv = "ts,time_utc,taxi_id,trip_id,seq,lat,lon\n\
            1372636868,2013-07-01T00:01:08Z,20000380,1372636853620000380,1,41.140755,-8.610273\n\
            1372636853,2013-07-01T00:00:53Z,20000380,1372636853620000380,0,41.140746,-8.610291\n\
            1372636854,2013-07-01T00:00:54Z,20000520,1372636854620000520,0,41.151951,-8.574678\n";
        let pings = parse_pings(csv.as_bytes()).unwrap();
        let times: Vec<i64> = pings.iter().map(|p| p.ts).collect();
        assert_eq!(times, [1372636853, 1372636854, 1372636868]);
        assert_eq!(pings[1].taxi_id, "20000520");
        assert_eq!(pings[2].position.lat, 41.140755);
        assert_eq!(pings[2].position.lon, -8.610273);
    }

    #[test]
    fn pings_reject_missing_column() {
        let csv = "ts,taxi_id,trip_id,lat\n1372636853,20000380,1,41.1\n";
        assert!(parse_pings(csv.as_bytes()).is_err());
    }

    fn trip(trip_id: &str, start_ts: i64, end_ts: i64) -> Trip {
        Trip {
            trip_id: trip_id.into(),
            taxi_id: "20000001".into(),
            call_type: CallType::Street,
            origin_call: None,
            start_ts,
            end_ts,
            pickup: None,
            dropoff: None,
        }
    }

    fn ping(trip_id: &str, ts: i64) -> Ping {
        Ping {
            ts,
            taxi_id: "20000001".into(),
            trip_id: trip_id.into(),
            position: Point {
                lat: 41.1,
                lon: -8.6,
            },
        }
    }

    fn sample() -> Dataset {
        Dataset {
            trips: vec![
                trip("a", 100, 130),
                trip("b", 110, 200),
                trip("c", 300, 330),
            ],
            pings: vec![
                ping("a", 100),
                ping("b", 110),
                ping("a", 115),
                ping("b", 125),
                ping("a", 130),
                ping("b", 200),
                ping("c", 300),
            ],
        }
    }

    #[test]
    fn select_limits_trips_and_their_pings() {
        let selected = sample().select(Selection {
            limit_trips: Some(1),
            duration_s: None,
        });
        assert_eq!(selected.trips.len(), 1);
        assert_eq!(selected.pings.len(), 3);
        assert!(selected.pings.iter().all(|p| p.trip_id == "a"));
    }

    #[test]
    fn select_cuts_at_duration() {
        let selected = sample().select(Selection {
            limit_trips: None,
            duration_s: Some(30),
        });
        let trip_ids: Vec<&str> = selected.trips.iter().map(|t| t.trip_id.as_str()).collect();
        assert_eq!(trip_ids, ["a", "b"]);
        let times: Vec<i64> = selected.pings.iter().map(|p| p.ts).collect();
        assert_eq!(times, [100, 110, 115, 125]);
    }

    #[test]
    fn span_of_sample() {
        let data = sample();
        assert_eq!(data.first_ts(), Some(100));
        assert_eq!(data.last_ts(), Some(330));
        assert_eq!(Dataset::default().first_ts(), None);
    }
}
