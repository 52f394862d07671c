//! Positions on the WGS84 ellipsoid: validation of client coordinates, great-circle distance
//! and the unit-sphere vectors the spatial index stores.
//!
//! Coordinates cross every boundary as [`LatLng`] (latitude first, decimal degrees). A
//! `geo::Point` is built only at the call to `geo`, where the order is (longitude, latitude).

use geo::{Distance, Haversine, Point};

/// Mean Earth radius in meters (IUGG), the radius `geo::Haversine` uses.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Points within this many degrees of (0, 0) are rejected: a GPS that has no fix often reports
/// exactly zero, and no road exists there ("Null Island").
const NULL_ISLAND_EPSILON_DEG: f64 = 1e-6;

/// A position in decimal degrees (WGS84).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatLng {
    pub lat: f64,
    pub lng: f64,
}

impl LatLng {
    /// Great-circle distance to `other` in meters.
    pub fn distance_m(&self, other: &LatLng) -> f64 {
        Haversine.distance(self.to_point(), other.to_point())
    }

    fn to_point(self) -> Point<f64> {
        Point::new(self.lng, self.lat)
    }

    /// Unit vector from the Earth's center (x towards 0°N 0°E, z towards the North Pole).
    /// Straight-line (chord) distance between these vectors grows monotonically with the
    /// great-circle distance, so a Euclidean R-tree over them answers great-circle queries
    /// everywhere, poles and antimeridian included.
    pub fn to_unit_vector(self) -> [f64; 3] {
        let (lat, lng) = (self.lat.to_radians(), self.lng.to_radians());
        [lat.cos() * lng.cos(), lat.cos() * lng.sin(), lat.sin()]
    }
}

/// Squared chord length on the unit sphere for a great-circle distance in meters.
pub fn chord_2_for_distance(distance_m: f64) -> f64 {
    let half_angle = (distance_m / EARTH_RADIUS_M / 2.0).min(std::f64::consts::FRAC_PI_2);
    let chord = 2.0 * half_angle.sin();
    chord * chord
}

/// An axis-aligned latitude/longitude box that must contain every accepted position, such as
/// a city's service area. Boxes that cross the antimeridian are not supported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundingBox {
    pub min: LatLng,
    pub max: LatLng,
}

impl BoundingBox {
    pub fn contains(&self, p: LatLng) -> bool {
        (self.min.lat..=self.max.lat).contains(&p.lat)
            && (self.min.lng..=self.max.lng).contains(&p.lng)
    }
}

impl std::str::FromStr for BoundingBox {
    type Err = String;

    /// Parses `min_lat,min_lng,max_lat,max_lng` in decimal degrees.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<f64> = s
            .split(',')
            .map(|part| part.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("invalid bounding box {s:?}: {e}"))?;
        let [min_lat, min_lng, max_lat, max_lng] = parts[..] else {
            return Err(format!(
                "invalid bounding box {s:?}: expected min_lat,min_lng,max_lat,max_lng"
            ));
        };
        let valid = (-90.0..=90.0).contains(&min_lat)
            && (-90.0..=90.0).contains(&max_lat)
            && (-180.0..=180.0).contains(&min_lng)
            && (-180.0..=180.0).contains(&max_lng)
            && min_lat < max_lat
            && min_lng < max_lng;
        if !valid {
            return Err(format!(
                "invalid bounding box {s:?}: need -90 <= min_lat < max_lat <= 90 and \
                 -180 <= min_lng < max_lng <= 180"
            ));
        }
        Ok(BoundingBox {
            min: LatLng {
                lat: min_lat,
                lng: min_lng,
            },
            max: LatLng {
                lat: max_lat,
                lng: max_lng,
            },
        })
    }
}

/// Reason a client-supplied coordinate pair was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoordinateError {
    #[error("{axis} must be a finite number, got {value}")]
    NotFinite { axis: &'static str, value: f64 },
    #[error("lat {lat} is outside -90..=90{hint}")]
    LatitudeOutOfRange { lat: f64, hint: SwapHint },
    #[error("lng {lng} is outside -180..=180")]
    LongitudeOutOfRange { lng: f64 },
    #[error("({lat}, {lng}) is Null Island, the position a GPS reports without a fix")]
    NullIsland { lat: f64, lng: f64 },
    #[error("({lat}, {lng}) is outside the service area{hint}")]
    OutsideServiceArea { lat: f64, lng: f64, hint: SwapHint },
}

/// Suffix added to a coordinate error when swapping latitude and longitude would make the
/// pair valid, the most common client mistake with these fields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SwapHint(pub bool);

impl std::fmt::Display for SwapHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 {
            f.write_str("; lat and lng look swapped")
        } else {
            Ok(())
        }
    }
}

/// Checks a client-supplied pair and returns it as a [`LatLng`].
///
/// # Errors
/// Non-finite values, values out of range, Null Island, and points outside `area` when one is
/// configured. The error says when swapping the two values would have made the pair valid.
pub fn validate_lat_lng(
    lat: f64,
    lng: f64,
    area: Option<&BoundingBox>,
) -> Result<LatLng, CoordinateError> {
    if !lat.is_finite() {
        return Err(CoordinateError::NotFinite {
            axis: "lat",
            value: lat,
        });
    }
    if !lng.is_finite() {
        return Err(CoordinateError::NotFinite {
            axis: "lng",
            value: lng,
        });
    }
    if !(-90.0..=90.0).contains(&lat) {
        let hint = SwapHint((-90.0..=90.0).contains(&lng) && (-180.0..=180.0).contains(&lat));
        return Err(CoordinateError::LatitudeOutOfRange { lat, hint });
    }
    if !(-180.0..=180.0).contains(&lng) {
        return Err(CoordinateError::LongitudeOutOfRange { lng });
    }
    if lat.abs() < NULL_ISLAND_EPSILON_DEG && lng.abs() < NULL_ISLAND_EPSILON_DEG {
        return Err(CoordinateError::NullIsland { lat, lng });
    }
    let point = LatLng { lat, lng };
    if let Some(area) = area
        && !area.contains(point)
    {
        let hint = SwapHint(area.contains(LatLng { lat: lng, lng: lat }));
        return Err(CoordinateError::OutsideServiceArea { lat, lng, hint });
    }
    Ok(point)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTO: LatLng = LatLng {
        lat: 41.1579,
        lng: -8.6291,
    };
    const LISBON: LatLng = LatLng {
        lat: 38.7223,
        lng: -9.1393,
    };

    #[test]
    fn distance_porto_lisbon() {
        // Great-circle distance between the two city centers is about 274 km.
        let d = PORTO.distance_m(&LISBON);
        assert!((d - 274_000.0).abs() < 2_000.0, "got {d}");
    }

    #[test]
    fn chord_orders_like_great_circle() {
        let a = PORTO.to_unit_vector();
        let b = LISBON.to_unit_vector();
        let chord_2: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
        let expected = chord_2_for_distance(PORTO.distance_m(&LISBON));
        assert!((chord_2 - expected).abs() < 1e-12);
    }

    #[test]
    fn validate_rejects_bad_pairs() {
        let area: BoundingBox = "41.0,-8.8,41.4,-8.4".parse().unwrap();
        let cases = [
            (f64::NAN, 0.5, None),
            (0.5, f64::INFINITY, None),
            (91.0, 10.0, None),
            (10.0, 181.0, None),
            (0.0, 0.0, None),
            (-8.6291, 41.1579, Some(&area)),
        ];
        for (lat, lng, area) in cases {
            assert!(
                validate_lat_lng(lat, lng, area).is_err(),
                "({lat}, {lng}) accepted"
            );
        }
    }

    #[test]
    fn validate_hints_swapped_pair() {
        let area: BoundingBox = "41.0,-8.8,41.4,-8.4".parse().unwrap();
        let err = validate_lat_lng(-8.6291, 41.1579, Some(&area)).unwrap_err();
        assert!(err.to_string().contains("look swapped"), "{err}");
        let err = validate_lat_lng(120.0, 45.0, None).unwrap_err();
        assert!(err.to_string().contains("look swapped"), "{err}");
        // Swapped, 200 is no valid longitude either, so there is no hint.
        let err = validate_lat_lng(200.0, 10.0, None).unwrap_err();
        assert!(!err.to_string().contains("look swapped"), "{err}");
    }

    #[test]
    fn validate_accepts_antimeridian_and_poles() {
        assert!(validate_lat_lng(90.0, 180.0, None).is_ok());
        assert!(validate_lat_lng(-89.9, -180.0, None).is_ok());
    }

    #[test]
    fn bounding_box_parse_errors() {
        assert!("1,2,3".parse::<BoundingBox>().is_err());
        assert!("41.4,-8.8,41.0,-8.4".parse::<BoundingBox>().is_err());
        assert!("a,b,c,d".parse::<BoundingBox>().is_err());
    }
}
