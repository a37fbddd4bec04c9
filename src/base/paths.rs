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

    /// The same directory with its symlinks resolved (as it is now; itself
    /// when it does not exist). What maqet walks below it without following
    /// a symlink starts here: a data directory reached through a symlinked
    /// home is the user's choice, a symlink inside it is not maqet's.
    pub fn resolved(&self) -> DataDir {
        DataDir(std::fs::canonicalize(&self.0).unwrap_or_else(|_| self.0.clone()))
    }

    /// QEMU's working directory (its unit's `WorkingDirectory=`): the
    /// relative paths QEMU is given, in `args` and unresolved `arguments`,
    /// name files here.
    pub fn qemu_cwd(&self) -> &Path {
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

/// Where the runtime root sits under `$XDG_RUNTIME_DIR` (the service's
/// `RuntimeDirectory=` is relative to it).
pub const RUNTIME_SUBDIR: &str = "maqet/vm";

/// `$XDG_RUNTIME_DIR/maqet/vm`: the runtime root, holding one directory per
/// VM that runs (and, from VMs started by maqet before that layout, their
/// sockets beside them; see [`VmRuntime`]).
pub fn runtime_root() -> Result<PathBuf, PathError> {
    let rt = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .ok_or(PathError::NoRuntimeDir)?;
    Ok(PathBuf::from(rt).join(RUNTIME_SUBDIR))
}

/// The service's `RuntimeDirectory=` for `vm`: `maqet/vm/NAME`.
pub fn runtime_directory_name(vm: &VmName) -> String {
    format!("{RUNTIME_SUBDIR}/{vm}")
}

/// Where a running VM's files are: everything in `ROOT/NAME/` (0700), one
/// directory per VM, so no name can reach into another VM's files —
/// `control.sock` (maqet's protocol), `qmp.sock` (standard QMP clients),
/// `qga.sock` (the guest agent), `ports.json` (the start's port plan),
/// `vnc.sock`/`spice.sock`/`tpm.sock`, and the start token. The directory
/// is the service's `RuntimeDirectory=`: systemd removes it, and everything
/// in it, when the VM ends.
///
/// Until this layout the sockets and the plan lay beside the directories
/// (`ROOT/NAME.sock`, `NAME.qmp`, `NAME.qga.sock`, `NAME.ports.json`), so
/// VM `a`'s `a.qga.sock` was VM `a.qga`'s control socket. A VM started by
/// such a maqet keeps its unit (and so those paths) until it stops, also
/// across automatic restarts, which run the new runner: [`Layout::Beside`]
/// finds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRuntime {
    root: PathBuf,
    name: String,
    layout: Layout,
}

/// Which layout a VM's unit was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Everything in `ROOT/NAME/`.
    OwnDir,
    /// Sockets and plan beside the directory (VMs started before the
    /// layout; only ever found, never created).
    Beside,
}

/// The control socket's file name in a VM's own directory.
const CONTROL: &str = "control.sock";

impl VmRuntime {
    /// `vm`'s files under `root` in the current layout.
    pub fn at(root: &Path, vm: &VmName) -> Self {
        VmRuntime {
            root: root.to_path_buf(),
            name: vm.as_str().to_string(),
            layout: Layout::OwnDir,
        }
    }

    /// `vm`'s files in the current layout under [`runtime_root`]: where a
    /// start puts them.
    pub fn new(vm: &VmName) -> Result<Self, PathError> {
        Ok(Self::at(&runtime_root()?, vm))
    }

    /// Where a VM that may be running has its files: the current layout
    /// unless only the old layout's control socket is there (a VM started
    /// before it). Files only: a stat or two, no D-Bus.
    pub fn locate(vm: &VmName) -> Result<Self, PathError> {
        Ok(Self::locate_under(&runtime_root()?, vm))
    }

    pub fn locate_under(root: &Path, vm: &VmName) -> Self {
        let own = Self::at(root, vm);
        let beside = VmRuntime {
            layout: Layout::Beside,
            ..own.clone()
        };
        let present = |p: PathBuf| std::fs::symlink_metadata(p).is_ok();
        if !present(own.control()) && present(beside.control()) {
            beside
        } else {
            own
        }
    }

    /// The layout of the unit that passed the runner `control` as its
    /// listening socket.
    pub fn of_control_socket(control: &Path, vm: &VmName) -> Self {
        let own = control.file_name().is_some_and(|n| n == CONTROL);
        let dir = control.parent().unwrap_or(Path::new("/"));
        match own {
            true => Self::at(dir.parent().unwrap_or(Path::new("/")), vm),
            false => VmRuntime {
                root: dir.to_path_buf(),
                name: vm.as_str().to_string(),
                layout: Layout::Beside,
            },
        }
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The VM's own directory (display and TPM sockets in either layout).
    pub fn dir(&self) -> PathBuf {
        self.root.join(&self.name)
    }

    fn file(&self, own: &str, beside: &str) -> PathBuf {
        match self.layout {
            Layout::OwnDir => self.dir().join(own),
            Layout::Beside => self.root.join(format!("{}{beside}", self.name)),
        }
    }

    /// The runner's socket (maqet's protocol).
    pub fn control(&self) -> PathBuf {
        self.file(CONTROL, ".sock")
    }

    /// The QMP socket for standard QMP clients.
    pub fn qmp(&self) -> PathBuf {
        self.file("qmp.sock", ".qmp")
    }

    /// QEMU's guest-agent socket.
    pub fn agent(&self) -> PathBuf {
        self.file("qga.sock", ".qga.sock")
    }

    /// The port plan the start chose.
    pub fn ports(&self) -> PathBuf {
        self.file("ports.json", ".ports.json")
    }

    /// The vhost-user socket of the VM's `index`th virtiofs share (bound
    /// by its socket unit, served by virtiofsd). Named by position, not by
    /// tag: a 36-byte tag would push a long VM name's path past
    /// `sun_path`'s 108 bytes.
    pub fn share_socket(&self, index: usize) -> PathBuf {
        share_socket(&self.dir(), index)
    }

    /// passt's socket, which QEMU's `-netdev stream` connects to.
    pub fn passt_socket(&self) -> PathBuf {
        passt_socket(&self.dir())
    }

    /// Made by `maqet start` just before it creates the unit and taken by
    /// the runner it starts: a runner that finds it is the first attempt of
    /// a start, not an automatic restart (see the runner's exit statuses).
    pub fn start_token(&self) -> PathBuf {
        self.dir().join("start")
    }

    /// Makes the VM's directory (0700, as systemd would) and leaves the
    /// start token in it: called by `maqet start` just before it creates
    /// the unit.
    pub fn begin_start(&self) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.dir())?;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(self.start_token())
            .map(drop)
    }

    /// Removes what a VM that no longer runs left in its own directory —
    /// only the names of [`RUNTIME_FILES`], never a directory's contents
    /// unseen — and the directory once it is empty. systemd removes the
    /// directory when the unit ends; this is for the cases it cannot (a
    /// start refused before the unit existed, a manager that crashed). The
    /// caller knows that no unit of the name is live. Returns what it
    /// removed.
    pub fn clear(&self) -> std::io::Result<Vec<PathBuf>> {
        let dir = self.dir();
        let mut removed = Vec::new();
        let shares = (0..MAX_SHARES).map(share_socket_name);
        for name in RUNTIME_FILES.iter().map(|n| n.to_string()).chain(shares) {
            let p = dir.join(name);
            match std::fs::remove_file(&p) {
                Ok(()) => removed.push(p),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        match std::fs::remove_dir(&dir) {
            Ok(()) => removed.push(dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Something maqet does not know is in it: left to the user.
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {}
            Err(e) => return Err(e),
        }
        Ok(removed)
    }

    /// The files of this layout that lie outside [`VmRuntime::dir`].
    pub fn beside_files(&self) -> Vec<PathBuf> {
        match self.layout {
            Layout::OwnDir => Vec::new(),
            Layout::Beside => vec![self.control(), self.qmp(), self.agent(), self.ports()],
        }
    }
}

/// The file names a VM's directory holds (for cleanups, which delete only
/// what they know), besides the shares' sockets ([`is_runtime_file`]).
pub const RUNTIME_FILES: &[&str] = &[
    CONTROL,
    "qmp.sock",
    "qga.sock",
    "ports.json",
    "vnc.sock",
    "spice.sock",
    "tpm.sock",
    PASST_SOCKET,
    "start",
];

/// The most virtiofs shares one VM may have (each is a PCI device and a
/// virtiofsd).
pub const MAX_SHARES: usize = 16;

const PASST_SOCKET: &str = "net.sock";

fn share_socket_name(index: usize) -> String {
    format!("fs{index}.sock")
}

/// `DIR/fsN.sock`: [`VmRuntime::share_socket`] for a known directory.
pub fn share_socket(dir: &Path, index: usize) -> PathBuf {
    dir.join(share_socket_name(index))
}

/// `DIR/net.sock`: [`VmRuntime::passt_socket`] for a known directory.
pub fn passt_socket(dir: &Path) -> PathBuf {
    dir.join(PASST_SOCKET)
}

/// Whether `name` is a file maqet puts in a VM's runtime directory.
pub fn is_runtime_file(name: &str) -> bool {
    RUNTIME_FILES.contains(&name) || (0..MAX_SHARES).any(|i| share_socket_name(i) == name)
}

/// Where the VM-to-VM network segments are, under `$XDG_RUNTIME_DIR`.
pub const NET_SUBDIR: &str = "maqet/net";

/// `$XDG_RUNTIME_DIR/maqet/net`: one switch directory per segment of
/// this user (segments are per user, across data directories).
pub fn net_root() -> Result<PathBuf, PathError> {
    Ok(runtime_root()?
        .parent()
        .expect("the runtime root has a parent")
        .join("net"))
}

/// `$XDG_RUNTIME_DIR/maqet/ssh`: the ssh master sockets and ssh's message
/// files of `maqet -H` (per user, across data directories).
pub fn ssh_root() -> Result<PathBuf, PathError> {
    Ok(runtime_root()?
        .parent()
        .expect("the runtime root has a parent")
        .join("ssh"))
}

/// The files of one segment's switch (`maqet-switch@NAME.service`), all in
/// [`net_root`] (0700, inside the user's 0700 runtime directory, so no
/// other user can reach them): the switch's own directory `NAME/` (its
/// control socket `ctl` and one socket per port, made by `vde_switch`,
/// 0700), and `NAME.lock`, which maqet holds while it decides whether a
/// start creates the switch or joins it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRuntime {
    root: PathBuf,
    name: String,
}

impl SegmentRuntime {
    pub fn at(root: &Path, segment: &crate::netname::NetName) -> Self {
        SegmentRuntime {
            root: root.to_path_buf(),
            name: segment.as_str().to_string(),
        }
    }

    pub fn new(segment: &crate::netname::NetName) -> Result<Self, PathError> {
        Ok(Self::at(&net_root()?, segment))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The switch's directory: what QEMU's `-netdev vde,sock=` names.
    pub fn dir(&self) -> PathBuf {
        self.root.join(&self.name)
    }

    /// The switch's control socket (present while it runs).
    pub fn ctl(&self) -> PathBuf {
        self.dir().join("ctl")
    }

    pub fn lock(&self) -> PathBuf {
        self.root.join(format!("{}.lock", self.name))
    }

    /// Makes [`net_root`] (0700) if it is missing.
    pub fn ensure_root(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
    }

    /// Removes what a switch that no longer runs left (killed, it cannot
    /// clean up, and `vde_switch` refuses to bind over its old `ctl`):
    /// the sockets in its directory and the directory. Only
    /// sockets are removed, and nothing while something still answers on
    /// `ctl`; the caller knows the switch unit is not live. Returns what
    /// it removed.
    pub fn clear_stale(&self) -> std::io::Result<Vec<PathBuf>> {
        use std::os::unix::fs::FileTypeExt;
        let mut removed = Vec::new();
        let dir = self.dir();
        if std::os::unix::net::UnixStream::connect(self.ctl()).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("a switch still answers on {}", self.ctl().display()),
            ));
        }
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for e in entries {
                    let e = e?;
                    if e.file_type()?.is_socket() {
                        std::fs::remove_file(e.path())?;
                        removed.push(e.path());
                    }
                }
                match std::fs::remove_dir(&dir) {
                    Ok(()) => removed.push(dir),
                    // Something that is not the switch's: left to the user.
                    Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(removed)
    }
}

/// A VM's own runtime directory, `$XDG_RUNTIME_DIR/maqet/vm/NAME` (0700).
pub fn vm_runtime_dir(vm: &VmName) -> Result<PathBuf, PathError> {
    Ok(VmRuntime::new(vm)?.dir())
}

/// [`runtime_root`], or for display purposes without `XDG_RUNTIME_DIR`
/// the root systemd-logind would give this user.
pub fn runtime_root_or_default() -> PathBuf {
    runtime_root().unwrap_or_else(|_| {
        PathBuf::from(format!(
            "/run/user/{}/{RUNTIME_SUBDIR}",
            rustix::process::getuid().as_raw()
        ))
    })
}

/// [`vm_runtime_dir`] for display purposes (`show`, references): without
/// `XDG_RUNTIME_DIR`, the path systemd-logind would give this user.
pub fn vm_runtime_dir_or_default(vm: &str) -> PathBuf {
    match runtime_root() {
        Ok(d) => d.join(vm),
        Err(_) => PathBuf::from(format!(
            "/run/user/{}/maqet/vm/{vm}",
            rustix::process::getuid().as_raw()
        )),
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
    fn every_vm_has_its_own_directory_and_old_units_are_found() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let a = VmName::new("a").unwrap();
        let aq = VmName::new("a.qga").unwrap();
        let r = VmRuntime::at(root, &a);
        assert_eq!(r.control(), root.join("a/control.sock"));
        assert_eq!(r.qmp(), root.join("a/qmp.sock"));
        assert_eq!(r.agent(), root.join("a/qga.sock"));
        assert_eq!(r.ports(), root.join("a/ports.json"));
        assert_eq!(r.share_socket(3), root.join("a/fs3.sock"));
        assert_eq!(r.passt_socket(), root.join("a/net.sock"));
        assert!(is_runtime_file("fs15.sock") && is_runtime_file("net.sock"));
        assert!(!is_runtime_file("fs16.sock") && !is_runtime_file("notes"));
        assert!(r.beside_files().is_empty());
        // No name reaches another's files: only the name's own directory.
        let q = VmRuntime::at(root, &aq);
        for f in [q.control(), q.qmp(), q.agent(), q.ports()] {
            assert!(f.starts_with(root.join("a.qga")), "{}", f.display());
            assert!(![r.control(), r.qmp(), r.agent(), r.ports()].contains(&f));
        }
        // Nothing there: the current layout. Only the old control socket
        // there: the old layout, whose agent socket was `a.qga`'s socket.
        assert_eq!(VmRuntime::locate_under(root, &a).layout(), Layout::OwnDir);
        std::fs::write(root.join("a.sock"), b"").unwrap();
        let old = VmRuntime::locate_under(root, &a);
        assert_eq!(old.layout(), Layout::Beside);
        assert_eq!(old.agent(), root.join("a.qga.sock"));
        assert_eq!(old.ports(), root.join("a.ports.json"));
        assert_eq!(old.dir(), root.join("a"));
        assert_eq!(old.beside_files().len(), 4);
        // Clearing takes only known names, and the directory once empty.
        std::fs::create_dir(root.join("a.qga")).unwrap();
        std::fs::write(root.join("a.qga/ports.json"), b"{}").unwrap();
        std::fs::write(root.join("a.qga/fs1.sock"), b"").unwrap();
        std::fs::write(root.join("a.qga/notes"), b"mine").unwrap();
        let removed = VmRuntime::at(root, &aq).clear().unwrap();
        assert_eq!(
            removed,
            vec![root.join("a.qga/ports.json"), root.join("a.qga/fs1.sock")]
        );
        std::fs::remove_file(root.join("a.qga/notes")).unwrap();
        assert_eq!(
            VmRuntime::at(root, &aq).clear().unwrap(),
            vec![root.join("a.qga")]
        );
        assert!(root.join("a.sock").exists(), "another VM's file stays");
        // Both there: the current one wins.
        std::fs::create_dir(root.join("a")).unwrap();
        std::fs::write(root.join("a/control.sock"), b"").unwrap();
        assert_eq!(VmRuntime::locate_under(root, &a).layout(), Layout::OwnDir);
        // The runner tells by the socket systemd passed it.
        assert_eq!(
            VmRuntime::of_control_socket(&root.join("a/control.sock"), &a),
            VmRuntime::at(root, &a)
        );
        assert_eq!(VmRuntime::of_control_socket(&root.join("a.sock"), &a), old);
    }

    #[test]
    fn a_stale_switch_directory_is_cleared_but_a_live_one_is_not() {
        let t = tempfile::tempdir().unwrap();
        let lab = crate::netname::NetName::new("lab").unwrap();
        let seg = SegmentRuntime::at(&t.path().join("net"), &lab);
        assert_eq!(seg.ctl(), t.path().join("net/lab/ctl"));
        assert_eq!(seg.lock(), t.path().join("net/lab.lock"));
        seg.ensure_root().unwrap();
        assert!(seg.clear_stale().unwrap().is_empty());
        std::fs::create_dir(seg.dir()).unwrap();
        // A live switch: something listens on ctl.
        let live = std::os::unix::net::UnixListener::bind(seg.ctl()).unwrap();
        assert!(seg.clear_stale().is_err());
        assert!(seg.ctl().exists());
        // Dead (the listener closed, its socket file stays), with a port
        // socket left.
        drop(live);
        drop(std::os::unix::net::UnixListener::bind(seg.dir().join("001.6")).unwrap());
        let removed = seg.clear_stale().unwrap();
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert!(!seg.dir().exists());
        // Anything but a socket stays, and with it the directory.
        std::fs::create_dir(seg.dir()).unwrap();
        std::fs::write(seg.dir().join("notes"), b"mine").unwrap();
        seg.clear_stale().unwrap();
        assert!(seg.dir().join("notes").exists());
    }

    #[test]
    fn relative_dir_is_made_absolute() {
        let d = DataDir::resolve(Some(Path::new("rel/dir"))).unwrap();
        assert!(d.path().is_absolute());
        assert!(d.path().ends_with("rel/dir"));
    }
}
