//! The Redis backend: [`RedisManager`] connects (the seed's `RedisManager`),
//! [`RedisCluster`] runs the node registry, room placement and tunnels on
//! that connection.

mod cluster;
mod keys;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::rustls;
use fred::types::config::TlsConnector;

use crate::error::ClusterError;

pub use cluster::RedisCluster;

/// Where Redis is and how to talk to it (`REDIS_HOST`, `REDIS_PORT`,
/// `REDIS_USERNAME`, `REDIS_PASSWORD`, `REDIS_URL`, `REDIS_TLS_CA`).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Host name or IP (`REDIS_HOST`, default `localhost`).
    pub host: String,
    /// Port (`REDIS_PORT`, default 6379).
    pub port: u16,
    /// ACL user name (`REDIS_USERNAME`), for `AUTH <user> <password>`;
    /// used when the URL has none. Without it, the `default` user.
    pub username: Option<String>,
    /// Password (`REDIS_PASSWORD`), for `AUTH`.
    pub password: Option<String>,
    /// A full URL (`REDIS_URL`) such as `redis://:secret@redis:6379/0`, or
    /// `rediss://` for TLS (rustls, system root certificates). When set,
    /// it wins over host and port; `username` and `password` still apply
    /// if the URL has none.
    pub url: Option<String>,
    /// A PEM file of the certificate authorities to trust for `rediss://`
    /// (`REDIS_TLS_CA`), instead of the system's: for a Redis whose
    /// certificate a private CA issued.
    pub tls_ca: Option<PathBuf>,
    /// How long one connection attempt may take (default 5 s).
    pub connect_timeout: Duration,
    /// How long one command may take (default 2 s). Commands sent while the
    /// connection is down fail after this.
    pub command_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 6379,
            username: None,
            password: None,
            url: None,
            tls_ca: None,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(2),
        }
    }
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password, in either field.
        f.debug_struct("RedisOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("url", &self.url.as_ref().map(|u| redact_url(u)))
            .field("tls_ca", &self.tls_ca)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

/// `url` with the password between `:` and `@` replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let Some(at) = rest.find('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

/// Connects to Redis, as the seed's `RedisManager`.
///
/// ```no_run
/// # async fn run() -> Result<(), pulsewave_cluster::ClusterError> {
/// use pulsewave_cluster::{RedisManager, RedisOptions};
///
/// let redis = RedisManager::new(RedisOptions {
///     host: "localhost".into(),
///     port: 6379,
///     ..RedisOptions::default()
/// });
/// let connection = redis.connect().await?;
/// assert!(connection.is_connected());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisManager {
    options: RedisOptions,
}

impl RedisManager {
    /// A manager for `options`; nothing is connected yet.
    pub fn new(options: RedisOptions) -> Self {
        Self { options }
    }

    /// The options.
    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// The fred configuration the options describe.
    pub fn config(&self) -> Result<Config, ClusterError> {
        let o = &self.options;
        let mut config = match &o.url {
            Some(url) => Config::from_url(url)
                .map_err(|e| ClusterError::Config(format!("REDIS_URL {}: {e}", redact_url(url))))?,
            None => {
                if o.host.trim().is_empty() {
                    return Err(ClusterError::Config("REDIS_HOST is empty".into()));
                }
                Config {
                    server: ServerConfig::new_centralized(o.host.clone(), o.port),
                    ..Config::default()
                }
            }
        };
        if config.username.is_none() {
            config.username = o.username.clone();
        }
        if config.password.is_none() {
            config.password = o.password.clone();
        }
        if let Some(path) = &o.tls_ca {
            if config.tls.is_none() {
                return Err(ClusterError::Config(
                    "REDIS_TLS_CA needs a rediss:// REDIS_URL".into(),
                ));
            }
            config.tls = Some(tls_with_ca(path)?.into());
        }
        // Keep retrying the first connection too: a node may start before
        // its Redis (docker-compose) and must come up by itself.
        config.fail_fast = false;
        Ok(config)
    }

    fn builder(&self) -> Result<Builder, ClusterError> {
        let o = &self.options;
        let mut builder = Builder::from_config(self.config()?);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = o.connect_timeout;
                c.internal_command_timeout = o.command_timeout;
                c.max_command_attempts = 1;
                c.unresponsive.max_timeout = Some(o.command_timeout * 3);
                c.unresponsive.interval = Duration::from_millis(500);
                c.tcp.nodelay = Some(true);
            })
            .with_performance_config(|p| {
                p.default_command_timeout = o.command_timeout;
                p.broadcast_channel_capacity = 4096;
            })
            // Reconnect forever: 100 ms, doubling up to 2 s.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        Ok(builder)
    }

    /// Starts connecting and returns at once; the connection comes up (and
    /// comes back after a failure) by itself. Fails only on a bad
    /// configuration.
    pub fn connect_lazy(&self) -> Result<RedisConnection, ClusterError> {
        let builder = self.builder()?;
        let client = builder.build()?;
        let subscriber = builder.build_subscriber_client()?;
        // Remember the last connection error of either client, so that a
        // refused password is reported as such rather than as a timeout.
        let last_error = Arc::new(Mutex::new(None));
        for mut errors in [client.error_rx(), subscriber.error_rx()] {
            let last_error = last_error.clone();
            tokio::spawn(async move {
                while let Ok((e, _)) = errors.recv().await {
                    *last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            });
        }
        // The returned handles drive the connections; they end on `quit`.
        drop(client.connect());
        drop(subscriber.connect());
        // Subscriptions are restored after every reconnection.
        drop(subscriber.manage_subscriptions());
        Ok(RedisConnection {
            client,
            subscriber,
            last_error,
        })
    }

    /// Connects and waits up to the connect timeout for Redis to answer.
    pub async fn connect(&self) -> Result<RedisConnection, ClusterError> {
        let connection = self.connect_lazy()?;
        if let Err(e) = connection
            .wait_connected(self.options.connect_timeout)
            .await
        {
            connection.quit().await;
            return Err(e);
        }
        Ok(connection)
    }
}

/// A connection to Redis: one client for commands and publishing, one for
/// subscriptions. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RedisConnection {
    pub(crate) client: Client,
    pub(crate) subscriber: SubscriberClient,
    last_error: Arc<Mutex<Option<fred::error::Error>>>,
}

/// A rustls configuration (aws-lc-rs) trusting the CAs of the PEM file at
/// `path`.
fn tls_with_ca(path: &std::path::Path) -> Result<TlsConnector, ClusterError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |e: &dyn std::fmt::Display| {
        ClusterError::Config(format!("REDIS_TLS_CA {}: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no certificate in the file"));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(config))
}

impl RedisConnection {
    /// The command client, for Rust callers that keep their own data in the
    /// same Redis.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether both connections are up.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected() && self.subscriber.is_connected()
    }

    /// The last error either connection reported, if any.
    pub fn last_error(&self) -> Option<ClusterError> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map(ClusterError::from)
    }

    /// Waits up to `timeout` for both connections to be up.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Auth`] at once if Redis refused the credentials (the
    /// connection keeps retrying, but only a configuration change helps);
    /// [`ClusterError::Config`] for a TLS failure (certificate not trusted,
    /// wrong host name); [`ClusterError::Unavailable`] with the last error
    /// after `timeout` otherwise.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.is_connected() {
                return Ok(());
            }
            let last = self.last_error();
            if let Some(e @ ClusterError::Auth(_)) = last {
                return Err(e);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(match last {
                    Some(e @ ClusterError::Config(_)) => e,
                    Some(e) => ClusterError::Unavailable(format!(
                        "no connection within {timeout:?} (last error: {e})"
                    )),
                    None => ClusterError::Unavailable(format!("no connection within {timeout:?}")),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Closes both connections.
    pub async fn quit(&self) {
        let limit = Duration::from_secs(1);
        let _ = tokio::time::timeout(limit, self.subscriber.quit()).await;
        let _ = tokio::time::timeout(limit, self.client.quit()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://:secret@redis:6379/0"),
            "redis://:***@redis:6379/0"
        );
        assert_eq!(redact_url("rediss://user:pw@h:1"), "rediss://user:***@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        let o = RedisOptions {
            password: Some("pw".into()),
            url: Some("redis://:topsecret@h:1".into()),
            ..RedisOptions::default()
        };
        let shown = format!("{o:?}");
        assert!(
            !shown.contains("topsecret") && !shown.contains("\"pw\""),
            "{shown}"
        );
    }

    #[test]
    fn config_from_host_or_url() {
        let m = RedisManager::new(RedisOptions {
            password: Some("pw".into()),
            ..RedisOptions::default()
        });
        let c = m.config().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.password.as_deref(), Some("pw"));
        assert!(!c.fail_fast);
        let m = RedisManager::new(RedisOptions {
            url: Some("redis://:urlpw@example:6380/2".into()),
            password: Some("other".into()),
            ..RedisOptions::default()
        });
        let c = m.config().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.password.as_deref(), Some("urlpw"));
        assert_eq!(c.database, Some(2));
        let bad = RedisManager::new(RedisOptions {
            url: Some("not a url".into()),
            ..RedisOptions::default()
        });
        assert!(matches!(bad.config(), Err(ClusterError::Config(_))));
    }
}
