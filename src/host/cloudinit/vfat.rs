//! Writing a NoCloud seed as a VFAT volume labelled `cidata`, in pure Rust
//! (`fatfs`): no mkfs, no loop device, nothing that needs root.

use std::fs::File;
use std::io::Write;

/// Big enough for any sensible seed, small enough to be written in a blink.
const VOLUME_BYTES: u64 = 2 * 1024 * 1024;
/// What NoCloud looks for (cloud-init compares it case-insensitively).
const LABEL: [u8; 11] = *b"cidata     ";

/// Writes a fresh volume into the empty file `f` holding `files`.
pub fn write_volume(f: &mut File, files: &[(&str, &[u8])]) -> std::io::Result<()> {
    let total: usize = files.iter().map(|(_, b)| b.len()).sum();
    if total as u64 > VOLUME_BYTES / 2 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the seed's files are {total} bytes; at most {} fit",
                VOLUME_BYTES / 2
            ),
        ));
    }
    f.set_len(VOLUME_BYTES)?;
    fatfs::format_volume(
        &mut *f,
        fatfs::FormatVolumeOptions::new().volume_label(LABEL),
    )?;
    {
        let fs = fatfs::FileSystem::new(&mut *f, fatfs::FsOptions::new())?;
        {
            let root = fs.root_dir();
            for (name, bytes) in files {
                let mut file = root.create_file(name)?;
                file.truncate()?;
                file.write_all(bytes)?;
                file.flush()?;
            }
        }
        fs.unmount()?;
    }
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn volume_round_trips_with_label() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seed.img");
        let mut w = std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&p)
            .unwrap();
        write_volume(
            &mut w,
            &[
                ("meta-data", b"instance-id: x\n"),
                ("user-data", b"#cloud-config\n"),
            ],
        )
        .unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let fs = fatfs::FileSystem::new(f, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label().trim_end(), "cidata");
        let mut s = String::new();
        fs.root_dir()
            .open_file("meta-data")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "instance-id: x\n");
        let big = vec![0u8; 2 << 20];
        assert!(write_volume(&mut w, &[("user-data", &big)]).is_err());
    }
}
