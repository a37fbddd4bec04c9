//! Which proxy a download goes through, from the environment as curl and
//! wget read it: `https_proxy`/`HTTPS_PROXY` for https URLs,
//! `http_proxy`/`HTTP_PROXY` for http ones, `all_proxy`/`ALL_PROXY` for
//! both, and `no_proxy`/`NO_PROXY` (comma-separated: `d` is d and its
//! subdomains, `.d` and `*.d` only its subdomains, `*` everything) to go
//! direct.
//! ureq's own reader takes the first of ALL/HTTPS/HTTP for every scheme,
//! so the choice is made here per URL.

/// Reads one variable, lower case first (curl's order).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn var(env: Env, name: &str) -> Option<String> {
    env(&name.to_ascii_lowercase())
        .or_else(|| env(&name.to_ascii_uppercase()))
        .filter(|v| !v.trim().is_empty())
}

/// The proxy URL for a request to `host` over `scheme`, if any.
pub fn for_url(scheme: &str, host: &str, env: Env) -> Option<String> {
    let proxy = match scheme {
        "https" => var(env, "https_proxy"),
        _ => var(env, "http_proxy"),
    }
    .or_else(|| var(env, "all_proxy"))?;
    if var(env, "no_proxy").is_some_and(|list| bypassed(host, &list)) {
        return None;
    }
    Some(proxy)
}

/// Whether `host` matches an entry of a NO_PROXY list.
fn bypassed(host: &str, list: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    list.split(',').map(str::trim).any(|entry| {
        let entry = entry.to_ascii_lowercase();
        // `host:port` entries: the port is not ours to check.
        let entry = match entry.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h,
            _ => entry.as_str(),
        };
        // `.d`/`*.d`: subdomains of d only; `d`: d and its subdomains.
        let only_sub = entry.starts_with('.') || entry.starts_with("*.");
        let domain = entry.trim_start_matches('*').trim_start_matches('.');
        entry == "*"
            || (!domain.is_empty()
                && ((!only_sub && host == domain) || host.ends_with(&format!(".{domain}"))))
    })
}

/// The host of a URL (`https://user@h:1/p` → `h`).
pub fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = hostport.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    hostport.split(':').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_schemes_own_variable_then_all_proxy() {
        let e = env(&[
            ("HTTPS_PROXY", "http://p1:3128"),
            ("http_proxy", "http://p2:3128"),
            ("HTTP_PROXY", "http://ignored:1"),
        ]);
        assert_eq!(for_url("https", "h", &e).as_deref(), Some("http://p1:3128"));
        assert_eq!(for_url("http", "h", &e).as_deref(), Some("http://p2:3128"));
        let all = env(&[("ALL_PROXY", "socks5://s:1080")]);
        assert_eq!(
            for_url("https", "h", &all).as_deref(),
            Some("socks5://s:1080")
        );
        assert_eq!(for_url("https", "h", &env(&[])), None);
    }

    #[test]
    fn no_proxy_matches_hosts_and_domains() {
        let e = env(&[
            ("https_proxy", "http://p:3128"),
            ("no_proxy", "localhost, .internal,example.org:443,*.corp"),
        ]);
        for direct in [
            "localhost",
            "a.internal",
            "example.org",
            "www.example.org",
            "x.corp",
        ] {
            assert_eq!(for_url("https", direct, &e), None, "{direct}");
        }
        for proxied in ["cloud.debian.org", "internal", "notexample.org"] {
            assert!(for_url("https", proxied, &e).is_some(), "{proxied}");
        }
        let star = env(&[("https_proxy", "http://p:3128"), ("NO_PROXY", "*")]);
        assert_eq!(for_url("https", "anything", &star), None);
    }

    #[test]
    fn hosts_of_urls() {
        assert_eq!(
            host_of("https://u:p@Cloud.Debian.org:8443/x?y"),
            "Cloud.Debian.org"
        );
        assert_eq!(host_of("http://[::1]:8080/x"), "::1");
        assert_eq!(host_of("http://127.0.0.1/x"), "127.0.0.1");
    }
}
