//! A flood of failed password logins (which needs no credentials at all) must not grow the
//! server's memory without bound, must be answered quickly (401, or 503 when the hashing pool is
//! saturated), and must leave the server serving legitimate users.

use thingport_e2e::Server;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc status")
}

#[tokio::test]
async fn failed_login_flood_is_bounded() {
    let server = Server::default_started();
    let pid = server.pid().unwrap();
    let before = rss_kib(pid);
    // 4 waves of 32 concurrent attempts: 128 argon2 verifications requested in all.
    for wave in 0..4 {
        let mut tasks = Vec::new();
        for i in 0..32 {
            let c = server.with_basic("Administrator", &format!("wrong-password-{wave}-{i}"));
            tasks.push(tokio::spawn(async move {
                c.get("/Thingworx/Things").await.status
            }));
        }
        for t in tasks {
            let status = t.await.unwrap();
            assert!(
                status == 401 || status == 503,
                "a failed login answered {status}"
            );
        }
    }
    let after = rss_kib(pid);
    // Unbounded, 32 concurrent argon2 runs alone would hold 32 × 19 MiB ≈ 600 MiB.
    assert!(
        after < before + 160 * 1024,
        "memory grew from {before} KiB to {after} KiB during a failed-login flood"
    );
    server.admin().get("/Thingworx/Things").await.ok();
}
