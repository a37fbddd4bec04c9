//! VM names. They become part of unit names (`maqet-vm@NAME.service`) and of
//! paths, so the allowed set is one that needs no escaping in either.

use std::fmt;

/// Longest name accepted; keeps unit names and socket paths well inside
/// systemd's and `sun_path`'s limits.
pub const MAX_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid VM name '{name}': {reason}. A name is 1 to {MAX_LEN} characters from letters, digits, '-', '_' and '.', and does not start with '-' or '.'")]
pub struct InvalidName {
    pub name: String,
    pub reason: &'static str,
}

/// A validated VM name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmName(String);

impl VmName {
    pub fn new(name: &str) -> Result<Self, InvalidName> {
        let fail = |reason| {
            Err(InvalidName {
                name: name.to_string(),
                reason,
            })
        };
        if name.is_empty() {
            return fail("it is empty");
        }
        if name.chars().count() > MAX_LEN {
            return fail("it is too long");
        }
        if name.starts_with('-') || name.starts_with('.') {
            return fail("it starts with '-' or '.'");
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return fail("it contains a character that is not allowed");
        }
        Ok(VmName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `maqet-vm@NAME.service`
    pub fn service_unit(&self) -> String {
        crate::units::vm_service(&self.0)
    }

    /// `maqet-vm@NAME.socket`
    pub fn socket_unit(&self) -> String {
        crate::units::vm_socket(&self.0)
    }

    /// The name from a unit name such as `maqet-vm@NAME.service`.
    pub fn from_unit(unit: &str) -> Option<VmName> {
        let name =
            crate::units::service_vm_name(unit).or_else(|| crate::units::socket_vm_name(unit))?;
        VmName::new(name).ok()
    }
}

impl fmt::Display for VmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_allowed_names() {
        for n in ["vm", "a", "web-01", "db_2.test", "A.b-C_d", &"x".repeat(64)] {
            assert_eq!(VmName::new(n).unwrap().as_str(), n);
        }
    }

    #[test]
    fn refuses_bad_names_with_reason() {
        let cases = [
            ("", "empty"),
            (".hidden", "starts with"),
            ("-opt", "starts with"),
            ("bad name!", "not allowed"),
            ("a/b", "not allowed"),
            ("vm@x", "not allowed"),
            ("é", "not allowed"),
        ];
        for (n, why) in cases {
            let e = VmName::new(n).unwrap_err();
            assert!(e.reason.contains(why), "{n}: {}", e.reason);
            assert!(e.to_string().contains("letters, digits"));
        }
        assert!(VmName::new(&"x".repeat(65))
            .unwrap_err()
            .reason
            .contains("too long"));
    }

    #[test]
    fn unit_names_round_trip() {
        let n = VmName::new("web-1.x").unwrap();
        assert_eq!(n.service_unit(), "maqet-vm@web-1.x.service");
        assert_eq!(VmName::from_unit(&n.service_unit()), Some(n.clone()));
        assert_eq!(VmName::from_unit(&n.socket_unit()), Some(n));
        assert_eq!(VmName::from_unit("other@x.service"), None);
        assert_eq!(VmName::from_unit("maqet-vm@.service"), None);
    }
}
