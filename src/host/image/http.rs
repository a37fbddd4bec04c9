//! HTTP(S) for downloads: ureq (blocking, rustls, the system's CA
//! certificates through rustls-platform-verifier), a proxy chosen per URL
//! from the environment ([`super::proxy`]), and errors sorted into what is
//! worth retrying (connection trouble, 5xx, 429) and what is not (404,
//! TLS, DNS). ureq is blocking: callers run it off the async runtime.

use std::io::Read;
use std::time::Duration;

use ureq::tls::{RootCerts, TlsConfig};

use super::ImageError;

/// How long a connection (and its TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may take to answer a request with its headers.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// A response whose body is being read.
pub struct Response {
    pub status: u16,
    /// `Content-Length`, or the total of a `Content-Range`.
    pub total: Option<u64>,
    /// For a 206: where the returned range starts.
    pub range_start: Option<u64>,
    /// `ETag` (strong only) or `Last-Modified`: what `If-Range` sends back.
    pub validator: Option<String>,
    pub body: Box<dyn Read + Send>,
}

/// The proxy a request to `url` uses (see [`super::proxy`]).
pub fn proxy_for(url: &str) -> Option<String> {
    let scheme = if url[..5].eq_ignore_ascii_case("https") {
        "https"
    } else {
        "http"
    };
    super::proxy::for_url(scheme, super::proxy::host_of(url), &|k| {
        std::env::var(k).ok()
    })
}

fn agent(url: &str) -> Result<(ureq::Agent, Option<String>), ImageError> {
    let proxy_text = proxy_for(url);
    let proxy = match &proxy_text {
        Some(p) => Some(ureq::Proxy::new(p).map_err(|e| ImageError::Proxy {
            url: url.to_string(),
            proxy: p.clone(),
            message: format!("not a usable proxy URL: {e}"),
        })?),
        None => None,
    };
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(proxy)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(RESPONSE_TIMEOUT))
        .user_agent(format!("maqet/{}", env!("CARGO_PKG_VERSION")))
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::PlatformVerifier)
                .build(),
        )
        .build();
    Ok((ureq::Agent::new_with_config(config), proxy_text))
}

/// GET `url`, from byte `offset` when it is not 0 (`Range`, with
/// `If-Range: validator` so a changed file comes back whole).
pub fn get(url: &str, offset: u64, validator: Option<&str>) -> Result<Response, ImageError> {
    let (agent, proxy) = agent(url)?;
    let mut req = agent.get(url).header("Accept-Encoding", "identity");
    if offset > 0 {
        req = req.header("Range", format!("bytes={offset}-"));
        if let Some(v) = validator {
            req = req.header("If-Range", v);
        }
    }
    let resp = req.call().map_err(|e| classify(url, proxy.as_deref(), e))?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (range_start, range_total) = header("content-range")
        .and_then(|r| parse_content_range(&r))
        .map_or((None, None), |(s, t)| (Some(s), t));
    let total = if status == 206 {
        range_total
    } else {
        header("content-length").and_then(|l| l.trim().parse().ok())
    };
    let validator = header("etag")
        .filter(|e| !e.starts_with("W/"))
        .or_else(|| header("last-modified"));
    let reason = resp.status().canonical_reason().unwrap_or("").to_string();
    match status {
        200 | 206 | 416 => {}
        404 | 410 => {
            return Err(ImageError::NotFound {
                url: url.to_string(),
                status,
            })
        }
        _ => {
            return Err(ImageError::Http {
                url: url.to_string(),
                status,
                reason,
            })
        }
    }
    Ok(Response {
        status,
        total,
        range_start,
        validator,
        body: Box::new(resp.into_body().into_reader()),
    })
}

/// A small file (a checksum file), at most `limit` bytes; `None` for a
/// 404 (probing for `SHA256SUMS`).
pub fn get_small(url: &str, limit: u64) -> Result<Option<Vec<u8>>, ImageError> {
    let mut resp = match get(url, 0, None) {
        Ok(r) => r,
        Err(ImageError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    (&mut resp.body)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| read_error(url, e))?;
    if out.len() as u64 > limit {
        return Err(ImageError::Http {
            url: url.to_string(),
            status: 200,
            reason: format!("larger than {limit} bytes: not a checksum file"),
        });
    }
    Ok(Some(out))
}

/// An error while reading a body (transient: the download resumes).
pub fn read_error(url: &str, e: std::io::Error) -> ImageError {
    ImageError::Network {
        url: url.to_string(),
        message: format!("the connection broke: {e}"),
    }
}

/// `bytes START-END/TOTAL` → (START, TOTAL); `*` as total is unknown.
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let start = range.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

/// Sorts a ureq error into what the user sees and whether to retry.
fn classify(url: &str, proxy: Option<&str>, e: ureq::Error) -> ImageError {
    let url_s = url.to_string();
    let network = |message: String| ImageError::Network {
        url: url_s.clone(),
        message,
    };
    match e {
        ureq::Error::HostNotFound => ImageError::Dns {
            url: url_s.clone(),
            host: super::proxy::host_of(url).to_string(),
        },
        ureq::Error::Io(io) => {
            let text = io.to_string();
            // rustls reports a failed handshake (an unknown issuer, a name
            // mismatch) through the stream as InvalidData: not a blip.
            if io.kind() == std::io::ErrorKind::InvalidData {
                return ImageError::Tls {
                    url: url_s.clone(),
                    message: text,
                };
            }
            if text.contains("Temporary failure in name resolution") {
                network(format!(
                    "cannot resolve host name '{}' now: {text}",
                    super::proxy::host_of(url)
                ))
            } else if text.contains("lookup address") || text.contains("Name or service not known")
            {
                ImageError::Dns {
                    url: url_s.clone(),
                    host: super::proxy::host_of(url).to_string(),
                }
            } else if io.raw_os_error() == Some(libc::ECONNREFUSED) {
                network(match proxy {
                    Some(p) => format!("connection refused by the proxy {p}"),
                    None => "connection refused".to_string(),
                })
            } else {
                network(text)
            }
        }
        ureq::Error::Timeout(t) => network(format!("timed out ({t})")),
        ureq::Error::ConnectionFailed => network("the connection failed".into()),
        ureq::Error::ConnectProxyFailed(m) => ImageError::Proxy {
            url: url_s.clone(),
            proxy: proxy.unwrap_or("?").to_string(),
            message: m,
        },
        ureq::Error::Rustls(r) => ImageError::Tls {
            url: url_s.clone(),
            message: r.to_string(),
        },
        ureq::Error::Tls(m) => ImageError::Tls {
            url: url_s.clone(),
            message: m.to_string(),
        },
        ureq::Error::TooManyRedirects | ureq::Error::RedirectFailed => ImageError::Http {
            url: url_s.clone(),
            status: 310,
            reason: "too many or broken redirects".into(),
        },
        other => ImageError::Http {
            url: url_s.clone(),
            status: 0,
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some((100, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn transient_errors_are_told_apart() {
        let url = "https://h.example/x";
        assert!(classify(url, None, ureq::Error::ConnectionFailed).is_transient());
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let e = classify(url, Some("http://p:1"), ureq::Error::Io(refused));
        assert!(e.is_transient());
        assert!(
            e.to_string().contains("refused by the proxy http://p:1"),
            "{e}"
        );
        let dns = classify(url, None, ureq::Error::HostNotFound);
        assert!(!dns.is_transient());
        assert!(dns.to_string().contains("'h.example'"), "{dns}");
        let tls = classify(url, None, ureq::Error::Tls("bad"));
        assert!(!tls.is_transient());
        let cert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        );
        let tls = classify(url, None, ureq::Error::Io(cert));
        assert!(!tls.is_transient());
        assert!(
            tls.to_string()
                .contains("TLS failed: invalid peer certificate"),
            "{tls}"
        );
        let busy = ImageError::Http {
            url: url.into(),
            status: 503,
            reason: String::new(),
        };
        assert!(busy.is_transient());
        assert!(!ImageError::NotFound {
            url: url.into(),
            status: 404
        }
        .is_transient());
    }
}
