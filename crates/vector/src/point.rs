//! Point ids and payloads.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A point's id: an unsigned integer or a UUID, as in Qdrant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PointId {
    Num(u64),
    Uuid(uuid::Uuid),
}

impl fmt::Display for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PointId::Num(n) => write!(f, "{n}"),
            PointId::Uuid(u) => write!(f, "{u}"),
        }
    }
}

/// A point's JSON payload (an object).
pub type Payload = serde_json::Map<String, serde_json::Value>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_as_numbers_or_uuids() {
        let n: PointId = serde_json::from_str("42").unwrap();
        assert_eq!(n, PointId::Num(42));
        let u: PointId = serde_json::from_str("\"5c56c793-69f3-4fbf-87e6-c4bf54c28c26\"").unwrap();
        assert!(matches!(u, PointId::Uuid(_)));
        assert!(serde_json::from_str::<PointId>("-1").is_err());
        assert!(serde_json::from_str::<PointId>("\"nope\"").is_err());
        assert_eq!(serde_json::to_string(&n).unwrap(), "42");
    }
}
