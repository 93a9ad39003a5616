//! Turning wire fields into domain values and back, the same way in every service.

use prost_types::Timestamp;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::ApiError;

/// The UUID in `field`, or INVALID_ARGUMENT naming the field.
pub fn parse_id(field: &str, value: &str) -> Result<Uuid, ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(field, "required"));
    }
    Uuid::try_parse(value).map_err(|_| ApiError::invalid(field, "must be a UUID"))
}

/// Many UUIDs, at most `max`, without repeats.
pub fn parse_ids(field: &str, values: &[String], max: usize) -> Result<Vec<Uuid>, ApiError> {
    if values.len() > max {
        return Err(ApiError::invalid(field, format!("at most {max} ids")));
    }
    let mut ids = values
        .iter()
        .map(|value| parse_id(field, value))
        .collect::<Result<Vec<_>, _>>()?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

pub fn timestamp(time: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: time.unix_timestamp(),
        nanos: time.nanosecond() as i32,
    }
}
