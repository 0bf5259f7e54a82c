//! Operations: health, metrics, OpenAPI, command line, data-directory lock, JSON logs.

use std::time::Duration;

use serde_json::Value;
use thingport_e2e::{run_binary, Server, ServerOptions};

#[tokio::test]
async fn healthz_answers_ok_without_auth() {
    let server = Server::default_started();
    let resp = server.anonymous().get("/healthz").await.expect(200);
    assert_eq!(resp.body["status"], "ok", "{}", resp.text);
}

/// True for a Prometheus sample line such as `http_requests_total{method="GET"} 3`.
fn is_sample_line(line: &str) -> bool {
    if line.starts_with('#') || line.trim().is_empty() {
        return false;
    }
    let (name_part, value) = match line.rfind('}') {
        Some(end) => (&line[..=end], line[end + 1..].trim()),
        None => match line.split_once(' ') {
            Some((n, v)) => (n, v.trim()),
            None => return false,
        },
    };
    let name = name_part.split('{').next().unwrap_or("");
    let name_ok = !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    let value = value.split_whitespace().next().unwrap_or("");
    name_ok && (value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value))
}

#[tokio::test]
async fn metrics_are_prometheus_text_without_auth() {
    let server = Server::default_started();
    server.admin().get("/Thingworx/Things").await.expect(200);
    let resp = server.anonymous().get("/metrics").await.expect(200);
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("text/plain") || ct.starts_with("application/openmetrics-text"),
        "{ct}"
    );
    assert!(
        resp.text.lines().any(is_sample_line),
        "no metric sample line in:\n{}",
        resp.text
    );
    assert!(
        resp.text.lines().any(|l| l.starts_with("# TYPE")),
        "no # TYPE line:\n{}",
        resp.text
    );
}

#[tokio::test]
async fn openapi_document_describes_the_routes() {
    let server = Server::default_started();
    let resp = server
        .anonymous()
        .get("/Thingworx/openapi.json")
        .await
        .expect(200);
    let doc = &resp.body;
    assert!(doc.is_object(), "not JSON: {}", resp.text);
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "openapi version {version:?}");
    let paths = doc["paths"].as_object().expect("paths object");
    assert!(
        paths
            .keys()
            .any(|p| p.starts_with("/Thingworx/Things/{thing}/Services/")),
        "no Thing service path in {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    // The lists may be one templated path or one path per collection.
    assert!(
        paths.contains_key("/Thingworx/Things") || paths.contains_key("/Thingworx/{collection}"),
        "no list path for Things"
    );
    for path in [
        "/Thingworx/Things/{thing}/Properties/{property}",
        "/Thingworx/AuditLog",
        "/Thingworx/Login",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    let prop = &paths["/Thingworx/Things/{thing}/Properties/{property}"];
    assert!(
        prop.get("get").is_some() && prop.get("put").is_some(),
        "{prop}"
    );
}

#[tokio::test]
async fn unknown_paths_are_json_404s() {
    let server = Server::default_started();
    server
        .admin()
        .get("/Thingworx/NoSuchCollection")
        .await
        .expect(404);
    server.anonymous().get("/no/such/path").await.expect(404);
}

#[test]
fn help_documents_the_flags() {
    let out = run_binary(&["--help"], Duration::from_secs(20));
    assert!(out.status.success(), "{out:?}");
    for flag in [
        "--data-dir",
        "--listen",
        "--admin-password",
        "--log-format",
        "--max-body-bytes",
        "--request-timeout",
    ] {
        assert!(
            out.stdout.contains(flag),
            "--help does not mention {flag}:\n{}",
            out.stdout
        );
    }
}

/// The non-empty stderr lines, leaving out clap's `For more information, try '--help'.` hint.
fn reason_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect()
}

#[test]
fn bad_flag_values_exit_non_zero_with_a_one_line_reason() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display().to_string();
    let base = [
        "--data-dir",
        dir.as_str(),
        "--admin-password",
        "pw-123456789",
    ];
    // (extra args, what the reason must name, whether it must be exactly one line)
    let cases: &[(&[&str], &str, bool)] = &[
        (&["--listen", "not-an-address"], "listen", true),
        (
            &["--listen", "127.0.0.1:0", "--max-body-bytes", "lots"],
            "max-body-bytes",
            true,
        ),
        (
            &["--listen", "127.0.0.1:0", "--request-timeout", "0"],
            "request-timeout",
            false,
        ),
        (
            &["--listen", "127.0.0.1:0", "--log-format", "xml"],
            "log-format",
            false,
        ),
        (
            &["--listen", "127.0.0.1:0", "--no-such-flag"],
            "no-such-flag",
            false,
        ),
    ];
    for (extra, names, one_line) in cases {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        let out = run_binary(&args, Duration::from_secs(20));
        assert!(!out.status.success(), "{extra:?} should fail: {out:?}");
        let lines = reason_lines(&out.stderr);
        assert!(!lines.is_empty(), "{extra:?}: no reason on stderr");
        if *one_line {
            assert_eq!(
                lines.len(),
                1,
                "{extra:?}: expected a one-line reason, got {lines:?}"
            );
        }
        assert!(
            lines[0].contains(names),
            "{extra:?}: reason {:?} does not name {names}",
            lines[0]
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        assert!(
            !out.stdout.contains("listening on"),
            "{extra:?} started anyway"
        );
    }
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let server = Server::default_started();
    let data_dir = server.data_dir().display().to_string();
    let out = run_binary(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data_dir,
            "--admin-password",
            server.admin_password(),
        ],
        Duration::from_secs(30),
    );
    assert!(
        !out.status.success(),
        "second server was not refused: {out:?}"
    );
    assert!(
        !out.stdout.contains("listening on"),
        "second server listened: {}",
        out.stdout
    );
    let lines = reason_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "expected a one-line reason, got {lines:?}");
    assert!(
        lines[0].contains(&data_dir),
        "the reason {:?} should name the data directory",
        lines[0]
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(
        !out.stderr.contains(server.admin_password()),
        "admin password on stderr"
    );
    // The first one is unharmed.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { server.admin().get("/Thingworx/Things").await.expect(200) });
}

#[tokio::test]
async fn json_log_format_writes_one_json_object_per_line() {
    let server = Server::start(ServerOptions {
        log_json: true,
        ..ServerOptions::default()
    });
    server
        .admin()
        .create_thing("T", "GenericThing")
        .await
        .expect(200);
    server
        .anonymous()
        .get("/Thingworx/Things")
        .await
        .expect(401);
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "nothing logged");
    for line in lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.is_object(), "{line}");
    }
}

#[tokio::test]
async fn sigterm_with_a_stalled_request_still_exits_zero() {
    let mut server = Server::start(ServerOptions {
        request_timeout_secs: Some(2),
        ..ServerOptions::default()
    });
    let addr = server.addr();
    // A client that sends half a request and then stalls must not hold the shutdown forever.
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut stalled,
        b"POST /Thingworx/Things/T/Services/GetPropertyValues HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{",
    )
    .await
    .unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        drop(server);
        status
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    drop(stalled);
}
