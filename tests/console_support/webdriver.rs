//! A small WebDriver (W3C) client over HTTP, enough to drive Debian's
//! headless `chromium` through `chromedriver` from a test: sessions,
//! navigation, elements (find, type, click, text), the page's source and
//! screenshots. No crate that downloads a browser: the browser is the
//! distribution's (scripts/browser-deps installs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

/// The key under which WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running `chromedriver`, killed when dropped.
pub struct Driver {
    child: Child,
    pub url: String,
    http: reqwest::Client,
}

impl Driver {
    /// Starts `chromedriver` on a free port and waits until it is ready.
    pub async fn start() -> Driver {
        let binary = which("chromedriver").unwrap_or_else(|| {
            panic!("chromedriver is not installed: run scripts/browser-deps (apt-get install chromium chromium-driver)")
        });
        let port = crate::common::free_port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = driver
                .http
                .get(format!("{}/status", driver.url))
                .send()
                .await
            {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        return driver;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new headless browser session.
    pub async fn session(&self) -> Browser {
        let chromium =
            which("chromium").expect("chromium is not installed: run scripts/browser-deps");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1360,1000",
                         "--no-first-run", "--disable-extensions"]
            }
        }}});
        let r: Value = self
            .http
            .post(format!("{}/session", self.url))
            .json(&caps)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .unwrap();
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        Browser {
            base: format!("{}/session/{id}", self.url),
            http: self.http.clone(),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

pub struct Browser {
    base: String,
    http: reqwest::Client,
}

#[derive(Clone)]
pub struct Element(String);

impl Browser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r: Value = request.send().await.unwrap().json().await.unwrap();
        if !r["value"].is_array()
            && !r["value"].is_object()
            && !r["value"].is_string()
            && !r["value"].is_null()
        {
            panic!("webdriver {path}: unexpected answer {r}");
        }
        if let Some(error) = r["value"].get("error") {
            panic!("webdriver {path}: {error}: {}", r["value"]["message"]);
        }
        r["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The elements matching a CSS selector now.
    pub async fn all(&self, css: &str) -> Vec<Element> {
        self.call(
            reqwest::Method::POST,
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .await
        .as_array()
        .unwrap_or_else(|| panic!("webdriver /elements {css}: not a list"))
        .iter()
        .map(|e| {
            Element(
                e[ELEMENT]
                    .as_str()
                    .unwrap_or_else(|| panic!("{e}"))
                    .to_string(),
            )
        })
        .collect()
    }

    /// The first element matching `css`, waiting for it up to `within`.
    pub async fn find(&self, css: &str, within: Duration) -> Element {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(e) = self.all(css).await.into_iter().next() {
                return e;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no `{css}` within {within:?} on {}; page: {}",
                self.current_url().await,
                self.text("body").await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css, Duration::from_secs(5)).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let e = self.find(css, Duration::from_secs(5)).await;
        self.click_element(&e).await;
    }

    pub async fn click_element(&self, e: &Element) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{}/click", e.0),
            Some(json!({})),
        )
        .await;
    }

    /// The visible text of the first element matching `css` ("" when none,
    /// or when the page replaced the element between finding it and reading
    /// it: a form's navigation or the overview's refresh; `wait_text` then
    /// looks again).
    pub async fn text(&self, css: &str) -> String {
        let Some(e) = self.all(css).await.into_iter().next() else {
            return String::new();
        };
        let r: Value = self
            .http
            .get(format!("{}/element/{}/text", self.base, e.0))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let message = r["value"]["message"].as_str().unwrap_or("");
        match r["value"].get("error").and_then(Value::as_str) {
            Some("stale element reference") | Some("no such element") => String::new(),
            // What chromedriver says instead of a stale reference when the
            // element left the document while its text was being read.
            Some("unknown error") if message.contains("does not belong to the document") => {
                String::new()
            }
            Some(error) => panic!(
                "webdriver text of `{css}`: {error}: {}",
                r["value"]["message"]
            ),
            None => r["value"].as_str().unwrap_or("").to_string(),
        }
    }

    /// Waits until the text of `css` satisfies `want`; returns it.
    pub async fn wait_text(
        &self,
        css: &str,
        within: Duration,
        want: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let text = self.text(css).await;
            if want(&text) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "`{css}` never matched within {within:?}; last: {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the viewport.
    pub async fn screenshot(&self, path: &Path) {
        let data = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    pub async fn quit(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}
