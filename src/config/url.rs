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
    /// `redis+sentinel://`: `host`/`port` are the first Sentinel's, and the
    /// primary is the one these Sentinels name.
    pub sentinel: Option<SentinelUrl>,
    /// `redis+cluster://`: `host`/`port` are the first seed's; these are
    /// every seed's `host:port`, asked in order for the cluster's topology.
    pub cluster: Option<Vec<String>>,
}

/// The Sentinel part of `redis+sentinel://h1:p1,h2:p2/MASTER[/DB]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// `host:port` of each Sentinel (port 26379 when not given).
    pub addresses: Vec<String>,
    pub master_name: String,
}

/// Sentinel's own port, when a `redis+sentinel://` host has none.
pub const SENTINEL_PORT: u16 = 26379;

/// `host:port` as `TcpStream::connect` takes it (IPv6 in brackets).
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl UpstreamUrl {
    /// `host:port` as `TcpStream::connect` takes it.
    pub fn address(&self) -> String {
        join_host_port(&self.host, self.port)
    }
}

/// Parses `redis[s]://[user[:password]@]host[:port][/db]`,
/// `redis[s]+sentinel://[user[:password]@]host[:port][,host[:port]...]/MASTER[/db]`
/// and `redis[s]+cluster://[user[:password]@]host[:port][,host[:port]...]`.
pub fn parse(url: &str) -> Result<UpstreamUrl, String> {
    let (rest, tls, sentinel, cluster) = match url.split_once("://") {
        Some(("redis", rest)) => (rest, false, false, false),
        Some(("rediss", rest)) => (rest, true, false, false),
        Some(("redis+sentinel", rest)) => (rest, false, true, false),
        Some(("rediss+sentinel", rest)) => (rest, true, true, false),
        Some(("redis+cluster", rest)) => (rest, false, false, true),
        Some(("rediss+cluster", rest)) => (rest, true, false, true),
        Some((scheme, _)) => {
            return Err(format!(
                "unsupported scheme '{scheme}', expected redis://, rediss://, \
                 redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://"
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
    let path = path.split('?').next().unwrap_or("");
    let (sentinel, path) = if sentinel {
        let (master, db) = path.split_once('/').unwrap_or((path, ""));
        if master.is_empty() {
            return Err("a redis+sentinel:// URL names its master: \
                 redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]"
                .into());
        }
        let mut addresses = Vec::new();
        for one in hostport.split(',') {
            let (host, port) = split_host_port_or(one, SENTINEL_PORT)?;
            if host.is_empty() {
                return Err(format!("Sentinel address '{one}' has no host"));
            }
            addresses.push(join_host_port(&host, port));
        }
        let sentinel = SentinelUrl {
            addresses,
            master_name: master.to_string(),
        };
        (Some(sentinel), db)
    } else {
        (None, path)
    };
    let cluster = if cluster {
        let mut seeds = Vec::new();
        for one in hostport.split(',') {
            let (host, port) = split_host_port_or(one, 6379)?;
            if host.is_empty() {
                return Err(format!("cluster seed '{one}' has no host"));
            }
            seeds.push(join_host_port(&host, port));
        }
        if !path.is_empty() && path != "0" {
            return Err(format!(
                "database '{path}': a Redis Cluster has only database 0 \
                 (redis+cluster://HOST:PORT[,HOST:PORT...])"
            ));
        }
        Some(seeds)
    } else {
        None
    };
    let (first, default_port) = match (&sentinel, &cluster) {
        (Some(_), _) => (hostport.split(',').next().unwrap_or(""), SENTINEL_PORT),
        (None, Some(_)) => (hostport.split(',').next().unwrap_or(""), 6379),
        (None, None) => (hostport, 6379),
    };
    let (host, port) = split_host_port_or(first, default_port)?;
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    let db_part = path;
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
        sentinel,
        cluster,
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

/// `host[:port]` (IPv6 in brackets), `default_port` when none is given.
pub fn split_host_port_or(hostport: &str, default_port: u16) -> Result<(String, u16), String> {
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
        None | Some("") => default_port,
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
    fn sentinel_urls_list_sentinels_and_name_the_master() {
        let u = parse("redis+sentinel://app:pw@10.0.0.1:26380,s2,[::1]:7/mymaster/3").unwrap();
        let s = u.sentinel.clone().unwrap();
        assert_eq!(s.addresses, ["10.0.0.1:26380", "s2:26379", "[::1]:7"]);
        assert_eq!(s.master_name, "mymaster");
        assert_eq!((u.db, u.tls), (3, false));
        assert_eq!(u.username.as_deref(), Some("app"));
        assert_eq!(u.password.as_deref(), Some("pw"));
        assert_eq!(u.address(), "10.0.0.1:26380");
        let u = parse("rediss+sentinel://h/m").unwrap();
        assert!(u.tls);
        assert_eq!(u.sentinel.unwrap().addresses, ["h:26379"]);
        assert!(parse("redis+sentinel://h:1")
            .unwrap_err()
            .contains("MASTER_NAME"));
        assert!(parse("redis+sentinel://h:1,/m")
            .unwrap_err()
            .contains("no host"));
        assert!(parse("redis+sentinel://h:x/m")
            .unwrap_err()
            .contains("port"));
        assert!(parse("redis+sentinel://h/m/x")
            .unwrap_err()
            .contains("database"));
        assert_eq!(parse("redis://h").unwrap().sentinel, None);
    }

    #[test]
    fn cluster_urls_list_seeds() {
        let u = parse("redis+cluster://app:pw@10.0.0.1:7000,n2,[::1]:7002").unwrap();
        assert_eq!(
            u.cluster.as_deref().unwrap(),
            ["10.0.0.1:7000", "n2:6379", "[::1]:7002"]
        );
        assert_eq!((u.host.as_str(), u.port), ("10.0.0.1", 7000));
        assert_eq!(u.password.as_deref(), Some("pw"));
        assert!(!u.tls);
        assert!(parse("rediss+cluster://h:7000").unwrap().tls);
        assert!(parse("redis+cluster://h:1/3")
            .unwrap_err()
            .contains("only database 0"));
        assert!(parse("redis+cluster://h:1,").is_err());
        assert_eq!(parse("redis://h").unwrap().cluster, None);
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
