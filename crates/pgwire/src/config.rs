//! Connection settings, read the way libpq reads them.
//!
//! [`ConnectOptions::from_conninfo`] layers a connection string over the standard environment
//! variables over libpq's defaults:
//!
//! | setting | conninfo key | environment | default |
//! | --- | --- | --- | --- |
//! | host | `host` | `PGHOST` | `/var/run/postgresql` if that directory exists, else `localhost` |
//! | port | `port` | `PGPORT` | `5432` |
//! | user | `user` | `PGUSER` | the operating-system user |
//! | password | `password` | `PGPASSWORD` | from `PGPASSFILE` or `~/.pgpass`, looked up at connect time |
//! | database | `dbname` | `PGDATABASE` | none (physical replication ignores it) |
//! | application name | `application_name` | `PGAPPNAME` | none |
//! | connect timeout | `connect_timeout` (seconds) | `PGCONNECT_TIMEOUT` | none |
//! | TLS | `sslmode` | `PGSSLMODE` | `prefer` |
//!
//! A host starting with `/` is a Unix-socket directory. `sslmode` `disable`, `allow` and
//! `prefer` connect without TLS; `require`, `verify-ca` and `verify-full` are refused with
//! [`Error::TlsNotSupported`], because TLS is not implemented yet.
//!
//! The connection string is `key=value` pairs separated by white space. A value may be
//! single-quoted to hold spaces; inside a value, `\` escapes the next character:
//!
//! ```
//! use walferry_pgwire::{ConnectOptions, Host};
//!
//! let env = |_: &str| None; // ignore the real environment
//! let opts = ConnectOptions::from_conninfo_with_env(
//!     "host=/tmp port=5433 user=backup application_name='nightly backup'",
//!     env,
//! )?;
//! assert_eq!(opts.host, Host::Unix("/tmp".into()));
//! assert_eq!(opts.port, 5433);
//! assert_eq!(opts.application_name.as_deref(), Some("nightly backup"));
//! # Ok::<(), walferry_pgwire::Error>(())
//! ```

use std::fmt;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Error, Result};

/// libpq's default Unix-socket directory on Debian and Ubuntu (`DEFAULT_PGSOCKET_DIR`).
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// PostgreSQL's default port (`DEF_PGPORT`).
pub const DEFAULT_PORT: u16 = 5432;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A directory holding the Unix socket `.s.PGSQL.<port>`.
    Unix(PathBuf),
    /// A host name or IP address, reached over TCP.
    Tcp(String),
}

impl Host {
    /// Reads a `host` setting: a value starting with `/` is a socket directory.
    fn parse(value: &str) -> Host {
        if value.starts_with('/') {
            Host::Unix(PathBuf::from(value))
        } else {
            Host::Tcp(value.to_owned())
        }
    }

    /// The default host: [`DEFAULT_SOCKET_DIR`] when it exists, else `localhost`.
    pub fn default_host() -> Host {
        if Path::new(DEFAULT_SOCKET_DIR).is_dir() {
            Host::Unix(PathBuf::from(DEFAULT_SOCKET_DIR))
        } else {
            Host::Tcp("localhost".to_owned())
        }
    }
}

impl fmt::Display for Host {
    /// The host name, or the socket directory.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Unix(dir) => write!(f, "{}", dir.display()),
            Host::Tcp(name) => f.write_str(name),
        }
    }
}

/// Settings for [`ReplicationClient::connect`](crate::ReplicationClient::connect).
///
/// `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Where the server listens.
    pub host: Host,
    /// The TCP port, which also names the Unix socket.
    pub port: u16,
    /// The role to log in as.
    pub user: String,
    /// The password; when `None`, the password file is consulted if the server asks for one.
    pub password: Option<String>,
    /// The database; physical replication connections are not tied to one, so it only matters
    /// to `pg_hba.conf` matching and logs.
    pub dbname: Option<String>,
    /// `application_name`, shown in `pg_stat_replication` and the server log.
    pub application_name: Option<String>,
    /// The limit on connecting and authenticating; `None` waits as long as the OS does.
    pub connect_timeout: Option<Duration>,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl ConnectOptions {
    /// Settings from the `PG*` environment variables and libpq's defaults.
    pub fn from_env() -> Result<Self> {
        Self::from_conninfo("")
    }

    /// Settings from a connection string layered over [`ConnectOptions::from_env`]: a key in
    /// the string wins over its environment variable.
    pub fn from_conninfo(conninfo: &str) -> Result<Self> {
        Self::from_conninfo_with_env(conninfo, |name| std::env::var(name).ok())
    }

    /// [`ConnectOptions::from_conninfo`] with the environment read through `env` (for tests
    /// and for callers that keep their own environment).
    pub fn from_conninfo_with_env(
        conninfo: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let trimmed = conninfo.trim_start();
        if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
            return Err(Error::Config {
                setting: "conninfo".to_owned(),
                reason: "connection URIs are not supported yet; use key=value pairs".to_owned(),
            });
        }
        let pairs = parse_conninfo(conninfo)?;
        // Each setting: the conninfo key if present, else its variable (an empty variable
        // counts as unset, as in libpq).
        let get = |key: &str, var: &str| -> Option<(String, String)> {
            if let Some((_, value)) = pairs.iter().rev().find(|(k, _)| k == key) {
                return Some((key.to_owned(), value.clone()));
            }
            env(var)
                .filter(|v| !v.is_empty())
                .map(|value| (var.to_owned(), value))
        };

        let sslmode = get("sslmode", "PGSSLMODE");
        if let Some((setting, mode)) = sslmode {
            match mode.as_str() {
                "disable" | "allow" | "prefer" => {}
                "require" | "verify-ca" | "verify-full" => {
                    return Err(Error::TlsNotSupported { sslmode: mode });
                }
                _ => {
                    return Err(Error::Config {
                        setting,
                        reason: format!(
                            "unknown sslmode '{mode}'; expected disable, allow, prefer, \
                             require, verify-ca or verify-full"
                        ),
                    });
                }
            }
        }

        let host = match get("host", "PGHOST") {
            Some((setting, value)) => {
                if value.contains(',') {
                    return Err(Error::Config {
                        setting,
                        reason: format!("'{value}' lists several hosts, which is not supported"),
                    });
                }
                Host::parse(&value)
            }
            None => Host::default_host(),
        };
        let port = match get("port", "PGPORT") {
            Some((setting, value)) => match value.trim().parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => {
                    return Err(Error::Config {
                        setting,
                        reason: format!("'{value}' is not a port number from 1 to 65535"),
                    });
                }
            },
            None => DEFAULT_PORT,
        };
        let user = match get("user", "PGUSER") {
            Some((_, user)) => user,
            None => os_user(&env).ok_or_else(|| Error::Config {
                setting: "user".to_owned(),
                reason: "no user given and the operating-system user name is unknown".to_owned(),
            })?,
        };
        let connect_timeout = match get("connect_timeout", "PGCONNECT_TIMEOUT") {
            // libpq: zero, negative or unset means wait indefinitely; 1 is raised to 2.
            Some((setting, value)) => match value.trim().parse::<i64>() {
                Ok(secs) if secs <= 0 => None,
                Ok(secs) => Some(Duration::from_secs(secs.max(2).unsigned_abs())),
                Err(_) => {
                    return Err(Error::Config {
                        setting,
                        reason: format!("'{value}' is not a whole number of seconds"),
                    });
                }
            },
            None => None,
        };
        Ok(ConnectOptions {
            host,
            port,
            user,
            password: get("password", "PGPASSWORD").map(|(_, v)| v),
            dbname: get("dbname", "PGDATABASE").map(|(_, v)| v),
            application_name: get("application_name", "PGAPPNAME").map(|(_, v)| v),
            connect_timeout,
        })
    }

    /// The password to send: [`ConnectOptions::password`], else the first matching line of
    /// the password file (`$PGPASSFILE`, else `~/.pgpass`). A password file readable by group
    /// or others is ignored with a warning, as libpq does.
    pub(crate) fn resolve_password(&self) -> Option<String> {
        if let Some(password) = &self.password {
            return Some(password.clone());
        }
        let file = match std::env::var_os("PGPASSFILE") {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
        };
        let meta = std::fs::metadata(&file).ok()?;
        if !meta.is_file() {
            return None;
        }
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %file.display(),
                "password file has group or world access; permissions should be u=rw (0600) \
                 or less; ignoring it"
            );
            return None;
        }
        let text = std::fs::read_to_string(&file).ok()?;
        let host = match &self.host {
            // libpq matches the default socket directory as `localhost`.
            Host::Unix(dir) if dir == Path::new(DEFAULT_SOCKET_DIR) => "localhost".to_owned(),
            host => host.to_string(),
        };
        let db = self.dbname.as_deref().unwrap_or("replication");
        pgpass_lookup(&text, &host, self.port, db, &self.user)
    }
}

/// The operating-system user: the name of our effective uid in `/etc/passwd` (libpq uses
/// `getpwuid(geteuid())`), else `$USER` or `$LOGNAME`.
fn os_user(env: &impl Fn(&str) -> Option<String>) -> Option<String> {
    let from_passwd = || -> Option<String> {
        // /proc/self belongs to the process's effective uid.
        let uid = std::fs::metadata("/proc/self").ok()?.uid();
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let line_uid: u32 = fields.nth(1)?.parse().ok()?;
            (line_uid == uid).then(|| name.to_owned())
        })
    };
    from_passwd()
        .or_else(|| env("USER"))
        .or_else(|| env("LOGNAME"))
        .filter(|u| !u.is_empty())
}

/// Splits a libpq `key=value` connection string into pairs, unescaping values.
fn parse_conninfo(conninfo: &str) -> Result<Vec<(String, String)>> {
    const KNOWN: &[&str] = &[
        "host",
        "port",
        "user",
        "password",
        "dbname",
        "application_name",
        "connect_timeout",
        "sslmode",
    ];
    let invalid = |reason: String| Error::Config {
        setting: "conninfo".to_owned(),
        reason,
    };
    let mut pairs = Vec::new();
    let mut chars = conninfo.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(invalid(format!("missing '=' after '{key}'")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => {
                            return Err(invalid(format!("unterminated quoted value for '{key}'")));
                        }
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(invalid(format!("unterminated quoted value for '{key}'"))),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(escaped) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        if !KNOWN.contains(&key.as_str()) {
            return Err(Error::Config {
                setting: key.clone(),
                reason: format!("unsupported connection option '{key}'"),
            });
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// The password of the first `hostname:port:database:username:password` line matching the
/// connection; `*` matches anything, `\` escapes `:` and `\`.
fn pgpass_lookup(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .find_map(|line| {
            let fields = split_pgpass_line(line)?;
            let matches = |field: &str, want: &str| field == "*" || field == want;
            (matches(&fields[0], host)
                && matches(&fields[1], &port)
                && matches(&fields[2], db)
                && matches(&fields[3], user))
            .then(|| fields[4].clone())
        })
}

/// The five fields of a password-file line, or `None` for a malformed one.
fn split_pgpass_line(line: &str) -> Option<[String; 5]> {
    let mut fields: Vec<String> = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            // The password is the rest of the line, colons included.
            ':' if fields.len() < 5 => fields.push(String::new()),
            '\\' => fields.last_mut()?.push(chars.next()?),
            c => fields.last_mut()?.push(c),
        }
    }
    fields.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn conninfo_values_unquote() {
        for (input, want) in [
            ("host=/tmp", vec![("host", "/tmp")]),
            ("  host = db  port=1 ", vec![("host", "db"), ("port", "1")]),
            ("password='a b\\'c'", vec![("password", "a b'c")]),
            ("password=a\\ b", vec![("password", "a b")]),
            ("password=''", vec![("password", "")]),
            ("", vec![]),
        ] {
            let got = parse_conninfo(input).expect(input);
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn conninfo_errors_name_the_problem() {
        for (input, needle) in [
            ("host", "missing '='"),
            ("password='abc", "unterminated"),
            ("frobnicate=1", "unsupported connection option 'frobnicate'"),
            ("port=0", "port number"),
            ("port=x", "port number"),
            ("host=a,b", "several hosts"),
            ("sslmode=sometimes", "unknown sslmode"),
            ("connect_timeout=soon", "seconds"),
        ] {
            let err = ConnectOptions::from_conninfo_with_env(&format!("user=u {input}"), no_env)
                .expect_err(input)
                .to_string();
            assert!(err.contains(needle), "{input}: {err}");
        }
        let err = ConnectOptions::from_conninfo_with_env(" postgresql://localhost", no_env)
            .expect_err("URI");
        assert!(err.to_string().contains("URIs are not supported"), "{err}");
    }

    #[test]
    fn tls_modes_are_refused_clearly() {
        for mode in ["require", "verify-ca", "verify-full"] {
            let err = ConnectOptions::from_conninfo_with_env(&format!("sslmode={mode}"), no_env)
                .expect_err(mode);
            assert!(matches!(err, Error::TlsNotSupported { .. }));
            assert!(err.to_string().contains("does not support yet"), "{err}");
            assert!(err.is_config());
        }
        for mode in ["disable", "allow", "prefer"] {
            ConnectOptions::from_conninfo_with_env(&format!("user=u sslmode={mode}"), no_env)
                .expect(mode);
        }
    }

    #[test]
    fn conninfo_overrides_environment() {
        let env = |name: &str| -> Option<String> {
            match name {
                "PGHOST" => Some("/run/pg".to_owned()),
                "PGPORT" => Some("6000".to_owned()),
                "PGUSER" => Some("envuser".to_owned()),
                "PGPASSWORD" => Some("envpw".to_owned()),
                "PGAPPNAME" => Some("envapp".to_owned()),
                "PGCONNECT_TIMEOUT" => Some("1".to_owned()),
                "PGDATABASE" => Some("".to_owned()),
                _ => None,
            }
        };
        let opts = ConnectOptions::from_conninfo_with_env("host=db.example port=7000", env)
            .expect("parse");
        assert_eq!(opts.host, Host::Tcp("db.example".to_owned()));
        assert_eq!(opts.port, 7000);
        assert_eq!(opts.user, "envuser");
        assert_eq!(opts.password.as_deref(), Some("envpw"));
        assert_eq!(opts.dbname, None, "an empty variable counts as unset");
        assert_eq!(opts.application_name.as_deref(), Some("envapp"));
        assert_eq!(opts.connect_timeout, Some(Duration::from_secs(2)));

        let opts = ConnectOptions::from_conninfo_with_env("", env).expect("parse");
        assert_eq!(opts.host, Host::Unix(PathBuf::from("/run/pg")));
        assert_eq!(opts.port, 6000);
        assert!(
            !format!("{opts:?}").contains("envpw"),
            "Debug hides the password"
        );
    }

    #[test]
    fn defaults_follow_libpq() {
        let opts = ConnectOptions::from_conninfo_with_env("", |name| {
            (name == "USER").then(|| "fallback".to_owned())
        })
        .expect("parse");
        assert_eq!(opts.port, DEFAULT_PORT);
        assert_eq!(opts.host, Host::default_host());
        assert!(!opts.user.is_empty());
        assert_eq!(opts.connect_timeout, None);
        let opts = ConnectOptions::from_conninfo_with_env("user=u connect_timeout=0", no_env)
            .expect("parse");
        assert_eq!(opts.connect_timeout, None);
    }

    #[test]
    fn pgpass_matches_first_line() {
        let text = "# comment\n\
                    other:5432:*:u:nope\n\
                    localhost:5432:*:u:pw\\:with:colons\n\
                    *:*:*:*:fallback\n";
        assert_eq!(
            pgpass_lookup(text, "localhost", 5432, "replication", "u").as_deref(),
            Some("pw:with:colons")
        );
        assert_eq!(
            pgpass_lookup(text, "db", 1, "x", "v").as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_lookup("a:b:c\n", "a", 1, "c", "d"), None);
    }
}
