use super::*;

const NOW: i64 = 1_000_000;
const LIFE: i64 = 300_000;

fn t(kind: Kind, has_device: bool) -> Ticket {
    Ticket::new(kind, "u", has_device, true, NOW, LIFE, None)
}

fn login() -> Ticket {
    t(Kind::Login { request: "req".into() }, true)
}

/// Runs a phone ceremony to its verified end.
fn ceremony(ticket: Ticket) -> Ticket {
    let (ticket, state) = ticket.begin(NOW, "state".into()).expect("begin").take_ceremony(NOW).expect("take");
    assert_eq!(state, "state");
    ticket.verified().expect("verified")
}

#[test]
fn a_login_waits_signs_in_once_and_is_collected_once() {
    let ticket = login();
    assert_eq!((ticket.stage.clone(), ticket.action()), (Stage::Waiting, Action::Authenticate));
    let started = ticket.clone().begin(NOW, "s1".into()).expect("begin");
    assert_eq!(started.stage, Stage::Ceremony("s1".into()));
    // A new start replaces an unanswered challenge.
    let restarted = started.begin(NOW, "s2".into()).expect("again");
    let (waiting, state) = restarted.take_ceremony(NOW).expect("take");
    assert_eq!(state, "s2");
    assert_eq!(waiting.clone().take_ceremony(NOW), Err(Refused::Stage("take an answer")), "one answer per challenge");
    let done = waiting.verified().expect("verified");
    assert_eq!(done.stage, Stage::Done);
    let collected = done.clone().collect().expect("collect");
    assert_eq!(collected.stage, Stage::Collected);
    assert!(collected.clone().collect().is_err(), "a code is handed out once");
    assert!(collected.clone().begin(NOW, "s".into()).is_err(), "a finished login takes no new ceremony");
    assert!(collected.cancel().is_err(), "collected stays collected");
    assert!(done.label().is_err(), "a login has no label screen");
}

#[test]
fn expiry_stops_every_step_but_not_a_finished_ticket() {
    let late = NOW + LIFE;
    let ticket = login();
    assert!(ticket.expired(late));
    assert_eq!(ticket.clone().begin(late, "s".into()), Err(Refused::Expired));
    let held = ticket.clone().begin(NOW, "s".into()).expect("begin");
    assert_eq!(held.take_ceremony(late), Err(Refused::Expired));
    let done = ceremony(ticket);
    assert!(!done.expired(late), "finished tickets never expire");
    assert!(done.collect().is_ok());
}

#[test]
fn a_device_change_signs_in_asks_then_registers_in_a_new_phase() {
    let ticket = t(Kind::Change, true);
    assert_eq!(ticket.action(), Action::Authenticate);
    let asked = ceremony(ticket);
    assert_eq!(asked.stage, Stage::Confirm, "the old phone signed in: the PC asks");
    assert!(asked.clone().begin(NOW, "s".into()).is_err(), "no ceremony while the PC decides");
    let yes = asked.clone().answer(NOW + 1000, true, LIFE).expect("yes");
    assert_eq!((yes.stage.clone(), yes.phase, yes.replace_confirmed), (Stage::Waiting, 1, true));
    assert_eq!(yes.action(), Action::Register, "the next phase registers the new phone");
    assert_eq!(yes.expires_at, NOW + 1000 + LIFE, "a fresh lifetime for the new QR code");
    let done = ceremony(yes);
    assert_eq!(done.stage, Stage::Done);
    assert!(done.clone().collect().is_err(), "only logins are collected");
    let labelled = done.label().expect("label");
    assert!(labelled.labelled);
    assert!(labelled.label().is_err(), "the label screen is answered once");
    let no = asked.answer(NOW, false, LIFE).expect("no");
    assert_eq!(no.stage, Stage::Cancelled);
    assert!(no.answer(NOW, true, LIFE).is_err(), "a cancelled ticket takes no answer");
}

#[test]
fn a_card_enrollment_asks_first_when_a_phone_is_registered() {
    let fresh = t(Kind::CardEnroll { card: Method::Hpki }, false);
    assert_eq!((fresh.stage.clone(), fresh.action()), (Stage::Waiting, Action::Register));
    let replacing = t(Kind::CardEnroll { card: Method::Jpki }, true);
    assert_eq!(replacing.stage, Stage::Confirm);
    assert!(replacing.clone().begin(NOW, "s".into()).is_err(), "no QR before the answer");
    // A phone registered meanwhile by another ticket: the question comes back.
    let asked = fresh.ask_replace().expect("ask");
    assert_eq!(asked.stage, Stage::Confirm);
    let yes = asked.answer(NOW, true, LIFE).expect("yes");
    assert!(yes.replace_confirmed);
    assert_eq!(ceremony(yes).stage, Stage::Done);
}

#[test]
fn code_tickets_never_ask_and_logins_cannot_register() {
    let code = t(Kind::CodeEnroll { code: 7 }, false);
    assert_eq!(code.action(), Action::Register);
    assert!(code.clone().ask_replace().is_err(), "no PC to ask: a code ticket is cancelled instead");
    assert_eq!(code.cancel().expect("cancel").stage, Stage::Cancelled);
    let verify = t(Kind::CodeVerify { code: 7 }, true);
    assert_eq!(verify.action(), Action::Authenticate);
    assert_eq!(ceremony(verify).stage, Stage::Done);
    assert!(login().ask_replace().is_err());
    assert!(login().answer(NOW, true, LIFE).is_err(), "a login has no replace question");
}

#[test]
fn a_card_link_is_used_once_and_put_back_after_a_refused_card() {
    let link = t(Kind::Link, false);
    assert_eq!(link.action(), Action::None);
    assert!(link.clone().begin(NOW, "s".into()).is_err(), "no phone step");
    assert!(link.clone().verified().is_err());
    let used = link.clone().use_link(NOW).expect("use");
    assert_eq!(used.stage, Stage::Collected);
    assert!(used.clone().use_link(NOW).is_err(), "one ticket links one card");
    let back = used.restore_link().expect("restore");
    assert_eq!(back.stage, Stage::Waiting);
    assert!(back.clone().restore_link().is_err());
    assert_eq!(link.use_link(NOW + LIFE), Err(Refused::Expired));
    assert!(login().use_link(NOW).is_err(), "only a link ticket links");
}

#[test]
fn a_hand_off_is_claimed_once_and_cancel_keeps_finished_ones() {
    let unclaimed = Ticket::new(Kind::CardEnroll { card: Method::Hpki }, "u", false, false, NOW, LIFE, None);
    let claimed = unclaimed.claim().expect("claim");
    assert!(claimed.pc_claimed);
    assert!(claimed.clone().claim().is_err());
    let done = ceremony(claimed);
    assert_eq!(done.clone().cancel().expect("a removed phone cancels a done ticket").stage, Stage::Cancelled);
    assert_eq!(done.with_error("x".into()).error.as_deref(), Some("x"));
}

#[test]
fn stored_rows_decode_to_kinds_or_fail() {
    for kind in [
        Kind::Login { request: "r".into() },
        Kind::CardEnroll { card: Method::Hpki },
        Kind::CardEnroll { card: Method::Jpki },
        Kind::CodeEnroll { code: 3 },
        Kind::CodeVerify { code: 3 },
        Kind::Change,
        Kind::Link,
    ] {
        let (purpose, via) = kind.names();
        let back = Kind::from_names(purpose, via, kind.request().map(str::to_owned), kind.code()).expect("round trip");
        assert_eq!(back, kind);
    }
    for (purpose, via, request, code) in [
        ("login", "fido", None, None),
        ("login", "hpki", Some("r".to_owned()), None),
        ("enroll", "fido", None, None),
        ("enroll", "hpki", None, Some(1)),
        ("verify", "hpki", None, None),
        ("link", "jpki", None, None),
        ("party", "fido", None, None),
    ] {
        assert!(Kind::from_names(purpose, via, request, code).is_err(), "{purpose}/{via} is not a kind");
    }
    assert!(Stage::from_parts("ceremony", None).is_err());
    assert!(Stage::from_parts("waiting", Some("s".into())).is_err());
    assert!(Stage::from_parts("sleeping", None).is_err());
    assert_eq!(Stage::from_parts("ceremony", Some("s".into())).expect("ok"), Stage::Ceremony("s".into()));
    // Combinations no transition makes.
    assert!(Ticket { stage: Stage::Confirm, ..login() }.check().is_err());
    assert!(Ticket { stage: Stage::Collected, ..t(Kind::Change, true) }.check().is_err());
    assert!(Ticket { phase: 1, ..t(Kind::Link, false) }.check().is_err());
    assert!(Ticket { stage: Stage::Cancelled, ..login() }.check().is_ok());
    assert!(Ticket { stage: Stage::Confirm, phase: 1, ..t(Kind::Change, true) }.check().is_ok());
}

/// Every transition from every stage of every kind: legal exactly where
/// the flows need it (the table is the specification), refused elsewhere.
#[test]
fn every_transition_from_every_state_is_legal_or_refused() {
    type Spec = fn(&Ticket) -> bool;
    type Step = fn(Ticket) -> Result<Ticket, Refused>;
    let kinds = [
        Kind::Login { request: "r".into() },
        Kind::CardEnroll { card: Method::Hpki },
        Kind::CodeEnroll { code: 1 },
        Kind::CodeVerify { code: 1 },
        Kind::Change,
        Kind::Link,
    ];
    let stages =
        [Stage::Confirm, Stage::Waiting, Stage::Ceremony("s".into()), Stage::Done, Stage::Collected, Stage::Cancelled];
    let table: [(&str, Spec, Step); 11] = [
        (
            "begin",
            |t| matches!(t.stage, Stage::Waiting | Stage::Ceremony(_)) && t.kind != Kind::Link,
            |t| t.begin(NOW, "new".into()),
        ),
        ("take_ceremony", |t| matches!(t.stage, Stage::Ceremony(_)), |t| t.take_ceremony(NOW).map(|(t, _)| t)),
        ("verified", |t| t.stage == Stage::Waiting && t.kind != Kind::Link, Ticket::verified),
        (
            "ask_replace",
            |t| t.stage == Stage::Waiting && matches!(t.kind, Kind::CardEnroll { .. } | Kind::Change),
            Ticket::ask_replace,
        ),
        ("answer", |t| t.stage == Stage::Confirm, |t| t.answer(NOW, true, LIFE)),
        ("collect", |t| matches!(t.kind, Kind::Login { .. }) && t.stage == Stage::Done, Ticket::collect),
        ("label", |t| t.action() == Action::Register && t.stage.finished() && !t.labelled, Ticket::label),
        ("use_link", |t| t.kind == Kind::Link && t.stage == Stage::Waiting, |t| t.use_link(NOW)),
        ("restore_link", |t| t.kind == Kind::Link && t.stage == Stage::Collected, Ticket::restore_link),
        ("claim", |t| !t.pc_claimed, Ticket::claim),
        ("cancel", |t| !matches!(t.stage, Stage::Collected | Stage::Cancelled), Ticket::cancel),
    ];
    let mut checked = 0;
    for kind in &kinds {
        for stage in &stages {
            for phase in [0, 1] {
                for flag in [false, true] {
                    let ticket = Ticket {
                        stage: stage.clone(),
                        phase,
                        labelled: flag,
                        pc_claimed: flag,
                        ..t(kind.clone(), false)
                    };
                    // Only states the transitions can reach (what `check` lets a stored row be).
                    let Ok(ticket) = ticket.check() else { continue };
                    for (name, legal, step) in &table {
                        let outcome = step(ticket.clone());
                        assert_eq!(
                            outcome.is_ok(),
                            legal(&ticket),
                            "{name} from {:?} {} phase {phase} flag {flag}: {outcome:?}",
                            kind.names(),
                            stage.as_str()
                        );
                        if let Ok(next) = outcome {
                            assert!(
                                next.clone().check().is_ok(),
                                "{name} leads to a state a row cannot hold: {next:?}"
                            );
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 500, "{checked} transitions checked");
}

#[test]
fn a_decoy_takes_ceremonies_and_cancels_like_a_ticket_but_never_finishes() {
    let pc = PcInfo::new("192.0.2.1", "192.0.2.0", "Mozilla/5.0", None, NOW).expect("pc");
    for kind in [Kind::Login { request: "r".into() }, Kind::Change] {
        let decoy = Ticket::decoy(kind.clone(), "nobody", NOW, LIFE, pc.clone());
        assert_eq!((decoy.stage.clone(), decoy.action()), (Stage::Waiting, Action::Authenticate));
        assert_eq!(decoy.confirmation(), Some(pc.code(0)), "it asks for the PC's number like any other");
        let (waiting, _) = decoy.clone().begin(NOW, "s".into()).expect("begin").take_ceremony(NOW).expect("take");
        assert_eq!(waiting.clone().verified(), Err(Refused::Stage("finish a phone ceremony")));
        assert_eq!(waiting.cancel().expect("cancel").check().expect("a cancelled decoy").stage, Stage::Cancelled);
        assert_eq!(decoy.begin(NOW + LIFE, "s".into()), Err(Refused::Expired));
    }
    // Rows no transition makes: a decoy of another kind, or a finished one.
    assert!(Ticket { decoy: true, ..t(Kind::CardEnroll { card: Method::Hpki }, false) }.check().is_err());
    assert!(Ticket { decoy: true, stage: Stage::Done, ..login() }.check().is_err());
    assert!(Ticket { decoy: true, stage: Stage::Confirm, ..t(Kind::Change, true) }.check().is_err());
    assert!(Ticket { decoy: true, ..login() }.check().is_ok());
}

#[test]
fn confirmation_numbers_are_four_digits_per_phase_for_pc_tickets_only() {
    let pc = PcInfo::new("192.0.2.1", "192.0.2.0", "Mozilla/5.0", None, NOW).expect("pc");
    let login = Ticket::new(Kind::Login { request: "r".into() }, "u", true, true, NOW, LIFE, Some(pc.clone()));
    let code = login.confirmation().expect("code");
    assert!(code.len() == 4 && code.chars().all(|c| c.is_ascii_digit()), "{code}");
    assert_eq!(login.confirmation(), Some(pc.code(0)), "stable for a phase");
    let other = PcInfo::new("192.0.2.1", "192.0.2.0", "Mozilla/5.0", None, NOW).expect("pc");
    assert!((0..20).any(|p| other.code(p) != pc.code(p)), "each ticket its own secret");
    let change = Ticket::new(Kind::Change, "u", true, true, NOW, LIFE, Some(pc.clone()));
    assert_eq!(change.confirmation(), Some(pc.code(0)));
    assert_eq!(
        Ticket::new(Kind::CodeEnroll { code: 1 }, "u", false, true, NOW, LIFE, Some(pc.clone())).confirmation(),
        None
    );
    assert_eq!(Ticket::new(Kind::Link, "u", false, true, NOW, LIFE, Some(pc)).confirmation(), None);
    assert_eq!(Ticket::new(Kind::Change, "u", true, true, NOW, LIFE, None).confirmation(), None);
}

#[test]
fn every_kind_is_stored_as_itself_and_read_back() {
    let kinds = [
        Kind::Login { request: "r".into() },
        Kind::CardEnroll { card: Method::Hpki },
        Kind::CardEnroll { card: Method::Jpki },
        Kind::CodeEnroll { code: 7 },
        Kind::CodeVerify { code: 7 },
        Kind::Change,
        Kind::Link,
    ];
    for kind in kinds {
        let (purpose, via) = kind.names();
        let back = Kind::from_names(purpose, via, kind.request().map(str::to_owned), kind.code()).expect("known");
        assert_eq!(back, kind);
    }
    // A card enrollment by a phone is no kind: stored as itself, it is not
    // read back as an HPKI card.
    let (purpose, via) = Kind::CardEnroll { card: Method::Fido }.names();
    assert_eq!(via, "fido");
    assert!(Kind::from_names(purpose, via, None, None).is_err());
}
