//! The kinds of resource the control plane stores, and their names.

use std::fmt;

/// A resource kind. Its table in the store and its URL segment are the
/// plural (`services`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Model,
    Service,
    Collection,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Model, Kind::Service, Kind::Collection];

    /// The `kind` field: `Service`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Model => "Model",
            Kind::Service => "Service",
            Kind::Collection => "Collection",
        }
    }

    /// The URL segment and table name: `services`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Model => "models",
            Kind::Service => "services",
            Kind::Collection => "collections",
        }
    }

    /// The lowercase singular, as in `service/foo`.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Model => "model",
            Kind::Service => "service",
            Kind::Collection => "collection",
        }
    }

    /// Parses a kind (`Service`), plural (`services`), singular
    /// (`service`) or short name (`svc`), in any case.
    pub fn parse(text: &str) -> Option<Kind> {
        match text.to_ascii_lowercase().as_str() {
            "model" | "models" => Some(Kind::Model),
            "service" | "services" | "svc" => Some(Kind::Service),
            "collection" | "collections" | "coll" => Some(Kind::Collection),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        for (text, kind) in [
            ("Service", Kind::Service),
            ("services", Kind::Service),
            ("SVC", Kind::Service),
            ("service", Kind::Service),
            ("Model", Kind::Model),
            ("models", Kind::Model),
            ("collections", Kind::Collection),
            ("Collection", Kind::Collection),
        ] {
            assert_eq!(Kind::parse(text), Some(kind), "{text}");
        }
        assert_eq!(Kind::parse("widgets"), None);
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.plural()), Some(kind));
            assert_eq!(Kind::parse(kind.name()), Some(kind));
        }
    }
}
