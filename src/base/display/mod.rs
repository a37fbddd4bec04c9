//! The graphical display of a VM: a VNC or SPICE server on a Unix socket
//! in the VM's runtime directory (never TCP), its URI, and the viewers
//! that can open it.

use std::path::{Path, PathBuf};

/// `display: vnc` or `display: spice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayServer {
    Vnc,
    Spice,
}

/// A viewer program and how it is given the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub program: &'static str,
    /// The Debian package that provides it, for hints.
    pub package: &'static str,
    pub servers: &'static [DisplayServer],
}

/// Viewers in order of preference; the first one installed is used.
pub const VIEWERS: &[Viewer] = &[
    Viewer {
        program: "remote-viewer",
        package: "virt-viewer",
        servers: &[DisplayServer::Vnc, DisplayServer::Spice],
    },
    Viewer {
        program: "vncviewer",
        package: "tigervnc-viewer",
        servers: &[DisplayServer::Vnc],
    },
    Viewer {
        program: "spicy",
        package: "spice-client-gtk",
        servers: &[DisplayServer::Spice],
    },
];

impl DisplayServer {
    /// From a `display:` value; other values pass through to `-display`.
    pub fn from_config(value: &str) -> Option<DisplayServer> {
        match value {
            "vnc" => Some(DisplayServer::Vnc),
            "spice" => Some(DisplayServer::Spice),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DisplayServer::Vnc => "vnc",
            DisplayServer::Spice => "spice",
        }
    }

    /// The socket's path in the VM's runtime directory.
    pub fn socket(self, runtime_dir: &Path) -> PathBuf {
        runtime_dir.join(format!("{}.sock", self.as_str()))
    }

    /// QEMU options serving the display on `socket` (QEMU creates it; the
    /// runtime directory is 0700 and the runner makes the socket 0600).
    /// No `-display`: with a remote display QEMU opens no local window.
    pub fn qemu_args(self, socket: &Path) -> Vec<String> {
        let path = socket.to_string_lossy().replace(',', ",,");
        match self {
            DisplayServer::Vnc => vec!["-vnc".into(), format!("unix:{path}")],
            // A Unix socket is reachable only by this user: no ticket needed.
            DisplayServer::Spice => vec![
                "-spice".into(),
                format!("unix=on,addr={path},disable-ticketing=on"),
            ],
        }
    }

    /// The URI remote-viewer understands.
    pub fn uri(self, socket: &Path) -> String {
        format!("{}+unix://{}", self.as_str(), socket.display())
    }
}

impl Viewer {
    /// The argv that opens `socket` (the program path first).
    pub fn argv(&self, program: &Path, server: DisplayServer, socket: &Path) -> Vec<String> {
        let p = program.to_string_lossy().into_owned();
        match self.program {
            "spicy" => vec![p, format!("--uri={}", server.uri(socket))],
            // TigerVNC takes a socket path as the server name.
            "vncviewer" => vec![p, socket.to_string_lossy().into_owned()],
            _ => vec![p, server.uri(socket)],
        }
    }
}

/// The first installed viewer for `server` (PATH searched), with its path.
pub fn find_viewer(server: DisplayServer) -> Option<(&'static Viewer, PathBuf)> {
    VIEWERS
        .iter()
        .filter(|v| v.servers.contains(&server))
        .find_map(|v| crate::programs::find_in_path(v.program).map(|p| (v, p)))
}

/// "install virt-viewer (remote-viewer) or …" for messages.
pub fn install_hint(server: Option<DisplayServer>) -> String {
    let names: Vec<String> = VIEWERS
        .iter()
        .filter(|v| server.is_none_or(|s| v.servers.contains(&s)))
        .map(|v| format!("{} ({})", v.package, v.program))
        .collect();
    format!("install {}", names.join(" or "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_args_and_uris() {
        let rt = Path::new("/run/user/1/maqet/vm/web");
        let s = DisplayServer::Vnc.socket(rt);
        assert_eq!(s, Path::new("/run/user/1/maqet/vm/web/vnc.sock"));
        assert_eq!(
            DisplayServer::Vnc.qemu_args(&s),
            vec!["-vnc", "unix:/run/user/1/maqet/vm/web/vnc.sock"]
        );
        let sp = DisplayServer::Spice.socket(Path::new("/r/a,b"));
        assert_eq!(
            DisplayServer::Spice.qemu_args(&sp)[1],
            "unix=on,addr=/r/a,,b/spice.sock,disable-ticketing=on"
        );
        assert_eq!(
            DisplayServer::Spice.uri(&sp),
            "spice+unix:///r/a,b/spice.sock"
        );
        assert_eq!(DisplayServer::from_config("gtk"), None);
        assert_eq!(
            DisplayServer::from_config("spice"),
            Some(DisplayServer::Spice)
        );
    }

    #[test]
    fn viewer_argv_and_hints() {
        let s = Path::new("/r/vnc.sock");
        let tiger = &VIEWERS[1];
        assert_eq!(
            tiger.argv(Path::new("/usr/bin/vncviewer"), DisplayServer::Vnc, s),
            vec!["/usr/bin/vncviewer", "/r/vnc.sock"]
        );
        assert_eq!(
            VIEWERS[0].argv(Path::new("rv"), DisplayServer::Vnc, s),
            vec!["rv", "vnc+unix:///r/vnc.sock"]
        );
        let h = install_hint(Some(DisplayServer::Spice));
        assert!(
            h.contains("virt-viewer") && h.contains("spice-client-gtk") && !h.contains("tigervnc")
        );
    }
}
