use thingport_e2e::*;
#[tokio::test]
async fn selfcheck() {
    let mut s = Server::default_started();
    let a = s.anonymous();
    a.get("/healthz").await.expect(200);
    let p1 = s.addr();
    s.restart();
    assert_ne!(p1, s.addr());
    a.get("/healthz").await.expect(200);
    s.kill9();
    s.start_again();
    a.get("/healthz").await.expect(200);
    let st = s.terminate();
    assert_eq!(st.code(), Some(0));
    assert!(s.log().contains("started"), "{}", s.log());
    assert_eq!(s.log().matches("started").count(), 3);
    s.start_again();
    println!("{}", s.data_dir().display());
}
#[tokio::test]
async fn leak_detect() {
    let s = Server::default_started();
    s.anonymous().with_basic("Administrator", "x").get("/x").await.expect(404);
    s.secrets().add("started-marker".to_string());
    std::fs::write(s.log_path(), "blah started-marker").unwrap();
}
