//! Names of VM-to-VM network segments (`networks: [lab]`). A name becomes
//! part of a unit name (`maqet-switch@lab.service`) and of paths under the
//! user's runtime directory (`maqet/net/lab/`, `lab.pid`, `lab.lock`), so
//! the allowed set needs no escaping in either and no name can reach
//! another's files: no '.', which would let segment `a.pid` be segment
//! `a`'s pid file.

use std::fmt;

/// Longest segment name: keeps `$XDG_RUNTIME_DIR/maqet/net/NAME/ctl`
/// well inside `sun_path`'s 108 bytes.
pub const MAX_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid network name '{name}': {reason}. A network name is 1 to {MAX_LEN} characters from letters, digits, '-' and '_', and starts with a letter or digit")]
pub struct InvalidNetName {
    pub name: String,
    pub reason: &'static str,
}

/// A validated segment name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct NetName(String);

impl NetName {
    pub fn new(name: &str) -> Result<Self, InvalidNetName> {
        let fail = |reason| {
            Err(InvalidNetName {
                name: crate::suggest::excerpt(name, 64),
                reason,
            })
        };
        if name.is_empty() {
            return fail("it is empty");
        }
        if name.chars().count() > MAX_LEN {
            return fail("it is too long");
        }
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return fail("it does not start with a letter or digit");
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            return fail("it contains a character that is not allowed");
        }
        Ok(NetName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `maqet-switch@NAME.service`
    pub fn switch_unit(&self) -> String {
        crate::units::switch_service(&self.0)
    }
}

impl fmt::Display for NetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_need_no_escaping_and_cannot_reach_other_files() {
        for ok in ["lab", "LAB-2", "a_b", "0", &"x".repeat(MAX_LEN)] {
            assert!(NetName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-lab",
            "_lab",
            "lab.pid",
            "a/b",
            "a b",
            "lab@x",
            "läb",
            "vde://x",
            &"x".repeat(MAX_LEN + 1),
        ] {
            let e = NetName::new(bad).unwrap_err();
            assert!(e.to_string().contains("invalid network name"), "{bad}: {e}");
        }
        assert_eq!(
            NetName::new("lab").unwrap().switch_unit(),
            "maqet-switch@lab.service"
        );
    }
}
