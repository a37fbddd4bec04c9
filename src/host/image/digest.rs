//! Content digests as the catalog, checksum files and the cache write
//! them: `sha256:HEX` / `sha512:HEX`, and a hasher for either.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the digest in hex digits.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// The algorithm whose digests have `len` hex digits.
    pub fn of_hex_len(len: usize) -> Option<Algorithm> {
        match len {
            64 => Some(Algorithm::Sha256),
            128 => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

/// A digest: algorithm and lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    pub alg: Algorithm,
    pub hex: String,
}

impl Digest {
    /// `hex` (any case) of `alg`, if it has the right length and digits.
    pub fn new(alg: Algorithm, hex: &str) -> Option<Digest> {
        (hex.len() == alg.hex_len() && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Digest {
            alg,
            hex: hex.to_ascii_lowercase(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg.name(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = String;

    /// `sha256:HEX` or `sha512:HEX`; the message says what is wrong.
    fn from_str(s: &str) -> Result<Digest, String> {
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(format!(
                "'{s}' is not a digest: write sha256:HEX or sha512:HEX"
            ));
        };
        let alg = match alg.to_ascii_lowercase().as_str() {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => {
                return Err(format!(
                    "unknown digest algorithm '{other}' (maqet checks sha256 and sha512)"
                ))
            }
        };
        Digest::new(alg, hex).ok_or_else(|| {
            format!(
                "a {} digest is {} hexadecimal digits, not '{hex}'",
                alg.name(),
                alg.hex_len()
            )
        })
    }
}

/// Hashes with one algorithm.
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(alg: Algorithm) -> Hasher {
        match alg {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        let (alg, bytes) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            Hasher::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        Digest {
            alg,
            hex: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// The sha256 of the data plus, when the expected digest is another
/// algorithm, that one too (the cache names data by sha256; a sha512 from
/// a checksum file is checked as well, in the same pass).
pub struct Hashers {
    sha256: Hasher,
    other: Option<Hasher>,
}

impl Hashers {
    pub fn new(also: Option<Algorithm>) -> Hashers {
        Hashers {
            sha256: Hasher::new(Algorithm::Sha256),
            other: also.filter(|a| *a != Algorithm::Sha256).map(Hasher::new),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        if let Some(h) = &mut self.other {
            h.update(data);
        }
    }

    /// The sha256, and the digest of `alg` (the sha256 again when that is `alg`).
    pub fn finish(self) -> (Digest, Option<Digest>) {
        let sha = self.sha256.finish();
        let other = self.other.map(Hasher::finish);
        (sha, other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_and_print() {
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let d: Digest = format!("SHA256:{}", hex.to_uppercase()).parse().unwrap();
        assert_eq!(d.to_string(), format!("sha256:{hex}"));
        assert!("md5:abc".parse::<Digest>().unwrap_err().contains("unknown"));
        assert!("sha512:abc".parse::<Digest>().unwrap_err().contains("128"));
        assert!("abc".parse::<Digest>().unwrap_err().contains("sha256:HEX"));
    }

    #[test]
    fn hashers_give_known_values() {
        let mut h = Hashers::new(Some(Algorithm::Sha512));
        h.update(b"ab");
        h.update(b"c");
        let (sha256, sha512) = h.finish();
        assert_eq!(
            sha256.hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(sha512.unwrap().hex.starts_with("ddaf35a193617aba"));
        let (_, none) = Hashers::new(Some(Algorithm::Sha256)).finish();
        assert!(none.is_none());
    }
}
