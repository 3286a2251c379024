//! The OpenAPI contract: `GET /api/v1/openapi.json` describes every route the router has and
//! nothing else, and every answer (status, body, required headers) matches the document.
//!
//! How "every route" is kept honest from both sides:
//! - router -> document: the route table is read from the one place routes are declared, the
//!   `routes!(module::handler, ...)` calls in `api/src/lib.rs` (each handler's method and path
//!   are those of its `#[utoipa::path(...)]` in `api/src/routes/<module>.rs`), and any plain
//!   `.route(path, method(...))` call there or in `api/src/routes/*.rs`; every (method, path)
//!   found must be in the document. axum has no public route listing, and a second
//!   hand-kept list would drift just like a hand-written document;
//! - document -> router: every documented (method, path) is probed on the running API and
//!   must not meet the router's fallback ("route not found") or its method-not-allowed answer.
//!
//! The ops dashboard's browser pages under `/ops` (`api/src/dashboard`, merged in `router()`)
//! are not API operations and are not in the document; its JSON twin under
//! `/api/v1/admin/` is, and [`the_document_lists_exactly_the_routes_of_the_router`] checks
//! that no `/ops` path crept in.
//!
//! The document also states the rules of single fields (enums, lengths, formats), so that a
//! client generated from it cannot build a request the API refuses for a reason it hides,
//! and a method a path does not have is 405 with the path's methods in `Allow`.
//!
//! The helpers here (sending a request keeping its headers, checking an answer against the
//! document) are used by the fuzz, rate-limit and idempotency tests too.
use std::collections::{BTreeMap, BTreeSet};

use e2e::platform::TestApp;
use reqwest::{Method, header::HeaderMap};
use serde_json::{Value, json};

/// What a request carries as its body.
pub enum Body {
    None,
    Json(Value),
    /// Raw bytes with an optional content type.
    Raw(Option<&'static str>, Vec<u8>),
}

/// An answer with what the checks need.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub retry_after: Option<String>,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Option<Value>,
}

/// Where requests go: the platform's API, or another API server a test started.
pub trait Api {
    fn base(&self) -> &str;
    fn http(&self) -> &reqwest::Client;
}

impl Api for TestApp {
    fn base(&self) -> &str {
        &self.base
    }
    fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// Sends a request to the API; `token` is sent verbatim as `Authorization: Bearer <token>`.
pub async fn call(
    app: &impl Api,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Body,
) -> Answer {
    call_with(app, method, path, token, &[], body).await
}

/// [`call`] with more request headers.
pub async fn call_with(
    app: &impl Api,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Body,
) -> Answer {
    let mut request = app.http().request(method, format!("{}{path}", app.base()));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request = match body {
        Body::None => request,
        Body::Json(value) => request.json(&value),
        Body::Raw(content_type, bytes) => {
            let request = match content_type {
                Some(ct) => request.header("content-type", ct),
                None => request,
            };
            request.body(bytes)
        }
    };
    let response = request.send().await.unwrap_or_else(|e| {
        let e = e.without_url().to_string();
        panic!(
            "request to {} failed: {e}",
            path.chars().take(200).collect::<String>()
        )
    });
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type").unwrap_or_default();
    let retry_after = header("retry-after");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).ok();
    Answer {
        status,
        content_type,
        retry_after,
        headers,
        text,
        json,
    }
}

/// Words that must never reach a client: panics, internal error text, database internals.
const LEAKS: &[&str] = &[
    "panicked",
    "stack backtrace",
    "RUST_BACKTRACE",
    "src/",
    ".rs:",
    "sqlx",
    "postgres",
    "SQLSTATE",
    "syntax error at or near",
    "internal error:",
    "called `Result::unwrap()`",
];

/// A 4xx/5xx answer is the API's JSON error body with a non-empty `detail` and `code`, and
/// says nothing internal (words the request itself carried, `echo`, may be quoted back).
pub fn assert_error_body(answer: &Answer, context: &str, echo: &str) {
    assert!(
        answer.content_type.starts_with("application/json"),
        "{context}: error answered as {:?}: {}",
        answer.content_type,
        answer.text
    );
    let body = answer
        .json
        .as_ref()
        .unwrap_or_else(|| panic!("{context}: error body is not JSON: {}", answer.text));
    for key in ["detail", "code"] {
        assert!(
            body[key].as_str().is_some_and(|s| !s.is_empty()),
            "{context}: error body lacks a non-empty {key}: {body}"
        );
    }
    if let Some(field) = body.get("field") {
        assert!(
            field.is_string(),
            "{context}: field is not a string: {body}"
        );
    }
    for leak in LEAKS.iter().filter(|leak| !echo.contains(*leak)) {
        assert!(
            !answer.text.contains(leak),
            "{context}: error body leaks {leak:?}: {}",
            answer.text
        );
    }
}

/// The OpenAPI document with a validator per (operation, status).
pub struct Contract {
    pub doc: Value,
    /// (method, path template) of every documented operation.
    pub operations: BTreeSet<(String, String)>,
    /// (method, path template, status) seen so far.
    pub seen: BTreeSet<(String, String, u16)>,
}

impl Contract {
    pub async fn fetch(app: &impl Api) -> Contract {
        let answer = call(app, Method::GET, "/api/v1/openapi.json", None, Body::None).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert!(answer.content_type.starts_with("application/json"));
        let doc = answer.json.expect("the document is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let mut operations = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if HTTP_METHODS.contains(&method.as_str()) {
                    operations.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let mut contract = Contract {
            doc,
            operations,
            seen: BTreeSet::new(),
        };
        // every reference resolves (a schema only a parameter names is easily left out)
        let mut references = Vec::new();
        collect_refs(&contract.doc, &mut references);
        for reference in references {
            contract.resolve(&json!({ "$ref": reference }));
        }
        // the document's own answer is part of the contract
        let doc = contract.doc.clone();
        contract.check(
            "GET",
            "/api/v1/openapi.json",
            &Answer {
                status: 200,
                content_type: "application/json".into(),
                retry_after: None,
                headers: HeaderMap::new(),
                text: String::new(),
                json: Some(doc),
            },
        );
        contract
    }

    /// Follows a local `$ref` (`#/components/...`).
    fn resolve<'a>(&'a self, mut value: &'a Value) -> &'a Value {
        while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
            let pointer = reference.strip_prefix('#').expect("local $ref");
            value = self
                .doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling $ref {reference}"));
        }
        value
    }

    /// Asserts `answer` is a documented response of `method template` and matches its
    /// schema and required headers.
    pub fn check(&mut self, method: &str, template: &str, answer: &Answer) {
        let context = format!("{method} {template} -> {}", answer.status);
        let operation = self.doc["paths"][template][method.to_lowercase()].clone();
        assert!(operation.is_object(), "{context}: operation not documented");
        assert_ne!(
            answer.status, 500,
            "{context}: a 500 is a bug: {}",
            answer.text
        );
        let response = operation["responses"]
            .get(answer.status.to_string())
            .unwrap_or_else(|| {
                panic!(
                    "{context}: status not documented for this operation: {}",
                    answer.text
                )
            });
        let response = self.resolve(response).clone();
        if answer.status >= 400 {
            assert_error_body(answer, &context, "");
        }
        if let Some(headers) = response.get("headers").and_then(Value::as_object) {
            for (name, header) in headers {
                let header = self.resolve(header);
                if header["required"] == true && name.eq_ignore_ascii_case("retry-after") {
                    let value = answer
                        .retry_after
                        .as_deref()
                        .unwrap_or_else(|| panic!("{context}: no Retry-After header"));
                    assert!(
                        value.parse::<u64>().is_ok_and(|s| s >= 1),
                        "{context}: Retry-After {value:?} is not a positive number of seconds"
                    );
                }
            }
        }
        let content = response["content"].as_object().expect("response content");
        let (media, spec) = content
            .iter()
            .find(|(media, _)| answer.content_type.starts_with(media.as_str()))
            .unwrap_or_else(|| {
                panic!(
                    "{context}: content type {:?}, documented {:?}",
                    answer.content_type,
                    content.keys().collect::<Vec<_>>()
                )
            });
        if media == "application/json" {
            let instance = answer
                .json
                .as_ref()
                .unwrap_or_else(|| panic!("{context}: body is not JSON: {}", answer.text));
            self.validate(&spec["schema"], instance, &context);
        }
        self.seen
            .insert((method.to_string(), template.to_string(), answer.status));
    }

    /// Validates `instance` against `schema`, resolving `$ref`s into the document's components.
    fn validate(&self, schema: &Value, instance: &Value, context: &str) {
        let errors = self.errors(schema, instance, context);
        assert!(
            errors.is_empty(),
            "{context}: body does not match the document:\n  {}\nbody: {instance}",
            errors.join("\n  ")
        );
    }

    /// Why `instance` does not match `schema` (nothing when it does).
    fn errors(&self, schema: &Value, instance: &Value, context: &str) -> Vec<String> {
        let mut root = schema.as_object().cloned().unwrap_or_default();
        root.insert("components".into(), self.doc["components"].clone());
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&Value::Object(root))
            .unwrap_or_else(|e| panic!("{context}: schema does not compile: {e}"));
        validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    /// The documented parameter `name` (in `location`: path, query or header) of an operation.
    pub fn parameter(&self, method: &str, template: &str, location: &str, name: &str) -> Value {
        let operation = &self.doc["paths"][template][method.to_lowercase()];
        operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| self.resolve(p))
            .find(|p| p["in"] == location && p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{method} {template}: no {location} parameter {name}"))
    }

    /// Whether the document lets a client send `value` as that parameter.
    pub fn parameter_accepts(
        &self,
        method: &str,
        template: &str,
        location: &str,
        name: &str,
        value: &Value,
    ) -> bool {
        let parameter = self.parameter(method, template, location, name);
        let context = format!("{method} {template} {location} {name}");
        self.errors(&parameter["schema"], value, &context)
            .is_empty()
    }

    /// Whether the document lets a client send `body` (JSON) to an operation.
    pub fn body_accepts(&self, method: &str, template: &str, body: &Value) -> bool {
        let operation = &self.doc["paths"][template][method.to_lowercase()];
        let request = self.resolve(&operation["requestBody"]);
        let schema = &request["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {template}: no JSON request body"
        );
        self.errors(schema, body, &format!("{method} {template} body"))
            .is_empty()
    }
}

/// Every `$ref` in `value`.
fn collect_refs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
                into.push(reference.to_string());
            }
            map.values().for_each(|v| collect_refs(v, into));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, into)),
        _ => {}
    }
}

const HTTP_METHODS: &[&str] = &[
    "get", "post", "put", "patch", "delete", "head", "options", "trace",
];

/// The (METHOD, path) pairs the router declares, read from the API's source.
fn router_routes() -> BTreeSet<(String, String)> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/src");
    let mut files = vec![src.join("lib.rs")];
    let mut route_files: Vec<_> = std::fs::read_dir(src.join("routes"))
        .expect("api/src/routes")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    route_files.sort();
    files.extend(route_files);
    let mut routes = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        assert!(
            !text.contains(".nest(") && !text.contains(".route_service("),
            "{}: nested routers or services are not understood by this test; extend router_routes()",
            file.display()
        );
        // `routes!(module::handler, ...)`: each handler is routed where its annotation says
        let mut rest = text.as_str();
        while let Some(at) = rest.find("routes!(") {
            let args = &rest[at + "routes!(".len()..];
            let end = matching_paren(args);
            let call = &args[..end];
            rest = &args[end..];
            for handler in call.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                let (module, name) = handler
                    .rsplit_once("::")
                    .unwrap_or_else(|| panic!("routes!({handler}): expected module::handler"));
                let module = module.rsplit("::").next().expect("module name");
                let (method, path) =
                    annotated_route(&src.join("routes").join(format!("{module}.rs")), name);
                routes.insert((method, path));
            }
        }
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            let args = &rest[at + ".route(".len()..];
            let end = matching_paren(args);
            let call = &args[..end];
            rest = &args[end..];
            let path = call.split('"').nth(1).unwrap_or_else(|| {
                panic!("{}: route without a literal path: {call}", file.display())
            });
            let methods = &call[call.find(',').expect("route(path, methods)")..];
            let mut found = false;
            for method in HTTP_METHODS {
                let needle = format!("{method}(");
                let mut from = 0;
                while let Some(i) = methods[from..].find(&needle) {
                    let i = from + i;
                    let before = methods[..i].chars().last().unwrap_or(' ');
                    if !(before.is_alphanumeric() || before == '_' || before == ':') {
                        routes.insert((method.to_uppercase(), path.to_string()));
                        found = true;
                    }
                    from = i + needle.len();
                }
            }
            assert!(found, "{}: no method found in route {call}", file.display());
        }
    }
    routes
}

/// The (METHOD, path) of the `#[utoipa::path(method, path = "...")]` on `fn name` in `file`.
fn annotated_route(file: &std::path::Path, name: &str) -> (String, String) {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let at = text
        .find(&format!("fn {name}("))
        .unwrap_or_else(|| panic!("{}: no fn {name}", file.display()));
    let before = &text[..at];
    let open = before
        .rfind("#[utoipa::path(")
        .unwrap_or_else(|| panic!("{}: fn {name} has no #[utoipa::path]", file.display()));
    let args = &before[open + "#[utoipa::path(".len()..];
    let attribute = &args[..matching_paren(args)];
    assert!(
        !args[attribute.len()..].contains("fn "),
        "{}: the #[utoipa::path] before fn {name} belongs to another fn",
        file.display()
    );
    let method = attribute
        .split(',')
        .next()
        .map(str::trim)
        .filter(|m| HTTP_METHODS.contains(m))
        .unwrap_or_else(|| panic!("{}: fn {name}: the method must come first", file.display()));
    let path = attribute
        .split_once("path = \"")
        .and_then(|(_, rest)| rest.split('"').next())
        .unwrap_or_else(|| panic!("{}: fn {name}: no path = \"...\"", file.display()));
    (method.to_uppercase(), path.to_string())
}

/// Index of the `)` closing an argument list that starts right after its `(`.
fn matching_paren(s: &str) -> usize {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' => depth += 1,
            ')' if depth == 0 => return i,
            ')' => depth -= 1,
            _ => {}
        }
    }
    panic!("unbalanced route(...) call");
}

/// A concrete path for a template: `{name}` becomes `value`.
fn fill(template: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("closing brace") + open;
        out.push_str(value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_of_the_router() {
    let app = TestApp::without_worker().await;
    let contract = Contract::fetch(&app).await;
    let routed = router_routes();
    assert!(routed.len() >= 10, "parsed too few routes: {routed:?}");
    let undocumented: Vec<_> = routed.difference(&contract.operations).collect();
    let unrouted: Vec<_> = contract.operations.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the document: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented but not in router(): {unrouted:?}"
    );
    assert!(
        contract
            .operations
            .iter()
            .all(|(_, path)| !path.starts_with("/ops")),
        "the dashboard's pages are not API operations"
    );

    // and on the running API: every documented operation reaches a handler
    let admin = app.token("admin@example.com").await;
    for (method, template) in &contract.operations {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let answer = call(
            &app,
            method.clone(),
            &fill(template, "1"),
            Some(&admin),
            Body::None,
        )
        .await;
        let body = answer.json.clone().unwrap_or(Value::Null);
        assert!(
            !(answer.status == 404 && body["detail"] == "route not found"),
            "{method} {template} is documented but the router has no such route"
        );
        assert!(
            body["code"] != "method_not_allowed",
            "{method} {template} is documented but the route has no {method} handler"
        );
    }
}

/// Mints tokens the API must refuse.
fn bad_tokens(app: &TestApp, user_id: i64) -> Vec<(&'static str, String)> {
    use shared::domain::Role;
    let now = chrono::Utc::now();
    let expired = api::auth::JwtKeys::new(&app.config.jwt_secret, 10)
        .mint(user_id, Role::Student, now - chrono::Duration::hours(2))
        .expect("token");
    let wrong_key = api::auth::JwtKeys::new("some-other-secret-that-is-long-enough", 60)
        .mint(user_id, Role::Student, now)
        .expect("token");
    vec![
        ("expired", expired),
        ("wrongly signed", wrong_key),
        ("malformed", "not.a.jwt".into()),
        ("garbage", "%00'; drop table users;--".into()),
    ]
}

/// A token of a user with an ops role, created on first use.
async fn ops_token(app: &TestApp, email: &str, role: &str) -> String {
    sqlx::query(
        "insert into users (email, full_name, role, timezone) values ($1, 'Ops Person', $2, 'UTC')
         on conflict (email) do update set role = excluded.role",
    )
    .bind(email)
    .bind(role)
    .execute(&app.db.pool)
    .await
    .expect("ops user");
    app.token(email).await
}

#[tokio::test]
async fn every_endpoint_answers_as_documented() {
    let app = TestApp::without_worker().await;
    let mut contract = Contract::fetch(&app).await;
    let student = app.student().await;
    let instructor = app.token("instructor@example.com").await;
    let admin = app.token("admin@example.com").await;
    let other = app.other_student().await;
    let student_id: i64 =
        sqlx::query_scalar("select id from users where email = 'student@example.com'")
            .fetch_one(&app.db.pool)
            .await
            .expect("student id");
    let instructor_id = app.instructor_id().await;
    let service_id = app.service_id().await;
    let start = app.lesson_at(3, 10);

    // (method, template, path, token, body, expected status): each answer is checked against
    // the document; the expected status pins the behaviour the document allows
    macro_rules! expect {
        ($method:ident $template:literal, $path:expr, $token:expr, $body:expr => $status:expr) => {{
            let path = $path;
            let answer = call(
                &app,
                Method::$method,
                AsRef::<str>::as_ref(&path),
                $token,
                $body,
            )
            .await;
            assert_eq!(
                answer.status,
                $status,
                "{} {}: {}",
                stringify!($method),
                path,
                answer.text
            );
            contract.check(stringify!($method), $template, &answer);
            answer
        }};
    }

    // ops and meta
    expect!(GET "/health", "/health", None, Body::None => 200);
    expect!(GET "/ready", "/ready", None, Body::None => 200);
    expect!(GET "/metrics", "/metrics", None, Body::None => 200);
    expect!(GET "/api/v1/openapi.json", "/api/v1/openapi.json", None, Body::None => 200);
    expect!(GET "/api/v1/docs", "/api/v1/docs", None, Body::None => 200);
    expect!(GET "/api/v1/docs/{file}", "/api/v1/docs/swagger-ui.css", None, Body::None => 200);
    expect!(GET "/api/v1/docs/{file}", "/api/v1/docs/swagger-ui-bundle.js", None, Body::None => 200);
    expect!(GET "/api/v1/docs/{file}", "/api/v1/docs/favicon-32x32.png", None, Body::None => 200);
    expect!(GET "/api/v1/docs/{file}", "/api/v1/docs/secrets.txt", None, Body::None => 404);
    expect!(GET "/api/v1/docs/{file}", "/api/v1/docs/%FF", None, Body::None => 400);

    // public browsing
    let list = expect!(GET "/api/v1/instructors", "/api/v1/instructors", None, Body::None => 200);
    assert!(
        list.json
            .as_ref()
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    );
    let day = start.date_naive();
    let week = day + chrono::Duration::days(7);
    let availability =
        |id: &str, query: &str| format!("/api/v1/public/instructors/{id}/availability{query}");
    expect!(GET "/api/v1/public/instructors/{id}/availability",
        availability(&instructor_id.to_string(), &format!("?start_date={day}&end_date={week}")), None, Body::None => 200);
    for (query, status) in [
        ("".to_string(), 400),
        (format!("?start_date={day}"), 400),
        (
            "?start_date=2026-02-30&end_date=2026-03-01".to_string(),
            400,
        ),
        ("?start_date=yesterday&end_date=today".to_string(), 400),
        (
            format!("?start_date={day}&end_date={week}&tz=Mars/Olympus"),
            400,
        ),
        (format!("?start_date={week}&end_date={day}"), 422),
        (
            "?start_date=2026-01-01&end_date=2026-12-31".to_string(),
            422,
        ),
    ] {
        expect!(GET "/api/v1/public/instructors/{id}/availability",
            availability(&instructor_id.to_string(), &query), None, Body::None => status);
    }
    expect!(GET "/api/v1/public/instructors/{id}/availability",
        availability("abc", &format!("?start_date={day}&end_date={week}")), None, Body::None => 400);
    expect!(GET "/api/v1/public/instructors/{id}/availability",
        availability("99999999999999999999", &format!("?start_date={day}&end_date={week}")), None, Body::None => 400);
    expect!(GET "/api/v1/public/instructors/{id}/availability",
        availability("999999", &format!("?start_date={day}&end_date={week}")), None, Body::None => 404);
    expect!(GET "/api/v1/public/instructors/{id}/availability",
        availability(&student_id.to_string(), &format!("?start_date={day}&end_date={week}")), None, Body::None => 404);

    // create
    let create = |start: &str| json!({"instructor_id": instructor_id, "service_id": service_id, "start": start});
    let created = expect!(POST "/api/v1/bookings", "/api/v1/bookings", Some(&student),
        Body::Json(json!({"instructor_id": instructor_id, "service_id": service_id, "start": start.to_rfc3339(), "notes": "Ünïcödé 🎹 '; drop table bookings; --"})) => 201);
    let booking = created.json.expect("booking");
    let booking_id = booking["id"].as_i64().expect("id");
    assert_eq!(booking["notes"], "Ünïcödé 🎹 '; drop table bookings; --");
    expect!(POST "/api/v1/bookings", "/api/v1/bookings", Some(&other),
        Body::Json(create(&start.to_rfc3339())) => 409);
    expect!(POST "/api/v1/bookings", "/api/v1/bookings", None,
        Body::Json(create(&start.to_rfc3339())) => 401);
    for (why, token) in bad_tokens(&app, student_id) {
        let answer = expect!(POST "/api/v1/bookings", "/api/v1/bookings", Some(&token),
            Body::Json(create(&start.to_rfc3339())) => 401);
        assert_eq!(
            answer.json.as_ref().expect("json")["code"],
            "unauthorized",
            "{why}"
        );
    }
    expect!(POST "/api/v1/bookings", "/api/v1/bookings", Some(&instructor),
        Body::Json(create(&app.lesson_at(4, 10).to_rfc3339())) => 403);
    expect!(POST "/api/v1/bookings", "/api/v1/bookings", Some(&student),
        Body::Raw(Some("application/json"), b"{\"instructor_id\": ".to_vec()) => 400);
    expect!(POST "/api/v1/bookings", "/api/v1/bookings", Some(&student),
        Body::Raw(None, create(&start.to_rfc3339()).to_string().into_bytes()) => 415);
    expect!(POST "/api/v1/bookings", "/api/v1/bookings", Some(&student),
        Body::Raw(Some("text/plain"), create(&start.to_rfc3339()).to_string().into_bytes()) => 415);
    expect!(POST "/api/v1/bookings", "/api/v1/bookings", Some(&student),
        Body::Json(json!({"instructor_id": instructor_id, "service_id": service_id, "start": start.to_rfc3339(), "notes": "x".repeat(100 * 1024)})) => 413);
    for body in [
        json!({"instructor_id": "1", "service_id": service_id, "start": start.to_rfc3339()}),
        json!({"instructor_id": instructor_id, "service_id": service_id}),
        json!({"instructor_id": instructor_id, "service_id": service_id, "start": "2030-02-30T10:00:00Z"}),
        json!({"instructor_id": instructor_id, "service_id": service_id, "start": "2030-01-01 10:00"}),
        json!({"instructor_id": instructor_id, "service_id": service_id, "start": "2030-01-01T10:00:00Z", "admin": true}),
        json!({"instructor_id": instructor_id, "service_id": 999999, "start": app.lesson_at(5, 10).to_rfc3339()}),
        json!({"instructor_id": 999999, "service_id": service_id, "start": app.lesson_at(5, 10).to_rfc3339()}),
        json!({"instructor_id": instructor_id, "service_id": service_id, "start": app.lesson_at(5, 3).to_rfc3339()}),
        json!({"instructor_id": instructor_id, "service_id": service_id, "start": "2000-01-01T10:00:00Z"}),
        json!({"instructor_id": instructor_id, "service_id": service_id, "start": "9999-12-31T23:59:59Z"}),
        json!({"instructor_id": instructor_id, "service_id": service_id, "start": app.lesson_at(5, 10).to_rfc3339(), "notes": "n".repeat(2001)}),
        json!([1, 2, 3]),
        json!(null),
    ] {
        expect!(POST "/api/v1/bookings", "/api/v1/bookings", Some(&student), Body::Json(body) => 422);
    }

    // read and list
    let path = format!("/api/v1/bookings/{booking_id}");
    expect!(GET "/api/v1/bookings/{id}", path.clone(), Some(&student), Body::None => 200);
    expect!(GET "/api/v1/bookings/{id}", path.clone(), Some(&instructor), Body::None => 200);
    expect!(GET "/api/v1/bookings/{id}", path.clone(), Some(&admin), Body::None => 200);
    expect!(GET "/api/v1/bookings/{id}", path.clone(), Some(&other), Body::None => 403);
    expect!(GET "/api/v1/bookings/{id}", path.clone(), None, Body::None => 401);
    expect!(GET "/api/v1/bookings/{id}", "/api/v1/bookings/999999", Some(&student), Body::None => 404);
    expect!(GET "/api/v1/bookings/{id}", "/api/v1/bookings/-1", Some(&student), Body::None => 404);
    expect!(GET "/api/v1/bookings/{id}", "/api/v1/bookings/1.5", Some(&student), Body::None => 400);
    expect!(GET "/api/v1/bookings/{id}", "/api/v1/bookings/%27%20or%201=1", Some(&student), Body::None => 400);
    for (query, status) in [
        ("", 200),
        ("?role=student", 200),
        ("?role=instructor&status=confirmed", 200),
        ("?status=no_show", 200),
        ("?role=admin", 422),
        ("?role=teacher", 400),
        ("?status=lost", 400),
        ("?limit=5", 400),
        ("?role=student&role=instructor", 400),
    ] {
        let token = if query.contains("instructor&") {
            &instructor
        } else {
            &student
        };
        expect!(GET "/api/v1/bookings", format!("/api/v1/bookings{query}"), Some(token), Body::None => status);
    }
    expect!(GET "/api/v1/bookings", "/api/v1/bookings", None, Body::None => 401);

    // reschedule
    let reschedule = format!("/api/v1/bookings/{booking_id}/reschedule");
    expect!(POST "/api/v1/bookings/{id}/reschedule", reschedule.clone(), Some(&student),
        Body::Json(json!({"start": app.lesson_at(3, 14).to_rfc3339()})) => 200);
    expect!(POST "/api/v1/bookings/{id}/reschedule", reschedule.clone(), Some(&student),
        Body::Json(json!({"start": app.lesson_at(3, 14).to_rfc3339()})) => 422);
    expect!(POST "/api/v1/bookings/{id}/reschedule", reschedule.clone(), Some(&other),
        Body::Json(json!({"start": app.lesson_at(3, 15).to_rfc3339()})) => 403);
    expect!(POST "/api/v1/bookings/{id}/reschedule", reschedule.clone(), None,
        Body::Json(json!({"start": app.lesson_at(3, 15).to_rfc3339()})) => 401);
    expect!(POST "/api/v1/bookings/{id}/reschedule", "/api/v1/bookings/999999/reschedule", Some(&student),
        Body::Json(json!({"start": app.lesson_at(3, 15).to_rfc3339()})) => 404);
    expect!(POST "/api/v1/bookings/{id}/reschedule", "/api/v1/bookings/x/reschedule", Some(&student),
        Body::Json(json!({"start": app.lesson_at(3, 15).to_rfc3339()})) => 400);
    expect!(POST "/api/v1/bookings/{id}/reschedule", reschedule.clone(), Some(&student),
        Body::Raw(Some("application/json"), b"{\"start\": \"2030".to_vec()) => 400);
    let answer = expect!(POST "/api/v1/bookings/{id}/reschedule", reschedule.clone(), Some(&student),
        Body::Raw(Some("application/json"), b"{\"start\": 2030}".to_vec()) => 422);
    assert_eq!(
        answer.json.expect("json")["field"],
        "start",
        "the field, not the value"
    );
    expect!(POST "/api/v1/bookings/{id}/reschedule", reschedule.clone(), Some(&student),
        Body::Raw(None, b"{}".to_vec()) => 415);
    expect!(POST "/api/v1/bookings/{id}/reschedule", reschedule.clone(), Some(&student),
        Body::Json(json!({"start": "x".repeat(70 * 1024)})) => 413);
    for body in [
        json!({}),
        json!({"start": 1_700_000_000}),
        json!({"start": "2030-01-01T25:00:00Z"}),
        json!({"start": "2030-01-01T10:00:00+99:00"}),
        json!({"start": app.lesson_at(3, 15).to_rfc3339(), "instructor_id": 1}),
        json!({"start": app.lesson_at(3, 22).to_rfc3339()}),
    ] {
        expect!(POST "/api/v1/bookings/{id}/reschedule", reschedule.clone(), Some(&student), Body::Json(body) => 422);
    }
    // a second booking at 16:00 makes moving onto it a conflict
    let (status, _) = app.book(&student, app.lesson_at(3, 16)).await;
    assert_eq!(status, 201);
    expect!(POST "/api/v1/bookings/{id}/reschedule", reschedule.clone(), Some(&student),
        Body::Json(json!({"start": app.lesson_at(3, 16).to_rfc3339()})) => 409);

    // cancel
    let cancel = format!("/api/v1/bookings/{booking_id}/cancel");
    expect!(POST "/api/v1/bookings/{id}/cancel", cancel.clone(), Some(&other), Body::None => 403);
    expect!(POST "/api/v1/bookings/{id}/cancel", cancel.clone(), None, Body::None => 401);
    expect!(POST "/api/v1/bookings/{id}/cancel", "/api/v1/bookings/999999/cancel", Some(&student), Body::None => 404);
    expect!(POST "/api/v1/bookings/{id}/cancel", "/api/v1/bookings/%F0%9F%8E%B9/cancel", Some(&student), Body::None => 400);
    expect!(POST "/api/v1/bookings/{id}/cancel", cancel.clone(), Some(&student),
        Body::Raw(Some("application/json"), b"{\"reason\":".to_vec()) => 400);
    expect!(POST "/api/v1/bookings/{id}/cancel", cancel.clone(), Some(&student),
        Body::Json(json!({"reason": 42})) => 422);
    expect!(POST "/api/v1/bookings/{id}/cancel", cancel.clone(), Some(&student),
        Body::Json(json!({"reason": "r".repeat(2001)})) => 422);
    expect!(POST "/api/v1/bookings/{id}/cancel", cancel.clone(), Some(&student),
        Body::Json(json!({"why": "because"})) => 422);
    let cancelled = expect!(POST "/api/v1/bookings/{id}/cancel", cancel.clone(), Some(&student),
        Body::Json(json!({"reason": "ill"})) => 200);
    assert_eq!(cancelled.json.expect("booking")["status"], "cancelled");
    expect!(POST "/api/v1/bookings/{id}/cancel", cancel.clone(), Some(&student), Body::None => 409);
    expect!(POST "/api/v1/bookings/{id}/reschedule", reschedule.clone(), Some(&student),
        Body::Json(json!({"start": app.lesson_at(3, 18).to_rfc3339()})) => 409);
    // an empty body is no reason
    let (status, second) = app.book(&student, app.lesson_at(6, 10)).await;
    assert_eq!(status, 201, "{second}");
    expect!(POST "/api/v1/bookings/{id}/cancel", format!("/api/v1/bookings/{}/cancel", second["id"]), Some(&instructor), Body::None => 200);

    // admin
    expect!(GET "/api/v1/admin/queues", "/api/v1/admin/queues", Some(&admin), Body::None => 200);
    expect!(GET "/api/v1/admin/queues", "/api/v1/admin/queues", Some(&student), Body::None => 403);
    expect!(GET "/api/v1/admin/queues", "/api/v1/admin/queues", None, Body::None => 401);
    expect!(GET "/api/v1/admin/schedules", "/api/v1/admin/schedules", Some(&admin), Body::None => 200);
    expect!(GET "/api/v1/admin/schedules", "/api/v1/admin/schedules", Some(&instructor), Body::None => 403);
    expect!(GET "/api/v1/admin/schedules", "/api/v1/admin/schedules", None, Body::None => 401);
    let dead: i64 = sqlx::query_scalar(
        "update jobs set status = 'dead', attempts = 8, last_error = 'smtp 550', finished_at = now()
         where id = (select min(id) from jobs) returning id",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("a job to kill");
    sqlx::query("insert into job_errors (job_id, attempt, error) values ($1, 8, 'smtp 550')")
        .bind(dead)
        .execute(&app.db.pool)
        .await
        .expect("error history");
    let jobs =
        expect!(GET "/api/v1/admin/jobs", "/api/v1/admin/jobs", Some(&admin), Body::None => 200);
    assert_eq!(
        jobs.json.expect("jobs")[0]["errors"][0]["error"],
        "smtp 550"
    );
    for (query, status) in [
        ("?status=pending&limit=3", 200),
        ("?queue=nope&limit=-5", 200),
        ("?status=zombie", 422),
        ("?limit=many", 400),
        ("?order=id", 400),
    ] {
        expect!(GET "/api/v1/admin/jobs", format!("/api/v1/admin/jobs{query}"), Some(&admin), Body::None => status);
    }
    expect!(GET "/api/v1/admin/jobs", "/api/v1/admin/jobs", Some(&student), Body::None => 403);
    expect!(GET "/api/v1/admin/jobs", "/api/v1/admin/jobs", None, Body::None => 401);
    let discard = format!("/api/v1/admin/jobs/{dead}/discard");
    let retry = format!("/api/v1/admin/jobs/{dead}/retry");
    expect!(POST "/api/v1/admin/jobs/{id}/discard", discard.clone(), Some(&student), Body::None => 403);
    expect!(POST "/api/v1/admin/jobs/{id}/discard", discard.clone(), None, Body::None => 401);
    expect!(POST "/api/v1/admin/jobs/{id}/discard", "/api/v1/admin/jobs/abc/discard", Some(&admin), Body::None => 400);
    expect!(POST "/api/v1/admin/jobs/{id}/discard", "/api/v1/admin/jobs/999999/discard", Some(&admin), Body::None => 404);
    expect!(POST "/api/v1/admin/jobs/{id}/discard", discard.clone(), Some(&admin), Body::None => 200);
    expect!(POST "/api/v1/admin/jobs/{id}/discard", discard.clone(), Some(&admin), Body::None => 409);
    expect!(POST "/api/v1/admin/jobs/{id}/retry", retry.clone(), Some(&instructor), Body::None => 403);
    expect!(POST "/api/v1/admin/jobs/{id}/retry", retry.clone(), None, Body::None => 401);
    expect!(POST "/api/v1/admin/jobs/{id}/retry", "/api/v1/admin/jobs/1e3/retry", Some(&admin), Body::None => 400);
    expect!(POST "/api/v1/admin/jobs/{id}/retry", "/api/v1/admin/jobs/999999/retry", Some(&admin), Body::None => 404);
    expect!(POST "/api/v1/admin/jobs/{id}/retry", retry.clone(), Some(&admin), Body::None => 200);
    expect!(POST "/api/v1/admin/jobs/{id}/retry", retry.clone(), Some(&admin), Body::None => 409);

    // the ops dashboard's JSON twin: ops_viewer reads, ops_operator and admin act
    let viewer = ops_token(&app, "viewer@ops.test", "ops_viewer").await;
    let operator = ops_token(&app, "operator@ops.test", "ops_operator").await;
    expect!(GET "/api/v1/admin/overview", "/api/v1/admin/overview", Some(&viewer), Body::None => 200);
    expect!(GET "/api/v1/admin/overview", "/api/v1/admin/overview", Some(&student), Body::None => 403);
    expect!(GET "/api/v1/admin/overview", "/api/v1/admin/overview", None, Body::None => 401);
    let one = format!("/api/v1/admin/jobs/{dead}");
    let detail =
        expect!(GET "/api/v1/admin/jobs/{id}", one.clone(), Some(&viewer), Body::None => 200);
    assert_eq!(
        detail.json.expect("job")["job"]["errors"][0]["error"],
        "smtp 550"
    );
    expect!(GET "/api/v1/admin/jobs/{id}", "/api/v1/admin/jobs/x1", Some(&viewer), Body::None => 400);
    expect!(GET "/api/v1/admin/jobs/{id}", "/api/v1/admin/jobs/999999", Some(&viewer), Body::None => 404);
    expect!(GET "/api/v1/admin/jobs/{id}", one.clone(), Some(&instructor), Body::None => 403);
    expect!(GET "/api/v1/admin/jobs/{id}", one.clone(), None, Body::None => 401);
    let count = "/api/v1/admin/jobs/count";
    expect!(GET "/api/v1/admin/jobs/count", format!("{count}?status=pending&queue=booking_email"), Some(&viewer), Body::None => 200);
    expect!(GET "/api/v1/admin/jobs/count", format!("{count}?status=zombie"), Some(&viewer), Body::None => 422);
    expect!(GET "/api/v1/admin/jobs/count", format!("{count}?booking_id=x"), Some(&viewer), Body::None => 400);
    expect!(GET "/api/v1/admin/jobs/count", count, Some(&student), Body::None => 403);
    expect!(GET "/api/v1/admin/jobs/count", count, None, Body::None => 401);
    let bulk = "/api/v1/admin/jobs/bulk";
    let retry_all = json!({"action": "retry", "status": "dead"});
    expect!(POST "/api/v1/admin/jobs/bulk", bulk, Some(&operator), Body::Json(retry_all.clone()) => 422);
    expect!(POST "/api/v1/admin/jobs/bulk", bulk, Some(&operator), Body::Json(json!({"action": "retry", "status": "dead", "all": true})) => 200);
    expect!(POST "/api/v1/admin/jobs/bulk", bulk, Some(&operator), Body::Raw(Some("application/json"), b"{".to_vec()) => 400);
    expect!(POST "/api/v1/admin/jobs/bulk", bulk, Some(&operator), Body::Raw(Some("text/plain"), b"{}".to_vec()) => 415);
    expect!(POST "/api/v1/admin/jobs/bulk", bulk, Some(&viewer), Body::Json(retry_all.clone()) => 403);
    expect!(POST "/api/v1/admin/jobs/bulk", bulk, None, Body::Json(retry_all) => 401);
    for action in ["pause", "resume"] {
        let path = format!("/api/v1/admin/queues/booking_email/{action}");
        macro_rules! queue_action {
            ($template:literal) => {
                expect!(POST $template, path.clone(), Some(&operator), Body::None => 200);
                expect!(POST $template, path.clone(), Some(&viewer), Body::None => 403);
                expect!(POST $template, path.clone(), None, Body::None => 401);
            };
        }
        if action == "pause" {
            queue_action!("/api/v1/admin/queues/{queue}/pause");
        } else {
            queue_action!("/api/v1/admin/queues/{queue}/resume");
        }
    }
    // a schedule a scheduler published
    sqlx::query(
        "insert into schedule_state (schedule, cron, timezone, catch_up, enabled, evaluated_to, updated_at)
         values ('retention_sweep', '30 3 * * *', 'America/New_York', 'skip', true, now(), now())",
    )
    .execute(&app.db.pool)
    .await
    .expect("a published schedule");
    for action in ["pause", "resume", "trigger"] {
        let path = format!("/api/v1/admin/schedules/retention_sweep/{action}");
        let unknown = format!("/api/v1/admin/schedules/nope/{action}");
        let ok = if action == "trigger" { 202 } else { 200 };
        macro_rules! schedule_action {
            ($template:literal) => {{
                expect!(POST $template, path.clone(), Some(&operator), Body::None => ok);
                expect!(POST $template, unknown.clone(), Some(&operator), Body::None => 404);
                expect!(POST $template, path.clone(), Some(&viewer), Body::None => 403);
                expect!(POST $template, path.clone(), None, Body::None => 401);
            }};
        }
        match action {
            "pause" => schedule_action!("/api/v1/admin/schedules/{name}/pause"),
            "resume" => schedule_action!("/api/v1/admin/schedules/{name}/resume"),
            _ => schedule_action!("/api/v1/admin/schedules/{name}/trigger"),
        };
    }
    let audit =
        expect!(GET "/api/v1/admin/audit", "/api/v1/admin/audit", Some(&viewer), Body::None => 200);
    assert!(
        audit
            .json
            .expect("audit")
            .as_array()
            .is_some_and(|a| a.len() >= 5)
    );
    expect!(GET "/api/v1/admin/audit", "/api/v1/admin/audit?before=1&limit=5", Some(&viewer), Body::None => 200);
    expect!(GET "/api/v1/admin/audit", "/api/v1/admin/audit?before=x", Some(&viewer), Body::None => 400);
    expect!(GET "/api/v1/admin/audit", "/api/v1/admin/audit", Some(&student), Body::None => 403);
    expect!(GET "/api/v1/admin/audit", "/api/v1/admin/audit", None, Body::None => 401);

    // privacy: requests, the export's download, the admin's erasure, legal holds, the audit
    let (pool, no) = (&app.db.pool, "/api/v1/privacy/requests/999999");
    let export = expect!(POST "/api/v1/privacy/export", "/api/v1/privacy/export", Some(&student), Body::None => 202);
    let export = export.json.expect("export")["id"].as_i64().expect("id");
    expect!(POST "/api/v1/privacy/export", "/api/v1/privacy/export", Some(&student), Body::None => 409);
    expect!(POST "/api/v1/privacy/export", "/api/v1/privacy/export", None, Body::None => 401);
    let download = format!("/api/v1/privacy/exports/{export}/download");
    expect!(GET "/api/v1/privacy/exports/{id}/download", download.clone(), Some(&student), Body::None => 409);
    // what the worker would have done (this platform runs none)
    sqlx::query(
        "with r as (update privacy_requests set state = 'done', finished_at = now(),
                    expires_at = now() + interval '1 day' where id = $1 returning id, user_id, expires_at)
         , d as (insert into export_documents (request_id, user_id, expires_at)
                 select id, user_id, expires_at from r returning request_id, user_id)
         insert into export_chunks (request_id, seq, data)
         select request_id, 0, jsonb_build_object('format', 'instainstru.export', 'version', 1,
                'generated_at', now(), 'user_id', user_id, 'profile', '{}'::jsonb, 'tables', '{}'::jsonb)::text from d",
    )
    .bind(export)
    .execute(pool)
    .await
    .expect("a done export");
    expect!(GET "/api/v1/privacy/exports/{id}/download", download.clone(), Some(&student), Body::None => 200);
    expect!(GET "/api/v1/privacy/exports/{id}/download", download.clone(), Some(&other), Body::None => 404);
    expect!(GET "/api/v1/privacy/exports/{id}/download", download.clone(), None, Body::None => 401);
    expect!(GET "/api/v1/privacy/exports/{id}/download", "/api/v1/privacy/exports/x/download", Some(&student), Body::None => 400);
    sqlx::query(
        "update privacy_requests set expires_at = now() - interval '1 second' where id = $1",
    )
    .bind(export)
    .execute(pool)
    .await
    .expect("expire it");
    expect!(GET "/api/v1/privacy/exports/{id}/download", download.clone(), Some(&student), Body::None => 410);
    let request = format!("/api/v1/privacy/requests/{export}");
    expect!(GET "/api/v1/privacy/requests/{id}", request.clone(), Some(&student), Body::None => 200);
    expect!(GET "/api/v1/privacy/requests/{id}", request.clone(), Some(&admin), Body::None => 200);
    expect!(GET "/api/v1/privacy/requests/{id}", request.clone(), Some(&other), Body::None => 404);
    expect!(GET "/api/v1/privacy/requests/{id}", no, Some(&student), Body::None => 404);
    expect!(GET "/api/v1/privacy/requests/{id}", "/api/v1/privacy/requests/abc", Some(&student), Body::None => 400);
    expect!(GET "/api/v1/privacy/requests/{id}", request.clone(), None, Body::None => 401);
    expect!(GET "/api/v1/privacy/requests", "/api/v1/privacy/requests", Some(&student), Body::None => 200);
    expect!(GET "/api/v1/privacy/requests", "/api/v1/privacy/requests", None, Body::None => 401);
    expect!(POST "/api/v1/privacy/erase", "/api/v1/privacy/erase", Some(&other), Body::None => 202);
    expect!(POST "/api/v1/privacy/erase", "/api/v1/privacy/erase", Some(&other), Body::None => 202);
    expect!(POST "/api/v1/privacy/erase", "/api/v1/privacy/erase", None, Body::None => 401);
    let erase = |user_id: i64| Body::Json(json!({ "user_id": user_id }));
    expect!(POST "/api/v1/admin/privacy/erase", "/api/v1/admin/privacy/erase", Some(&admin), erase(instructor_id) => 202);
    expect!(POST "/api/v1/admin/privacy/erase", "/api/v1/admin/privacy/erase", Some(&admin), erase(999_999) => 404);
    expect!(POST "/api/v1/admin/privacy/erase", "/api/v1/admin/privacy/erase", Some(&student), erase(instructor_id) => 403);
    expect!(POST "/api/v1/admin/privacy/erase", "/api/v1/admin/privacy/erase", None, erase(instructor_id) => 401);
    expect!(POST "/api/v1/admin/privacy/erase", "/api/v1/admin/privacy/erase", Some(&admin), Body::Json(json!({ "user_id": "x" })) => 422);
    expect!(POST "/api/v1/admin/privacy/erase", "/api/v1/admin/privacy/erase", Some(&admin), Body::Raw(Some("application/json"), b"{".to_vec()) => 400);
    // an erasure the worker would have carried out
    sqlx::query(
        "with r as (update privacy_requests set state = 'done', finished_at = now()
                    where user_id = $1 and kind = 'erasure' returning user_id)
         update users set erased_at = now() where id in (select user_id from r)",
    )
    .bind(instructor_id)
    .execute(pool)
    .await
    .expect("an erased user");
    expect!(POST "/api/v1/admin/privacy/erase", "/api/v1/admin/privacy/erase", Some(&admin), erase(instructor_id) => 200);
    let hold = format!("/api/v1/admin/users/{student_id}/legal-hold");
    let held = |hold: bool| Body::Json(json!({ "hold": hold, "reason": "litigation 42" }));
    expect!(PUT "/api/v1/admin/users/{id}/legal-hold", hold.clone(), Some(&admin), held(true) => 200);
    expect!(PUT "/api/v1/admin/users/{id}/legal-hold", hold.clone(), Some(&admin), held(false) => 200);
    expect!(PUT "/api/v1/admin/users/{id}/legal-hold", "/api/v1/admin/users/999999/legal-hold", Some(&admin), held(true) => 404);
    expect!(PUT "/api/v1/admin/users/{id}/legal-hold", "/api/v1/admin/users/x/legal-hold", Some(&admin), held(true) => 400);
    expect!(PUT "/api/v1/admin/users/{id}/legal-hold", hold.clone(), Some(&admin), Body::Json(json!({ "hold": "yes" })) => 422);
    expect!(PUT "/api/v1/admin/users/{id}/legal-hold", hold.clone(), Some(&student), held(true) => 403);
    expect!(PUT "/api/v1/admin/users/{id}/legal-hold", hold.clone(), None, held(true) => 401);
    let audit =
        format!("/api/v1/admin/privacy/audit?user_id={student_id}&from=2020-01-01T00:00:00Z");
    expect!(GET "/api/v1/admin/privacy/audit", audit.clone(), Some(&admin), Body::None => 200);
    expect!(GET "/api/v1/admin/privacy/audit", "/api/v1/admin/privacy/audit?user_id=abc", Some(&admin), Body::None => 400);
    expect!(GET "/api/v1/admin/privacy/audit", audit.clone(), Some(&student), Body::None => 403);
    expect!(GET "/api/v1/admin/privacy/audit", audit.clone(), None, Body::None => 401);

    // retention: the policy and runs, and a sweep asked for now (no worker here: it stays
    // pending)
    let retention = "/api/v1/admin/privacy/retention";
    let run = "/api/v1/admin/privacy/retention/run";
    expect!(POST "/api/v1/admin/privacy/retention/run", run, Some(&admin), Body::Json(json!({ "dry_run": true })) => 202);
    expect!(POST "/api/v1/admin/privacy/retention/run", run, Some(&admin), Body::Json(json!({ "dry_run": "yes" })) => 422);
    expect!(POST "/api/v1/admin/privacy/retention/run", run, Some(&admin), Body::Raw(Some("application/json"), b"{".to_vec()) => 400);
    expect!(POST "/api/v1/admin/privacy/retention/run", run, Some(&admin), Body::Raw(Some("text/plain"), b"{}".to_vec()) => 415);
    expect!(POST "/api/v1/admin/privacy/retention/run", run, Some(&student), Body::Json(json!({})) => 403);
    expect!(POST "/api/v1/admin/privacy/retention/run", run, None, Body::Json(json!({})) => 401);
    let view =
        expect!(GET "/api/v1/admin/privacy/retention", retention, Some(&admin), Body::None => 200);
    let view = view.json.expect("retention view");
    assert_eq!(view["runs"][0]["state"], "pending", "{view}");
    assert!(
        view["policy"]
            .as_array()
            .expect("policy")
            .iter()
            .any(|r| r["kind"] == "search_events" && r["keep_days"] == 365),
        "{view}"
    );
    expect!(GET "/api/v1/admin/privacy/retention", retention, Some(&student), Body::None => 403);
    expect!(GET "/api/v1/admin/privacy/retention", retention, None, Body::None => 401);

    // every operation was seen answering successfully, and every documented error status of
    // the booking and availability endpoints was provoked at least once
    let mut missing = Vec::new();
    for (method, template) in &contract.operations {
        let statuses: BTreeMap<u16, bool> = contract.doc["paths"][template][method.to_lowercase()]
            ["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .filter_map(|s| s.parse().ok())
            .map(|s: u16| {
                let seen = contract
                    .seen
                    .contains(&(method.clone(), template.clone(), s));
                (s, seen)
            })
            .collect();
        let must = |s: u16| {
            (200..300).contains(&s)
                || (template.starts_with("/api/v1/") && ![429, 503].contains(&s))
        };
        for (status, seen) in statuses {
            // the cancel 413 is provoked by an_oversized_cancel_body_is_a_json_413, the
            // search endpoints' answers by search::the_search_endpoints_answer_as_documented
            let elsewhere =
                (method == "POST" && template == "/api/v1/bookings/{id}/cancel" && status == 413)
                    || template.starts_with("/api/v1/search/")
                    || template.starts_with("/api/v1/admin/analytics/");
            if must(status) && !seen && !elsewhere {
                missing.push(format!("{method} {template} {status}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "documented answers never provoked: {missing:?}"
    );
}

/// The cancel handler reads an optional body; over the limit it still answers the JSON 413.
#[tokio::test]
async fn an_oversized_cancel_body_is_a_json_413() {
    let app = TestApp::without_worker().await;
    let mut contract = Contract::fetch(&app).await;
    let student = app.student().await;
    let (status, booking) = app.book(&student, app.lesson_at(3, 10)).await;
    assert_eq!(status, 201, "{booking}");
    let answer = call(
        &app,
        Method::POST,
        &format!("/api/v1/bookings/{}/cancel", booking["id"]),
        Some(&student),
        Body::Json(json!({"reason": "r".repeat(70 * 1024)})),
    )
    .await;
    assert_eq!(answer.status, 413);
    contract.check("POST", "/api/v1/bookings/{id}/cancel", &answer);
}

/// What the API refuses for the sake of one field, the document refuses too: a client
/// generated from it cannot build such a request. Rules that tie fields together (an end
/// before a start) are in the descriptions.
#[tokio::test]
async fn the_document_states_the_rules_of_single_fields() {
    let app = TestApp::without_worker().await;
    let contract = Contract::fetch(&app).await;

    // GET /api/v1/bookings?role=: the API refuses admin (422 invalid_role) and anything else
    let role = contract.parameter("GET", "/api/v1/bookings", "query", "role");
    let role_schema = contract.resolve(&role["schema"]);
    let values = role_schema["enum"]
        .as_array()
        .or_else(|| {
            // an optional parameter may be documented as "the enum, or null"
            role_schema["oneOf"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| contract.resolve(s))
                .find_map(|s| s["enum"].as_array())
        })
        .unwrap_or_else(|| panic!("role is not an enum: {role}"));
    assert_eq!(values, &vec![json!("student"), json!("instructor")]);
    let accepts = |method: &str, template: &str, location: &str, name: &str, value: Value| {
        contract.parameter_accepts(method, template, location, name, &value)
    };
    for (value, ok) in [
        ("student", true),
        ("instructor", true),
        ("admin", false),
        ("teacher", false),
    ] {
        assert_eq!(
            accepts("GET", "/api/v1/bookings", "query", "role", json!(value)),
            ok,
            "role={value}"
        );
    }
    assert!(accepts(
        "GET",
        "/api/v1/bookings",
        "query",
        "status",
        json!("no_show")
    ));
    assert!(!accepts(
        "GET",
        "/api/v1/bookings",
        "query",
        "status",
        json!("lost")
    ));

    // availability: real dates only
    let availability = "/api/v1/public/instructors/{id}/availability";
    for name in ["start_date", "end_date"] {
        assert_eq!(
            contract.parameter("GET", availability, "query", name)["required"],
            true
        );
        assert!(accepts(
            "GET",
            availability,
            "query",
            name,
            json!("2026-03-01")
        ));
        assert!(!accepts(
            "GET",
            availability,
            "query",
            name,
            json!("2026-02-30")
        ));
        assert!(!accepts(
            "GET",
            availability,
            "query",
            name,
            json!("yesterday")
        ));
    }
    let end = contract.parameter("GET", availability, "query", "end_date");
    assert!(
        end["description"]
            .as_str()
            .is_some_and(|d| d.contains("start_date")),
        "the range rule is stated: {end}"
    );
    assert!(accepts("GET", availability, "path", "id", json!(12)));
    assert!(!accepts("GET", availability, "path", "id", json!("abc")));

    // admin: the statuses the jobs view knows
    assert!(accepts(
        "GET",
        "/api/v1/admin/jobs",
        "query",
        "status",
        json!("running")
    ));
    assert!(!accepts(
        "GET",
        "/api/v1/admin/jobs",
        "query",
        "status",
        json!("zombie")
    ));

    // bodies: types, lengths, formats, unknown fields
    let create = |extra: Value| {
        let mut body =
            json!({"instructor_id": 3, "service_id": 1, "start": "2030-01-01T10:00:00Z"});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        contract.body_accepts("POST", "/api/v1/bookings", &body)
    };
    assert!(create(json!({})));
    assert!(create(json!({"notes": "n".repeat(2000)})));
    assert!(create(json!({"notes": null})));
    assert!(!create(json!({"notes": "n".repeat(2001)})));
    assert!(!create(json!({"start": "2030-02-30T10:00:00Z"})));
    assert!(!create(json!({"start": "2030-01-01 10:00"})));
    assert!(!create(json!({"instructor_id": "1"})));
    assert!(!create(json!({"admin": true})));
    assert!(!contract.body_accepts(
        "POST",
        "/api/v1/bookings",
        &json!({"instructor_id": 3, "service_id": 1})
    ));
    let cancel = "/api/v1/bookings/{id}/cancel";
    assert!(contract.body_accepts("POST", cancel, &json!({"reason": "ill"})));
    assert!(!contract.body_accepts("POST", cancel, &json!({"reason": "r".repeat(2001)})));
    assert!(!contract.body_accepts("POST", cancel, &json!({"why": "because"})));
    let reschedule = "/api/v1/bookings/{id}/reschedule";
    assert!(contract.body_accepts(
        "POST",
        reschedule,
        &json!({"start": "2030-01-01T10:00:00Z"})
    ));
    assert!(!contract.body_accepts(
        "POST",
        reschedule,
        &json!({"start": "2030-01-01T25:00:00Z"})
    ));
    assert!(!contract.body_accepts("POST", reschedule, &json!({})));

    // the Idempotency-Key header
    let key = contract.parameter("POST", "/api/v1/bookings", "header", "Idempotency-Key");
    assert_ne!(key["required"], true, "optional: {key}");
    for (value, ok) in [
        ("8e03978e-40d5-43e8-bc93-6894a57f9324".to_string(), true),
        ("\"quoted, as the draft writes it\"".to_string(), true),
        ("k".repeat(255), true),
        ("k".repeat(256), false),
        (String::new(), false),
        (" padded".to_string(), false),
        ("tab\there".to_string(), false),
        ("caf\u{e9}".to_string(), false),
    ] {
        assert_eq!(
            accepts(
                "POST",
                "/api/v1/bookings",
                "header",
                "Idempotency-Key",
                json!(value)
            ),
            ok,
            "Idempotency-Key {value:?}"
        );
    }
}

/// A method a path does not have is 405 with the path's methods in `Allow` (GET brings HEAD)
/// and the JSON error body, for every documented path.
#[tokio::test]
async fn a_method_a_path_does_not_have_is_405_with_allow() {
    let app = TestApp::without_worker().await;
    let contract = Contract::fetch(&app).await;
    let student = app.student().await;
    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (method, template) in &contract.operations {
        documented
            .entry(template.clone())
            .or_default()
            .insert(method.clone());
    }
    let mut probed = 0;
    for (template, methods) in &documented {
        let mut allowed = methods.clone();
        if allowed.contains("GET") {
            allowed.insert("HEAD".into());
        }
        for method in [
            "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE",
        ] {
            if allowed.contains(method) {
                continue;
            }
            let path = fill(template, "1");
            let answer = call(
                &app,
                Method::from_bytes(method.as_bytes()).expect("method"),
                &path,
                Some(&student),
                Body::None,
            )
            .await;
            let context = format!("{method} {path}");
            assert_eq!(answer.status, 405, "{context}: {}", answer.text);
            let allow: BTreeSet<String> = answer
                .headers
                .get("allow")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("{context}: no Allow header"))
                .split(',')
                .map(|m| m.trim().to_string())
                .collect();
            assert_eq!(allow, allowed, "{context}: Allow");
            if method != "HEAD" {
                assert_error_body(&answer, &context, "");
                assert_eq!(
                    answer.json.as_ref().expect("json")["code"],
                    "method_not_allowed"
                );
            }
            probed += 1;
        }
    }
    assert!(probed > 50, "probed only {probed} method/path pairs");

    // the two the issue was found with
    let answer = call(
        &app,
        Method::DELETE,
        "/api/v1/instructors",
        None,
        Body::None,
    )
    .await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.headers["allow"], "GET,HEAD");
    let answer = call(&app, Method::TRACE, "/api/v1/bookings", None, Body::None).await;
    assert_eq!(answer.status, 405);
    let allow = answer.headers["allow"].to_str().expect("ascii");
    assert!(
        ["GET", "HEAD", "POST"].iter().all(|m| allow.contains(m)),
        "{allow}"
    );
    // an unknown path stays a 404, whatever the method
    let answer = call(&app, Method::TRACE, "/no/such/route", None, Body::None).await;
    assert_eq!(answer.status, 404);
}

/// Swagger UI works offline: the page and what it loads come from this server, the UI reads
/// this document, and the validator badge (which would send the document to
/// validator.swagger.io) is off.
#[tokio::test]
async fn the_docs_page_is_served_offline() {
    let app = TestApp::without_worker().await;
    let page = call(&app, Method::GET, "/api/v1/docs", None, Body::None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    let mut references = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        let mut rest = page.text.as_str();
        while let Some(at) = rest.find(attribute) {
            rest = &rest[at + attribute.len()..];
            let end = rest.find('"').expect("closing quote");
            references.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    assert!(references.len() >= 4, "too few references: {references:?}");
    for reference in &references {
        assert!(
            !reference.contains("//") && !reference.contains(':'),
            "the page loads {reference} from elsewhere"
        );
        let path = if reference.starts_with('/') {
            reference.clone()
        } else {
            // resolved against the page's <base href="/api/v1/docs/">
            format!("/api/v1/docs/{}", reference.trim_start_matches("./"))
        };
        if path == "/api/v1/docs/" {
            continue;
        }
        let asset = call(&app, Method::GET, &path, None, Body::None).await;
        assert_eq!(asset.status, 200, "{path}: {}", asset.text);
        if path.ends_with(".css") {
            assert!(
                !asset.text.contains("@import") && !asset.text.contains("url(http"),
                "{path} loads from elsewhere"
            );
        }
    }
    assert!(page.text.contains("<base href=\"/api/v1/docs/\">"));
    assert!(
        !page.text.contains("http://") && !page.text.contains("https://"),
        "the page names a remote address: {}",
        page.text
    );
    let initializer = call(
        &app,
        Method::GET,
        "/api/v1/docs/swagger-initializer.js",
        None,
        Body::None,
    )
    .await;
    assert_eq!(initializer.status, 200);
    assert!(
        initializer.text.contains("\"/api/v1/openapi.json\""),
        "{}",
        initializer.text
    );
    assert!(
        initializer.text.contains("\"validatorUrl\": \"none\""),
        "{}",
        initializer.text
    );
    assert!(
        !initializer.text.contains("http://") && !initializer.text.contains("https://"),
        "the initializer names a remote address: {}",
        initializer.text
    );
}
