//! In-memory spatial index of keyed points, answering "nearest keys within a radius" in
//! great-circle meters.
//!
//! Points are stored as unit vectors in an R-tree (rstar), so Euclidean nearest-neighbour order
//! equals great-circle order. The index does not lock: its owners wrap it in their own lock.

use std::collections::HashMap;
use std::hash::Hash;

use rstar::RTree;
use rstar::primitives::GeomWithData;

use crate::geometry::{EARTH_RADIUS_M, LatLng, chord_2_for_distance};

type Entry<K> = GeomWithData<[f64; 3], K>;

/// Keyed points; each key has at most one position.
#[derive(Debug)]
pub struct SpatialIndex<K> {
    tree: RTree<Entry<K>>,
    positions: HashMap<K, [f64; 3]>,
}

impl<K: Copy + Eq + Hash + std::fmt::Debug> Default for SpatialIndex<K> {
    fn default() -> Self {
        Self {
            tree: RTree::new(),
            positions: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash + std::fmt::Debug> SpatialIndex<K> {
    /// Builds an index from many points at once, faster than inserting one by one. A key
    /// that appears twice keeps its last position.
    pub fn bulk_load(points: impl IntoIterator<Item = (K, LatLng)>) -> Self {
        let positions: HashMap<K, [f64; 3]> = points
            .into_iter()
            .map(|(key, p)| (key, p.to_unit_vector()))
            .collect();
        let entries = positions
            .iter()
            .map(|(key, v)| GeomWithData::new(*v, *key))
            .collect();
        Self {
            tree: RTree::bulk_load(entries),
            positions,
        }
    }

    /// Sets the position of `key`, moving it if present.
    pub fn upsert(&mut self, key: K, position: LatLng) {
        self.remove(key);
        let v = position.to_unit_vector();
        self.positions.insert(key, v);
        self.tree.insert(GeomWithData::new(v, key));
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove(&mut self, key: K) -> bool {
        match self.positions.remove(&key) {
            Some(v) => {
                let removed = self.tree.remove(&GeomWithData::new(v, key));
                debug_assert!(removed.is_some(), "{key:?} missing from the R-tree");
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Yields keys within `radius_m` of `center`, nearest first, with the great-circle distance
    /// in meters. Lazy: a caller that stops early does not pay for the rest.
    pub fn nearest_within(
        &self,
        center: LatLng,
        radius_m: f64,
    ) -> impl Iterator<Item = (K, f64)> + '_ {
        let max_chord_2 = chord_2_for_distance(radius_m);
        self.tree
            .nearest_neighbor_iter_with_distance_2(&center.to_unit_vector())
            .take_while(move |(_, chord_2)| *chord_2 <= max_chord_2)
            .map(|(entry, chord_2)| (entry.data, distance_for_chord_2(chord_2)))
    }
}

/// Great-circle distance in meters for a squared chord on the unit sphere.
fn distance_for_chord_2(chord_2: f64) -> f64 {
    let half_chord = (chord_2.sqrt() / 2.0).min(1.0);
    2.0 * EARTH_RADIUS_M * half_chord.asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lat: f64, lng: f64) -> LatLng {
        LatLng { lat, lng }
    }

    #[test]
    fn nearest_within_orders_and_bounds() {
        let center = p(41.15, -8.61);
        let mut index = SpatialIndex::default();
        index.upsert(1, p(41.16, -8.61)); // about 1.1 km north
        index.upsert(2, p(41.151, -8.61)); // about 111 m north
        index.upsert(3, p(41.30, -8.61)); // about 16.7 km north
        let found: Vec<(i32, f64)> = index.nearest_within(center, 5_000.0).collect();
        let keys: Vec<i32> = found.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, vec![2, 1]);
        let exact = center.distance_m(&p(41.16, -8.61));
        assert!(
            (found[1].1 - exact).abs() < 0.01,
            "{} vs {exact}",
            found[1].1
        );
    }

    #[test]
    fn upsert_moves_and_remove_deletes() {
        let mut index = SpatialIndex::default();
        index.upsert(7, p(10.0, 10.0));
        index.upsert(7, p(-10.0, -10.0));
        assert_eq!(index.len(), 1);
        assert_eq!(index.nearest_within(p(10.0, 10.0), 1_000.0).count(), 0);
        assert_eq!(index.nearest_within(p(-10.0, -10.0), 1_000.0).count(), 1);
        assert!(index.remove(7));
        assert!(!index.remove(7));
        assert!(index.is_empty());
    }

    #[test]
    fn radius_across_antimeridian() {
        let mut index = SpatialIndex::default();
        index.upsert(1, p(0.0, 179.999));
        let found: Vec<_> = index.nearest_within(p(0.0, -179.999), 1_000.0).collect();
        assert_eq!(found.len(), 1);
        assert!(found[0].1 < 300.0);
    }

    #[test]
    fn bulk_load_matches_inserts() {
        let points = (0..100).map(|i| (i, p(41.0 + f64::from(i) * 0.001, -8.6)));
        let index = SpatialIndex::bulk_load(points);
        assert_eq!(index.len(), 100);
        let first = index.nearest_within(p(41.0, -8.6), 200.0).next();
        assert_eq!(first.map(|(k, _)| k), Some(0));
    }
}
