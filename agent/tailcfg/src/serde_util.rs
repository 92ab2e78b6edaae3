//! Serde helpers for Go's JSON conventions: nil slices and maps marshal as `null`, zero
//! `netip.Addr` marshals as `""`, and `omitempty` drops zero values.

use std::net::IpAddr;

use serde::{Deserialize, Deserializer};

/// Deserializes `null` as `T::default()` (Go marshals a nil slice or map without `omitempty` as
/// `null`). Use with `#[serde(default, deserialize_with = "nullable")]`.
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An IP address where Go's zero `netip.Addr` (`""`) and `null` mean none.
pub(crate) fn opt_ip<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    match Option::<std::borrow::Cow<'de, str>>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

pub(crate) fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// A map whose `null` values (Go nil slices) become `V::default()`; a `null` map is empty.
pub(crate) fn nullable_values<'de, D, K, V>(
    d: D,
) -> Result<std::collections::BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de> + Default,
{
    let m: Option<std::collections::BTreeMap<K, Option<V>>> = Option::deserialize(d)?;
    Ok(m.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}
