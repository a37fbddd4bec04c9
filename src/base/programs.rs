//! The host programs maqet runs beside QEMU (swtpm, passt, virtiofsd,
//! vde_switch) and how each is found: a `MAQET_…` variable (a path, or a
//! name looked up in PATH), else its name in PATH, else where distributions
//! put it outside PATH. A leaf: config checks that a VM's helpers exist and
//! the companions run them, both through these finders, so the two never
//! disagree and config needs nothing from the layers that start programs.

use std::path::{Path, PathBuf};

use crate::access::{allowed, Access};

/// Finds a bare command name in `PATH` (executable regular files only).
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|c| c.is_file() && is_executable(c))
}

/// Executable by the current user (not merely "has an x bit").
pub fn is_executable(p: &Path) -> bool {
    allowed(p, Access::EXEC_OK)
}

/// Readable by the current user.
pub fn is_readable(p: &Path) -> bool {
    allowed(p, Access::READ_OK)
}

/// A helper program: `env` (a path, or a name looked up in PATH), else
/// `name` in PATH, else the first of `also` that is executable. On failure:
/// what was tried and whether it came from `env`.
pub fn find_program(env: &str, name: &str, also: &[&str]) -> Result<PathBuf, (String, bool)> {
    let (wanted, from_env) = match std::env::var(env) {
        Ok(v) if !v.is_empty() => (v, true),
        _ => (name.to_string(), false),
    };
    let executable = |p: PathBuf| (p.is_file() && is_executable(&p)).then_some(p);
    let found = if wanted.contains('/') {
        executable(PathBuf::from(&wanted))
    } else {
        find_in_path(&wanted).or_else(|| {
            if from_env {
                return None;
            }
            also.iter().find_map(|p| executable(PathBuf::from(p)))
        })
    };
    found.ok_or((wanted, from_env))
}

/// Overrides the swtpm binary (a path or a name looked up in PATH).
pub const SWTPM_ENV: &str = "MAQET_SWTPM";
/// Packages that provide swtpm, for hints.
pub const SWTPM_PACKAGES: &str = "swtpm swtpm-tools";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("swtpm ('{tried}') is not installed or not executable; `tpm: true` runs the TPM emulator swtpm next to the VM: install {SWTPM_PACKAGES} (Debian, Ubuntu, Fedora){}", if *.from_env { format!(" or fix {SWTPM_ENV}") } else { String::new() })]
pub struct SwtpmMissing {
    pub tried: String,
    pub from_env: bool,
}

/// The swtpm binary: `MAQET_SWTPM`, else `swtpm` in PATH.
pub fn find_swtpm() -> Result<PathBuf, SwtpmMissing> {
    find_program(SWTPM_ENV, "swtpm", &[])
        .map_err(|(tried, from_env)| SwtpmMissing { tried, from_env })
}

/// Overrides the passt binary (a path or a name looked up in PATH).
pub const PASST_ENV: &str = "MAQET_PASST";
/// The package, for hints.
pub const PASST_PACKAGE: &str = "passt";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("passt ('{tried}') is not installed or not executable; `network: passt` runs passt next to the VM: install the package {PASST_PACKAGE} (Debian 12+, Ubuntu 23.04+, Fedora){}, or use `network: user`", if *.from_env { format!(" or fix {PASST_ENV}") } else { String::new() })]
pub struct PasstMissing {
    pub tried: String,
    pub from_env: bool,
}

/// The passt binary: `MAQET_PASST`, else `passt` in PATH.
pub fn find_passt() -> Result<PathBuf, PasstMissing> {
    find_program(PASST_ENV, "passt", &[])
        .map_err(|(tried, from_env)| PasstMissing { tried, from_env })
}

/// Overrides the virtiofsd binary (a path or a name looked up in PATH).
pub const VIRTIOFSD_ENV: &str = "MAQET_VIRTIOFSD";
/// Where distributions install virtiofsd outside PATH (Debian 13, Fedora:
/// /usr/libexec; Arch: /usr/lib).
pub const VIRTIOFSD_LIBEXEC: &[&str] = &["/usr/libexec/virtiofsd", "/usr/lib/virtiofsd"];
/// The package, for hints.
pub const VIRTIOFSD_PACKAGE: &str = "virtiofsd";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("virtiofsd ('{tried}') is not installed or not executable; `shares:` run one virtiofsd per share next to the VM: install the package {VIRTIOFSD_PACKAGE} (Debian 13, Ubuntu, Fedora; it lands in /usr/libexec), or on Debian 12 build it with `cargo install --locked virtiofsd` (needs libseccomp-dev and libcap-ng-dev) into a directory on PATH{}; hosts without it can still share a directory over 9p (storage: type: virtfs)", if *.from_env { format!(", or fix {VIRTIOFSD_ENV}") } else { String::new() })]
pub struct VirtiofsdMissing {
    pub tried: String,
    pub from_env: bool,
}

/// The virtiofsd binary: `MAQET_VIRTIOFSD`, else `virtiofsd` in PATH,
/// else [`VIRTIOFSD_LIBEXEC`].
pub fn find_virtiofsd() -> Result<PathBuf, VirtiofsdMissing> {
    find_program(VIRTIOFSD_ENV, "virtiofsd", VIRTIOFSD_LIBEXEC)
        .map_err(|(tried, from_env)| VirtiofsdMissing { tried, from_env })
}

/// Overrides the `vde_switch` binary (a path or a name looked up in PATH).
pub const VDE_SWITCH_ENV: &str = "MAQET_VDE_SWITCH";
/// Packages that provide `vde_switch`, for hints.
pub const VDE_PACKAGES: &str = "vde2 (Debian, Ubuntu, Fedora; `vde-switch` on Debian 12 and later)";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("vde_switch ('{tried}') is not installed or not executable; `networks:` runs a vde_switch per segment: install {VDE_PACKAGES}{}", if *.from_env { format!(" or fix {VDE_SWITCH_ENV}") } else { String::new() })]
pub struct VdeSwitchMissing {
    pub tried: String,
    pub from_env: bool,
}

/// The switch program: `MAQET_VDE_SWITCH`, else `vde_switch` in PATH.
pub fn find_vde_switch() -> Result<PathBuf, VdeSwitchMissing> {
    find_program(VDE_SWITCH_ENV, "vde_switch", &[])
        .map_err(|(tried, from_env)| VdeSwitchMissing { tried, from_env })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_checks() {
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("definitely-not-a-command-xyz").is_none());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        assert!(!is_executable(&f) || rustix::process::geteuid().is_root());
        assert!(is_readable(&f));
    }

    #[test]
    fn swtpm_override() {
        // Only this test touches the variable.
        std::env::set_var(SWTPM_ENV, "/nonexistent/swtpm");
        let e = find_swtpm().unwrap_err();
        std::env::remove_var(SWTPM_ENV);
        assert!(e.from_env && e.to_string().contains("install swtpm swtpm-tools"));
    }
}
