//! Just enough of the W3C WebDriver protocol to drive Debian's headless Chromium through
//! its chromedriver, over the HTTP client the tests already have: open a page, find and
//! click elements, type, run a script, resize the window, take a screenshot. (A WebDriver
//! crate would bring its own HTTP stack for these dozen JSON calls.)
use std::{path::Path, process::Stdio, time::Duration};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The W3C key of an element reference in a WebDriver answer.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Debian installs the browser and its driver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether chromium and chromedriver are installed.
pub fn available() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

/// A headless Chromium session and the chromedriver process serving it.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    _driver: Child,
}

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session, `width` x `height`.
    pub async fn start(width: u32, height: u32) -> Browser {
        let port = crate::redis_server::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not answer"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut browser = Browser {
            http,
            base,
            _driver: driver,
        };
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--no-first-run",
                         format!("--window-size={width},{height}")]
            }
        }}});
        let answer = browser.call("POST", "/session", Some(capabilities)).await;
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_string();
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let response = request.send().await.expect("webdriver call");
        let value: Value = response.json().await.expect("webdriver answer");
        value
    }

    async fn value(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let answer = self.call(method, path, body).await;
        if let Some(error) = answer["value"].get("error") {
            panic!(
                "webdriver {method} {path}: {error}: {}",
                answer["value"]["message"]
            );
        }
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.value("POST", "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn url(&self) -> String {
        self.value("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn source(&self) -> String {
        self.value("GET", "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Every element matching the CSS `selector`.
    pub async fn find_all(&self, selector: &str) -> Vec<Element> {
        let found = self
            .value(
                "POST",
                "/elements",
                Some(json!({"using": "css selector", "value": selector})),
            )
            .await;
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str().map(|id| Element(id.to_string())))
            .collect()
    }

    /// The first element matching `selector`, waiting up to 10 s for it to appear.
    pub async fn find(&self, selector: &str) -> Element {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.find_all(selector).await.into_iter().next() {
                return e;
            }
            if tokio::time::Instant::now() >= deadline {
                let source = self.source().await;
                panic!("no element {selector} on {}:\n{source}", self.url().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn text(&self, element: &Element) -> String {
        self.value("GET", &format!("/element/{}/text", element.0), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The text of the first element matching `selector`, found again while a page's live
    /// refresh replaces it between the find and the read ("stale element reference").
    pub async fn text_of(&self, selector: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let element = self.find(selector).await;
            let path = format!("/element/{}/text", element.0);
            let answer = self.call("GET", &path, None).await;
            match answer["value"].get("error").and_then(Value::as_str) {
                None => return answer["value"].as_str().unwrap_or_default().to_string(),
                Some("stale element reference") if tokio::time::Instant::now() < deadline => {}
                Some(error) => panic!(
                    "webdriver GET {path}: {error}: {}",
                    answer["value"]["message"]
                ),
            }
        }
    }

    pub async fn click(&self, element: &Element) {
        self.value("POST", &format!("/element/{}/click", element.0), None)
            .await;
    }

    pub async fn type_into(&self, element: &Element, text: &str) {
        self.value(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub async fn script(&self, script: &str, args: Vec<Value>) -> Value {
        self.value(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Runs an asynchronous `script` that calls `arguments[arguments.length - 1]` with its
    /// result.
    pub async fn script_async(&self, script: &str) -> Value {
        self.value(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Resizes the window to `width` x `height` CSS pixels of viewport (the window's frame
    /// is added on top by Chromium in headless mode: none).
    pub async fn resize(&self, width: u32, height: u32) {
        self.value(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// A PNG of the viewport, written to `path`.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let data = self.value("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        assert!(png.starts_with(b"\x89PNG"), "screenshot is a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Ends the session (chromedriver is killed when the browser is dropped).
    pub async fn quit(self) {
        let _ = self.call("DELETE", "", None).await;
    }
}
