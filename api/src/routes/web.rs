//! The web page at `/` (docs/web.md): plain HTML, CSS and JavaScript embedded in the binary
//! (no CDN, no build step). The script is a file of this origin, so the page works under the
//! API's Content-Security-Policy (`script-src 'self'`, `connect-src 'self'`).

use crate::state::AppState;
use axum::{http::header, response::IntoResponse, routing::get, Router};

const INDEX: &str = include_str!("../web/index.html");
const SCRIPT: &str = include_str!("../web/app.js");
const STYLE: &str = include_str!("../web/app.css");

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX) }),
        )
        .route("/ui/app.js", get(script))
        .route("/ui/app.css", get(style))
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}
