//! The web page at `/` (docs/web.md): plain HTML, CSS and JavaScript embedded in the binary
//! (no CDN, no build step). The scripts are files of this origin, so the page works under the
//! API's Content-Security-Policy (`script-src 'self'`, `connect-src 'self'`).

use crate::state::AppState;
use axum::{http::header, response::IntoResponse, routing::get, Router};

const INDEX: &str = include_str!("../web/index.html");
const STYLE: &str = include_str!("../web/app.css");
/// The page's scripts, loaded in this order (they share one scope: app.js holds the helpers).
const SCRIPTS: [(&str, &str); 3] = [
    ("/ui/app.js", include_str!("../web/app.js")),
    ("/ui/import.js", include_str!("../web/import.js")),
    ("/ui/job.js", include_str!("../web/job.js")),
];

pub fn router() -> Router<AppState> {
    let mut router = Router::new()
        .route(
            "/",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX) }),
        )
        .route("/ui/app.css", get(style));
    for (path, body) in SCRIPTS {
        router = router.route(path, get(move || script(body)));
    }
    router
}

async fn script(body: &'static str) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        body,
    )
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}
