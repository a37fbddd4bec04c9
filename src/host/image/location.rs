//! Where an image (or its checksum file) comes from: an `https://` or
//! `http://` URL, or a local file (`file://` URL or path, for air-gapped
//! mirrors). The text of a location is the cache's key.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// An `http://` or `https://` URL, as written.
    Url(String),
    /// An absolute local path.
    File(PathBuf),
}

impl Location {
    /// Parses `s`: a URL, a `file://` URL, or a path (a relative one is
    /// taken from `base`, the directory of the file that names it).
    pub fn parse(s: &str, base: &Path) -> Result<Location, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("an empty location".into());
        }
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("https://") || lower.starts_with("http://") {
            let rest = &s[s.find("://").expect("checked") + 3..];
            if rest.is_empty() || rest.starts_with('/') {
                return Err(format!("'{s}' has no host"));
            }
            if s.chars().any(char::is_whitespace) {
                return Err(format!("'{s}' contains white space; write it as %20"));
            }
            return Ok(Location::Url(s.to_string()));
        }
        if let Some(path) = lower.strip_prefix("file://").map(|_| &s[7..]) {
            if !path.starts_with('/') {
                return Err(format!(
                    "'{s}': a file URL names an absolute path (file:///dir/image.qcow2)"
                ));
            }
            return Ok(Location::File(percent_decode(path).into()));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(format!(
                "'{s}': unsupported scheme '{scheme}' (use https://, http://, file:// or a path)"
            ));
        }
        let p = Path::new(s);
        Ok(Location::File(maqet_config::normalize(
            &if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            },
        )))
    }

    /// `https`, `http` or `file`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Location::Url(u) if u[..5].eq_ignore_ascii_case("https") => "https",
            Location::Url(_) => "http",
            Location::File(_) => "file",
        }
    }

    /// The last path segment (what checksum files name), query and
    /// fragment removed.
    pub fn file_name(&self) -> String {
        match self {
            Location::Url(u) => {
                let path = u.split(['?', '#']).next().unwrap_or(u);
                percent_decode(path.rsplit('/').next().unwrap_or(""))
            }
            Location::File(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    /// A location beside this one (`SHA256SUMS` in the same directory).
    pub fn sibling(&self, name: &str) -> Location {
        match self {
            Location::Url(u) => {
                let path = u.split(['?', '#']).next().unwrap_or(u);
                let dir = &path[..path.rfind('/').map_or(path.len(), |i| i + 1)];
                Location::Url(format!("{dir}{name}"))
            }
            Location::File(p) => Location::File(p.with_file_name(name)),
        }
    }

    /// This location with `suffix` appended (`FILE.sha512`).
    pub fn with_suffix(&self, suffix: &str) -> Location {
        match self {
            Location::Url(u) => Location::Url(format!("{u}{suffix}")),
            Location::File(p) => {
                let mut s = p.clone().into_os_string();
                s.push(suffix);
                Location::File(s.into())
            }
        }
    }

    /// Whether `other` is this location plus a suffix (a checksum file
    /// of this one file).
    pub fn is_prefix_of(&self, other: &Location) -> bool {
        let (a, b) = (self.to_string(), other.to_string());
        b.len() > a.len() && b.starts_with(&a)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Url(u) => f.write_str(u),
            Location::File(p) => write!(f, "file://{}", p.display()),
        }
    }
}

/// `%XX` escapes decoded (invalid ones kept as written).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_files_and_paths() {
        let base = Path::new("/etc/maqet/images.d");
        let u = Location::parse("https://h.example/a/b%20c.qcow2?x=1", base).unwrap();
        assert_eq!(u.scheme(), "https");
        assert_eq!(u.file_name(), "b c.qcow2");
        assert_eq!(
            u.sibling("SHA256SUMS").to_string(),
            "https://h.example/a/SHA256SUMS"
        );
        assert_eq!(
            Location::parse("file:///srv/m/x.qcow2", base).unwrap(),
            Location::File("/srv/m/x.qcow2".into())
        );
        assert_eq!(
            Location::parse("../mirror/x.qcow2", base).unwrap(),
            Location::File("/etc/maqet/mirror/x.qcow2".into())
        );
        let f = Location::parse("/srv/x.qcow2", base).unwrap();
        assert_eq!(f.scheme(), "file");
        assert_eq!(f.to_string(), "file:///srv/x.qcow2");
        assert!(f.is_prefix_of(&f.with_suffix(".sha256")));
        assert!(Location::parse("ftp://h/x", base)
            .unwrap_err()
            .contains("unsupported scheme 'ftp'"));
        assert!(Location::parse("file://rel/x", base).is_err());
        assert!(Location::parse("https:///x", base).is_err());
    }
}
