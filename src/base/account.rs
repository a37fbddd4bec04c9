//! The user database entry (name, home) of a user id, through NSS.
//!
//! The one `getpwuid_r` call of maqet: neither std nor rustix asks NSS,
//! and reading /etc/passwd by hand would miss LDAP, SSSD and
//! systemd-homed users.

use std::ffi::CStr;
use std::path::PathBuf;

/// A user's login name and home directory as the user database has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub home: PathBuf,
}

/// Where the string buffer for one entry stops growing: no real entry
/// comes near it.
const MAX_BUFFER: usize = 1 << 20;

/// The entry of `uid`, or None when the user database has none (or cannot
/// be asked).
pub fn lookup(uid: u32) -> Option<Account> {
    let mut buf = vec![0u8; 1024];
    loop {
        let mut entry = std::mem::MaybeUninit::<libc::passwd>::uninit();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `entry` and `found`
        // are ours to write, `buf` is writable for `buf.len()` bytes.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                entry.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < MAX_BUFFER {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || found.is_null() {
            return None;
        }
        // SAFETY: on success `found` points at `entry`, whose strings are
        // NUL-terminated in `buf` (or null), both alive here; they are
        // copied out before either goes away.
        let (name, home) = unsafe {
            let pw = &*found;
            let text = |p: *const libc::c_char| {
                (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
            };
            (text(pw.pw_name)?, text(pw.pw_dir).unwrap_or_default())
        };
        return Some(Account {
            name,
            home: PathBuf::from(home),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_in_every_user_database() {
        let root = lookup(0).expect("uid 0 has an entry");
        assert_eq!(root.name, "root");
        assert!(root.home.is_absolute(), "{root:?}");
    }

    #[test]
    fn an_unused_uid_has_no_entry() {
        // 2^32-2 is "nobody" on no system; -1 is the invalid uid.
        assert_eq!(lookup(u32::MAX - 1), None);
    }
}
