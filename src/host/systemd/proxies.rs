//! zbus proxies for the parts of systemd's D-Bus API maqet uses
//! (org.freedesktop.systemd1(5)).

use zbus::zvariant::{OwnedObjectPath, Value};

/// One row of `ListUnitsByPatterns`.
pub type UnitListEntry = (
    String,          // name
    String,          // description
    String,          // load state
    String,          // active state
    String,          // sub state
    String,          // following
    OwnedObjectPath, // unit object
    u32,             // job id
    String,          // job type
    OwnedObjectPath, // job object
);

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Value<'_>)],
        aux: &[(&str, Vec<(&str, Value<'_>)>)],
    ) -> zbus::Result<OwnedObjectPath>;

    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;

    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;

    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<UnitListEntry>>;

    fn get_unit_processes(&self, name: &str) -> zbus::Result<Vec<(String, u32, String)>>;

    fn subscribe(&self) -> zbus::Result<()>;

    fn get_unit_file_state(&self, file: &str) -> zbus::Result<String>;

    fn list_unit_files_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<(String, String)>>;

    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;

    #[zbus(signal)]
    fn unit_removed(&self, unit: String, path: OwnedObjectPath) -> zbus::Result<()>;

    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

/// The D-Bus object path of a unit, as systemd escapes it
/// (`maqet-vm@a.service` → `/org/freedesktop/systemd1/unit/maqet_2dvm_40a_2eservice`),
/// so signals can be matched before the unit exists.
pub fn unit_object_path(unit: &str) -> String {
    let mut p = String::from("/org/freedesktop/systemd1/unit/");
    for (i, b) in unit.bytes().enumerate() {
        if b.is_ascii_alphanumeric() && !(i == 0 && b.is_ascii_digit()) {
            p.push(b as char);
        } else {
            p.push_str(&format!("_{b:02x}"));
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_systemd() {
        assert_eq!(
            unit_object_path("maqet-vm@t2.service"),
            "/org/freedesktop/systemd1/unit/maqet_2dvm_40t2_2eservice"
        );
        assert_eq!(
            unit_object_path("1a_b.socket"),
            "/org/freedesktop/systemd1/unit/_31a_5fb_2esocket"
        );
    }
}
