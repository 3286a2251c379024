//! `GET /api/v1/docs`: Swagger UI on this API's document, served from the binary.
//!
//! The page and its assets are utoipa-swagger-ui's vendored build of Swagger UI: nothing is
//! downloaded when building and nothing is fetched from elsewhere when viewing (the
//! validator badge, which would send the document to validator.swagger.io, is off).
use std::sync::Arc;

use axum::{
    Extension,
    http::header,
    response::{IntoResponse, Response},
};

use super::openapi::NotFound;
use crate::{
    error::{ApiError, ApiResult},
    extract::Path,
};

/// Where the page is: its assets are under `{PAGE}/`.
pub const PAGE: &str = "/api/v1/docs";

/// The Swagger UI configuration, with the document it shows.
#[derive(Clone)]
pub struct SwaggerUi(Arc<utoipa_swagger_ui::Config<'static>>);

impl SwaggerUi {
    pub fn new(document_url: &'static str) -> Self {
        let config = utoipa_swagger_ui::Config::new([document_url])
            .validator_url("none")
            .persist_authorization(true);
        SwaggerUi(Arc::new(config))
    }

    fn file(&self, name: &str) -> ApiResult<(String, Vec<u8>)> {
        let file = utoipa_swagger_ui::serve(name, self.0.clone())
            .map_err(|e| ApiError::Internal(format!("swagger ui {name}: {e}")))?
            .ok_or(ApiError::NotFound("file"))?;
        Ok((file.content_type, file.bytes.into_owned()))
    }
}

/// Swagger UI for this document.
#[utoipa::path(
    get,
    path = "/api/v1/docs",
    tag = "meta",
    operation_id = "docs",
    responses((status = 200, description = "The Swagger UI page.", content_type = "text/html", body = String))
)]
pub async fn page(Extension(ui): Extension<SwaggerUi>) -> ApiResult<Response> {
    let (content_type, bytes) = ui.file("index.html")?;
    let html = String::from_utf8(bytes)
        .map_err(|e| ApiError::Internal(format!("swagger ui page: {e}")))?;
    Ok(([(header::CONTENT_TYPE, content_type)], with_base(&html)).into_response())
}

/// The page names its assets relative to itself (`./swagger-ui.css`): served at `PAGE`
/// without a trailing slash, they would resolve one level up, so the page gets a base.
fn with_base(html: &str) -> String {
    html.replacen("<head>", &format!("<head>\n    <base href=\"{PAGE}/\">"), 1)
}

/// The page's scripts, styles and icons.
#[utoipa::path(
    get,
    path = "/api/v1/docs/{file}",
    tag = "meta",
    operation_id = "docsAsset",
    params(("file" = String, Path, description = "An asset the page loads, e.g. swagger-ui.css.")),
    responses(
        (status = 200, description = "The asset.", content(
            ("text/javascript"), ("text/css"), ("image/png"), ("text/html")
        )),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, response = NotFound)
    )
)]
pub async fn asset(
    Extension(ui): Extension<SwaggerUi>,
    Path(file): Path<String>,
) -> ApiResult<Response> {
    let (content_type, bytes) = ui.file(&file)?;
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_its_assets_from_under_its_own_path() {
        let ui = SwaggerUi::new("/api/v1/openapi.json");
        let (content_type, bytes) = ui.file("index.html").expect("the page");
        assert!(content_type.starts_with("text/html"));
        let html = with_base(&String::from_utf8(bytes).expect("utf-8"));
        assert!(
            html.contains("<base href=\"/api/v1/docs/\">"),
            "the vendored page has no <head> to put the base in: {html}"
        );
    }
}
