//! JSON kept as text: for parts of an object that the servers store and
//! serve but never look into.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// A JSON value kept as its compact text, shared between clones.
///
/// `Allocation.Metrics` is one: every placement carries the scheduler's
/// `AllocMetric`, which nothing on the servers reads again. As a
/// `serde_json::Value` tree it cost several KiB per allocation (a B-tree
/// node for every object, however small); as text it costs its length,
/// once, however often the allocation is copied. It encodes as the JSON it
/// holds (not as a string), so the API shape does not change.
#[derive(Clone)]
pub struct RawJson(Arc<RawValue>);

impl RawJson {
    /// Encodes `value`.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        let raw = serde_json::value::to_raw_value(value)?;
        Ok(Self(Arc::from(raw)))
    }

    /// Parses `text`, which must be one JSON value.
    pub fn parse_text(text: &str) -> Result<Self, serde_json::Error> {
        let raw: Box<RawValue> = serde_json::from_str(text)?;
        Ok(Self(Arc::from(raw)))
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Decodes the value as a `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for RawJson {}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Ok(Self(Arc::from(raw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Outer {
        #[serde(rename = "Metrics")]
        metrics: Option<RawJson>,
    }

    #[test]
    fn encodes_as_the_json_it_holds() {
        let m = RawJson::encode(&serde_json::json!({"NodesEvaluated": 3, "Scores": {}}))
            .expect("encode");
        let text = serde_json::to_string(&Outer { metrics: Some(m) }).expect("to json");
        assert_eq!(text, r#"{"Metrics":{"NodesEvaluated":3,"Scores":{}}}"#);
        let back: Outer = serde_json::from_str(&text).expect("from json");
        let v: serde_json::Value = back
            .metrics
            .as_ref()
            .expect("some")
            .decode()
            .expect("decode");
        assert_eq!(v["NodesEvaluated"], 3);
    }

    #[test]
    fn null_and_whitespace_round_trip() {
        let back: Outer = serde_json::from_str(r#"{"Metrics": null}"#).expect("null");
        assert_eq!(back.metrics, None);
        let back: Outer =
            serde_json::from_str(r#"{"Metrics":  { "A" : [1, 2] } }"#).expect("spaced");
        let text = serde_json::to_string(&back).expect("to json");
        let again: Outer = serde_json::from_str(&text).expect("again");
        assert_eq!(back, again);
        assert!(RawJson::parse_text("{").is_err());
    }
}
