//! Availabilities: storage a host offers for sale, on what terms, and how much of it is still
//! free. Matching a slot against them is Archivist's rule (`sales/reservations`): an
//! availability takes a slot when it is enabled, has the slot's size free, lasts as long as the
//! request (`availableUntil`), offers at least the request's duration, asks no more than the
//! request pays and puts up no less collateral than the request wants.

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};

use crate::chain::market::Ask;

/// An availability's id (a counter, per node).
pub type AvailabilityId = u64;

/// Storage offered for sale.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Availability {
    pub id: AvailabilityId,
    /// Bytes offered, reserved in the store's quota so uploads cannot take them.
    pub total_size: u64,
    /// Bytes not yet taken by a sale.
    pub free_size: u64,
    /// The longest request it takes, in seconds.
    pub maximum_duration: u64,
    /// The least price it takes, in tokens per byte per second.
    #[serde(with = "decimal")]
    pub minimum_price_per_byte_per_second: U256,
    /// The most collateral it puts up, in tokens per byte of a slot.
    #[serde(with = "decimal")]
    pub maximum_collateral_per_byte: U256,
    /// The latest time (Unix seconds) a request it takes may end; 0 for no limit.
    pub available_until: u64,
    pub enabled: bool,
}

/// `POST /sales/availability`: Archivist's fields, and the size offered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewAvailability {
    /// Bytes offered [default: all the space the store has free].
    pub total_size: Option<u64>,
    /// Also read as `duration`, its older name.
    #[serde(alias = "duration")]
    pub maximum_duration: Option<u64>,
    #[serde(alias = "minPricePerBytePerSecond")]
    pub minimum_price_per_byte_per_second: Option<String>,
    #[serde(alias = "maxCollateralPerByte")]
    pub maximum_collateral_per_byte: Option<String>,
    pub available_until: Option<u64>,
    pub enabled: Option<bool>,
}

/// `PATCH /sales/availability/{id}`: the fields to change.
pub type AvailabilityPatch = NewAvailability;

/// Why an availability was refused (answered as 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AvailabilityError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{field} must be {rule}, got {value}")]
    Invalid { field: &'static str, rule: &'static str, value: String },
    #[error("totalSize {requested} is larger than the {free} bytes the store has free")]
    TooLarge { requested: u64, free: u64 },
    #[error(
        "totalSize {requested} is smaller than the {taken} bytes sales already took from this availability"
    )]
    BelowTaken { requested: u64, taken: u64 },
    #[error("no availability {0}")]
    Unknown(AvailabilityId),
}

impl NewAvailability {
    /// The availability these fields make, with `free_bytes` free in the store.
    pub fn create(&self, id: AvailabilityId, free_bytes: u64) -> Result<Availability, AvailabilityError> {
        let total_size = self.total_size.unwrap_or(free_bytes);
        let availability = Availability {
            id,
            total_size,
            free_size: total_size,
            maximum_duration: self.maximum_duration.ok_or(AvailabilityError::Missing("maximumDuration"))?,
            minimum_price_per_byte_per_second: tokens(
                "minimumPricePerBytePerSecond",
                self.minimum_price_per_byte_per_second.as_deref(),
            )?
            .ok_or(AvailabilityError::Missing("minimumPricePerBytePerSecond"))?,
            maximum_collateral_per_byte: tokens(
                "maximumCollateralPerByte",
                self.maximum_collateral_per_byte.as_deref(),
            )?
            .ok_or(AvailabilityError::Missing("maximumCollateralPerByte"))?,
            available_until: self.available_until.unwrap_or(0),
            enabled: self.enabled.unwrap_or(true),
        };
        availability.validate()?;
        if total_size > free_bytes {
            return Err(AvailabilityError::TooLarge { requested: total_size, free: free_bytes });
        }
        Ok(availability)
    }

    /// `current` with these fields changed; `free_bytes` more bytes may be added to its size.
    pub fn apply(&self, current: &Availability, free_bytes: u64) -> Result<Availability, AvailabilityError> {
        let mut next = current.clone();
        if let Some(duration) = self.maximum_duration {
            next.maximum_duration = duration;
        }
        if let Some(price) =
            tokens("minimumPricePerBytePerSecond", self.minimum_price_per_byte_per_second.as_deref())?
        {
            next.minimum_price_per_byte_per_second = price;
        }
        if let Some(collateral) =
            tokens("maximumCollateralPerByte", self.maximum_collateral_per_byte.as_deref())?
        {
            next.maximum_collateral_per_byte = collateral;
        }
        if let Some(until) = self.available_until {
            next.available_until = until;
        }
        if let Some(enabled) = self.enabled {
            next.enabled = enabled;
        }
        if let Some(total) = self.total_size {
            let taken = current.total_size - current.free_size;
            if total < taken {
                return Err(AvailabilityError::BelowTaken { requested: total, taken });
            }
            if total > current.total_size && total - current.total_size > free_bytes {
                return Err(AvailabilityError::TooLarge {
                    requested: total,
                    free: current.total_size + free_bytes,
                });
            }
            next.total_size = total;
            next.free_size = total - taken;
        }
        next.validate()?;
        Ok(next)
    }
}

fn tokens(field: &'static str, text: Option<&str>) -> Result<Option<U256>, AvailabilityError> {
    text.map(|text| {
        U256::from_str_radix(text, 10).map_err(|_| AvailabilityError::Invalid {
            field,
            rule: "a decimal number of tokens",
            value: text.to_owned(),
        })
    })
    .transpose()
}

impl Availability {
    fn validate(&self) -> Result<(), AvailabilityError> {
        let positive = |field, value: u64| {
            if value == 0 {
                Err(AvailabilityError::Invalid { field, rule: "greater than 0", value: value.to_string() })
            } else {
                Ok(())
            }
        };
        positive("totalSize", self.total_size)?;
        positive("maximumDuration", self.maximum_duration)?;
        if self.minimum_price_per_byte_per_second.is_zero() {
            return Err(AvailabilityError::Invalid {
                field: "minimumPricePerBytePerSecond",
                rule: "greater than 0",
                value: "0".into(),
            });
        }
        Ok(())
    }

    /// Whether this availability takes a slot of `ask`, for a request ending at `request_end`.
    pub fn matches(&self, ask: &Ask, request_end: u64) -> bool {
        self.enabled
            && ask.slotSize <= self.free_size
            && ask.duration <= self.maximum_duration
            && ask.collateralPerByte <= self.maximum_collateral_per_byte
            && ask.pricePerBytePerSecond >= self.minimum_price_per_byte_per_second
            && (self.available_until == 0 || self.available_until >= request_end)
    }
}

/// Token amounts as decimal strings in JSON, as Archivist writes them.
pub(crate) mod decimal {
    use alloy_primitives::U256;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &U256, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<U256, D::Error> {
        let text = String::deserialize(deserializer)?;
        U256::from_str_radix(&text, 10).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(slot_size: u64, duration: u64, price: u64, collateral: u64) -> Ask {
        Ask {
            proofProbability: U256::from(1),
            pricePerBytePerSecond: U256::from(price),
            collateralPerByte: U256::from(collateral),
            slots: 4,
            slotSize: slot_size,
            duration,
            maxSlotLoss: 1,
        }
    }

    fn offer() -> NewAvailability {
        NewAvailability {
            total_size: Some(1000),
            maximum_duration: Some(3600),
            minimum_price_per_byte_per_second: Some("2".into()),
            maximum_collateral_per_byte: Some("10".into()),
            ..NewAvailability::default()
        }
    }

    #[test]
    fn an_availability_matches_by_archivists_rules() {
        let mut a = offer().create(1, 5000).unwrap();
        assert!(a.matches(&ask(1000, 3600, 2, 10), 99));
        assert!(!a.matches(&ask(1001, 3600, 2, 10), 99), "larger than free");
        assert!(!a.matches(&ask(1000, 3601, 2, 10), 99), "longer than offered");
        assert!(!a.matches(&ask(1000, 3600, 1, 10), 99), "pays too little");
        assert!(!a.matches(&ask(1000, 3600, 2, 11), 99), "wants too much collateral");
        a.available_until = 98;
        assert!(!a.matches(&ask(1000, 3600, 2, 10), 99), "ends after the availability");
        a.available_until = 99;
        assert!(a.matches(&ask(1000, 3600, 2, 10), 99));
        a.enabled = false;
        assert!(!a.matches(&ask(1000, 3600, 2, 10), 99), "disabled");
    }

    #[test]
    fn bad_offers_are_refused_with_the_reason() {
        assert_eq!(offer().create(1, 999), Err(AvailabilityError::TooLarge { requested: 1000, free: 999 }));
        let no_price = NewAvailability { minimum_price_per_byte_per_second: None, ..offer() };
        assert_eq!(no_price.create(1, 5000), Err(AvailabilityError::Missing("minimumPricePerBytePerSecond")));
        let zero = NewAvailability { maximum_duration: Some(0), ..offer() };
        assert!(matches!(
            zero.create(1, 5000),
            Err(AvailabilityError::Invalid { field: "maximumDuration", .. })
        ));
        let words = NewAvailability { maximum_collateral_per_byte: Some("ten".into()), ..offer() };
        assert!(matches!(words.create(1, 5000), Err(AvailabilityError::Invalid { .. })));
        // All the free space by default.
        let all = NewAvailability { total_size: None, ..offer() };
        assert_eq!(all.create(1, 4096).unwrap().total_size, 4096);
    }

    #[test]
    fn a_patch_keeps_what_sales_took() {
        let mut a = offer().create(1, 5000).unwrap();
        a.free_size = 400; // sales took 600
        let shrink = NewAvailability { total_size: Some(500), ..NewAvailability::default() };
        assert_eq!(shrink.apply(&a, 0), Err(AvailabilityError::BelowTaken { requested: 500, taken: 600 }));
        let grow = NewAvailability { total_size: Some(1500), ..NewAvailability::default() };
        assert!(matches!(grow.apply(&a, 499), Err(AvailabilityError::TooLarge { .. })));
        let grown = grow.apply(&a, 500).unwrap();
        assert_eq!((grown.total_size, grown.free_size), (1500, 900));
        let off = NewAvailability { enabled: Some(false), ..NewAvailability::default() };
        assert!(!off.apply(&a, 0).unwrap().enabled);
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["minimumPricePerBytePerSecond"], "2");
        assert_eq!(serde_json::from_value::<Availability>(json).unwrap(), a);
    }
}
