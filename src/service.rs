//! The service: the domain's parts assembled once over a store and a token,
//! as `inkan serve` runs them (the HTTP layer adds only its own state).

use std::sync::Arc;
use std::time::Duration;

use crate::audit::seal::derived_secret;
use crate::audit::writer::{AuditWriter, Windows};
use crate::auth::cards::CardAuth;
use crate::auth::oidc::Provider;
use crate::auth::sessions::Sessions;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fido::decoy::Decoys;
use crate::fido::flows::Phones;
use crate::metrics::Metrics;
use crate::seam::Transactions;
use crate::signing::{AuditSink, Signing};
use crate::store::{Store, Tx};

/// The domain, assembled.
pub struct Service {
    /// Configuration.
    pub config: Config,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Bearer tokens to principals.
    pub sessions: Sessions<dyn Tx>,
    /// The signing pipeline (with the token).
    pub signing: Signing<dyn Tx>,
    /// The OpenID Connect provider.
    pub oidc: Provider<dyn Tx>,
    /// Card login.
    pub cards: CardAuth,
    /// The phone flows.
    pub phones: Phones<dyn Tx>,
    /// Prometheus counters.
    pub metrics: Arc<Metrics>,
    /// Demo client (demo mode only): id and secret.
    pub demo_client: Option<(String, String)>,
    /// What validation trusts (`[verify]`).
    pub trust: Arc<crate::verify::Trust>,
    /// Extension of signatures made earlier (the signing pipeline's TSA and CRL sources).
    pub extender: crate::extend::Extender,
}

impl Service {
    /// Opens the store and the token and assembles the domain; in demo mode
    /// (after `setup::init`), sets up the demo users, cards and client first.
    pub async fn open(config: Config, demo_mode: bool) -> Result<Service> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        if !demo_mode {
            crate::setup::require_database(&config)?;
        }
        let store = crate::setup::open_store(&config).await?;
        let keystore = Arc::new(crate::setup::open_keystore(&config).map_err(|e| match e {
            Error::Unavailable(m) => Error::Unavailable(format!("{m} (run `inkan init`?)")),
            other => other,
        })?);
        let demo_client = if demo_mode {
            crate::demo::users(&config, store.as_ref(), &keystore, clock.as_ref()).await?;
            crate::demo::cards(store.as_ref(), clock.as_ref(), &crate::fixtures::fixture_path("")).await?;
            Some(crate::demo::client(&config, store.as_ref(), clock.as_ref()).await?)
        } else {
            None
        };
        let metrics = Arc::new(Metrics::default());
        let windows = Windows {
            busy: Duration::from_micros(config.server.audit_window_us),
            idle: Duration::from_micros(config.server.audit_idle_window_us),
        };
        // The audit log gets its own connection (and thread): readers never wait for its syncs.
        let writer = AuditWriter::start(store.audit_log().await?, windows)
            .map_err(|e| Error::Internal(format!("cannot start the audit writer: {e}")))?;
        // Every domain part opens its transactions on the store.
        let tx = || -> Arc<dyn Transactions<dyn Tx>> { Arc::clone(&store) as Arc<dyn Transactions<dyn Tx>> };
        // Every node derives the same decoys (from the token), so that a
        // decoy answers alike wherever its requests land.
        let decoys = Decoys::new(derived_secret(tx().as_ref(), &keystore, "decoy passkeys").await?);
        // Card-login requests travel sealed by a secret every node derives alike.
        let request_secret = derived_secret(tx().as_ref(), &keystore, "sealed login requests").await?;
        let signing = Signing::new(
            &config,
            Arc::clone(&keystore),
            tx(),
            store.sads(),
            Arc::clone(&clock),
            AuditSink::Writer(writer),
            Arc::clone(&metrics),
        )?;
        let trust = Arc::new(crate::verify::Trust::from_config(&config, &[], &[], &[])?);
        let extender =
            crate::extend::Extender::new(signing.tsa(), signing.crls(), Arc::clone(&trust), Arc::clone(&clock));
        Ok(Service {
            trust,
            extender,
            sessions: Sessions::new(tx(), store.invalidation(), Arc::clone(&clock)).await?,
            oidc: Provider::new(&config, tx(), store.oidc(), keystore, Arc::clone(&clock), request_secret)?,
            cards: CardAuth::from_config(&config)?,
            phones: Phones::new(&config, tx(), Arc::clone(&clock), decoys)?,
            signing,
            metrics,
            store,
            clock,
            config,
            demo_client,
        })
    }
}
