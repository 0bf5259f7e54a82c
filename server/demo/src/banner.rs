//! What `thingport up` prints on stdout once the demo is ready: the platform's URL, the
//! Administrator's credentials, the commands to try, and the line `demo ready`.

use super::admin::ADMINISTRATOR;
use super::local::{self, DataDir};
use super::GATEWAY;

/// What `demo ready` reports.
pub struct Ready {
    pub url: String,
    pub data: DataDir,
    /// The gateway has an `ssh` endpoint.
    pub ssh: bool,
    /// How to name `thingport` in the commands.
    pub command: String,
}

impl Ready {
    /// The credentials and the commands to try, on stdout, ending with `demo ready`.
    pub fn print(&self) {
        let Ready {
            url,
            data,
            ssh,
            command,
        } = self;
        let password = &data.password;
        let env = format!(
            "THINGPORT_URL={url} THINGPORT_USER={ADMINISTRATOR} THINGPORT_PASSWORD={}",
            local::shell_quote(password)
        );
        let stored = if data.created {
            "generated now and stored in"
        } else {
            "read from"
        };
        let mut out = String::new();
        out.push_str("\nThingport demo is running; Ctrl-C stops it.\n\n");
        out.push_str(&format!(
            "  Open the web console: {url}/  (sign in as {ADMINISTRATOR})\n\n"
        ));
        out.push_str(&format!("  url:      {url}\n"));
        out.push_str(&format!("  user:     {ADMINISTRATOR}\n"));
        out.push_str(&format!("  password: {password}\n"));
        out.push_str(&format!(
            "  (the password was {stored} {} (mode 0600); the next `thingport up` on this data \
             directory prints it again)\n\n",
            data.password_file().display()
        ));
        out.push_str("Try, in another terminal:\n\n");
        out.push_str(&format!(
            "  # a local port that reaches {GATEWAY}'s echo service (type a line: it comes back)\n  \
             {env} {command} connect {GATEWAY} echo --local 127.0.0.1:0\n\n"
        ));
        if *ssh {
            out.push_str(&format!(
                "  # ssh to this machine through {GATEWAY}\n  {env} ssh -o \
                 ProxyCommand='{command} connect %n ssh --stdio' \"$USER@{GATEWAY}\"\n\n"
            ));
        } else {
            out.push_str(&format!(
                "  # (with an ssh server on 127.0.0.1:22 at start, {GATEWAY} also gets an ssh \
                 endpoint for:\n  #  {env} ssh -o ProxyCommand='{command} connect %n ssh \
                 --stdio' \"$USER@{GATEWAY}\")\n\n"
            ));
        }
        out.push_str(&format!(
            "  # sessions and the audit trail\n  {env} {command} sessions {GATEWAY}\n  {env} \
             {command} audit --category REMOTE_ACCESS\n\n"
        ));
        out.push_str("demo ready\n");
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }
}
