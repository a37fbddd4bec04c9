//! Key names for QMP `send-key`: QEMU's qcodes, checked here so a typo is
//! caught (with a suggestion) before anything reaches the guest, and the US
//! keyboard layout that turns text into key combinations for `qmp type`.

/// QEMU's `QKeyCode` values (QEMU 7.2's list; `unmapped` left out: it is no key).
pub const QCODES: &[&str] = &[
    "shift",
    "shift_r",
    "alt",
    "alt_r",
    "ctrl",
    "ctrl_r",
    "menu",
    "esc",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "0",
    "minus",
    "equal",
    "backspace",
    "tab",
    "q",
    "w",
    "e",
    "r",
    "t",
    "y",
    "u",
    "i",
    "o",
    "p",
    "bracket_left",
    "bracket_right",
    "ret",
    "a",
    "s",
    "d",
    "f",
    "g",
    "h",
    "j",
    "k",
    "l",
    "semicolon",
    "apostrophe",
    "grave_accent",
    "backslash",
    "z",
    "x",
    "c",
    "v",
    "b",
    "n",
    "m",
    "comma",
    "dot",
    "slash",
    "asterisk",
    "spc",
    "caps_lock",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "f6",
    "f7",
    "f8",
    "f9",
    "f10",
    "num_lock",
    "scroll_lock",
    "kp_divide",
    "kp_multiply",
    "kp_subtract",
    "kp_add",
    "kp_enter",
    "kp_decimal",
    "sysrq",
    "kp_0",
    "kp_1",
    "kp_2",
    "kp_3",
    "kp_4",
    "kp_5",
    "kp_6",
    "kp_7",
    "kp_8",
    "kp_9",
    "less",
    "f11",
    "f12",
    "print",
    "home",
    "pgup",
    "pgdn",
    "end",
    "left",
    "up",
    "down",
    "right",
    "insert",
    "delete",
    "stop",
    "again",
    "props",
    "undo",
    "front",
    "copy",
    "open",
    "paste",
    "find",
    "cut",
    "lf",
    "help",
    "meta_l",
    "meta_r",
    "compose",
    "pause",
    "ro",
    "hiragana",
    "henkan",
    "yen",
    "muhenkan",
    "katakanahiragana",
    "kp_comma",
    "kp_equals",
    "power",
    "sleep",
    "wake",
    "audionext",
    "audioprev",
    "audiostop",
    "audioplay",
    "audiomute",
    "volumeup",
    "volumedown",
    "mediaselect",
    "mail",
    "calculator",
    "computer",
    "ac_home",
    "ac_back",
    "ac_forward",
    "ac_refresh",
    "ac_bookmarks",
    "lang1",
    "lang2",
];

/// Everyday names people type for keys whose qcode is spelt differently.
pub const ALIASES: &[(&str, &str)] = &[
    ("enter", "ret"),
    ("return", "ret"),
    ("space", "spc"),
    ("escape", "esc"),
    ("control", "ctrl"),
    ("del", "delete"),
    ("ins", "insert"),
    ("pageup", "pgup"),
    ("pagedown", "pgdn"),
    ("super", "meta_l"),
    ("win", "meta_l"),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("unknown key '{name}'{}; key names are QEMU qcodes (a–z, 0–9, f1–f12, ctrl, alt, shift, ret, spc, tab, esc, delete, …; see docs/guest-interaction.md)", suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default())]
    Unknown {
        name: String,
        suggestion: Option<String>,
    },
    #[error("character {} at position {position} cannot be typed with the US keyboard layout (letters, digits, ASCII punctuation, space, tab and newline can); nothing was sent", describe_char(*ch))]
    Untypable { ch: char, position: usize },
    #[error("no keys given")]
    Empty,
}

fn describe_char(c: char) -> String {
    if c.is_control() {
        format!("U+{:04X}", c as u32)
    } else {
        format!("'{c}' (U+{:04X})", c as u32)
    }
}

/// The qcode for a key name: a qcode itself or an alias, case-insensitive.
pub fn qcode(name: &str) -> Result<&'static str, KeyError> {
    let lower = name.to_ascii_lowercase();
    if let Some(q) = QCODES.iter().find(|q| **q == lower) {
        return Ok(q);
    }
    if let Some((_, q)) = ALIASES.iter().find(|(a, _)| *a == lower) {
        return Ok(q);
    }
    let mut candidates: Vec<&str> = QCODES.to_vec();
    candidates.extend(ALIASES.iter().map(|(a, _)| *a));
    Err(KeyError::Unknown {
        name: name.to_string(),
        suggestion: maqet_base::suggest::closest(name, &candidates).map(str::to_string),
    })
}

/// The qcodes of one combination (pressed together), in the given order.
pub fn combination(names: &[String]) -> Result<Vec<&'static str>, KeyError> {
    if names.is_empty() {
        return Err(KeyError::Empty);
    }
    names.iter().map(|n| qcode(n)).collect()
}

/// The keys that type `c` on a US keyboard: the base key, with `shift` first
/// when the character needs it.
pub fn us_keys(c: char) -> Option<Vec<&'static str>> {
    let unshifted = |k: &'static str| Some(vec![k]);
    let shifted = |k: &'static str| Some(vec!["shift", k]);
    match c {
        'a'..='z' | '0'..='9' => {
            let s = c.to_string();
            QCODES.iter().find(|q| **q == s).map(|q| vec![*q])
        }
        'A'..='Z' => us_keys(c.to_ascii_lowercase()).map(|mut v| {
            v.insert(0, "shift");
            v
        }),
        '\n' | '\r' => unshifted("ret"),
        ' ' => unshifted("spc"),
        '\t' => unshifted("tab"),
        '`' => unshifted("grave_accent"),
        '-' => unshifted("minus"),
        '=' => unshifted("equal"),
        '[' => unshifted("bracket_left"),
        ']' => unshifted("bracket_right"),
        '\\' => unshifted("backslash"),
        ';' => unshifted("semicolon"),
        '\'' => unshifted("apostrophe"),
        ',' => unshifted("comma"),
        '.' => unshifted("dot"),
        '/' => unshifted("slash"),
        '~' => shifted("grave_accent"),
        '!' => shifted("1"),
        '@' => shifted("2"),
        '#' => shifted("3"),
        '$' => shifted("4"),
        '%' => shifted("5"),
        '^' => shifted("6"),
        '&' => shifted("7"),
        '*' => shifted("8"),
        '(' => shifted("9"),
        ')' => shifted("0"),
        '_' => shifted("minus"),
        '+' => shifted("equal"),
        '{' => shifted("bracket_left"),
        '}' => shifted("bracket_right"),
        '|' => shifted("backslash"),
        ':' => shifted("semicolon"),
        '"' => shifted("apostrophe"),
        '<' => shifted("comma"),
        '>' => shifted("dot"),
        '?' => shifted("slash"),
        _ => None,
    }
}

/// Text → one key combination per character (`\r\n` is one Enter). Fails on
/// the first character a US keyboard cannot type, before anything is sent.
pub fn text_to_keys(text: &str) -> Result<Vec<Vec<&'static str>>, KeyError> {
    let mut out = Vec::with_capacity(text.len());
    let mut prev_cr = false;
    for (position, c) in text.chars().enumerate() {
        if c == '\n' && prev_cr {
            prev_cr = false;
            continue;
        }
        prev_cr = c == '\r';
        out.push(us_keys(c).ok_or(KeyError::Untypable { ch: c, position })?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_and_suggestions() {
        assert_eq!(qcode("ret"), Ok("ret"));
        assert_eq!(qcode("F1"), Ok("f1"));
        assert_eq!(qcode("Enter"), Ok("ret"));
        assert_eq!(qcode("space"), Ok("spc"));
        match qcode("shfit") {
            Err(KeyError::Unknown { suggestion, .. }) => {
                assert_eq!(suggestion.as_deref(), Some("shift"))
            }
            other => panic!("{other:?}"),
        }
        match qcode("ctrl-r") {
            Err(KeyError::Unknown { suggestion, .. }) => {
                assert_eq!(suggestion.as_deref(), Some("ctrl_r"))
            }
            other => panic!("{other:?}"),
        }
        let e = qcode("xyzzyplugh").unwrap_err();
        assert!(e.to_string().contains("unknown key 'xyzzyplugh'"), "{e}");
        assert!(!e.to_string().contains("did you mean"), "{e}");
        assert_eq!(
            combination(&["ctrl".into(), "alt".into(), "Delete".into()]),
            Ok(vec!["ctrl", "alt", "delete"])
        );
        assert_eq!(combination(&[]), Err(KeyError::Empty));
    }

    #[test]
    fn every_qcode_is_unique_and_aliases_resolve() {
        let mut seen = std::collections::HashSet::new();
        for q in QCODES {
            assert!(seen.insert(q), "duplicate {q}");
        }
        for (a, q) in ALIASES {
            assert!(QCODES.contains(q), "alias {a} → {q}");
            assert!(!QCODES.contains(a), "alias {a} shadows a qcode");
        }
    }

    #[test]
    fn us_layout() {
        let k = text_to_keys("aA1!\t \n").unwrap();
        assert_eq!(
            k,
            vec![
                vec!["a"],
                vec!["shift", "a"],
                vec!["1"],
                vec!["shift", "1"],
                vec!["tab"],
                vec!["spc"],
                vec!["ret"],
            ]
        );
        // Every printable ASCII character is typable, and only with known qcodes.
        for c in (0x20u8..0x7f).map(char::from) {
            let keys = us_keys(c).unwrap_or_else(|| panic!("{c:?}"));
            assert!(keys.iter().all(|k| QCODES.contains(k)), "{c:?}: {keys:?}");
        }
        assert_eq!(text_to_keys("a\r\nb").unwrap().len(), 3);
        assert_eq!(text_to_keys("hello").unwrap().len(), 5);
    }

    #[test]
    fn untypable_is_refused_with_its_position() {
        assert_eq!(
            text_to_keys("abé"),
            Err(KeyError::Untypable {
                ch: 'é',
                position: 2
            })
        );
        let e = text_to_keys("a\u{7}").unwrap_err().to_string();
        assert!(e.contains("U+0007") && e.contains("position 1"), "{e}");
    }
}
