//! API keys shared by every HTTP surface (gateway, SQL): a file of
//! `KEY TENANT [admin] [rate=N] [max_body=BYTES]` lines; `Authorization: Bearer KEY` (or
//! `x-api-key: KEY`) → tenant, admin flag and the key's own request rate and size limits. The keys themselves are never logged: a caller is named by its line.

use std::collections::HashMap;
use std::path::Path;

/// Who is calling.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub tenant: String,
    pub admin: bool,
    /// Which key: `key#<line>` in the key file (`open` without one), safe to log.
    pub key_id: String,
    /// Requests per second this key may send (`rate=N`); `None`: the service's default.
    pub rate: Option<f64>,
    /// Largest request body this key may send (`max_body=BYTES`); `None`: the service's default.
    pub max_body: Option<usize>,
}

/// The key table, or open mode when no key file was given.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    keys: Option<HashMap<String, Caller>>,
    /// The largest `max_body` any key has (found once when the file is read).
    largest_max_body: Option<usize>,
}

/// The tenant every caller is in open mode.
pub const OPEN_TENANT: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("reading API key file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("API key file {path}, line {line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
}

/// Why a request is not authenticated (HTTP 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key: send `Authorization: Bearer <key>`")]
    Missing,
    #[error("invalid API key")]
    Invalid,
}

impl ApiKeys {
    /// Everyone is the `default` tenant and admin.
    pub fn open() -> Self {
        Self {
            keys: None,
            largest_max_body: None,
        }
    }

    pub fn is_open(&self) -> bool {
        self.keys.is_none()
    }

    /// The largest `max_body` any key has (what the server must be willing to read at all).
    pub fn largest_max_body(&self) -> Option<usize> {
        self.largest_max_body
    }

    /// The body limit for a request with these headers: its key's own, else `default` (also for
    /// a request without a valid key, which is refused after its body is read).
    pub fn max_body(&self, headers: &http::HeaderMap, default: usize) -> usize {
        if self.largest_max_body.is_none() {
            // No key has its own cap: nothing to look up on this request's path.
            return default;
        }
        self.authenticate(headers)
            .ok()
            .and_then(|c| c.max_body)
            .unwrap_or(default)
    }

    /// Loads `KEY TENANT [admin] [rate=N] [max_body=BYTES]` lines; blank lines and `#` comments are skipped.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, message)| KeyFileError::Line {
            path: path.display().to_string(),
            line,
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut keys = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let expected = || {
                (
                    i + 1,
                    "expected `KEY TENANT [admin] [rate=N] [max_body=BYTES]`".to_string(),
                )
            };
            let [key, tenant, options @ ..] = fields.as_slice() else {
                return Err(expected());
            };
            let (mut admin, mut rate, mut max_body) = (false, None, None);
            for option in options {
                match option.split_once('=') {
                    None if *option == "admin" && !admin => admin = true,
                    Some(("rate", n)) if rate.is_none() => {
                        let n: f64 = n
                            .parse()
                            .ok()
                            .filter(|n: &f64| n.is_finite() && *n > 0.0)
                            .ok_or((i + 1, format!("rate={n}: requests per second, above 0")))?;
                        rate = Some(n);
                    }
                    Some(("max_body", n)) if max_body.is_none() => {
                        let n: usize = n
                            .parse()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or((i + 1, format!("max_body={n}: bytes, above 0")))?;
                        max_body = Some(n);
                    }
                    _ => return Err(expected()),
                }
            }
            if !clawline_nats::subjects::is_valid_token(tenant) {
                return Err((
                    i + 1,
                    format!("tenant {tenant:?} must be 1-64 of [A-Za-z0-9_-]"),
                ));
            }
            if keys
                .insert(
                    key.to_string(),
                    Caller {
                        tenant: tenant.to_string(),
                        admin,
                        key_id: format!("key#{}", i + 1),
                        rate,
                        max_body,
                    },
                )
                .is_some()
            {
                return Err((i + 1, "duplicate key".to_string()));
            }
        }
        if keys.is_empty() {
            return Err((0, "no keys defined".to_string()));
        }
        let largest_max_body = keys.values().filter_map(|c| c.max_body).max();
        Ok(Self {
            keys: Some(keys),
            largest_max_body,
        })
    }

    /// The caller behind the request's key; 401 when the key is missing or unknown.
    pub fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, AuthError> {
        let Some(keys) = &self.keys else {
            return Ok(Caller {
                tenant: OPEN_TENANT.to_string(),
                admin: true,
                key_id: "open".into(),
                rate: None,
                max_body: None,
            });
        };
        let presented = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
            .map(str::trim);
        match presented {
            None => Err(AuthError::Missing),
            Some(key) => keys.get(key).cloned().ok_or(AuthError::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", auth.parse().expect("header"));
        h
    }

    #[test]
    fn keys_map_to_tenants_and_admin() {
        let keys = ApiKeys::parse("# comment\nk1 acme\nk2 ops admin\n").expect("parse");
        assert_eq!(
            keys.authenticate(&headers("Bearer k1")).expect("k1").tenant,
            "acme"
        );
        assert!(!keys.authenticate(&headers("Bearer k1")).expect("k1").admin);
        assert!(keys.authenticate(&headers("Bearer k2")).expect("k2").admin);
        let limited =
            ApiKeys::parse("k3 acme rate=2.5 admin max_body=1000\nk4 acme\n").expect("parse");
        let c = limited.authenticate(&headers("Bearer k3")).expect("k3");
        assert_eq!(
            (c.rate, c.admin, c.key_id.as_str(), c.max_body),
            (Some(2.5), true, "key#1", Some(1000))
        );
        assert_eq!(limited.max_body(&headers("Bearer k3"), 50), 1000);
        assert_eq!(
            limited.max_body(&headers("Bearer k4"), 50),
            50,
            "the default"
        );
        assert_eq!(limited.max_body(&headers("Bearer nope"), 50), 50);
        assert_eq!(limited.largest_max_body(), Some(1000));
        assert!(matches!(
            keys.authenticate(&headers("Bearer nope")),
            Err(AuthError::Invalid | AuthError::Missing)
        ));
        assert!(matches!(
            keys.authenticate(&http::HeaderMap::new()),
            Err(AuthError::Invalid | AuthError::Missing)
        ));
    }

    #[test]
    fn bad_key_files_name_the_line() {
        assert_eq!(ApiKeys::parse("k1 acme\nk2\n").err().map(|e| e.0), Some(2));
        assert_eq!(ApiKeys::parse("k1 a.b\n").err().map(|e| e.0), Some(1));
        assert_eq!(ApiKeys::parse("k1 a\nk1 b\n").err().map(|e| e.0), Some(2));
        assert!(ApiKeys::parse("").is_err());
        assert_eq!(ApiKeys::parse("k1 a rate=0\n").err().map(|e| e.0), Some(1));
        assert_eq!(ApiKeys::parse("k1 a rate=x\n").err().map(|e| e.0), Some(1));
        assert_eq!(
            ApiKeys::parse("k1 a max_body=0\n").err().map(|e| e.0),
            Some(1)
        );
        assert_eq!(
            ApiKeys::parse("k1 a max_body=1kb\n").err().map(|e| e.0),
            Some(1)
        );
        assert_eq!(
            ApiKeys::parse("k1 a admin admin\n").err().map(|e| e.0),
            Some(1)
        );
    }

    #[test]
    fn open_mode_makes_everyone_the_default_admin() {
        let caller = ApiKeys::open()
            .authenticate(&http::HeaderMap::new())
            .expect("open");
        assert_eq!(
            caller,
            Caller {
                tenant: OPEN_TENANT.into(),
                admin: true,
                key_id: "open".into(),
                rate: None,
                max_body: None,
            }
        );
    }
}
