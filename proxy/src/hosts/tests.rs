use super::*;

const OWN: &str = "192.0.2.10";
const OWN6: &str = "2001:db8::10";

fn hosts(domain: &str, extra: &[&str]) -> AllowedHosts {
    let own = OwnAddrs::of([OWN.parse().unwrap(), OWN6.parse().unwrap()]);
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    AllowedHosts::new(domain, &extra, own).unwrap()
}

#[test]
fn the_proxy_listener_answers_its_names_loopback_and_own_addresses_on_any_port() {
    let h = hosts("sb.example.com", &[]);
    for host in [
        "localhost",
        "LOCALHOST:7880",
        "localhost:",
        "8000-abc.localhost:7880",
        "anything.at.all.localhost",
        "sb.example.com",
        "8000-abc.sb.example.com:80",
        "8000-ABC.SB.Example.COM",
        "127.0.0.1",
        "127.0.0.1:7880",
        "127.8.9.10:1",
        "[::1]:7880",
        "[::1]",
        "[::ffff:127.0.0.1]:7880",
        "192.0.2.10:7880",
        "[2001:db8::10]",
        "[::ffff:192.0.2.10]",
    ] {
        assert!(h.allows(Listener::Proxy, host.as_bytes()), "{host}");
    }
}

#[test]
fn the_proxy_listener_refuses_other_names_and_addresses() {
    let h = hosts("sb.example.com", &[]);
    for host in [
        "evil.com",
        "evil.com:7880",
        "localhost.evil.com",
        "xlocalhost",
        "localhost.",
        ".localhost",
        "example.com",
        "xsb.example.com",
        "sb.example.com.evil.com",
        "192.0.2.11",
        "10.0.0.1:7880",
        "0.0.0.0",
        "[::]",
        "[2001:db8::11]",
        // Malformed.
        "",
        ":7880",
        "localhost:http",
        "localhost:99999",
        "localhost:7880:1",
        "::1",
        "[::1",
        "[::1]x",
        "[not-v6]",
        "127.0.0.1 ",
        "evil.com@localhost",
    ] {
        assert!(!h.allows(Listener::Proxy, host.as_bytes()), "{host:?}");
    }
}

#[test]
fn the_admin_listener_answers_only_localhost_loopback_and_own_addresses() {
    let h = hosts("sb.example.com", &[]);
    for host in [
        "localhost:7881",
        "127.0.0.1:7881",
        "[::1]",
        "192.0.2.10:7881",
    ] {
        assert!(h.allows(Listener::Admin, host.as_bytes()), "{host}");
    }
    for host in [
        "x.localhost",
        "sb.example.com",
        "8000-abc.sb.example.com",
        "evil.com",
        "10.0.0.1",
    ] {
        assert!(!h.allows(Listener::Admin, host.as_bytes()), "{host}");
    }
}

#[test]
fn allowed_hosts_entries_add_names_wildcards_and_ip_literals_to_both_listeners() {
    let h = hosts(
        "localhost",
        &[
            "Proxy.Internal",
            "*.apps.example.com",
            "198.51.100.7",
            "2001:db8::7",
            "[2001:db8::8]:8080",
            "only-port.test:9000",
            "203.0.113.9:80",
        ],
    );
    let allowed = [
        "proxy.internal",
        "PROXY.internal:7880",
        "a.apps.example.com",
        "x.y.apps.example.com:1",
        "198.51.100.7",
        "198.51.100.7:7881",
        "[2001:db8::7]:7880",
        "[2001:db8::8]:8080",
        "only-port.test:9000",
        "203.0.113.9:80",
    ];
    let refused = [
        "proxy.internal.evil.com",
        "xproxy.internal",
        "apps.example.com",
        "aapps.example.com",
        "198.51.100.8",
        "[2001:db8::8]",
        "[2001:db8::8]:8081",
        "only-port.test",
        "only-port.test:9001",
        "203.0.113.9",
    ];
    for listener in [Listener::Proxy, Listener::Admin] {
        for host in allowed {
            assert!(h.allows(listener, host.as_bytes()), "{listener:?} {host}");
        }
        for host in refused {
            assert!(!h.allows(listener, host.as_bytes()), "{listener:?} {host}");
        }
    }
}

#[test]
fn bad_entries_say_what_is_wrong() {
    for (entry, why) in [
        ("", "is empty"),
        ("*", "every host"),
        ("*:80", "every host"),
        ("bad host", "may only hold"),
        ("a..b", "empty or over-long label"),
        ("*.", "empty or over-long label"),
        ("foo.*.com", "may only hold"),
        ("*foo.com", "may only hold"),
        ("host:", "empty port"),
        ("host:0", "port 0"),
        ("host:http", "is not a host"),
        ("[nope]", "is not a host"),
        ("[::1", "is not a host"),
    ] {
        let err = Pattern::parse(entry).unwrap_err();
        assert!(err.contains(why), "{entry:?}: {err}");
    }
    for entry in [
        "a",
        "under_score.internal",
        "*.com",
        "[::1]:8080",
        "::1",
        "1.2.3.4:65535",
    ] {
        Pattern::parse(entry).unwrap_or_else(|e| panic!("{entry:?}: {e}"));
    }
}

#[test]
fn requests_need_every_host_and_an_absolute_form_authority_allowed() {
    let h = hosts("localhost", &[]);
    let ok: &[u8] = b"localhost:7880";
    let evil: &[u8] = b"evil.com";
    let proxy = |hosts: &[&'static [u8]], authority: Option<&'static [u8]>| {
        h.check(Listener::Proxy, hosts.iter().copied(), authority)
    };
    assert_eq!(proxy(&[ok], None), Ok(()));
    assert_eq!(proxy(&[], None), Ok(()), "no Host: not checked");
    assert_eq!(proxy(&[evil], None), Err(evil));
    assert_eq!(proxy(&[ok, evil], None), Err(evil));
    assert_eq!(proxy(&[ok], Some(b"evil.com")), Err(&b"evil.com"[..]));
    assert_eq!(proxy(&[ok], Some(b"127.0.0.1:7880")), Ok(()));
    assert_eq!(
        h.check(Listener::Admin, [&b"8000-a.localhost"[..]], None),
        Err(&b"8000-a.localhost"[..])
    );
}

#[test]
fn the_hosts_own_addresses_include_loopback() {
    // Read from the kernel: every machine has a loopback interface.
    let own = OwnAddrs::read();
    assert!(own.contains("127.0.0.1".parse().unwrap()));
}
