//! Base images (issue 11): a disk's `base:` is checked against its
//! `sha256:` before the first overlay is made on it, so a corrupted or
//! swapped download never becomes a VM's disk. The base itself is only
//! ever read (qemu-img records it as the overlay's backing file with `-F`).

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use maqet_config::VmConfig;

#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error("storage '{disk}': base image {} has sha256 {actual}, but the config expects {expected}; the file is not the image you named (re-download it, or fix sha256:)", path.display())]
    Mismatch {
        disk: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("storage '{disk}': cannot read base image {}: {source}", path.display())]
    Read {
        disk: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    // A FIFO would block the start that checks it; a device is no image.
    let mut f = maqet_base::files::open_image(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks the digest of every base whose overlay does not exist yet (its
/// first use). An existing overlay was checked when it was made.
pub fn verify_bases(cfg: &VmConfig, disk_dir: &Path) -> Result<(), BaseError> {
    for e in cfg.storage() {
        let (Some(expected), Some(base)) = (&e.base_sha256, e.backing_path(disk_dir)) else {
            continue;
        };
        if e.path(disk_dir).exists() {
            continue;
        }
        let actual = sha256_file(&base).map_err(|source| BaseError::Read {
            disk: e.name.clone(),
            path: base.clone(),
            source,
        })?;
        if &actual != expected {
            return Err(BaseError::Mismatch {
                disk: e.name.clone(),
                path: base,
                expected: expected.clone(),
                actual,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
