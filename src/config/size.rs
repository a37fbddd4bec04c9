//! Size syntaxes. Two are needed because QEMU's differ: a disk size
//! (`qemu-img create`, also systemd's `MemoryMax`) counts a bare number in
//! bytes, while `-m` counts a bare number in MiB. Suffixes are binary
//! (K = 1024) in both.

/// A size that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("invalid size '{0}' (use digits with an optional K, M, G or T suffix, e.g. 10G)")]
    Syntax(String),
    #[error("invalid memory size '{0}' (use a number of MiB, or a number with a K, M, G or T suffix, e.g. 512M or 2G)")]
    MemorySyntax(String),
    #[error("size '{0}' is too large")]
    Overflow(String),
    #[error("size '{0}' must be greater than zero")]
    Zero(String),
}

fn multiplier(suffix: char) -> Option<u64> {
    Some(match suffix.to_ascii_uppercase() {
        'B' => 1,
        'K' => 1 << 10,
        'M' => 1 << 20,
        'G' => 1 << 30,
        'T' => 1 << 40,
        'P' => 1 << 50,
        'E' => 1 << 60,
        _ => return None,
    })
}

/// A disk size as the original accepted it, `^\d+[KMGT]?$` ignoring case;
/// a bare number is bytes. Returns bytes.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let syntax = || SizeError::Syntax(s.to_string());
    let (digits, mult) = match s.chars().last() {
        Some(c) if "KMGTkmgt".contains(c) => (&s[..s.len() - 1], multiplier(c).unwrap_or(1)),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax());
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| SizeError::Overflow(s.to_string()))?;
    n.checked_mul(mult)
        .ok_or_else(|| SizeError::Overflow(s.to_string()))
}

/// A size in QEMU's `-m` syntax: `512` (MiB), `512M`, `1G`, `1.5G`, `2048K`,
/// `1073741824B`. Returns bytes; zero is refused.
pub fn parse_memory(s: &str) -> Result<u64, SizeError> {
    let syntax = || SizeError::MemorySyntax(s.to_string());
    let (number, mult) = match s.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            (&s[..s.len() - 1], multiplier(c).ok_or_else(syntax)?)
        }
        _ => (s, 1 << 20),
    };
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty()
        || !all_digits(int_part)
        || !all_digits(frac_part)
        || (number.contains('.') && frac_part.is_empty())
    {
        return Err(syntax());
    }
    let whole: u64 = int_part
        .parse()
        .map_err(|_| SizeError::Overflow(s.to_string()))?;
    let mut bytes = whole
        .checked_mul(mult)
        .ok_or_else(|| SizeError::Overflow(s.to_string()))?;
    if !frac_part.is_empty() {
        // Exact enough: at most 18 fractional digits are significant here.
        let digits = &frac_part[..frac_part.len().min(18)];
        let frac: u128 = digits.parse().map_err(|_| syntax())?;
        let scale = 10u128.pow(digits.len() as u32);
        bytes = bytes
            .checked_add((frac * mult as u128 / scale) as u64)
            .ok_or_else(|| SizeError::Overflow(s.to_string()))?;
    }
    if bytes == 0 {
        return Err(SizeError::Zero(s.to_string()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("4k"), Ok(4096));
        for bad in ["", "G", "10Q", "1.5G", "-1G", "10 G", "10GB", "0x10"] {
            assert_eq!(parse_size(bad), Err(SizeError::Syntax(bad.into())), "{bad}");
        }
        assert!(matches!(
            parse_size("99999999999999999999"),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(
            parse_size("17179869184T"),
            Err(SizeError::Overflow(_))
        ));
        assert_eq!(
            SizeError::Syntax("10Q".into()).to_string(),
            "invalid size '10Q' (use digits with an optional K, M, G or T suffix, e.g. 10G)"
        );
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512"), Ok(512 << 20));
        assert_eq!(parse_memory("256M"), Ok(256 << 20));
        assert_eq!(parse_memory("1G"), Ok(1 << 30));
        assert_eq!(parse_memory("1.5G"), Ok(3 << 29));
        assert_eq!(parse_memory("2048k"), Ok(2 << 20));
        assert_eq!(parse_memory("1073741824B"), Ok(1 << 30));
        for bad in ["lots", "", "1.G", ".5G", "1Q", "1 G", "-1"] {
            assert!(
                matches!(parse_memory(bad), Err(SizeError::MemorySyntax(_))),
                "{bad}"
            );
        }
        assert_eq!(parse_memory("0"), Err(SizeError::Zero("0".into())));
    }
}
