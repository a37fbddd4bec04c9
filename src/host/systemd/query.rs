//! Read-only questions to the user manager beyond a unit's state: raw
//! property maps (`inspect`), unit files and the manager itself (`doctor`).

use std::collections::HashMap;

use zbus::names::InterfaceName;
use zbus::zvariant::OwnedValue;

use super::client::{call_err, error_name, get_all};
use super::{Systemd, SystemdError};

/// D-Bus interfaces of the unit types maqet creates.
pub const UNIT_IFACE: &str = "org.freedesktop.systemd1.Unit";
pub const SERVICE_IFACE: &str = "org.freedesktop.systemd1.Service";
pub const SOCKET_IFACE: &str = "org.freedesktop.systemd1.Socket";

impl Systemd {
    /// All properties of `unit` on the Unit interface and on `iface`
    /// (merged; the type interface wins a name clash); `None` when the unit
    /// is not loaded.
    pub async fn unit_properties(
        &self,
        unit: &str,
        iface: &'static str,
    ) -> Result<Option<HashMap<String, OwnedValue>>, SystemdError> {
        let Some(path) = self.loaded_unit_path(unit).await? else {
            return Ok(None);
        };
        let props = self.properties_proxy(path.as_str()).await?;
        let mut all = get_all(&props, UNIT_IFACE, unit).await?;
        all.extend(get_all(&props, iface, unit).await?);
        Ok(Some(all))
    }

    /// The units that `Wants=` `unit` (its `WantedBy`); empty when it is
    /// not loaded. One plain `Get`.
    pub async fn wanted_by(&self, unit: &str) -> Result<Vec<String>, SystemdError> {
        let Some(path) = self.loaded_unit_path(unit).await? else {
            return Ok(Vec::new());
        };
        let props = self.properties_proxy(path.as_str()).await?;
        let v = props
            .get(
                InterfaceName::from_static_str_unchecked(UNIT_IFACE),
                "WantedBy",
            )
            .await
            .map_err(|e| call_err("Get", unit, e.into()))?;
        Ok(Vec::<String>::try_from(v).unwrap_or_default())
    }

    /// The manager's version string (`252.38-1~deb12u1`).
    pub async fn manager_version(&self) -> Result<String, SystemdError> {
        self.mgr
            .version()
            .await
            .map_err(|e| call_err("Get", "Version", e))
    }

    /// The manager's own cgroup path (relative to the cgroup root), e.g.
    /// `/user.slice/user-1000.slice/user@1000.service`. One plain `Get`: the
    /// manager proxy's cached property would fetch all of its properties.
    pub async fn manager_cgroup(&self) -> Result<String, SystemdError> {
        let props = self.properties_proxy("/org/freedesktop/systemd1").await?;
        let v = props
            .get(
                InterfaceName::from_static_str_unchecked("org.freedesktop.systemd1.Manager"),
                "ControlGroup",
            )
            .await
            .map_err(|e| call_err("Get", "ControlGroup", e.into()))?;
        String::try_from(v).map_err(|e| call_err("Get", "ControlGroup", e.into()))
    }

    /// `enabled`, `disabled`, `static`, … of an installed unit file; `None`
    /// when no unit file of that name exists.
    pub async fn unit_file_state(&self, file: &str) -> Result<Option<String>, SystemdError> {
        match self.mgr.get_unit_file_state(file).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if error_name(&e) == Some("org.freedesktop.systemd1.NoSuchUnit") => Ok(None),
            Err(e) if error_name(&e) == Some("org.freedesktop.DBus.Error.FileNotFound") => Ok(None),
            Err(e) => Err(call_err("GetUnitFileState", file, e)),
        }
    }

    /// Installed unit files matching `patterns`: (path, state).
    pub async fn unit_files(
        &self,
        patterns: &[&str],
    ) -> Result<Vec<(String, String)>, SystemdError> {
        self.mgr
            .list_unit_files_by_patterns(&[], patterns)
            .await
            .map_err(|e| call_err("ListUnitFilesByPatterns", &patterns.join(" "), e))
    }
}
