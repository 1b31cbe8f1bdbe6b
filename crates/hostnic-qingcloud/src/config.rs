//! The credentials/endpoint file users already keep in the `qcsecret` Secret
//! (`config.yaml`), with the defaults of the official SDKs.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde_yaml::Value;

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself; only the signer should need it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where the API is: `<protocol>://<host>:<port><uri>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https` (default) or `http` (the simulator).
    pub protocol: String,
    /// Host name, default `api.qingcloud.com`.
    pub host: String,
    /// Port, default 443.
    pub port: u16,
    /// Path, default `/iaas`; requests are sent to `<uri>/` like the SDKs do.
    pub uri: String,
}

impl Default for Endpoint {
    fn default() -> Self {
        Self {
            protocol: "https".into(),
            host: "api.qingcloud.com".into(),
            port: 443,
            uri: "/iaas".into(),
        }
    }
}

impl Endpoint {
    /// The endpoint of a URL such as `http://127.0.0.1:8080/iaas/` (the simulator's).
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let parsed = url::Url::parse(url).map_err(|e| ConfigError::Invalid {
            origin: url.to_string(),
            key: "url",
            reason: e.to_string(),
        })?;
        let host = parsed.host_str().ok_or_else(|| ConfigError::Invalid {
            origin: url.to_string(),
            key: "url",
            reason: "no host".into(),
        })?;
        Ok(Self {
            protocol: parsed.scheme().to_string(),
            host: host.to_string(),
            port: parsed.port_or_known_default().unwrap_or(443),
            uri: parsed.path().to_string(),
        })
    }

    /// The path requests are sent to and signed with: `uri` with one trailing slash.
    pub fn path(&self) -> String {
        let trimmed = self.uri.trim_end_matches('/');
        let trimmed = if trimmed.starts_with('/') || trimmed.is_empty() {
            trimmed.to_string()
        } else {
            format!("/{trimmed}")
        };
        format!("{trimmed}/")
    }

    /// The full URL without query: `<protocol>://<host>:<port><path>`.
    pub fn url(&self) -> String {
        format!(
            "{}://{}:{}{}",
            self.protocol,
            self.host,
            self.port,
            self.path()
        )
    }
}

/// The contents of the `qcsecret` `config.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `qy_access_key_id`.
    pub access_key_id: String,
    /// `qy_secret_access_key`.
    pub secret_access_key: Secret,
    /// `zone`, e.g. `pek3a`.
    pub zone: String,
    /// `protocol`, `host`, `port`, `uri`.
    pub endpoint: Endpoint,
    /// `connection_retries` (default 3): how many times a retryable failure is retried.
    pub connection_retries: u32,
    /// `connection_timeout` in seconds (default 30): the timeout of one HTTP request.
    pub connection_timeout: Duration,
}

/// A configuration file that cannot be used. Never contains the secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML (or not a mapping).
    #[error("{origin} is not a YAML mapping: {reason}")]
    Syntax {
        /// The file.
        origin: String,
        /// What the YAML parser said (position, not content).
        reason: String,
    },
    /// A required key is absent or empty.
    #[error("{origin}: required key `{key}` is missing or empty")]
    Missing {
        /// The file.
        origin: String,
        /// The key, e.g. `qy_secret_access_key`.
        key: &'static str,
    },
    /// A key has a value of the wrong type or range.
    #[error("{origin}: key `{key}` is invalid: {reason}")]
    Invalid {
        /// The file.
        origin: String,
        /// The key.
        key: &'static str,
        /// What is expected (never the value itself).
        reason: String,
    },
}

impl Config {
    /// A configuration with the SDK defaults for everything but the credentials and zone.
    pub fn new(access_key_id: impl Into<String>, secret: Secret, zone: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret,
            zone: zone.into(),
            endpoint: Endpoint::default(),
            connection_retries: 3,
            connection_timeout: Duration::from_secs(30),
        }
    }

    /// Reads and parses `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Parses the YAML `text`; `origin` names it in errors. Unknown keys are ignored.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let doc: Value = serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_string(),
            reason: e
                .location()
                .map(|l| format!("at line {} column {}", l.line(), l.column()))
                .unwrap_or_else(|| "unparsable".into()),
        })?;
        let map = doc.as_mapping().ok_or_else(|| ConfigError::Syntax {
            origin: origin.to_string(),
            reason: "the document is not a mapping".into(),
        })?;
        let get = |key: &'static str| -> Result<Option<String>, ConfigError> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(Value::Bool(b)) => Ok(Some(b.to_string())),
                Some(_) => Err(ConfigError::Invalid {
                    origin: origin.to_string(),
                    key,
                    reason: "expected a scalar".into(),
                }),
            }
        };
        let required = |key: &'static str| -> Result<String, ConfigError> {
            get(key)?.ok_or(ConfigError::Missing {
                origin: origin.to_string(),
                key,
            })
        };
        let number = |key: &'static str, default: u64, max: u64| -> Result<u64, ConfigError> {
            match get(key)? {
                None => Ok(default),
                Some(s) => s.parse::<u64>().ok().filter(|n| *n <= max).ok_or_else(|| {
                    ConfigError::Invalid {
                        origin: origin.to_string(),
                        key,
                        reason: format!("expected an integer from 0 to {max}"),
                    }
                }),
            }
        };
        let defaults = Endpoint::default();
        let protocol = get("protocol")?.unwrap_or(defaults.protocol);
        if protocol != "http" && protocol != "https" {
            return Err(ConfigError::Invalid {
                origin: origin.to_string(),
                key: "protocol",
                reason: "expected `http` or `https`".into(),
            });
        }
        Ok(Self {
            access_key_id: required("qy_access_key_id")?,
            secret_access_key: Secret::new(required("qy_secret_access_key")?),
            zone: required("zone")?,
            endpoint: Endpoint {
                protocol,
                host: get("host")?.unwrap_or(defaults.host),
                port: number("port", 443, u16::MAX as u64)? as u16,
                uri: get("uri")?.unwrap_or(defaults.uri),
            },
            connection_retries: number("connection_retries", 3, 100)? as u32,
            connection_timeout: Duration::from_secs(number("connection_timeout", 30, 3600)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "qy_access_key_id: 'AKID'\nqy_secret_access_key: 'TOPSECRET'\nzone: 'pek3a'\nhost: '127.0.0.1'\nport: 8080\nprotocol: 'http'\nuri: '/iaas'\nconnection_retries: 5\nconnection_timeout: 7\nsomething_else: [1, 2]\n";

    #[test]
    fn parses_every_key_and_ignores_unknown_ones() {
        let c = Config::from_yaml(FULL, "config.yaml").unwrap();
        assert_eq!(c.access_key_id, "AKID");
        assert_eq!(c.secret_access_key.expose(), "TOPSECRET");
        assert_eq!(c.zone, "pek3a");
        assert_eq!(c.endpoint.url(), "http://127.0.0.1:8080/iaas/");
        assert_eq!(c.connection_retries, 5);
        assert_eq!(c.connection_timeout, Duration::from_secs(7));
    }

    #[test]
    fn optional_keys_default_to_the_sdk_values() {
        let c = Config::from_yaml(
            "qy_access_key_id: A\nqy_secret_access_key: S\nzone: z\n",
            "f",
        )
        .unwrap();
        assert_eq!(c.endpoint.url(), "https://api.qingcloud.com:443/iaas/");
        assert_eq!(c.connection_retries, 3);
        assert_eq!(c.connection_timeout, Duration::from_secs(30));
    }

    #[test]
    fn a_missing_key_is_named_with_the_file() {
        let err = Config::from_yaml(
            "qy_access_key_id: A\nzone: z\n",
            "/etc/qcsecret/config.yaml",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("qy_secret_access_key"), "{text}");
        assert!(text.contains("/etc/qcsecret/config.yaml"), "{text}");
    }

    #[test]
    fn the_secret_never_appears_in_debug_or_errors() {
        let c = Config::from_yaml(FULL, "f").unwrap();
        assert!(!format!("{c:?}").contains("TOPSECRET"));
        assert_eq!(format!("{}", c.secret_access_key), "***");
        // A secret of the wrong type must not be echoed back either.
        let err = Config::from_yaml(
            "qy_access_key_id: A\nqy_secret_access_key: [TOPSECRET]\nzone: z\n",
            "f",
        )
        .unwrap_err();
        assert!(!err.to_string().contains("TOPSECRET"), "{err}");
        let err = Config::from_yaml("qy_secret_access_key: 'TOPSECRET\n: :", "f").unwrap_err();
        assert!(!err.to_string().contains("TOPSECRET"), "{err}");
    }

    #[test]
    fn endpoint_from_a_simulator_url() {
        let e = Endpoint::from_url("http://127.0.0.1:4000/iaas/").unwrap();
        assert_eq!(e.path(), "/iaas/");
        assert_eq!(e.url(), "http://127.0.0.1:4000/iaas/");
    }
}
