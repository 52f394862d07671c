//! In-memory spatial index of keyed points, answering "nearest keys within a radius" in
//! great-circle meters.
//!
//! Points are stored as unit vectors in an R-tree (rstar), so Euclidean nearest-neighbour order
//! equals great-circle order. The index does not lock: its owners wrap it in their own lock.

use rstar::RTree;
use rstar::primitives::GeomWithData;

use crate::geometry::{EARTH_RADIUS_M, LatLng, chord_2_for_distance};

type Entry<K> = GeomWithData<[f64; 3], K>;

/// Keyed points. The index does not remember where a key is: callers pass the position a key
/// was inserted at to remove or move it, because they keep that position anyway and a second
/// copy would cost about 50 bytes per point at a million points.
#[derive(Debug)]
pub struct SpatialIndex<K> {
    tree: RTree<Entry<K>>,
}

impl<K: Copy + PartialEq + std::fmt::Debug> Default for SpatialIndex<K> {
    fn default() -> Self {
        Self { tree: RTree::new() }
    }
}

impl<K: Copy + PartialEq + std::fmt::Debug> SpatialIndex<K> {
    /// Builds an index from many points at once, faster than inserting one by one. Keys must
    /// be unique.
    pub fn bulk_load(points: impl IntoIterator<Item = (K, LatLng)>) -> Self {
        let entries = points
            .into_iter()
            .map(|(key, p)| GeomWithData::new(p.to_unit_vector(), key))
            .collect();
        Self {
            tree: RTree::bulk_load(entries),
        }
    }

    pub fn insert(&mut self, key: K, position: LatLng) {
        self.tree
            .insert(GeomWithData::new(position.to_unit_vector(), key));
    }

    /// Removes `key` inserted at `position`; returns whether it was there. The unit vector is
    /// recomputed from `position`, which gives the same bits as at insertion.
    pub fn remove(&mut self, key: K, position: LatLng) -> bool {
        self.tree
            .remove(&GeomWithData::new(position.to_unit_vector(), key))
            .is_some()
    }

    /// Moves `key` from `from` to `to`.
    pub fn relocate(&mut self, key: K, from: LatLng, to: LatLng) {
        let removed = self.remove(key, from);
        debug_assert!(removed, "{key:?} was not indexed at {from:?}");
        self.insert(key, to);
    }

    pub fn len(&self) -> usize {
        self.tree.size()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.size() == 0
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
        index.insert(1, p(41.16, -8.61)); // about 1.1 km north
        index.insert(2, p(41.151, -8.61)); // about 111 m north
        index.insert(3, p(41.30, -8.61)); // about 16.7 km north
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
    fn relocate_moves_and_remove_deletes() {
        let mut index = SpatialIndex::default();
        index.insert(7, p(10.0, 10.0));
        index.relocate(7, p(10.0, 10.0), p(-10.0, -10.0));
        assert_eq!(index.len(), 1);
        assert_eq!(index.nearest_within(p(10.0, 10.0), 1_000.0).count(), 0);
        assert_eq!(index.nearest_within(p(-10.0, -10.0), 1_000.0).count(), 1);
        assert!(
            !index.remove(7, p(10.0, 10.0)),
            "removed at a position it was not at"
        );
        assert!(index.remove(7, p(-10.0, -10.0)));
        assert!(index.is_empty());
    }

    #[test]
    fn radius_across_antimeridian() {
        let mut index = SpatialIndex::default();
        index.insert(1, p(0.0, 179.999));
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
