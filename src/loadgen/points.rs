//! Deterministic points over the Porto taxi data extent, shared by the seed, the peer loaders
//! and every scenario, so the server, Redis and PostGIS hold the same drivers and receive the
//! same queries.
//!
//! The generator is counter-based: point `i` of a stream depends only on the seed, the stream
//! and `i`. Driver `id` (1-based, as the seed assigns ids) sits at point `id - 1` of
//! [`Stream::Drivers`], and request `k` of a run asks at point `k` of [`Stream::Queries`],
//! whatever the concurrency.

use crate::geometry::LatLng;

/// South-west corner of the extent: the bounding box of the Porto taxi data, about 26 km
/// from west to east and 35 km from south to north.
pub const EXTENT_MIN: LatLng = LatLng {
    lat: 41.008,
    lng: -8.718,
};

/// North-east corner of the extent.
pub const EXTENT_MAX: LatLng = LatLng {
    lat: 41.320,
    lng: -8.468,
};

/// Default `--seed` of every command.
pub const DEFAULT_SEED: u64 = 42;

/// Independent sequences drawn from one seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Seeded driver positions.
    Drivers,
    /// Query points of `nearby`.
    Queries,
}

impl Stream {
    fn salt(self) -> u64 {
        match self {
            Stream::Drivers => 0x6472_6976_6572_7321,
            Stream::Queries => 0x7175_6572_6965_7321,
        }
    }
}

/// The splitmix64 output function: a bijective mix of 64 bits with good avalanche.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Maps 64 random bits to a uniform value in `[0, 1)` with 53 random bits.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1_u64 << 53) as f64
}

/// Point `index` of `stream` for `seed`, uniform in latitude and longitude over the extent.
pub fn point(seed: u64, stream: Stream, index: u64) -> LatLng {
    let base = mix64(seed ^ stream.salt());
    let lat_bits = mix64(base.wrapping_add(index.wrapping_mul(2)));
    let lng_bits = mix64(base.wrapping_add(index.wrapping_mul(2).wrapping_add(1)));
    LatLng {
        lat: EXTENT_MIN.lat + (EXTENT_MAX.lat - EXTENT_MIN.lat) * unit(lat_bits),
        lng: EXTENT_MIN.lng + (EXTENT_MAX.lng - EXTENT_MIN.lng) * unit(lng_bits),
    }
}

/// Seeded position of driver `driver_id` (1-based).
pub fn driver_position(seed: u64, driver_id: i64) -> LatLng {
    point(seed, Stream::Drivers, (driver_id - 1).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_repeat_for_same_seed() {
        for index in [0, 1, 999_999, u64::MAX] {
            assert_eq!(
                point(7, Stream::Drivers, index),
                point(7, Stream::Drivers, index)
            );
        }
        assert_eq!(
            point(DEFAULT_SEED, Stream::Drivers, 0),
            driver_position(DEFAULT_SEED, 1)
        );
    }

    #[test]
    fn points_match_pinned_values() {
        // Values from an independent splitmix64 implementation; a change here moves every
        // benchmark's drivers and queries.
        let close = |p: LatLng, lat: f64, lng: f64| {
            (p.lat - lat).abs() < 1e-12 && (p.lng - lng).abs() < 1e-12
        };
        let driver = driver_position(42, 1);
        assert!(
            close(driver, 41.262_732_825_628_284, -8.495_303_958_821_426),
            "{driver:?}"
        );
        let query = point(42, Stream::Queries, 0);
        assert!(
            close(query, 41.225_730_627_857_66, -8.621_295_930_145_427),
            "{query:?}"
        );
    }

    #[test]
    fn points_differ_by_seed_and_stream() {
        let a = point(1, Stream::Drivers, 5);
        assert_ne!(a, point(2, Stream::Drivers, 5));
        assert_ne!(a, point(1, Stream::Queries, 5));
        assert_ne!(a, point(1, Stream::Drivers, 6));
    }

    #[test]
    fn points_stay_inside_extent() {
        for stream in [Stream::Drivers, Stream::Queries] {
            for index in 0..100_000 {
                let p = point(DEFAULT_SEED, stream, index);
                assert!((EXTENT_MIN.lat..EXTENT_MAX.lat).contains(&p.lat), "{p:?}");
                assert!((EXTENT_MIN.lng..EXTENT_MAX.lng).contains(&p.lng), "{p:?}");
            }
        }
    }

    #[test]
    fn points_cover_extent_uniformly() {
        // Ten latitude bands and ten longitude bands each get about a tenth of the points.
        let n = 100_000;
        let mut lat_bands = [0_u32; 10];
        let mut lng_bands = [0_u32; 10];
        for index in 0..n {
            let p = point(DEFAULT_SEED, Stream::Drivers, index);
            let lat = (p.lat - EXTENT_MIN.lat) / (EXTENT_MAX.lat - EXTENT_MIN.lat);
            let lng = (p.lng - EXTENT_MIN.lng) / (EXTENT_MAX.lng - EXTENT_MIN.lng);
            lat_bands[(lat * 10.0) as usize] += 1;
            lng_bands[(lng * 10.0) as usize] += 1;
        }
        for count in lat_bands.iter().chain(&lng_bands) {
            assert!(
                (9_500..=10_500).contains(count),
                "{lat_bands:?} {lng_bands:?}"
            );
        }
    }
}
