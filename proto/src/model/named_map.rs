//! A small map from names to values, for the per-task maps every
//! allocation carries.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A map from names (task names) to values, ordered by name, kept as one
/// sorted vector.
///
/// Allocations carry per-task maps (`AllocatedResources.Tasks` and
/// `.TaskLifecycles`) that usually hold one or two entries. A `BTreeMap`
/// allocates a node for eleven entries however few it holds (about 2 KiB
/// per allocation for these two maps); this holds exactly what it has.
/// It encodes as a JSON object, like the `BTreeMap` it replaces; a key
/// that appears twice keeps its last value, as with a `BTreeMap`.
#[derive(Clone, PartialEq, Eq)]
pub struct NamedMap<V> {
    entries: Vec<(String, V)>,
}

impl<V> Default for NamedMap<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<V> NamedMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }

    /// Sets `name` to `value`, returning the value it replaced.
    pub fn insert(&mut self, name: String, value: V) -> Option<V> {
        match self.position(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (name, value));
                None
            }
        }
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&V> {
        self.position(name).ok().map(|i| &self.entries[i].1)
    }

    /// The value of `name`, to change it.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        match self.position(name) {
            Ok(i) => Some(&mut self.entries[i].1),
            Err(_) => None,
        }
    }

    /// Whether `name` has a value.
    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<V> {
        self.position(name).ok().map(|i| self.entries.remove(i).1)
    }

    /// How many names have a value.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Names and values, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// Names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.iter().map(|(k, _)| k)
    }

    /// Values, by name.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }
}

impl<V> std::ops::Index<&str> for NamedMap<V> {
    type Output = V;

    /// The value of `name`; panics when there is none (as `BTreeMap` does).
    fn index(&self, name: &str) -> &V {
        match self.get(name) {
            Some(v) => v,
            None => panic!("no entry {name:?} in the map"),
        }
    }
}

impl<V> FromIterator<(String, V)> for NamedMap<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(iter: I) -> Self {
        let mut out = Self::new();
        for (k, v) in iter {
            out.insert(k, v);
        }
        out
    }
}

impl<V> IntoIterator for NamedMap<V> {
    type Item = (String, V);
    type IntoIter = std::vec::IntoIter<(String, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<V: fmt::Debug> fmt::Debug for NamedMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V: Serialize> Serialize for NamedMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for NamedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = NamedMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of names to values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut out = NamedMap {
                    entries: Vec::with_capacity(access.size_hint().unwrap_or(0).min(64)),
                };
                while let Some((k, v)) = access.next_entry::<String, V>()? {
                    out.insert(k, v);
                }
                out.entries.shrink_to_fit();
                Ok(out)
            }
        }

        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn encodes_as_an_object_in_name_order() {
        let m: NamedMap<i64> = [("web".to_string(), 2), ("db".to_string(), 1)]
            .into_iter()
            .collect();
        assert_eq!(
            serde_json::to_string(&m).expect("json"),
            r#"{"db":1,"web":2}"#
        );
        assert_eq!(m["web"], 2);
        assert_eq!(m.get("cache"), None);
        let back: NamedMap<i64> = serde_json::from_str(r#"{"b":1,"a":2,"b":3}"#).expect("parse");
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            [(&"a".to_string(), &2), (&"b".to_string(), &3)]
        );
        assert!(serde_json::from_str::<NamedMap<i64>>("[1]").is_err());
    }

    proptest! {
        /// Whatever is inserted and removed, it behaves and encodes as a
        /// `BTreeMap` would.
        #[test]
        fn behaves_as_a_btree_map(ops in proptest::collection::vec(("[a-e]{1,2}", any::<i32>(), any::<bool>()), 0..40)) {
            let mut ours = NamedMap::new();
            let mut model = BTreeMap::new();
            for (k, v, remove) in ops {
                if remove {
                    prop_assert_eq!(ours.remove(&k), model.remove(&k));
                } else {
                    prop_assert_eq!(ours.insert(k.clone(), v), model.insert(k, v));
                }
                prop_assert_eq!(ours.len(), model.len());
            }
            for (k, v) in &model {
                prop_assert_eq!(ours.get(k), Some(v));
            }
            let ours_json = serde_json::to_string(&ours).expect("json");
            prop_assert_eq!(&ours_json, &serde_json::to_string(&model).expect("json"));
            let back: NamedMap<i32> = serde_json::from_str(&ours_json).expect("parse");
            prop_assert_eq!(back, ours);
        }
    }
}
