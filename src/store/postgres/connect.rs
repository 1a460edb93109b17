//! How to reach PostgreSQL: the URL, the password, TLS (rustls, verifying the
//! server against `[store] ca`), pools and single connections.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{redact_url, StoreConfig};
use crate::seam::StoreError;

/// How long a request waits for a pooled connection, or for a new one.
pub const POOL_WAIT: Duration = Duration::from_secs(5);
/// How long connecting to PostgreSQL may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a statement waits for a lock (then 503).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long PostgreSQL keeps a transaction that does nothing (a node gone).
pub const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(10);

/// How to reach the database: its settings and TLS.
#[derive(Clone)]
pub struct Connect {
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    /// The URL without its password.
    shown: String,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Connect {
    /// Reads `[store] url`, `password` and `ca`.
    pub fn new(store: &StoreConfig) -> Result<Connect, StoreError> {
        let url = store.url.as_deref().ok_or_else(|| StoreError::Failed("[store] url is not set".into()))?;
        let shown = redact_url(url);
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Failed(format!("[store] url {shown}: {e}")))?;
        if let Some(password) = &store.password {
            config.password(password.as_bytes());
        }
        if config.get_application_name().is_none() {
            config.application_name("inkan");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.keepalives(true).keepalives_idle(Duration::from_secs(30));
        // A node that dies while it holds a lock (the writers' lock, the
        // audit head) must not stop the others: PostgreSQL ends its
        // transaction when it stays idle, and nobody waits for a lock for long.
        let options = format!(
            "{} -c lock_timeout={}ms -c idle_in_transaction_session_timeout={}ms",
            config.get_options().unwrap_or_default(),
            LOCK_TIMEOUT.as_millis(),
            IDLE_IN_TRANSACTION.as_millis()
        );
        config.options(options.trim());
        let tls = match &store.ca {
            Some(ca) => {
                let pem =
                    std::fs::read(ca).map_err(|e| StoreError::Failed(format!("[store] ca {}: {e}", ca.display())))?;
                let mut roots = rustls::RootCertStore::empty();
                let certs = crate::pki::parse_certificates(&pem)
                    .map_err(|e| StoreError::Failed(format!("[store] ca {}: {e}", ca.display())))?;
                for cert in certs {
                    roots
                        .add(rustls::pki_types::CertificateDer::from(cert))
                        .map_err(|e| StoreError::Failed(format!("[store] ca {}: {e}", ca.display())))?;
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let tls = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| StoreError::Failed(format!("TLS to PostgreSQL: {e}")))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                config.ssl_mode(SslMode::Require);
                Some(MakeRustlsConnect::new(tls))
            }
            None if config.get_ssl_mode() == SslMode::Require => {
                return Err(StoreError::Failed(format!(
                    "[store] url {shown} asks for TLS (sslmode=require): set [store] ca to the PEM file of the CA \
                     that issued PostgreSQL's certificate"
                )))
            }
            None => {
                config.ssl_mode(SslMode::Disable);
                None
            }
        };
        Ok(Connect { config, tls, shown })
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A pool of up to `size` connections.
    pub fn pool(&self, size: usize) -> Result<Pool, StoreError> {
        let manager = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = match &self.tls {
            Some(tls) => Manager::from_config(self.config.clone(), tls.clone(), manager),
            None => Manager::from_config(self.config.clone(), NoTls, manager),
        };
        Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Failed(format!("PostgreSQL pool: {e}")))
    }

    /// One connection outside any pool; its connection task is spawned and
    /// ends when the client is dropped.
    pub async fn client(&self) -> Result<tokio_postgres::Client, StoreError> {
        async fn run<T>(config: &tokio_postgres::Config, tls: T) -> Result<tokio_postgres::Client, StoreError>
        where
            T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
            T::Stream: Send + 'static,
        {
            let (client, connection) = config.connect(tls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!("PostgreSQL connection ended: {e}");
                }
            });
            Ok(client)
        }
        match &self.tls {
            Some(tls) => run(&self.config, tls.clone()).await,
            None => run(&self.config, NoTls).await,
        }
    }

    /// One connection outside any pool whose notifications (`LISTEN`) go to
    /// `notified` with their payload.
    pub async fn listening_client(
        &self,
        notified: impl Fn(&str) + Send + 'static,
    ) -> Result<tokio_postgres::Client, StoreError> {
        async fn run<T>(
            config: &tokio_postgres::Config,
            tls: T,
            notified: impl Fn(&str) + Send + 'static,
        ) -> Result<tokio_postgres::Client, StoreError>
        where
            T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
            T::Stream: Send + 'static,
        {
            let (client, mut connection) = config.connect(tls).await?;
            tokio::spawn(async move {
                loop {
                    match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                        Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => notified(n.payload()),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            tracing::debug!("PostgreSQL listening connection ended: {e}");
                            return;
                        }
                        None => return,
                    }
                }
            });
            Ok(client)
        }
        let mut config = self.config.clone();
        config.application_name("inkan auth-epoch listener");
        match &self.tls {
            Some(tls) => run(&config, tls.clone(), notified).await,
            None => run(&config, NoTls, notified).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_a_ca_never_ask_for_tls_and_passwords_stay_out_of_messages() {
        let store = |url: &str| StoreConfig { url: Some(url.into()), ..StoreConfig::default() };
        let c = Connect::new(&store("postgres://inkan:s3cret@db.example/inkan")).expect("connect");
        assert_eq!(c.shown(), "postgres://inkan:***@db.example/inkan");
        assert!(!format!("{c:?}").contains("s3cret"));
        let err = Connect::new(&store("postgres://inkan:s3cret@db/inkan?sslmode=require")).expect_err("no CA");
        assert!(err.to_string().contains("[store] ca") && !err.to_string().contains("s3cret"), "{err}");
        let err = Connect::new(&StoreConfig { ca: Some("/nonexistent/ca.pem".into()), ..store("postgres://db/x") })
            .expect_err("missing CA file");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
