//! Images that ship compressed: `.xz` (lzma-rs), `.zst` (ruzstd), `.gz`
//! (flate2 on miniz_oxide) — all pure Rust, so no C library is linked.
//! The digest checked is the one of the file as published (compressed);
//! the image VMs use is the decompressed file, named by its own sha256.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use super::digest::{Algorithm, Digest, Hasher};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Xz,
    Zstd,
    Gzip,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
        }
    }

    fn magic(self) -> &'static [u8] {
        match self {
            Compression::Xz => &[0xfd, b'7', b'z', b'X', b'Z', 0],
            Compression::Zstd => &[0x28, 0xb5, 0x2f, 0xfd],
            Compression::Gzip => &[0x1f, 0x8b],
        }
    }

    /// What a file name's extension says.
    pub fn of_name(name: &str) -> Option<Compression> {
        let lower = name.to_ascii_lowercase();
        [
            (".xz", Compression::Xz),
            (".zst", Compression::Zstd),
            (".gz", Compression::Gzip),
        ]
        .into_iter()
        .find(|(ext, _)| lower.ends_with(ext))
        .map(|(_, c)| c)
    }
}

/// Whether the file starts the way `c` data does.
pub fn has_magic(path: &Path, c: Compression) -> std::io::Result<bool> {
    let mut head = [0u8; 6];
    let n = File::open(path)?.read(&mut head)?;
    Ok(head[..n].starts_with(c.magic()))
}

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    written: u64,
    /// The output's own failure (a decoder reports it like bad input).
    failed: Option<std::io::Error>,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = match self.inner.write(buf) {
            Ok(n) => n,
            Err(e) => {
                self.failed = Some(match e.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => e.kind().into(),
                });
                return Err(e);
            }
        };
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Decompresses `src` into `dst`; its size and sha256. Errors are the
/// decoder's message (corrupt data) or an I/O error of `dst`.
pub fn decompress(
    c: Compression,
    src: &Path,
    dst: &Path,
) -> Result<(u64, Digest), DecompressError> {
    let input = File::open(src).map_err(DecompressError::Read)?;
    let mut input = BufReader::with_capacity(1 << 20, input);
    let out = File::create(dst).map_err(DecompressError::Write)?;
    let mut w = HashingWriter {
        inner: std::io::BufWriter::with_capacity(1 << 20, out),
        hasher: Hasher::new(Algorithm::Sha256),
        written: 0,
        failed: None,
    };
    let data = |e: String| DecompressError::Data(e);
    match c {
        Compression::Xz => {
            if let Err(e) = lzma_rs::xz_decompress(&mut input, &mut w) {
                return Err(match w.failed.take() {
                    Some(io) => DecompressError::Write(io),
                    None => data(e.to_string()),
                });
            }
        }
        Compression::Gzip => {
            let mut d = flate2::bufread::MultiGzDecoder::new(input);
            copy(&mut d, &mut w)?;
        }
        Compression::Zstd => {
            // A file may hold several frames (`zstd -T0`): one decoder each.
            while !input.fill_buf().map_err(DecompressError::Read)?.is_empty() {
                let mut d = ruzstd::decoding::StreamingDecoder::new(&mut input)
                    .map_err(|e| data(e.to_string()))?;
                copy(&mut d, &mut w)?;
            }
        }
    }
    let mut out = w
        .inner
        .into_inner()
        .map_err(|e| DecompressError::Write(e.into_error()))?;
    out.flush().map_err(DecompressError::Write)?;
    out.sync_all().map_err(DecompressError::Write)?;
    Ok((w.written, w.hasher.finish()))
}

/// `io::copy` that tells a decoder's complaint from a write error.
fn copy(r: &mut impl Read, w: &mut impl Write) -> Result<(), DecompressError> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DecompressError::Data(e.to_string())),
        };
        w.write_all(&buf[..n]).map_err(DecompressError::Write)?;
    }
}

#[derive(Debug)]
pub enum DecompressError {
    Read(std::io::Error),
    Write(std::io::Error),
    /// The data is not valid for its format.
    Data(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Compresses with the system's tools where installed; decompressing
    /// must give the original bytes and their sha256.
    #[test]
    fn each_format_round_trips_through_the_system_tools() {
        let d = tempfile::tempdir().unwrap();
        let orig = d.path().join("disk.raw");
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        std::fs::write(&orig, &data).unwrap();
        let want = {
            let mut h = Hasher::new(Algorithm::Sha256);
            h.update(&data);
            h.finish()
        };
        let mut tried = 0;
        for (tool, args, c) in [
            ("xz", &["-k", "-T2"][..], Compression::Xz),
            ("zstd", &["-q", "-k"][..], Compression::Zstd),
            ("gzip", &["-k"][..], Compression::Gzip),
        ] {
            let ok = Command::new(tool)
                .args(args)
                .arg(&orig)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                continue;
            }
            tried += 1;
            let ext = match c {
                Compression::Xz => "xz",
                Compression::Zstd => "zst",
                Compression::Gzip => "gz",
            };
            let packed = d.path().join(format!("disk.raw.{ext}"));
            assert_eq!(Compression::of_name(&packed.to_string_lossy()), Some(c));
            assert!(has_magic(&packed, c).unwrap());
            let out = d.path().join(format!("out-{ext}"));
            let (size, digest) = decompress(c, &packed, &out).unwrap();
            assert_eq!(size, data.len() as u64, "{tool}");
            assert_eq!(digest, want, "{tool}");
            assert_eq!(std::fs::read(&out).unwrap(), data, "{tool}");
            // Damaged data is the decoder's error, not a panic.
            let mut bad = std::fs::read(&packed).unwrap();
            let mid = bad.len() / 2;
            bad[mid] ^= 0xff;
            bad.truncate(mid + 10);
            std::fs::write(&packed, bad).unwrap();
            assert!(
                matches!(decompress(c, &packed, &out), Err(DecompressError::Data(_))),
                "{tool}"
            );
            std::fs::remove_file(&packed).unwrap();
        }
        assert!(tried >= 1, "gzip at least is installed");
        assert_eq!(Compression::of_name("x.qcow2"), None);
    }
}
