//! Unit tests of the phone flows' helpers.

use super::*;

#[test]
fn failures_round_trip_through_the_ticket() {
    for f in [
        Failure::Refused("sign-in refused: bad origin".into()),
        Failure::NoDevice,
        Failure::Disabled,
        Failure::Retired { reason: Retirement::Removed, at: 1_700_000_000_000 },
        Failure::Retired { reason: Retirement::Replaced, at: 5 },
        Failure::NotAllowed,
    ] {
        assert_eq!(Failure::decode(&f.encode()), f);
    }
    // A row written before failures were typed shows its text as it is.
    assert_eq!(Failure::decode("スマートフォンの応答…"), Failure::Shown("スマートフォンの応答…".into()));
}

#[test]
fn labels_follow_the_user_agent() {
    assert_eq!(auto_label("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)"), "iPhone");
    assert_eq!(auto_label("Mozilla/5.0 (Linux; Android 14)"), "Android");
    assert_eq!(auto_label(""), "スマートフォン");
}
