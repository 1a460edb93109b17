use super::*;

#[test]
fn networks_parse_and_contain_their_addresses() {
    let net = |t: &str| IpNet::try_from(t.to_owned());
    let lan = net("10.1.2.3/16").expect("v4");
    assert_eq!(String::from(lan), "10.1.0.0/16");
    assert!(lan.contains("10.1.200.9".parse().expect("ip")));
    assert!(lan.contains("::ffff:10.1.0.1".parse().expect("ip")));
    assert!(!lan.contains("10.2.0.1".parse().expect("ip")));
    let one = net("127.0.0.1").expect("one");
    assert!(one.contains("127.0.0.1".parse().expect("ip")) && !one.contains("127.0.0.2".parse().expect("ip")));
    let v6 = net("fd00::/8").expect("v6");
    assert!(v6.contains("fd12::1".parse().expect("ip")) && !v6.contains("fe80::1".parse().expect("ip")));
    assert!(net("0.0.0.0/0").expect("all").contains("192.0.2.1".parse().expect("ip")));
    let mapped = net("::ffff:10.0.0.5").expect("mapped");
    assert!(mapped.contains("10.0.0.5".parse().expect("ip")), "{mapped:?}");
    assert_eq!(String::from(net("::ffff:10.0.0.0/120").expect("mapped net")), "10.0.0.0/24");
    for bad in ["10.0.0.0/33", "fd00::/129", "example.org", "10.0.0.0/x", ""] {
        assert!(net(bad).is_err(), "{bad}");
    }
}

#[test]
fn database_passwords_never_show() {
    for (url, shown) in [
        ("postgres://inkan:s3cret@db.example:5432/inkan", "postgres://inkan:***@db.example:5432/inkan"),
        (
            "postgres://inkan@db/inkan?password=s3cret&sslmode=require",
            "postgres://inkan@db/inkan?password=***&sslmode=require",
        ),
        ("postgresql://a:b:c@h", "postgresql://a:***@h"),
        ("postgres://u:ab/cd?e@db:5432/x?sslmode=require", "postgres://u:***@db:5432/x?sslmode=require"),
        ("postgres://db.example/inkan", "postgres://db.example/inkan"),
        ("host=db password=s3cret user=inkan", "host=db password=*** user=inkan"),
    ] {
        assert_eq!(redact_url(url), shown);
    }
    let config = StoreConfig {
        url: Some("postgres://inkan:s3cret@db/inkan".into()),
        password: Some("hunter2".into()),
        ..StoreConfig::default()
    };
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cret") && !debug.contains("hunter2"), "{debug}");
}
