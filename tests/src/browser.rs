//! A real headless Chromium, driven over WebDriver, for the web console's end-to-end tests.
//!
//! It runs Debian's `chromium` through Debian's `chromedriver` (`.ci/run` installs both; nothing
//! is downloaded at run time). Each [`Browser`] starts its own chromedriver on port 0 and its own
//! Chromium profile in a temporary directory, at 1280×800, headless (`--headless=new
//! --no-sandbox`, since tests run as root), with the background networking a closed machine
//! refuses turned off. [`Browser::shot`] saves a PNG of what a user sees under
//! `target/screenshots/` (or `THINGPORT_SCREENSHOTS`), for `docs/web-console.md` and for a human
//! to look at.

use crate::wait::now_ms;
use fantoccini::{elements::Element, Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium session; the driver is killed when dropped.
pub struct Browser {
    pub client: Client,
    base: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// Where screenshots go: `THINGPORT_SCREENSHOTS`, or `target/screenshots`.
pub fn screenshot_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("THINGPORT_SCREENSHOTS") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/screenshots
    exe.ancestors()
        .nth(3)
        .map(|t| t.join("screenshots"))
        .unwrap_or_else(|| PathBuf::from("screenshots"))
}

impl Browser {
    /// Starts chromedriver and a Chromium session against the console at `base` (`http://ADDR`).
    pub async fn start(base: &str) -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(bin).is_file(),
                "{bin} is missing: install Debian's chromium and chromium-driver \
                 (apt-get install chromium chromium-driver; .ci/run does)"
            );
        }
        let mut driver = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let stdout = driver.stdout.take().expect("chromedriver stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|p| p.trim_end_matches('.').trim().parse::<u16>().ok())
                {
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromedriver did not report its port within 30 s");
        let profile = tempfile::Builder::new()
            .prefix("thingport-chromium-")
            .tempdir()
            .expect("profile dir");
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--window-size=1280,800".into(),
            "--hide-scrollbars".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": CHROMIUM, "args": args}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut builder = ClientBuilder::new(connector);
        builder.capabilities(caps);
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match builder.connect(&format!("http://127.0.0.1:{port}")).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("chromium session not ready yet: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("could not start a Chromium session: {e}"),
            }
        };
        Browser {
            client,
            base: base.trim_end_matches('/').to_string(),
            driver,
            _profile: profile,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Opens a console path (e.g. `/devices`).
    pub async fn goto(&self, path: &str) {
        self.client.goto(&self.url(path)).await.expect("navigate");
    }

    /// The path and query of the current page.
    pub async fn path(&self) -> String {
        let u = self.client.current_url().await.expect("current url");
        let mut p = u.path().to_string();
        if let Some(q) = u.query() {
            p.push('?');
            p.push_str(q);
        }
        p
    }

    /// The first element matching `css`, waiting up to 10 s for it.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css} within 10 s: {e}"))
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map(|v| v.len())
            .unwrap_or(0)
    }

    /// Replaces the value of the input matching `css`.
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.expect("clear");
        e.send_keys(text).await.expect("type");
    }

    /// Chooses the option with visible `text` in the select matching `css`.
    pub async fn select(&self, css: &str, text: &str) {
        self.find(css)
            .await
            .select_by_label(text)
            .await
            .unwrap_or_else(|e| panic!("select {text} in {css}: {e}"));
    }

    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// The visible text of the page's `<main>`.
    pub async fn main_text(&self) -> String {
        self.find("main").await.text().await.unwrap_or_default()
    }

    /// Waits until the text of the first element matching `css` contains `needle`.
    pub async fn wait_text(&self, css: &str, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(needle) {
                return text;
            }
            if Instant::now() >= deadline {
                panic!("{css} did not show {needle:?} within {within:?}; it shows: {text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the current path starts with `prefix`.
    pub async fn wait_path(&self, prefix: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let p = self.path().await;
            if p.starts_with(prefix) {
                return;
            }
            if Instant::now() >= deadline {
                panic!("the browser did not reach {prefix} within {within:?}: it is at {p}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `fetch` from the page (same origin, with the session cookie): `[status, body]`.
    pub async fn fetch(&self, method: &str, path: &str, body: &str, xsrf: bool) -> (u16, String) {
        let script = r#"
            const [method, path, body, xsrf, done] = arguments;
            const headers = {"Content-Type": "application/x-www-form-urlencoded"};
            if (xsrf) headers["X-XSRF-TOKEN"] = "TWX-XSRF-TOKEN-VALUE";
            fetch(path, {method, headers, body: method === "GET" ? undefined : body, credentials: "same-origin", redirect: "manual"})
              .then(async r => done([r.status, await r.text()]))
              .catch(e => done([0, String(e)]));
        "#;
        let v = self
            .client
            .execute_async(
                script,
                vec![json!(method), json!(path), json!(body), json!(xsrf)],
            )
            .await
            .expect("fetch from the page");
        let status = v[0].as_u64().unwrap_or(0) as u16;
        (status, v[1].as_str().unwrap_or("").to_string())
    }

    /// Signs in through the form and waits for the device list.
    pub async fn sign_in(&self, user: &str, password: &str) {
        self.goto("/login").await;
        self.fill("#user", user).await;
        self.fill("#password", password).await;
        self.click("form[action='/login'] button[type=submit]")
            .await;
        self.wait_path("/devices", Duration::from_secs(10)).await;
    }

    /// Signs out with the navigation bar's button and waits for the sign-in page.
    pub async fn sign_out(&self) {
        self.click(".signout button").await;
        self.wait_path("/login", Duration::from_secs(10)).await;
    }

    /// The session cookie as the browser holds it (value, HttpOnly, SameSite).
    pub async fn session_cookie(&self) -> Option<(String, bool, String)> {
        let cookies = self.client.get_all_cookies().await.expect("cookies");
        cookies
            .into_iter()
            .find(|c| c.name() == "thingport_session")
            .map(|c| {
                (
                    c.value().to_string(),
                    c.http_only().unwrap_or(false),
                    c.same_site().map(|s| s.to_string()).unwrap_or_default(),
                )
            })
    }

    /// Saves a PNG of the viewport as `<dir>/<name>.png` and returns its path.
    pub async fn shot(&self, name: &str) -> PathBuf {
        // Let the page settle (fonts, a pending refresh) without racing a fixed delay: wait for
        // the document to be complete.
        let _ = self
            .client
            .execute("return document.readyState", vec![])
            .await;
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        eprintln!("screenshot {} at {}", path.display(), now_ms());
        path
    }

    /// Resizes the browser window (the page's layout, and a console's size, follow).
    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("set the window size");
    }

    /// Polls `script` until it returns a value `done` accepts; panics with the last value after
    /// `within`.
    pub async fn wait_eval(
        &self,
        script: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(script).await;
            if done(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "`{script}` did not become ready within {within:?}; last: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs a script in the page and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.expect("script")
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Killing chromedriver leaves its Chromium running (a test that failed before `close`):
        // end every process started with this browser's own profile directory.
        let marker = format!("--user-data-dir={}", self._profile.path().display());
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&marker) {
                let _ = Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}
