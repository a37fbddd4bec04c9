//! Text for messages: "did you mean" suggestions for misspelt keys and
//! values, and excerpts of long input.

/// Edit distance counting a swap of two neighbours as one edit
/// (`memroy` → `memory` is 1), so common typos are caught.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

/// The closest candidate, if it is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word_l = word.to_ascii_lowercase().replace('-', "_");
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (distance(&word_l, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean 'x'?)` or nothing.
pub fn hint(word: &str, candidates: &[&str]) -> String {
    closest(word, candidates)
        .map(|c| format!(" (did you mean '{c}'?)"))
        .unwrap_or_default()
}

/// `text` cut to at most `max` bytes (on a char boundary) for echoing
/// client input in an error message: a 1 MiB method name is not repeated.
pub fn excerpt(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("memroy", "memory"), 1);
        assert_eq!(distance("cpu", "cpus"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggestions() {
        let keys = ["memory", "cpu", "storage", "arguments", "enable_kvm"];
        assert_eq!(closest("memroy", &keys), Some("memory"));
        assert_eq!(closest("Memory", &keys), Some("memory"));
        assert_eq!(closest("enable-kvm", &keys), Some("enable_kvm"));
        assert_eq!(closest("argument", &keys), Some("arguments"));
        assert_eq!(closest("zzz", &keys), None);
        assert_eq!(hint("zzz", &keys), "");
        assert_eq!(hint("storag", &keys), " (did you mean 'storage'?)");
    }
}
