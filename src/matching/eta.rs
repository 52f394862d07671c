//! Straight-line ETA model: great-circle distance times a detour factor, divided by an average
//! speed per vehicle type. No road network is consulted.

use entity::enums::VehicleType;

/// Parameters of the straight-line ETA.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EtaModel {
    /// Road distance over straight-line distance.
    pub detour_factor: f64,
    /// Average speed of a motorcycle taxi, meters per second.
    pub moto_speed_mps: f64,
    /// Average speed of a car taxi, meters per second.
    pub cab_speed_mps: f64,
}

impl EtaModel {
    pub fn speed_mps(&self, vehicle_type: VehicleType) -> f64 {
        match vehicle_type {
            VehicleType::Moto => self.moto_speed_mps,
            VehicleType::Cab => self.cab_speed_mps,
        }
    }

    /// Seconds to cover `distance_m` of straight line in a vehicle of `vehicle_type`.
    pub fn eta_s(&self, distance_m: f64, vehicle_type: VehicleType) -> f64 {
        distance_m * self.detour_factor / self.speed_mps(vehicle_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_applies_detour_and_speed() {
        let model = EtaModel {
            detour_factor: 1.3,
            moto_speed_mps: 8.3,
            cab_speed_mps: 6.9,
        };
        // 1 km straight line is 1.3 km of road: 156.6 s by moto, 188.4 s by cab.
        assert!((model.eta_s(1_000.0, VehicleType::Moto) - 156.63).abs() < 0.01);
        assert!((model.eta_s(1_000.0, VehicleType::Cab) - 188.41).abs() < 0.01);
    }
}
