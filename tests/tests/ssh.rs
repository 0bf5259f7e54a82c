//! A real OpenSSH client reaches a real `sshd` through a Thingport session: `ssh` with
//! `ProxyCommand='thingport connect gw-1 ssh --stdio'`, through the real server, GAS and agent.
//! `sshd` (Debian's openssh-server, installed by `.ci/run`) runs in inetd mode (`sshd -i`) behind
//! a listener this test binds on port 0, so no port is fixed and none can be taken by another
//! test. The client runs a command and moves 64 MiB, checked by sha256 on both ends.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use thingport_e2e::fleet::wait_connected;
use thingport_e2e::remote::{rac_env, workspace_binary, Site};
use thingport_e2e::Agent;

const SSHD: &str = "/usr/sbin/sshd";

fn run(cmd: &mut std::process::Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Keys, `authorized_keys` and an `sshd_config` in `dir`; answers the config's path.
fn sshd_config(dir: &Path) -> std::path::PathBuf {
    for key in ["host_key", "client_key"] {
        run(std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join(key)));
    }
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "HostKey {dir}/host_key\nAuthorizedKeysFile {dir}/authorized_keys\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             StrictModes no\nPermitRootLogin prohibit-password\nPidFile none\nLogLevel VERBOSE\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    // sshd wants its privilege separation directory when started as root.
    let _ = std::fs::create_dir_all("/run/sshd");
    config
}

/// Accepts TCP connections on 127.0.0.1:0 and gives each to a fresh `sshd -i`.
async fn sshd(config: &Path, log: &Path) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (config, log) = (config.to_path_buf(), log.to_path_buf());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let socket = socket.into_std().unwrap();
            socket.set_nonblocking(false).unwrap();
            let fd: OwnedFd = socket.into();
            let fd2 = fd.try_clone().unwrap();
            let child = tokio::process::Command::new(SSHD)
                .arg("-i")
                .arg("-f")
                .arg(&config)
                .arg("-E")
                .arg(&log)
                .stdin(Stdio::from(fd))
                .stdout(Stdio::from(fd2))
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn();
            if let Ok(mut child) = child {
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_through_a_session_runs_a_command_and_moves_64_mib() {
    assert!(
        Path::new(SSHD).is_file(),
        "{SSHD} is missing: install openssh-server (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = sshd_config(dir.path());
    let sshd_log = dir.path().join("sshd.log");
    let sshd_addr = sshd(&config, &sshd_log).await;

    let site = Site::start(&["gw-1"]).await;
    site.set_endpoints("gw-1", &[("ssh", "SSH", "127.0.0.1", sshd_addr.port())])
        .await;
    let _gas = site.start_gas("gas-1", &[]).await;
    site.enable("gas-1").await;
    let _agent = Agent::start(&site.url(), &site.fleet.key, &["gw-1"], &[]);
    wait_connected(&site.admin, "gw-1", true, Duration::from_secs(15)).await;

    // 64 MiB of pseudo-random bytes, and their sha256.
    let payload = dir.path().join("payload");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..64 * 1024 * 1024 / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(&payload, &data).unwrap();
    let want = thingport_server::extensions::package::Sha256::of(&data);

    let user = String::from_utf8(
        std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let proxy = format!(
        "{} connect %n ssh --stdio",
        workspace_binary("thingport").display()
    );
    let ssh = |remote_command: &str, stdin: Stdio| {
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "LogLevel=ERROR"])
        .arg("-i")
        .arg(dir.path().join("client_key"))
        .arg("-o")
        .arg(format!("ProxyCommand={proxy}"))
        .arg(format!("{user}@gw-1"))
        .arg(remote_command)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        for (k, v) in rac_env(&site) {
            cmd.env(k, v);
        }
        cmd
    };
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        ssh("echo hello from $(hostname)", Stdio::null()).output(),
    )
    .await
    .expect("ssh within 60 s")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("hello from"),
        "ssh: {:?}\nstdout: {stdout}\nstderr: {}\nsshd log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&sshd_log).unwrap_or_default()
    );

    let out = tokio::time::timeout(
        Duration::from_secs(240),
        ssh(
            "sha256sum",
            Stdio::from(std::fs::File::open(&payload).unwrap()),
        )
        .output(),
    )
    .await
    .expect("64 MiB within 240 s")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ssh: {:?}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.split_whitespace().next(),
        Some(want.to_string().as_str())
    );

    // Both sessions are on record, ended by the client when ssh was done.
    let sessions = site
        .admin
        .call("Things", "gw-1", "GetSessions", serde_json::json!({}))
        .await
        .ok();
    assert_eq!(sessions.rows().len(), 2, "{}", sessions.text);
    for row in sessions.rows() {
        let id = row["sessionId"].as_str().unwrap();
        let ended = site
            .wait_terminated("gw-1", id, Duration::from_secs(20))
            .await;
        assert_eq!(ended["terminationCause"], "USER_SHUTDOWN", "{ended}");
    }
}
