//! The one `access(2)` helper: whether this process (its real uid, as the
//! kernel checks it, read-only mounts included) may read, write or run a
//! path. Through rustix, so no `unsafe` is needed.

use std::path::Path;

pub use rustix::fs::Access;

/// Whether `access(2)` allows `mode` on `p` (false for any error).
pub fn allowed(p: &Path, mode: Access) -> bool {
    rustix::fs::access(p, mode).is_ok()
}
