//! Headless Chromium through chromedriver (WebDriver), for the tests of the UI inside MLflow.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::{free_port, root, Service, Stack};

pub struct Browser {
    pub client: Client,
    _driver: Service,
    _profile: tempfile::TempDir,
    shots: PathBuf,
}

/// Where screenshots of key states are kept: `tests/artifacts/<test>/`.
pub fn artifacts(test: &str) -> PathBuf {
    let dir = root().join("tests/artifacts").join(test);
    std::fs::create_dir_all(&dir).expect("create tests/artifacts");
    dir
}

/// A runtime for a browser test: multi-threaded, so the test may call the stack's blocking
/// helpers inside it with `tokio::task::block_in_place`.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of 1920×1080.
    pub async fn start(test: &str) -> Browser {
        Browser::start_sized(test, (1920, 1080)).await
    }

    /// Starts chromedriver and a headless Chromium whose viewport is `size` CSS pixels.
    pub async fn start_sized(test: &str, size: (u32, u32)) -> Browser {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap().keep();
        let driver = Service::start(
            "chromedriver",
            std::process::Command::new("/usr/bin/chromedriver").arg(format!("--port={port}")),
            dir.join("chromedriver.log"),
        );
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", format!("--window-size={},{}", size.0, size.1),
            format!("--user-data-dir={}", profile.path().display())]}});
        let deadline = Instant::now() + Duration::from_secs(15);
        let client = loop {
            match ClientBuilder::rustls()
                .unwrap()
                .capabilities(caps.as_object().unwrap().clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => panic!("chromedriver did not answer: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        Browser {
            client,
            _driver: driver,
            _profile: profile,
            shots: artifacts(test),
        }
    }

    /// Signs in through the printed link (the token travels in the fragment).
    pub async fn sign_in(&self, stack: &Stack) {
        self.sign_in_with(stack, &stack.token).await;
    }

    /// Signs in with another token, as its sign-in link does.
    pub async fn sign_in_with(&self, stack: &Stack, token: &str) {
        self.client
            .goto(&format!("{}/login#token={token}", stack.edge_url))
            .await
            .unwrap();
        // The login page trades the token for a session cookie, then leaves: wait for that, so
        // the next page does not race the cookie.
        self.wait_js(
            "signed in (the login page left)",
            "location.pathname !== '/login'",
            Duration::from_secs(30),
        )
        .await;
    }

    /// The first element matching `css`, waiting for it; the panic shows the page.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                return e;
            }
            if Instant::now() > deadline {
                let shot = self.screenshot("failure").await;
                let html = self.client.source().await.unwrap_or_default();
                panic!(
                    "{css} did not appear within {timeout:?} (screenshot {}); page:\n{}",
                    shot.display(),
                    &html[..html.len().min(4000)]
                );
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Waits until `script` (a JS expression) is truthy; returns its value.
    pub async fn wait_js(&self, what: &str, script: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self
                .client
                .execute(&format!("return ({script});"), vec![])
                .await
                .unwrap_or(Value::Null);
            if !matches!(v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("") {
                return v;
            }
            if Instant::now() > deadline {
                let shot = self.screenshot("failure").await;
                panic!(
                    "{what}: `{script}` stayed falsy for {timeout:?} (screenshot {})",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// From now on, keep the timing of every request this page makes: the browser keeps 250 by
    /// default, and MLflow's UI alone fills them, so later requests would go uncounted.
    pub async fn keep_fetches(&self) {
        self.client
            .execute("performance.setResourceTimingBufferSize(100000)", vec![])
            .await
            .unwrap();
    }

    /// A script for how many requests the page has made whose URL contains `part` (for
    /// [`Browser::wait_js`]); [`Browser::keep_fetches`] first.
    pub fn fetches_js(part: &str) -> String {
        format!("performance.getEntriesByType('resource').filter(e => e.name.includes({part:?})).length")
    }

    /// How many requests the page has made so far whose URL contains `part`.
    pub async fn fetches(&self, part: &str) -> u64 {
        let n = self
            .client
            .execute(&format!("return {};", Self::fetches_js(part)), vec![])
            .await
            .unwrap();
        n.as_u64()
            .unwrap_or_else(|| panic!("a count of requests, not {n}"))
    }

    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map(|v| v.len())
            .unwrap_or(0)
    }

    /// The text of the first element matching `css`. A live view re-renders while it is read,
    /// so an element found a moment ago may be gone (stale): it is then looked up again.
    pub async fn text(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.wait_for(css, Duration::from_secs(10)).await;
            match found.text().await {
                Ok(text) => return text,
                Err(e) if Instant::now() > deadline => panic!("the text of {css}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Clicks the element `css` selects, finding it again if a live view redrew it between the
    /// lookup and the click (a stale element).
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.wait_for(css, Duration::from_secs(10)).await;
            match found.click().await {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("clicking {css}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Presses the pointer on `from`, moves to `to` (offset from its centre) and releases:
    /// real pointer events, as a user's drag.
    pub async fn drag(&self, from: &Element, to: &Element, dx: f64, dy: f64) {
        let actions = MouseActions::new("mouse".into())
            .then(PointerAction::MoveToElement {
                element: from.clone(),
                duration: None,
                x: 0.0,
                y: 0.0,
            })
            .then(PointerAction::Down {
                button: MOUSE_BUTTON_LEFT,
            })
            .then(PointerAction::MoveToElement {
                element: to.clone(),
                duration: Some(Duration::from_millis(150)),
                x: dx / 2.0,
                y: dy / 2.0,
            })
            .then(PointerAction::MoveToElement {
                element: to.clone(),
                duration: Some(Duration::from_millis(150)),
                x: dx,
                y: dy,
            })
            .then(PointerAction::Up {
                button: MOUSE_BUTTON_LEFT,
            });
        self.client
            .perform_actions(actions)
            .await
            .expect("pointer actions");
        self.client.release_actions().await.ok();
    }

    /// Replaces a form field's value as a user does (select all, type over) and commits it
    /// (Tab blurs it, which fires one `change`; WebDriver's clear() would fire a second one).
    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.wait_for(css, Duration::from_secs(10)).await;
        field
            .send_keys(&format!("\u{E009}a\u{E000}{value}\u{E004}"))
            .await
            .unwrap();
    }

    /// Sends a key chord to the page (e.g. `\u{E009}z` is Ctrl+Z).
    pub async fn keys(&self, keys: &str) {
        // Keys go to the page, not to a form field that a previous step left focused.
        self.client
            .execute(
                "document.activeElement && document.activeElement.blur()",
                vec![],
            )
            .await
            .unwrap();
        let body = self.client.find(Locator::Css("body")).await.unwrap();
        body.send_keys(keys).await.unwrap();
    }

    /// Saves a PNG of the page under the test's artifacts directory.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let path = self.shots.join(format!("{name}.png"));
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::write(&path, png);
        }
        path
    }
}
