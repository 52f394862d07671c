//! Roles and the pure rules of what each may do. Resolvers call these before they act, so the
//! rules are in one place and unit-tested without a server.

use std::fmt;
use std::str::FromStr;

use crate::error::{ServiceError, ServiceResult};

/// Permission level of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything, including token management.
    Admin,
    /// A messaging bridge: registers riders and drivers and acts for any of them, and
    /// dispatches offers. No token management.
    Bridge,
    /// Read-only: queries and subscriptions over every driver and trip, no mutation.
    Dashboard,
    /// One driver: moves itself and acts on its own offers and trips.
    Driver,
    /// One rider: requests, follows, cancels and rates its own trips.
    Rider,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Bridge,
        Role::Dashboard,
        Role::Driver,
        Role::Rider,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Bridge => "bridge",
            Role::Dashboard => "dashboard",
            Role::Driver => "driver",
            Role::Rider => "rider",
        }
    }

    /// Returns whether tokens of this role name a driver or rider id.
    pub fn needs_subject(self) -> bool {
        matches!(self, Role::Driver | Role::Rider)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?}; use admin, bridge, dashboard, driver or rider")
            })
    }
}

/// The caller behind a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: i64,
    /// Name given to the token when it was created.
    pub name: String,
    pub role: Role,
    /// Driver id of a driver token, rider id of a rider token.
    pub subject_id: Option<i64>,
}

impl Principal {
    fn refuse(&self, what: impl fmt::Display) -> ServiceError {
        let subject = self
            .subject_id
            .map(|id| format!(" {id}"))
            .unwrap_or_default();
        ServiceError::Forbidden(format!("a {}{subject} token may not {what}", self.role))
    }

    fn is(&self, role: Role, subject: i64) -> bool {
        self.role == role && self.subject_id == Some(subject)
    }

    /// Allows acting for `driver_id`: admins, bridges and that driver.
    ///
    /// # Errors
    /// `Forbidden` for anyone else.
    pub fn act_for_driver(&self, driver_id: i64) -> ServiceResult<()> {
        match self.role {
            Role::Admin | Role::Bridge => Ok(()),
            Role::Driver if self.is(Role::Driver, driver_id) => Ok(()),
            _ => Err(self.refuse(format_args!("act for driver {driver_id}"))),
        }
    }

    /// Allows acting for `rider_id`: admins, bridges and that rider.
    ///
    /// # Errors
    /// `Forbidden` for anyone else.
    pub fn act_for_rider(&self, rider_id: i64) -> ServiceResult<()> {
        match self.role {
            Role::Admin | Role::Bridge => Ok(()),
            Role::Rider if self.is(Role::Rider, rider_id) => Ok(()),
            _ => Err(self.refuse(format_args!("act for rider {rider_id}"))),
        }
    }

    /// Allows registering accounts and sending offers: admins and bridges.
    ///
    /// # Errors
    /// `Forbidden` for anyone else.
    pub fn dispatch(&self, what: &str) -> ServiceResult<()> {
        match self.role {
            Role::Admin | Role::Bridge => Ok(()),
            _ => Err(self.refuse(what)),
        }
    }

    /// Allows token management: admins only.
    ///
    /// # Errors
    /// `Forbidden` for anyone else.
    pub fn administer(&self, what: &str) -> ServiceResult<()> {
        match self.role {
            Role::Admin => Ok(()),
            _ => Err(self.refuse(what)),
        }
    }

    /// Allows reading every driver, rider and trip and following every live event: admins,
    /// bridges and dashboards.
    ///
    /// # Errors
    /// `Forbidden` for drivers and riders, who see only their own.
    pub fn read_all(&self, what: &str) -> ServiceResult<()> {
        match self.role {
            Role::Admin | Role::Bridge | Role::Dashboard => Ok(()),
            _ => Err(self.refuse(what)),
        }
    }

    /// Allows `nearbyDrivers`: everyone but drivers, who have no business tracking their
    /// competitors.
    ///
    /// # Errors
    /// `Forbidden` for drivers.
    pub fn search_drivers(&self) -> ServiceResult<()> {
        match self.role {
            Role::Driver => Err(self.refuse("search other drivers")),
            _ => Ok(()),
        }
    }

    /// Allows reading driver `driver_id`: unrestricted readers and that driver.
    ///
    /// # Errors
    /// `Forbidden` for anyone else.
    pub fn read_driver(&self, driver_id: i64) -> ServiceResult<()> {
        if self.reads_all() || self.is(Role::Driver, driver_id) {
            Ok(())
        } else {
            Err(self.refuse(format_args!("read driver {driver_id}")))
        }
    }

    /// Allows reading rider `rider_id`: unrestricted readers and that rider.
    ///
    /// # Errors
    /// `Forbidden` for anyone else.
    pub fn read_rider(&self, rider_id: i64) -> ServiceResult<()> {
        if self.reads_all() || self.is(Role::Rider, rider_id) {
            Ok(())
        } else {
            Err(self.refuse(format_args!("read rider {rider_id}")))
        }
    }

    /// Returns whether reads are unrestricted for this principal.
    pub fn reads_all(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Bridge | Role::Dashboard)
    }

    /// Allows reading a trip: unrestricted readers, its rider, its driver, and a driver it was
    /// offered to (`offered_to`).
    ///
    /// # Errors
    /// `Forbidden` for anyone else.
    pub fn read_trip(
        &self,
        trip_id: i64,
        rider_id: i64,
        driver_id: Option<i64>,
        offered_to: &[i64],
    ) -> ServiceResult<()> {
        let allowed = self.reads_all()
            || self.is(Role::Rider, rider_id)
            || driver_id.is_some_and(|d| self.is(Role::Driver, d))
            || offered_to.iter().any(|&d| self.is(Role::Driver, d));
        if allowed {
            Ok(())
        } else {
            Err(self.refuse(format_args!("read trip {trip_id}")))
        }
    }

    /// Returns whether this principal may read the full phone number of a driver (`Role::Driver`)
    /// or rider (`Role::Rider`) with id `id`: admins and the person themself. Everyone else
    /// gets it masked and asks for a contact handoff.
    pub fn sees_phone_of(&self, role: Role, id: i64) -> bool {
        self.role == Role::Admin || self.is(role, id)
    }
}

/// Masks an E.164 number for lists: the country prefix (first four characters) and the last
/// two digits stay, so an operator can tell numbers apart without being able to call them.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    let (head, rest) = chars.split_at(4);
    let (middle, tail) = rest.split_at(rest.len() - 2);
    let mut masked: String = head.iter().collect();
    masked.extend(std::iter::repeat_n('*', middle.len()));
    masked.extend(tail);
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, subject_id: Option<i64>) -> Principal {
        Principal {
            token_id: 1,
            name: "test".into(),
            role,
            subject_id,
        }
    }

    #[test]
    fn drivers_act_only_for_themselves() {
        let driver = principal(Role::Driver, Some(7));
        assert!(driver.act_for_driver(7).is_ok());
        assert!(matches!(
            driver.act_for_driver(8),
            Err(ServiceError::Forbidden(_))
        ));
        assert!(driver.act_for_rider(7).is_err(), "rider 7 is not driver 7");
        assert!(driver.dispatch("offer trips").is_err());
        assert!(driver.read_all("list drivers").is_err());
    }

    #[test]
    fn riders_act_and_read_only_their_own() {
        let rider = principal(Role::Rider, Some(3));
        assert!(rider.act_for_rider(3).is_ok());
        assert!(rider.act_for_rider(4).is_err());
        assert!(rider.read_trip(10, 3, None, &[]).is_ok());
        assert!(rider.read_trip(10, 4, Some(3), &[3]).is_err());
    }

    #[test]
    fn trip_readers_include_offered_drivers() {
        let driver = principal(Role::Driver, Some(5));
        assert!(driver.read_trip(1, 9, Some(5), &[]).is_ok());
        assert!(driver.read_trip(1, 9, None, &[6, 5]).is_ok());
        assert!(driver.read_trip(1, 9, Some(6), &[6]).is_err());
    }

    #[test]
    fn dashboards_read_but_never_act() {
        let dashboard = principal(Role::Dashboard, None);
        assert!(dashboard.read_all("list drivers").is_ok());
        assert!(dashboard.read_trip(1, 2, None, &[]).is_ok());
        assert!(dashboard.act_for_driver(1).is_err());
        assert!(dashboard.act_for_rider(1).is_err());
        assert!(dashboard.dispatch("register drivers").is_err());
        assert!(dashboard.administer("create tokens").is_err());
    }

    #[test]
    fn bridges_act_for_anyone_but_do_not_administer() {
        let bridge = principal(Role::Bridge, None);
        assert!(bridge.act_for_driver(1).is_ok());
        assert!(bridge.act_for_rider(1).is_ok());
        assert!(bridge.dispatch("offer trips").is_ok());
        assert!(bridge.administer("create tokens").is_err());
        assert!(!bridge.sees_phone_of(Role::Rider, 1));
    }

    #[test]
    fn phones_show_to_admins_and_their_owner() {
        assert!(principal(Role::Admin, None).sees_phone_of(Role::Driver, 1));
        assert!(principal(Role::Driver, Some(1)).sees_phone_of(Role::Driver, 1));
        assert!(!principal(Role::Driver, Some(1)).sees_phone_of(Role::Rider, 1));
        assert!(!principal(Role::Dashboard, None).sees_phone_of(Role::Driver, 1));
    }

    #[test]
    fn mask_keeps_prefix_and_last_two_digits() {
        assert_eq!(mask_phone("+250788123456"), "+250*******56");
        assert_eq!(mask_phone("+3519"), "*****");
    }

    #[test]
    fn roles_parse_from_their_names() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn refusal_names_the_token_role_and_subject() {
        let err = principal(Role::Driver, Some(7))
            .act_for_driver(8)
            .unwrap_err();
        assert_eq!(err.to_string(), "a driver 7 token may not act for driver 8");
    }
}
