//! Where maqet keeps things. Every component derives its paths from here, so
//! the CLI and the runner can never disagree (the original's runner ignored
//! the CLI's directory flags).

use std::path::{Path, PathBuf};

use crate::vmname::VmName;

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("cannot find a data directory: neither XDG_DATA_HOME nor HOME is set; pass --data-dir DIR or set MAQET_DATA_DIR")]
    NoDataHome,
    #[error("XDG_RUNTIME_DIR is not set, so there is no user session to run VMs in; log in through a session manager (or run `loginctl enable-linger $USER`) and make sure XDG_RUNTIME_DIR=/run/user/$(id -u)")]
    NoRuntimeDir,
    #[error("the data directory {0} is not an absolute path")]
    Relative(PathBuf),
}

/// The data directory: the DB and default disk locations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir(PathBuf);

impl DataDir {
    /// `explicit` is `--data-dir`/`MAQET_DATA_DIR`; otherwise
    /// `$XDG_DATA_HOME/maqet`, else `~/.local/share/maqet`.
    pub fn resolve(explicit: Option<&Path>) -> Result<Self, PathError> {
        let dir = match explicit {
            Some(p) if p.is_absolute() => p.to_path_buf(),
            Some(p) => std::env::current_dir()
                .map(|cwd| cwd.join(p))
                .map_err(|_| PathError::Relative(p.to_path_buf()))?,
            None => match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
                Some(x) if Path::new(&x).is_absolute() => PathBuf::from(x).join("maqet"),
                _ => std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".local/share/maqet"))
                    .ok_or(PathError::NoDataHome)?,
            },
        };
        Ok(DataDir(normalize(&dir)))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn db_path(&self) -> PathBuf {
        self.0.join("maqet.db")
    }

    /// Default directory of a VM's disks: never a temporary directory.
    pub fn disk_dir(&self, vm: &VmName) -> PathBuf {
        self.0.join("disks").join(vm.as_str())
    }
}

/// `$XDG_CONFIG_HOME` when it is absolute, else `~/.config` (XDG base
/// directories); `None` without either.
pub fn config_home() -> Option<PathBuf> {
    xdg_home("XDG_CONFIG_HOME", ".config")
}

/// `$XDG_CACHE_HOME` when it is absolute, else `~/.cache`.
pub fn cache_home() -> Option<PathBuf> {
    xdg_home("XDG_CACHE_HOME", ".cache")
}

fn xdg_home(var: &str, under_home: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| Path::new(v).is_absolute())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(under_home))
        })
}

/// `$XDG_RUNTIME_DIR/maqet/vm`: the directory systemd creates (0700) for the
/// runner sockets.
pub fn socket_dir() -> Result<PathBuf, PathError> {
    let rt = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .ok_or(PathError::NoRuntimeDir)?;
    Ok(PathBuf::from(rt).join("maqet").join("vm"))
}

/// The runner's IPC socket of one VM.
pub fn socket_path(vm: &VmName) -> Result<PathBuf, PathError> {
    Ok(socket_dir()?.join(format!("{}.sock", vm.as_str())))
}

/// The VM's QMP socket for standard QMP clients, beside its IPC socket.
pub fn qmp_socket_path(vm: &VmName) -> Result<PathBuf, PathError> {
    Ok(qmp_socket_beside(&socket_path(vm)?))
}

/// `NAME.qmp` beside the IPC socket `NAME.sock` (the socket unit listens on
/// both).
pub fn qmp_socket_beside(ipc_socket: &Path) -> PathBuf {
    ipc_socket.with_extension("qmp")
}

/// A VM's runtime directory, `$XDG_RUNTIME_DIR/maqet/vm/NAME` (0700): its
/// display and TPM sockets. The VM's service owns it (`RuntimeDirectory=`),
/// so systemd creates it before the VM starts and removes it after.
pub fn vm_runtime_dir(vm: &VmName) -> Result<PathBuf, PathError> {
    Ok(socket_dir()?.join(vm.as_str()))
}

/// [`vm_runtime_dir`] for display purposes (`show`, references): without
/// `XDG_RUNTIME_DIR`, the path systemd-logind would give this user.
pub fn vm_runtime_dir_or_default(vm: &str) -> PathBuf {
    match socket_dir() {
        Ok(d) => d.join(vm),
        // SAFETY: getuid cannot fail.
        Err(_) => PathBuf::from(format!("/run/user/{}/maqet/vm/{vm}", unsafe {
            libc::getuid()
        })),
    }
}

/// Lexical clean-up (`a/./b/../c` → `a/c`) without touching the file system,
/// so a not-yet-existing data directory is shown the way it will be.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_dir_wins_and_is_normalized() {
        let d = DataDir::resolve(Some(Path::new("/srv/./vms/../maqet"))).unwrap();
        assert_eq!(d.path(), Path::new("/srv/maqet"));
        assert_eq!(d.db_path(), Path::new("/srv/maqet/maqet.db"));
        let vm = VmName::new("web").unwrap();
        assert_eq!(d.disk_dir(&vm), Path::new("/srv/maqet/disks/web"));
    }

    #[test]
    fn relative_dir_is_made_absolute() {
        let d = DataDir::resolve(Some(Path::new("rel/dir"))).unwrap();
        assert!(d.path().is_absolute());
        assert!(d.path().ends_with("rel/dir"));
    }
}
