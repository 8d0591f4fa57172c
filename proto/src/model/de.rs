//! Deserialization helpers that make the model as forgiving as Nomad's Go
//! decoder: a JSON `null` anywhere becomes the field's default value instead
//! of an error.
//!
//! Go's `encoding/json` leaves a field untouched when it reads `null`, so a
//! `null` string is `""`, a `null` slice is empty and a `null` struct is its
//! zero value. These helpers reproduce that for the Rust types.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use super::named_map::NamedMap;

/// Deserializes `T`, mapping `null` to `T::default()`.
pub(crate) fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Deserializes a list, mapping a `null` list to an empty one and each `null`
/// element to `T::default()`.
pub(crate) fn null_default_vec<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    let items = Option::<Vec<Option<T>>>::deserialize(deserializer)?.unwrap_or_default();
    Ok(items.into_iter().map(Option::unwrap_or_default).collect())
}

/// Deserializes a string-keyed map, mapping a `null` map to an empty one and
/// each `null` value to `V::default()`.
pub(crate) fn null_default_map<'de, D, V>(deserializer: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de> + Default,
{
    let entries =
        Option::<BTreeMap<String, Option<V>>>::deserialize(deserializer)?.unwrap_or_default();
    Ok(entries
        .into_iter()
        .map(|(key, value)| (key, value.unwrap_or_default()))
        .collect())
}

/// Deserializes a [`NamedMap`], mapping a `null` map to an empty one and
/// each `null` value to `V::default()`.
pub(crate) fn null_default_named<'de, D, V>(deserializer: D) -> Result<NamedMap<V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de> + Default,
{
    let entries = Option::<NamedMap<Option<V>>>::deserialize(deserializer)?.unwrap_or_default();
    Ok(entries
        .into_iter()
        .map(|(key, value)| (key, value.unwrap_or_default()))
        .collect())
}
