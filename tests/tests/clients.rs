//! Real clients reach real servers from Debian packages through a Thingport session (the real
//! server with CSE and RAE, `thingport-gas`, `thingport-agent` and `thingport connect --local`):
//!
//! - OpenSSH: `ssh -p PORT` runs a command and `scp` moves 64 MiB up and back down, sha256
//!   checked, all through one `--local` port (one session, several connections);
//! - VNC: TigerVNC's `Xvnc` serves a desktop and `vncsnapshot` completes the RFB handshake and
//!   saves the framebuffer update it receives, with the server's geometry;
//! - Telnet: inetutils' `telnetd` runs a script instead of `login` and inetutils' `telnet` gets
//!   its banner and an answer to a line it types.
//!
//! Every server runs in inetd mode behind a listener on 127.0.0.1:0 (see
//! `thingport_e2e::clients::Inetd`), so no port is fixed. The packages are installed by
//! `.ci/run`; a missing one fails the test with its name.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use thingport_e2e::clients::{
    jpeg_dimensions, require, run_client, running, sha256_of_file, user_name, write_payload, Inetd,
    Interactive,
};
use thingport_e2e::remote::connect_local;

const MIB: usize = 1024 * 1024;

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn run(cmd: &mut std::process::Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Keys, `authorized_keys` and an `sshd_config` (with the built-in SFTP server, which `scp`
/// uses) in `dir`; answers the config's path.
fn sshd_config(dir: &Path) -> std::path::PathBuf {
    let keygen = require("ssh-keygen", "openssh-client");
    for key in ["host_key", "client_key"] {
        run(std::process::Command::new(&keygen)
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
             StrictModes no\nPermitRootLogin prohibit-password\nPidFile none\nLogLevel VERBOSE\n\
             Subsystem sftp internal-sftp\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    // sshd wants its privilege separation directory when started as root.
    let _ = std::fs::create_dir_all("/run/sshd");
    config
}

/// The options every `ssh` and `scp` here shares: no user config, the test's key, no host-key
/// prompts, errors only.
fn ssh_options(cmd: &mut tokio::process::Command, key: &Path) {
    cmd.args(["-F", "/dev/null", "-o", "BatchMode=yes"])
        .args(["-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
        .arg("-i")
        .arg(key)
        .stdin(Stdio::null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_through_a_local_port_runs_a_command_and_scps_64_mib_both_ways() {
    let sshd = require("sshd", "openssh-server");
    let ssh = require("ssh", "openssh-client");
    let scp = require("scp", "openssh-client");
    let dir = tempfile::tempdir().unwrap();
    let config = sshd_config(dir.path());
    let sshd_log = dir.path().join("sshd.log");
    let mut args = os(&["-i", "-f"]);
    args.extend([
        config.into_os_string(),
        "-E".into(),
        sshd_log.clone().into(),
    ]);
    let server = Inetd::start(&sshd, &args).await;
    let sshd_log = || std::fs::read_to_string(&sshd_log).unwrap_or_default();

    let r = running("ssh", "SSH", server.addr.port()).await;
    let mut rac = connect_local(&r.site, "gw-1", "ssh");
    let port = rac.addr.expect("listening").port().to_string();
    let id = r.only_session().await;
    let user = user_name();
    let key = dir.path().join("client_key");

    let mut cmd = tokio::process::Command::new(&ssh);
    ssh_options(&mut cmd, &key);
    cmd.args(["-p", &port, &format!("{user}@127.0.0.1")])
        .arg("echo hello from $(hostname)");
    let out = run_client(&mut cmd, Duration::from_secs(30), "ssh").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("hello from"),
        "ssh: {:?}\nstdout: {stdout}\nstderr: {}\nsshd log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        sshd_log()
    );

    // 64 MiB up with scp (SFTP underneath), then back down, sha256 checked after each.
    let payload = dir.path().join("payload");
    let want = write_payload(&payload, 64 * MIB);
    let (uploaded, downloaded) = (dir.path().join("uploaded"), dir.path().join("downloaded"));
    let remote = |path: &Path| format!("{user}@127.0.0.1:{}", path.display());
    for (from, to, label) in [
        (payload.display().to_string(), remote(&uploaded), "upload"),
        (
            remote(&uploaded),
            downloaded.display().to_string(),
            "download",
        ),
    ] {
        let mut cmd = tokio::process::Command::new(&scp);
        ssh_options(&mut cmd, &key);
        cmd.args(["-q", "-P", &port, &from, &to]);
        let out = run_client(&mut cmd, Duration::from_secs(60), &format!("scp {label}")).await;
        assert!(
            out.status.success(),
            "scp {label}: {:?}; stderr: {}\nsshd log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            sshd_log()
        );
    }
    assert_eq!(sha256_of_file(&uploaded), want, "uploaded copy");
    assert_eq!(sha256_of_file(&downloaded), want, "downloaded copy");

    // Three connections, one session; each sshd ended with its connection.
    assert_eq!(server.spawned(), 3, "sshd log:\n{}", sshd_log());
    server.wait_all_exited(Duration::from_secs(10));
    assert_eq!(r.only_session().await, id);
    r.end_session(&mut rac, &id, 2 * 64 * MIB as u64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tigervnc_through_a_local_port_sends_vncsnapshot_a_framebuffer_update() {
    let xvnc = require("Xvnc", "tigervnc-standalone-server");
    let vncsnapshot = require("vncsnapshot", "vncsnapshot");
    // `-inetd`: RFB on stdin/stdout; Xvnc picks a free X display itself and does not listen for
    // RFB on any port. `-once`: it exits when its client disconnects.
    let geometry = (424, 240);
    let server = Inetd::start(
        &xvnc,
        &os(&[
            "-inetd",
            "-once",
            "-SecurityTypes",
            "None",
            "-geometry",
            &format!("{}x{}", geometry.0, geometry.1),
            "-depth",
            "24",
            "-nolisten",
            "tcp",
            "-desktop",
            "thingport-e2e",
        ]),
    )
    .await;

    let r = running("vnc", "VNC", server.addr.port()).await;
    let mut rac = connect_local(&r.site, "gw-1", "vnc");
    let port = rac.addr.expect("listening").port();
    let id = r.only_session().await;

    // `HOST::PORT` is a port, not a display number. The desktop is empty (no X client draws on
    // it), so `-allowblank`. `-encodings hextile`: with its default list (raw on loopback plus
    // the cursor pseudo-encodings) vncsnapshot 1.2a stalls on Xvnc's empty cursor rectangle.
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("capture.jpg");
    let mut cmd = tokio::process::Command::new(&vncsnapshot);
    cmd.args(["-allowblank", "-encodings", "hextile"])
        .arg(format!("127.0.0.1::{port}"))
        .arg(&image)
        .stdin(Stdio::null());
    let out = run_client(&mut cmd, Duration::from_secs(30), "vncsnapshot").await;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "vncsnapshot: {:?}\n{printed}\nXvnc log:\n{}",
        out.status,
        server.log()
    );
    // The handshake reached our Xvnc (its desktop name), and the update covered its screen.
    assert!(
        printed.contains("Desktop name \"thingport-e2e\""),
        "{printed}"
    );
    let jpeg = std::fs::read(&image).expect("vncsnapshot saved no image");
    assert_eq!(jpeg_dimensions(&jpeg), Some(geometry), "{printed}");

    assert_eq!(server.spawned(), 1);
    server.wait_all_exited(Duration::from_secs(15));
    // The empty screen is one colour, which hextile sends in a few bytes per tile: the count is
    // the handshake and those tiles, not width × height × 4.
    r.end_session(&mut rac, &id, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telnet_through_a_local_port_gets_the_banner_and_an_answer() {
    let telnetd = require("telnetd", "inetutils-telnetd");
    let telnet = require("inetutils-telnet", "inetutils-telnet");
    // telnetd runs this instead of /bin/login (`-E`), so no account or password is needed; `-h`
    // keeps the host information out of the banner.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("console.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'Thingport test console'\nIFS= read -r line\necho \"you typed: $line\"\n\
         read -r bye\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut args = os(&["-h", "-E"]);
    args.push(script.into_os_string());
    let server = Inetd::start(&telnetd, &args).await;

    let r = running("console", "TELNET", server.addr.port()).await;
    let mut rac = connect_local(&r.site, "gw-1", "console");
    let port = rac.addr.expect("listening").port();
    let id = r.only_session().await;

    let mut client = Interactive::spawn(
        std::process::Command::new(&telnet).args(["127.0.0.1", &port.to_string()]),
        "telnet",
    );
    client.expect("Thingport test console", Duration::from_secs(30));
    client.send_line("hello through the tunnel");
    client.expect(
        "you typed: hello through the tunnel",
        Duration::from_secs(15),
    );
    // The script ends (after a last line: telnetd may drop what a program printed just before
    // it exited), telnetd closes the connection and the client says so and exits.
    client.send_line("bye");
    client.expect("Connection closed by foreign host", Duration::from_secs(15));
    let status = client.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "telnet: {status:?}");

    assert_eq!(server.spawned(), 1);
    server.wait_all_exited(Duration::from_secs(10));
    r.end_session(&mut rac, &id, 40).await;
}
