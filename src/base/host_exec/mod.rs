//! What makes QEMU run a program or load a plugin on the host — or take
//! commands past maqet's QMP policy — read the way QEMU 7.2 reads its
//! options and QMP arguments. One home for both places that ask: the
//! runner's QMP policy (`runner/policy.rs`) and the config checks at
//! `add`/`apply`/start (`config`, for `arguments`, `args` and `display`).
//!
//! Allow-lists, not lists of bad values: network backend types, tap
//! options, block drivers and file-name protocols, audio drivers and
//! `-set` groups that can run nothing are listed; anything else — a new
//! QEMU's backend, a plugin of libvdeplug, a spelling maqet never saw —
//! is refused until the VM's config sets `qmp_allow_host_exec: true`.
//! Values are read as QEMU reads them: no trimming, no case folding where
//! QEMU does none (`script= no` runs " no"), JSON where QEMU accepts it,
//! every copy of a repeated key.
//!
//! Pure functions over strings and JSON: nothing here touches the host.

mod block;
mod cmdline;
mod netdev;
mod opts;
mod qmp;

use serde_json::Value;

/// The config key that lets everything here through.
pub const OPT_OUT_KEY: &str = "qmp_allow_host_exec";

/// What is outside the policy and why: "netdev type 'vde': …".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding(pub String);

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a QEMU command line is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `words[word]` (an option, or a word QEMU takes as an image), with
    /// its value when `valued` (the next word), makes QEMU run a host
    /// program or take unchecked commands.
    Runs {
        word: usize,
        valued: bool,
        finding: Finding,
    },
    /// `words[word]` is an option that takes a value, and no word follows:
    /// QEMU would take its value from whatever comes next on the command
    /// line, out of maqet's sight.
    NoValue { word: usize, option: String },
}

/// Checks one QMP command's arguments: `Some` when QEMU would run a host
/// program for them.
pub fn qmp_command(command: &str, arguments: Option<&Value>) -> Option<Finding> {
    qmp::check(command, arguments)
}

/// Checks a group of QEMU command-line words (an `args` list, one
/// rendered `arguments` item) as QEMU 7.2 parses them.
pub fn command_line(words: &[String]) -> Result<(), Refusal> {
    cmdline::check(words)
}

/// A descriptor number or an `fd`-typed socket address anywhere in `p`:
/// QEMU would take a descriptor of its own, and the only ones it has are
/// maqet's QMP and console channels (`getfd`/`add-fd` are refused, so no
/// name can stand for another).
fn own_descriptor(p: &opts::Pairs) -> Option<Finding> {
    let fd_key = |k: &str| {
        matches!(
            opts::last_name(k),
            "fd" | "fds" | "vhostfd" | "vhostfds" | "sock_fd"
        )
    };
    p.iter()
        .find(|(k, v)| {
            fd_key(k) || (k.ends_with("type") && k.contains('.') && v.as_str() == Some("fd"))
        })
        .map(|(k, _)| {
            Finding(format!(
                "'{}': QEMU would take one of its own file descriptors (maqet's QMP and console channels)",
                shown(k)
            ))
        })
}

/// QEMU matches `exec:` exactly; refusing any case and leading blanks
/// costs nothing and does not depend on that.
fn is_exec_uri(uri: &str) -> bool {
    uri.trim_start()
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("exec:"))
}

/// At most 64 bytes of something the caller wrote, for messages.
fn shown(s: &str) -> String {
    crate::suggest::excerpt(s, 64)
}
