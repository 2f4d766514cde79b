//! Headless Chromium driven through ChromeDriver (WebDriver), for the web console's tests: one
//! browser per test, a folder of screenshots a person can look at, axe-core's accessibility
//! check of the page shown, and the keyboard or the pointer as the way a flow is driven.
//!
//! README's test command installs Debian's `chromium` and `chromium-driver` where it can, and
//! downloads axe-core; where it cannot, it says so loudly and sets `KALLA_TEST_BROWSER=absent`,
//! and [`Browser::start`] then returns `None` (outside CI only: in CI a missing browser fails).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::ports::free_port;
use crate::tool;

/// How a flow works the page: clicking and typing into elements, or only the keyboard (Tab to a
/// control, then Enter, Space or typing).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input {
    Pointer,
    Keyboard,
}

pub struct Browser {
    pub client: Client,
    driver: Child,
    pub downloads: TempDir,
    shots: PathBuf,
    step: usize,
    input: Input,
    width: u32,
}

/// Why the browser tests cannot run here, when README's test command found no browser.
pub fn absent() -> Option<String> {
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    match std::env::var("KALLA_TEST_BROWSER").as_deref() {
        Ok("absent") if !ci => Some("no Chromium and ChromeDriver here (scripts/test said so)".into()),
        _ => None,
    }
}

impl Browser {
    /// A headless Chromium `width` px wide, its screenshots in `shots` (emptied first). `None`,
    /// after printing why, when the machine has no browser and this is not CI.
    pub async fn start(width: u32, shots: &Path, input: Input) -> Option<Self> {
        if let Some(why) = absent() {
            eprintln!("\n!!! BROWSER TEST NOT RUN: {why}\n");
            return None;
        }
        let install =
            "install Debian's chromium and chromium-driver (README's test command does where it can)";
        let chromium = tool("chromium", "KALLA_TEST_CHROMIUM", install);
        let chromedriver = tool("chromedriver", "KALLA_TEST_CHROMEDRIVER", install);
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let downloads = TempDir::new().expect("downloads dir");
        let mut capabilities = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions", "--lang=en-US",
                    format!("--window-size={width},900"),
                ],
                "prefs": {
                    "download.default_directory": downloads.path(),
                    "download.prompt_for_download": false,
                },
            }
        });
        // A desktop window is not made narrower than about 500 px: a phone's width is emulated.
        if width < 600 {
            capabilities["goog:chromeOptions"]["mobileEmulation"] =
                json!({"deviceMetrics": {"width": width, "height": 844, "pixelRatio": 2.0, "touch": false}});
        }
        let capabilities = match capabilities {
            Value::Object(map) => map,
            _ => unreachable!("an object"),
        };
        let url = format!("http://127.0.0.1:{port}");
        let client = crate::wait_for(
            "chromedriver to accept a session",
            Duration::from_secs(30),
            || {
                let capabilities = capabilities.clone();
                let url = url.clone();
                async move {
                    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                        .capabilities(capabilities)
                        .connect(&url)
                        .await
                        .ok()
                }
            },
        )
        .await;
        let _ = std::fs::remove_dir_all(shots);
        std::fs::create_dir_all(shots).expect("screenshots dir");
        eprintln!("screenshots of this flow: {}", shots.display());
        Some(Self {
            client,
            driver,
            downloads,
            shots: shots.to_path_buf(),
            step: 0,
            input,
            width,
        })
    }

    /// Opens `url`, and checks the page is laid out as wide as asked.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("open the page");
        let inner = self
            .client
            .execute("return window.innerWidth", vec![])
            .await
            .expect("inner width");
        assert_eq!(inner, json!(self.width), "the page is {} px wide", self.width);
    }

    /// Saves a screenshot of the page as `NN-name.png`.
    pub async fn shot(&mut self, name: &str) {
        self.step += 1;
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(self.shots.join(format!("{:02}-{name}.png", self.step)), png)
            .expect("save screenshot");
    }

    /// The first element matching `css`, once it is on the page (20 s at most).
    pub async fn find(&self, css: &str) -> Element {
        let found = self
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(element) => element,
            Err(error) => {
                self.failure_shot().await;
                panic!("no element {css} on the page: {error}");
            }
        }
    }

    /// The page as a test that fails on it left it: `failure.png` beside the steps.
    async fn failure_shot(&self) {
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::write(self.shots.join("failure.png"), png);
        }
    }

    /// Waits until the page's text contains `text` (the page as a person reads it).
    pub async fn wait_for_text(&self, text: &str, timeout: Duration) {
        let script = "return document.body.innerText";
        let said = async {
            loop {
                let body = self.client.execute(script, vec![]).await.expect("page text");
                if body.as_str().is_some_and(|body| body.contains(text)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        if tokio::time::timeout(timeout, said).await.is_err() {
            self.failure_shot().await;
            panic!(
                "timed out after {timeout:?} waiting for the page to say {text:?}; it says:\n{}",
                self.text().await
            );
        }
    }

    pub async fn text(&self) -> String {
        let body = self
            .client
            .execute("return document.body.innerText", vec![])
            .await
            .expect("page text");
        body.as_str().unwrap_or_default().to_string()
    }

    /// Whether an element matching `css` is on the page now.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("find")
            .is_empty()
    }

    /// Brings keyboard focus to `css`: with the keyboard, by pressing Tab (at most 400 times)
    /// until it is there, so the control is shown to be reachable by keyboard alone.
    async fn focus(&self, css: &str) -> Element {
        let target = self.find(css).await;
        if self.input == Input::Pointer {
            return target;
        }
        let is_focused = json!(css);
        for _ in 0..400 {
            let focused = self
                .client
                .execute(
                    "return document.activeElement && document.activeElement.matches(arguments[0])",
                    vec![is_focused.clone()],
                )
                .await
                .expect("active element");
            if focused == json!(true) {
                return self.client.active_element().await.expect("active element");
            }
            self.keys(&Key::Tab.to_string()).await;
        }
        panic!("{css} cannot be reached with the Tab key");
    }

    /// Activates a button or link: a click, or Enter on it.
    pub async fn press(&self, css: &str) {
        match self.input {
            Input::Pointer => self.click(css).await,
            Input::Keyboard => {
                self.focus(css).await;
                self.keys(&Key::Enter.to_string()).await
            }
        }
    }

    /// Clicks `css`, finding it again if the page drew it anew meanwhile (as it does when a
    /// choice just made loads something).
    async fn click(&self, css: &str) {
        for _ in 0..5 {
            match self.find(css).await.click().await {
                Err(error) if error.is_stale_element_reference() => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                clicked => return clicked.unwrap_or_else(|e| panic!("click {css}: {e}")),
            }
        }
        panic!("{css} kept being drawn anew");
    }

    /// Toggles a checkbox: a click, or Space on it.
    pub async fn toggle(&self, css: &str) {
        match self.input {
            Input::Pointer => self.click(css).await,
            Input::Keyboard => {
                self.focus(css).await;
                self.keys(" ").await
            }
        }
    }

    /// Types `text` into an empty input (a date input takes it as a person types it, from its
    /// first part: `01102024` in an American locale).
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.focus(css).await;
        match self.input {
            Input::Pointer => element.send_keys(text).await.expect("type"),
            Input::Keyboard => self.keys(text).await,
        }
    }

    /// Presses and releases each key of `keys` in turn, on whatever has the focus.
    async fn keys(&self, keys: &str) {
        let mut actions = KeyActions::new("keyboard".to_string());
        for key in keys.chars() {
            actions = actions
                .then(KeyAction::Down { value: key })
                .then(KeyAction::Up { value: key });
        }
        self.client.perform_actions(actions).await.expect("keys");
    }

    /// Chooses the option of a select whose value is `value`: by the pointer, or with the
    /// keyboard's arrow keys until it is chosen.
    pub async fn choose(&self, css: &str, value: &str) {
        let element = self.focus(css).await;
        if self.input == Input::Pointer {
            element
                .select_by_value(value)
                .await
                .unwrap_or_else(|e| panic!("choose {value} in {css}: {e}"));
            return;
        }
        let read = "return arguments[0].value";
        let options = self
            .client
            .execute(
                "return Array.from(arguments[0].options).map(o => o.value)",
                vec![json!(element)],
            )
            .await
            .expect("options");
        let options: Vec<String> = serde_json::from_value(options).expect("option values");
        let want = options
            .iter()
            .position(|o| o == value)
            .unwrap_or_else(|| panic!("{css} has no option {value}: {options:?}"));
        let now = self
            .client
            .execute(read, vec![json!(element)])
            .await
            .expect("value");
        let at = options
            .iter()
            .position(|o| Some(o.as_str()) == now.as_str())
            .unwrap_or(0);
        let key = if want >= at { Key::Down } else { Key::Up };
        self.keys(&key.to_string().repeat(want.abs_diff(at))).await;
        // A choice may draw the form again: the select is looked up anew.
        let chosen = "const s = document.querySelector(arguments[0]); return s && s.value";
        crate::wait_for(
            &format!("{value} to be chosen in {css}"),
            Duration::from_secs(10),
            || async {
                let now = self
                    .client
                    .execute(chosen, vec![json!(css)])
                    .await
                    .expect("value");
                (now == json!(value)).then_some(())
            },
        )
        .await;
    }

    /// axe-core's critical and serious violations on the page as it is now, each as
    /// `rule: help (elements)`.
    pub async fn accessibility_violations(&self) -> Vec<String> {
        let axe = tool(
            "axe.min.js",
            "KALLA_TEST_AXE",
            "run the tests with scripts/test, which downloads axe-core",
        );
        let source = std::fs::read_to_string(axe).expect("read axe.min.js");
        self.client.execute(&source, vec![]).await.expect("load axe-core");
        let results = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map(v => ({
                   id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))
                 }))), e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));",
                vec![],
            )
            .await
            .expect("run axe-core");
        results
            .as_array()
            .expect("violations")
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("critical" | "serious")))
            .map(|v| {
                format!(
                    "{}: {} ({})",
                    v["id"].as_str().unwrap_or(""),
                    v["help"].as_str().unwrap_or(""),
                    v["nodes"]
                )
            })
            .collect()
    }

    /// A file the browser downloaded, once it is whole (30 s at most).
    pub async fn downloaded(&self, name: &str) -> Vec<u8> {
        let path = self.downloads.path().join(name);
        crate::wait_for(
            &format!("the download {name}"),
            Duration::from_secs(30),
            || async {
                let partial = std::fs::read_dir(self.downloads.path())
                    .ok()?
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".crdownload"));
                (!partial).then(|| std::fs::read(&path).ok()).flatten()
            },
        )
        .await
    }

    /// Every URL the page has asked for (the page itself, its files, its API calls).
    pub async fn requested_urls(&self) -> Vec<String> {
        let urls = self
            .client
            .execute(
                "return [location.href, ...performance.getEntriesByType('resource').map(e => e.name)]",
                vec![],
            )
            .await
            .expect("resource timing");
        serde_json::from_value(urls).expect("urls")
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
    }
}
