//! Where a config value came from, and the errors config handling reports.
//!
//! Every message is one line that starts with the place (`file:line:col`, or a
//! label such as `--memory`) so the user can jump straight to it.

use std::fmt;

/// The origin of a node: a file (line/column 1-based) or a label such as
/// `--memory` or `stored config` (line 0 = no position).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    pub source: String,
    pub line: usize,
    pub column: usize,
}

impl Location {
    pub fn new(source: impl Into<String>, line: usize, column: usize) -> Self {
        Location {
            source: source.into(),
            line,
            column,
        }
    }

    /// A location without a position (flags, stored config).
    pub fn label(source: impl Into<String>) -> Self {
        Location::new(source, 0, 0)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}", self.source),
            (l, 0) => write!(f, "{}:{}", self.source, l),
            (l, c) => write!(f, "{}:{}:{}", self.source, l, c),
        }
    }
}

/// Errors from loading, merging and validating VM configs.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: file not found")]
    NotFound { path: String },

    #[error("{path}: {message}")]
    Io { path: String, message: String },

    #[error("{location}: invalid YAML: {message}")]
    Yaml { location: Location, message: String },

    /// Any schema or value problem; `message` already names the key path
    /// (e.g. `storage[1].size: invalid size '10Q' …`).
    #[error("{location}: {message}")]
    Invalid { location: Location, message: String },

    #[error("arguments[{index}] ({location}): duplicate single-instance option '-{option}'; first given at arguments[{first_index}] ({first_location})")]
    DuplicateOption {
        option: String,
        index: usize,
        location: Location,
        first_index: usize,
        first_location: Location,
    },
}

impl ConfigError {
    pub(crate) fn invalid(location: &Location, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            location: location.clone(),
            message: message.into(),
        }
    }

    /// The place the error points at, when it has one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Yaml { location, .. }
            | ConfigError::Invalid { location, .. }
            | ConfigError::DuplicateOption { location, .. } => Some(location),
            ConfigError::NotFound { .. } | ConfigError::Io { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_display_forms() {
        assert_eq!(Location::new("/a.yaml", 7, 11).to_string(), "/a.yaml:7:11");
        assert_eq!(Location::new("/a.yaml", 7, 0).to_string(), "/a.yaml:7");
        assert_eq!(Location::label("--memory").to_string(), "--memory");
    }

    #[test]
    fn duplicate_option_message() {
        let e = ConfigError::DuplicateOption {
            option: "m".into(),
            index: 4,
            location: Location::new("b.yaml", 6, 5),
            first_index: 1,
            first_location: Location::new("a.yaml", 9, 5),
        };
        assert_eq!(
            e.to_string(),
            "arguments[4] (b.yaml:6:5): duplicate single-instance option '-m'; first given at arguments[1] (a.yaml:9:5)"
        );
    }
}
