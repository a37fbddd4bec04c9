//! `[USER@]HOST[:PORT]`: where a remote maqet is, as `-H` and hosts.yaml
//! name it. Parsed strictly, because every part ends up in ssh's argv:
//! nothing may start with '-' (ssh would read an option) and nothing may
//! hold blanks or control characters.

use std::fmt;

/// A parsed `[USER@]HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub user: Option<String>,
    /// A host name, an ssh config alias, an IPv4 address, or an IPv6
    /// address (written `[::1]` with a port, kept without brackets here).
    pub host: String,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("'{text}': no host given (expected [USER@]HOST[:PORT])")]
    NoHost { text: String },
    #[error("'{text}': the user before '@' is empty (expected [USER@]HOST[:PORT])")]
    EmptyUser { text: String },
    #[error("'{text}': {part} may not start with '-' (ssh would take it for an option)")]
    Dash { text: String, part: &'static str },
    #[error("'{text}': {part} may not contain {what}")]
    BadChar {
        text: String,
        part: &'static str,
        what: String,
    },
    #[error("'{text}': the port must be a number from 1 to 65535, not '{port}'")]
    BadPort { text: String, port: String },
    #[error("'{text}': an IPv6 address takes brackets: [{text}] or [{text}]:PORT")]
    Ipv6Brackets { text: String },
    #[error("'{text}': '[' without its ']'")]
    Unclosed { text: String },
}

impl Destination {
    pub fn parse(text: &str) -> Result<Destination, DestinationError> {
        let err_text = || text.to_string();
        let (user, rest) = match text.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, text),
        };
        if let Some(u) = user {
            if u.is_empty() {
                return Err(DestinationError::EmptyUser { text: err_text() });
            }
            check_part(text, "the user", u)?;
            if u.contains('@') {
                return Err(DestinationError::BadChar {
                    text: err_text(),
                    part: "the user",
                    what: "'@'".into(),
                });
            }
        }
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (h, after) = inner
                .split_once(']')
                .ok_or_else(|| DestinationError::Unclosed { text: err_text() })?;
            match after {
                "" => (h, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None => {
                        return Err(DestinationError::BadChar {
                            text: err_text(),
                            part: "the host",
                            what: format!("'{p}' after ']'"),
                        })
                    }
                },
            }
        } else {
            match rest.matches(':').count() {
                0 => (rest, None),
                1 => {
                    let (h, p) = rest.split_once(':').unwrap_or((rest, ""));
                    (h, Some(p))
                }
                _ => return Err(DestinationError::Ipv6Brackets { text: rest.into() }),
            }
        };
        if host.is_empty() {
            return Err(DestinationError::NoHost { text: err_text() });
        }
        check_part(text, "the host", host)?;
        let port = match port {
            None => None,
            Some(p) => Some(parse_port(p).ok_or_else(|| DestinationError::BadPort {
                text: err_text(),
                port: p.into(),
            })?),
        };
        Ok(Destination {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
        })
    }

    /// `user@host` as ssh takes it after `--` (the port goes to `-p`).
    pub fn ssh_target(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|&n| n != 0)
}

fn check_part(text: &str, part: &'static str, s: &str) -> Result<(), DestinationError> {
    if s.starts_with('-') {
        return Err(DestinationError::Dash {
            text: text.into(),
            part,
        });
    }
    let bad = s.chars().find(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, '/' | '\\' | '\'' | '"' | '`' | '$')
    });
    match bad {
        Some(c) => Err(DestinationError::BadChar {
            text: text.into(),
            part,
            what: format!("{c:?}"),
        }),
        None => Ok(()),
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        let host = match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.clone(),
        };
        match self.port {
            Some(p) => write!(f, "{host}:{p}"),
            None => f.write_str(&host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(user: Option<&str>, host: &str, port: Option<u16>) -> Destination {
        Destination {
            user: user.map(str::to_string),
            host: host.into(),
            port,
        }
    }

    #[test]
    fn the_forms_of_a_destination() {
        let cases = [
            ("lab", d(None, "lab", None)),
            ("alice@lab.example", d(Some("alice"), "lab.example", None)),
            ("lab:2222", d(None, "lab", Some(2222))),
            ("bob@10.0.0.2:22", d(Some("bob"), "10.0.0.2", Some(22))),
            ("[::1]", d(None, "::1", None)),
            (
                "maqet-remote@[::1]:2200",
                d(Some("maqet-remote"), "::1", Some(2200)),
            ),
            ("a.b@c", d(Some("a.b"), "c", None)),
        ];
        for (text, want) in cases {
            let got = Destination::parse(text).unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), text, "round trip of {text}");
        }
        assert_eq!(d(Some("u"), "::1", None).ssh_target(), "u@::1");
    }

    #[test]
    fn bad_destinations_say_what_is_wrong() {
        let cases = [
            ("", "no host given"),
            ("@lab", "the user before '@' is empty"),
            ("alice@", "no host given"),
            ("lab:", "port must be a number from 1 to 65535, not ''"),
            ("lab:0", "not '0'"),
            ("lab:65536", "not '65536'"),
            ("lab:+22", "not '+22'"),
            ("-oProxyCommand=x", "the host may not start with '-'"),
            ("-x@lab", "the user may not start with '-'"),
            ("a b@lab", "the user may not contain ' '"),
            ("lab\n", "the host may not contain '\\n'"),
            ("::1", "an IPv6 address takes brackets: [::1]"),
            ("[::1", "'[' without its ']'"),
            ("[::1]x", "the host may not contain 'x' after ']'"),
            ("l$(id)", "may not contain '$'"),
        ];
        for (text, want) in cases {
            let e = Destination::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
