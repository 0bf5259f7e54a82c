//! [`serve_downstream`] against scripted browsers.

use super::*;

/// Runs [`serve_downstream`] against a browser playing `steps`; on success the proxy then reads
/// a 1-byte ClientInit and sends "INIT", so a script ending with `send(&[1]), expect(b"INIT")`
/// proves the handshake consumed and produced exactly its own bytes.
async fn downstream(steps: Vec<Step>, budget: usize) -> (Result<(), RfbError>, Result<(), String>) {
    let (mut proxy, browser) = duplex(64 * 1024);
    let browser = tokio::spawn(play(browser, steps, budget));
    let result = serve_downstream(&mut proxy).await;
    if result.is_ok() {
        let mut init = [0u8; 1];
        proxy.read_exact(&mut init).await.unwrap();
        assert_eq!(init, [1]);
        proxy.write_all(b"INIT").await.unwrap();
    }
    drop(proxy);
    (result, browser.await.unwrap())
}

async fn downstream_ok(mut steps: Vec<Step>) {
    let total: usize = steps
        .iter()
        .map(|s| match s {
            Send(bytes) => bytes.len(),
            Expect(_) => 0,
        })
        .sum();
    steps.extend([send(&[1]), expect(b"INIT")]);
    let (result, script) = downstream(steps.clone(), usize::MAX).await;
    script.unwrap();
    result.unwrap();
    // Every browser hanging up early is an I/O error.
    for budget in 0..total {
        let (result, _) = downstream(steps.clone(), budget).await;
        assert_eq!(result.unwrap_err().code(), "VNC_IO", "cut at {budget}");
    }
}

#[tokio::test]
async fn downstream_v3_8() {
    downstream_ok(vec![
        expect(b"RFB 003.008\n"),
        send(b"RFB 003.008\n"),
        expect(&[1, 1]),
        send(&[1]),
        Expect(u32be(0)),
    ])
    .await;
}

#[tokio::test]
async fn downstream_v3_7_has_no_security_result() {
    downstream_ok(vec![
        expect(b"RFB 003.008\n"),
        send(b"RFB 003.007\n"),
        expect(&[1, 1]),
        send(&[1]),
    ])
    .await;
}

#[tokio::test]
async fn downstream_v3_3() {
    downstream_ok(vec![
        expect(b"RFB 003.008\n"),
        send(b"RFB 003.003\n"),
        Expect(u32be(1)),
    ])
    .await;
}

#[tokio::test]
async fn downstream_refuses_a_type_not_offered() {
    // 3.8: the browser is told why.
    let problem = "the browser chose security type 2, which was not offered";
    let mut failure = u32be(1);
    failure.extend(reason(problem));
    let (result, script) = downstream(
        vec![
            expect(b"RFB 003.008\n"),
            send(b"RFB 003.008\n"),
            expect(&[1, 1]),
            send(&[2]),
            Expect(failure),
        ],
        usize::MAX,
    )
    .await;
    script.unwrap();
    let err = result.unwrap_err();
    assert_eq!(err.code(), "VNC_PROTOCOL");
    assert_eq!(err.to_string(), format!("VNC protocol error: {problem}"));

    // 3.7: no SecurityResult on failure, the connection just ends.
    let (result, script) = downstream(
        vec![
            expect(b"RFB 003.008\n"),
            send(b"RFB 003.007\n"),
            expect(&[1, 1]),
            send(&[0]),
        ],
        usize::MAX,
    )
    .await;
    script.unwrap();
    assert_eq!(result.unwrap_err().code(), "VNC_PROTOCOL");
}

#[tokio::test]
async fn downstream_refuses_bad_browser_versions() {
    for version in [
        &b"RFB 003.889\n"[..],
        b"RFB 004.000\n",
        b"RFB 003.002\n",
        b"GET / HTTP/1",
    ] {
        let (result, _) = downstream(
            vec![expect(b"RFB 003.008\n"), Send(version.to_vec())],
            usize::MAX,
        )
        .await;
        let err = result.unwrap_err();
        assert_eq!(err.code(), "VNC_PROTOCOL", "{version:?}");
        assert!(
            err.to_string().contains("the browser's version message"),
            "{err}"
        );
    }
}
