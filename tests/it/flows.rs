//! The phone flows in process: the domain ([`inkan::fido::flows::Phones`])
//! over a real SQLite file and a SoftHSM token of this binary's shared pool
//! (the decoys' secret is the token's MAC, as `inkan serve` derives it), with
//! a clock the test moves, and no socket, TLS or child process. A flow test
//! here costs milliseconds; the HTTP tests (`fido.rs`) keep the pages and
//! the browser's side.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use inkan::clock::{Clock, ManualClock};
use inkan::error::Error;
use inkan::fido::flows::Phones;
use inkan::fido::regcode::{self, Password};
use inkan::seam::Transactions;
use inkan::store::{Store, Tx};
use serde_json::Value;

use crate::authenticator::{Authenticator, Hostile, Phone};

/// The domain of one test: its own data directory and database, one token of
/// the shared pool, a stopped clock.
struct Domain {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    phones: Phones<dyn Tx>,
    clock: Arc<ManualClock>,
    origin: String,
    runtime: tokio::runtime::Runtime,
}

impl Domain {
    fn new() -> Domain {
        let (keystore, label) = crate::harness::token(1);
        let dir = tempfile::tempdir().expect("dir");
        let mut config = inkan::config::Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
        config.token.module = crate::harness::module().into();
        config.token.label = label;
        config.token.user_pin = Some(crate::harness::USER_PIN.into());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let store = runtime.block_on(inkan::setup::open_store(&config)).expect("store");
        keystore.prepare_seal_key().expect("seal key");
        let tx = || Arc::clone(&store) as Arc<dyn Transactions<dyn Tx>>;
        let secret = runtime
            .block_on(inkan::audit::seal::derived_secret(tx().as_ref(), &keystore, "decoy passkeys"))
            .expect("decoys' secret");
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let phones =
            Phones::new(&config, tx(), Arc::clone(&clock) as Arc<dyn Clock>, inkan::fido::decoy::Decoys::new(secret))
                .expect("phones");
        let origin = config.server.public_url.trim_end_matches('/').to_owned();
        Domain { _dir: dir, store, phones, clock, origin, runtime }
    }

    fn run<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(f)
    }

    /// A user, and a printed registration code with `password` for them;
    /// returns the code.
    fn user_with_code(&self, user_id: &str, password: &str) -> String {
        let clock = Arc::clone(&self.clock) as Arc<dyn Clock>;
        self.run(inkan::users::add(
            self.store.tx(),
            clock.as_ref(),
            "cli:test",
            user_id,
            "試験 太郎",
            inkan::pki::profile::Qualification::Doctor,
        ))
        .expect("user");
        self.code_for(user_id, password)
    }

    /// A printed registration code with `password` for `user_id`.
    fn code_for(&self, user_id: &str, password: &str) -> String {
        let issued = self
            .run(regcode::issue(
                self.store.tx(),
                self.clock.now_ms(),
                "cli:test",
                &self.origin,
                user_id,
                Password::Given(password.into()),
                3_600_000,
            ))
            .expect("code");
        issued.url.rsplit('/').next().expect("code").to_owned()
    }

    /// The phone's answer to a ceremony's options, as its page posts it.
    fn finish(&self, phone: &str, answer: &Value) -> Result<&'static str, Error> {
        self.run(self.phones.finish(phone, answer.to_string().as_bytes(), "flows-test"))
    }

    /// The audit events, oldest first.
    fn events(&self) -> Vec<String> {
        let mut rows = self
            .run(async {
                let mut tx = self.store.tx().read().await?;
                tx.audit_tail(None, 1000).await
            })
            .expect("audit");
        rows.reverse();
        rows.into_iter().map(|r| r.event).collect()
    }
}

#[test]
fn a_printed_code_registers_one_phone_once_and_the_password_is_counted() {
    let d = Domain::new();
    let code = d.user_with_code("100001", "sakura-2026");
    assert_eq!(d.run(d.phones.regcode_check(&code)).expect("usable"), "100001");
    // A wrong password opens nothing, and counts: one fewer try each time.
    let left = |e: Error| match e {
        Error::Unauthenticated(inkan::error::Credential::Password { left }, _) => left,
        other => panic!("a wrong password: {other:?}"),
    };
    let first = left(d.run(d.phones.regcode_open(&code, "wrong")).expect_err("wrong password"));
    let second = left(d.run(d.phones.regcode_open(&code, "wrong again")).expect_err("wrong password"));
    assert_eq!(second + 1, first, "each wrong password is counted");
    let phone = d.run(d.phones.regcode_open(&code, "sakura-2026")).expect("opened");

    // Register: the options, the phone's answer, the label step next.
    let options = d.run(d.phones.begin(&phone, None)).expect("begin");
    let mut auth = Authenticator::new(&d.origin);
    let answer = auth.create(&options);
    assert_eq!(d.finish(&phone, &answer).expect("registered"), "/label");
    // The same answer again is a replay: refused, nothing changes.
    let events = d.events();
    assert!(d.finish(&phone, &answer).is_err(), "a second finish is refused");
    assert_eq!(d.events(), events, "a refused finish writes nothing");
    let (_, labelled) = d.run(d.phones.label(&phone, Some("仕事用"))).expect("label");
    assert!(labelled);
    assert!(d.events().iter().any(|e| e == "fido.register"), "{:?}", d.events());

    // The code is used up: it opens nothing again.
    assert!(d.run(d.phones.regcode_check(&code)).is_err(), "a used code is gone");
    assert!(d.run(d.phones.regcode_open(&code, "sakura-2026")).is_err());
}

#[test]
fn a_ticket_past_its_time_moves_no_further_and_a_registration_has_nothing_to_give_up() {
    let d = Domain::new();
    let code = d.user_with_code("100002", "ume-2026");
    let phone = d.run(d.phones.regcode_open(&code, "ume-2026")).expect("opened");
    let options = d.run(d.phones.begin(&phone, None)).expect("begin");
    // The ticket's time passes (`[fido] ticket_secs`): the answer comes too late.
    d.clock.advance(Duration::from_secs(3_600));
    let mut auth = Authenticator::new(&d.origin);
    let late = d.finish(&phone, &auth.create(&options)).expect_err("too late");
    assert!(matches!(late, Error::Gone(..) | Error::NotFound(..)), "{late:?}");
    assert!(!d.events().iter().any(|e| e == "fido.register"), "nothing registered");

    // A new code's ticket: "giving up" is a sign-in's answer (the PC is
    // told); a registration refuses it and still takes the phone's answer.
    let code = d.code_for("100002", "momo-2026");
    let phone = d.run(d.phones.regcode_open(&code, "momo-2026")).expect("opened");
    let options = d.run(d.phones.begin(&phone, None)).expect("begin");
    let refused = d.run(d.phones.phone_gave_up(&phone)).expect_err("nothing to give up");
    assert!(matches!(refused, Error::Conflict(_)), "{refused:?}");
    assert_eq!(d.finish(&phone, &auth.create(&options)).expect("registered"), "/label");
}

#[test]
fn a_hostile_answer_is_refused_and_the_ticket_still_takes_the_right_one() {
    let d = Domain::new();
    let code = d.user_with_code("100003", "kiku-2026");
    let phone = d.run(d.phones.regcode_open(&code, "kiku-2026")).expect("opened");
    let options = d.run(d.phones.begin(&phone, None)).expect("begin");
    let mut auth = Authenticator::new(&d.origin);
    // Another origin's answer (a phishing page's): refused, nothing registered.
    let phished =
        auth.register(&options, &Hostile { origin: Some("https://evil.example".into()), ..Hostile::default() });
    assert!(d.finish(&phone, &phished).is_err(), "another origin is refused");
    assert!(!d.events().iter().any(|e| e == "fido.register"));
    // The user's own phone then registers on the same ticket.
    let options = d.run(d.phones.begin(&phone, None)).expect("begin again");
    assert_eq!(d.finish(&phone, &auth.create(&options)).expect("registered"), "/label");
}
