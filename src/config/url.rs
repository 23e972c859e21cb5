//! `redis://` URLs: parsed once at start, redacted whenever printed; and the
//! alert webhook's `http://` URL.

use hyper::Uri;

/// Where and as whom poolside connects upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    /// `rediss://`: connect with TLS.
    pub tls: bool,
}

impl UpstreamUrl {
    /// `host:port` as `TcpStream::connect` takes it.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses `redis[s]://[user[:password]@]host[:port][/db]`.
pub fn parse(url: &str) -> Result<UpstreamUrl, String> {
    let (rest, tls) = match url.split_once("://") {
        Some(("redis", rest)) => (rest, false),
        Some(("rediss", rest)) => (rest, true),
        Some((scheme, _)) => {
            return Err(format!(
                "unsupported scheme '{scheme}', expected redis:// or rediss://"
            ))
        }
        None => return Err("expected a URL of the form redis://host:port".into()),
    };
    // Userinfo ends at the last '@': a password may contain '/', ':' or '@'.
    let (userinfo, hostpath) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (hostport, path) = hostpath.split_once('/').unwrap_or((hostpath, ""));
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => (non_empty(user)?, non_empty(pass)?),
            None => (non_empty(u)?, None),
        },
    };
    let (host, port) = split_host_port(hostport)?;
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    let db_part = path.split('?').next().unwrap_or("");
    let db = if db_part.is_empty() {
        0
    } else {
        db_part
            .parse::<u32>()
            .map_err(|_| format!("database '{db_part}' is not a number"))?
    };
    Ok(UpstreamUrl {
        host,
        port,
        username,
        password,
        db,
        tls,
    })
}

/// A userinfo part, percent-decoded as in any URL (`p%40ss` is `p@ss`).
/// The error never repeats the value: it may be a password.
fn non_empty(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map(Some)
        .map_err(|_| "the user or password is not UTF-8 after percent-decoding".into())
}

fn split_host_port(hostport: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| "unterminated '[' in IPv6 host".to_string())?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    let port = match port {
        None | Some("") => 6379,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port '{p}' is not a number between 1 and 65535"))?,
    };
    Ok((host, port))
}

/// The URL with any password replaced, for logs, status and printed config.
/// Everything up to the last '@' is userinfo, even in a malformed URL, so a
/// password never survives redaction; the user name is kept.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let shown = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:<redacted>"),
                None => "<redacted>".to_string(),
            };
            format!("{scheme}{shown}@{host}")
        }
        None => url.to_string(),
    }
}

/// A webhook URL (`alerts.webhook_url`) must be plain `http://` with a host.
/// The reason never repeats the URL: such URLs carry tokens.
pub fn parse_webhook(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|_| "not a valid URL".to_string())?;
    if uri.scheme_str() != Some("http") {
        return Err("must be a plain http:// URL (https is not supported)".into());
    }
    if uri.host().is_none() {
        return Err("has no host".into());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url() {
        let u = parse("redis://app:s3cret@cache.internal:6390/2").unwrap();
        assert_eq!(u.host, "cache.internal");
        assert_eq!(u.port, 6390);
        assert_eq!(u.username.as_deref(), Some("app"));
        assert_eq!(u.password.as_deref(), Some("s3cret"));
        assert_eq!(u.db, 2);
        assert_eq!(u.address(), "cache.internal:6390");
    }

    #[test]
    fn rediss_means_tls() {
        let u = parse("rediss://:pw@cache.example.com:6380").unwrap();
        assert!(u.tls);
        assert_eq!((u.host.as_str(), u.port), ("cache.example.com", 6380));
        assert!(!parse("redis://h").unwrap().tls);
    }

    #[test]
    fn defaults_port_and_db_and_handles_ipv6() {
        let u = parse("redis://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db), ("::1", 6379, 0));
        assert_eq!(u.address(), "[::1]:6379");
        let u = parse("redis://:pw@localhost").unwrap();
        assert_eq!(u.username, None);
        assert_eq!(u.password.as_deref(), Some("pw"));
    }

    #[test]
    fn rejects_bad_urls_with_reasons() {
        assert!(parse("http://x")
            .unwrap_err()
            .contains("unsupported scheme"));
        assert!(parse("redis://host:99999").unwrap_err().contains("port"));
        assert!(parse("redis://host/abc").unwrap_err().contains("database"));
        assert!(parse("localhost:6379").is_err());
    }

    #[test]
    fn passwords_may_hold_url_delimiters() {
        let u = parse("redis://app:pa/ss@w:rd@h:7/3").unwrap();
        assert_eq!(u.password.as_deref(), Some("pa/ss@w:rd"));
        assert_eq!((u.host.as_str(), u.port, u.db), ("h", 7, 3));
        let u = parse("redis://app:p%40ss%2Fx@h").unwrap();
        assert_eq!(u.password.as_deref(), Some("p@ss/x"));
        assert_eq!(u.username.as_deref(), Some("app"));
    }

    #[test]
    fn redaction_never_leaks_a_password() {
        for url in [
            "redis://app:pa/ss@h:1/0",
            "redis:/app:secret@h",
            "app:secret@h:1",
            "redis://app:se@cret@h",
        ] {
            let shown = redact(url);
            assert!(
                !shown.contains("secret") && !shown.contains("pa/ss"),
                "{shown}"
            );
            assert!(!shown.contains("cret"), "{shown}");
        }
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact("redis://app:s3cret@h:1/0"),
            "redis://app:<redacted>@h:1/0"
        );
        assert_eq!(redact("redis://s3cret@h:1"), "redis://<redacted>@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
