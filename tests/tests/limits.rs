//! Request limits: body size (413, from Content-Length before the body is read, and for chunked bodies),
//! request timeout (408), content type (415).

use std::time::Duration;

use serde_json::json;
use thingport_e2e::{raw_request, Server, ServerOptions};

const CREATE_THING: &str = "/Thingworx/Resources/EntityServices/Services/CreateThing";

#[tokio::test]
async fn body_over_the_default_limit_is_413_from_content_length_alone() {
    let server = Server::default_started();
    let admin = server.admin();
    // Only the head is sent: the server must answer from Content-Length, without reading the body.
    let head = format!(
        "POST {CREATE_THING} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        server.addr(),
        basic("Administrator", server.admin_password()),
        2 * 1024 * 1024
    );
    let resp = raw_request(server.addr(), &head, &[], Duration::from_secs(10)).await;
    assert_eq!(resp.status, 413, "{resp:?}");
    let error = resp.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("request body too large: limit is 1048576 bytes"),
        "{error:?}"
    );
    // The server is still fine.
    admin
        .create_thing("After", "GenericThing")
        .await
        .expect(200);
}

#[tokio::test]
async fn body_over_a_configured_limit_is_413_and_below_it_is_fine() {
    let server = Server::start(ServerOptions {
        max_body_bytes: Some(1000),
        ..ServerOptions::default()
    });
    let admin = server.admin();
    let big = json!({"name": "Big", "thingTemplateName": "GenericThing",
                     "description": "d".repeat(2000)});
    admin
        .post(CREATE_THING, &big)
        .await
        .expect_error(413, "request body too large: limit is 1000 bytes");
    let small = json!({"name": "Small", "thingTemplateName": "GenericThing",
                       "description": "d".repeat(800)});
    admin.post(CREATE_THING, &small).await.expect(200);
    assert_eq!(admin.names("Things").await, vec!["Small".to_string()]);
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let server = Server::start(ServerOptions {
        max_body_bytes: Some(1000),
        ..ServerOptions::default()
    });
    let body = serde_json::to_string(&json!({"name": "Big", "thingTemplateName": "GenericThing",
                                             "description": "d".repeat(2000)}))
    .unwrap();
    let head = format!(
        "POST {CREATE_THING} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        server.addr(),
        basic("Administrator", server.admin_password()),
    );
    let chunk = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let resp = raw_request(
        server.addr(),
        &head,
        &[chunk.as_bytes()],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(resp.status, 413, "{resp:?}");
    assert!(server.admin().names("Things").await.is_empty());
}

#[tokio::test]
async fn slow_body_times_out_with_408() {
    let server = Server::start(ServerOptions {
        request_timeout_secs: Some(1),
        ..ServerOptions::default()
    });
    let head = format!(
        "POST {CREATE_THING} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n",
        server.addr(),
        basic("Administrator", server.admin_password()),
    );
    // Ten bytes of a hundred, then silence.
    let resp = raw_request(
        server.addr(),
        &head,
        &[b"{\"name\": \""],
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(resp.status, 408, "{resp:?}");
    let error = resp.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("request timed out after 1s"), "{error:?}");
}

#[tokio::test]
async fn body_that_is_not_json_content_is_415() {
    let server = Server::default_started();
    let admin = server.admin();
    let body =
        serde_json::to_vec(&json!({"name": "A", "thingTemplateName": "GenericThing"})).unwrap();
    admin
        .send(
            reqwest::Method::POST,
            CREATE_THING,
            Some("text/plain"),
            Some(body),
            &[],
        )
        .await
        .expect(415);
    assert!(admin.names("Things").await.is_empty());
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}
