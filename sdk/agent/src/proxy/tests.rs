use super::*;
use std::collections::HashMap;

fn platform(url: &str) -> PlatformUrl {
    PlatformUrl::parse(url).unwrap()
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

#[test]
fn no_proxy_matches_hosts_and_their_subdomains() {
    let list = "localhost, .internal.example ,10.0.0.1,Corp.COM:443,[::1]";
    for host in [
        "localhost",
        "a.internal.example",
        "internal.example",
        "10.0.0.1",
        "corp.com",
        "x.y.corp.com",
        "::1",
    ] {
        assert!(no_proxy_matches(list, host), "{host} should be exempt");
    }
    for host in [
        "example",
        "notcorp.com",
        "10.0.0.10",
        "local",
        "corp.com.evil",
        "::2",
    ] {
        assert!(!no_proxy_matches(list, host), "{host} should use the proxy");
    }
    assert!(no_proxy_matches("*", "anything.example"));
    assert!(no_proxy_matches("a, *", "b"));
    assert!(no_proxy_matches("*.example.com", "x.example.com"));
    assert!(!no_proxy_matches("", "h"));
    assert!(!no_proxy_matches(" , ,", "h"));
}

#[test]
fn proxy_urls_parse_with_and_without_credentials() {
    let p = ProxyConfig::parse("http://proxy.local:3128", "--proxy").unwrap();
    assert_eq!(
        (p.host.as_str(), p.port, p.credentials),
        ("proxy.local", 3128, None)
    );
    let p = ProxyConfig::parse("HTTP://u%3Ax:p%20w@[fd00::1]:8080/", "--proxy").unwrap();
    assert_eq!(p.host, "fd00::1");
    assert_eq!(p.port, 8080);
    assert_eq!(p.credentials, Some(("u:x".into(), "p w".into())));
    assert_eq!(p.to_string(), "http://[fd00::1]:8080");
    let p = ProxyConfig::parse("http://proxy", "X").unwrap();
    assert_eq!(p.port, 80);
    let p = ProxyConfig::parse("http://user@proxy:1", "X").unwrap();
    assert_eq!(p.credentials, Some(("user".into(), String::new())));
}

#[test]
fn bad_proxy_urls_are_refused_without_echoing_secrets() {
    for (text, needle) in [
        ("https://proxy:443", "only http:// proxies"),
        ("socks5://proxy:1080", "only http:// proxies"),
        ("proxy:3128", "must be a URL"),
        ("http://proxy:0", "port"),
        ("http://proxy:3128/path", "without a path"),
        ("http://u:secret%zz@proxy:1", "%-escape"),
        ("http://::1:3128", "brackets"),
        ("http://u:secret@:1", "host is empty"),
    ] {
        let err = ProxyConfig::parse(text, "HTTPS_PROXY")
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{text}: {err}");
        assert!(err.starts_with("HTTPS_PROXY: "), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
}

#[test]
fn the_environment_is_read_by_platform_scheme() {
    let vars = env(&[
        ("HTTPS_PROXY", "http://secure-proxy:1"),
        ("HTTP_PROXY", "http://plain-proxy:2"),
    ]);
    let p = resolve(None, &platform("https://p.example"), &vars)
        .unwrap()
        .unwrap();
    assert_eq!(p.host, "secure-proxy");
    let p = resolve(None, &platform("http://p.example"), &vars)
        .unwrap()
        .unwrap();
    assert_eq!(p.host, "plain-proxy");
    // Lower case works too; upper case wins.
    let lower = env(&[("https_proxy", "http://lower:1")]);
    assert_eq!(
        resolve(None, &platform("https://p"), &lower)
            .unwrap()
            .unwrap()
            .host,
        "lower"
    );
    // Nothing set, or empty: no proxy.
    assert_eq!(
        resolve(None, &platform("https://p"), env(&[])).unwrap(),
        None
    );
    assert_eq!(
        resolve(None, &platform("https://p"), env(&[("HTTPS_PROXY", " ")])).unwrap(),
        None
    );
}

#[test]
fn no_proxy_exempts_environment_proxies_but_not_the_flag() {
    let vars = env(&[
        ("HTTPS_PROXY", "http://proxy:1"),
        ("no_proxy", "example.com"),
    ]);
    assert_eq!(
        resolve(None, &platform("https://a.example.com"), &vars).unwrap(),
        None
    );
    assert!(resolve(None, &platform("https://other.net"), &vars)
        .unwrap()
        .is_some());
    let flag = resolve(
        Some("http://flag:9"),
        &platform("https://a.example.com"),
        &vars,
    )
    .unwrap()
    .unwrap();
    assert_eq!(flag.host, "flag");
    // A bad environment proxy is a configuration error that names the variable.
    let bad = env(&[("HTTPS_PROXY", "socks5://p:1")]);
    let err = resolve(None, &platform("https://a"), bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTPS_PROXY") && err.contains("only http://"),
        "{err}"
    );
}

#[tokio::test]
async fn connect_sends_basic_auth_and_reports_the_status_line() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let proxy = ProxyConfig::parse("http://user:pw@proxy:1", "X").unwrap();
    let (mut agent, mut fake) = tokio::io::duplex(4096);
    let server = tokio::spawn(async move {
        let mut buf = vec![0u8; 1024];
        let n = fake.read(&mut buf).await.unwrap();
        let request = String::from_utf8_lossy(&buf[..n]).to_string();
        fake.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
            .await
            .unwrap();
        request
    });
    let err = connect(&mut agent, &proxy, "[::1]:443")
        .await
        .unwrap_err()
        .to_string();
    let request = server.await.unwrap();
    assert!(
        request.starts_with("CONNECT [::1]:443 HTTP/1.1\r\n"),
        "{request}"
    );
    // base64("user:pw")
    assert!(
        request.contains("Proxy-Authorization: Basic dXNlcjpwdw==\r\n"),
        "{request}"
    );
    assert!(
        err.contains("HTTP/1.1 407 Proxy Authentication Required"),
        "{err}"
    );

    let proxy = ProxyConfig::parse("http://proxy:1", "X").unwrap();
    let (mut agent, mut fake) = tokio::io::duplex(4096);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1024];
        let _ = fake.read(&mut buf).await.unwrap();
        // The tunnel's first bytes follow the head at once; they must stay unread.
        fake.write_all(b"HTTP/1.0 200 Connection established\r\nX: y\r\n\r\nTUNNEL")
            .await
            .unwrap();
        fake
    });
    connect(&mut agent, &proxy, "h:80").await.unwrap();
    let mut rest = [0u8; 6];
    agent.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"TUNNEL");
}
