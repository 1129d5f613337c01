//! The baseline server: the smallest axum server on the same runtime. It answers
//! `GET /health` (the baseline for memory figures: PromptFlow's numbers are reported as
//! ratios to this one's) and `GET /api/bench/item`, a fixed JSON body of about 1 KB (the
//! backend behind the proxies of the gateway benchmark). Prints its address on stdout.

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use bytes::Bytes;

/// The item: the same bytes on every answer, built once.
fn item() -> Bytes {
    let tags: Vec<String> = (0..12).map(|i| format!("tag-{i:02}")).collect();
    let body = serde_json::json!({
        "id": "0b7f3c52-5d0e-4c44-9a51-3f1f6a2e8c11",
        "name": "Summarise a support ticket",
        "description": "Reads a customer support ticket and writes a three-line summary: \
                        what the customer wants, what has been tried, what to do next.",
        "content": "You are a support lead. Summarise the ticket below in three lines: \
                    the request, what was tried, the next step. Keep names and order \
                    numbers as written. Ticket: {{ticket}}",
        "variables": [{"name": "ticket", "type": "text", "required": true}],
        "tags": tags,
        "version": 7,
        "owner": "5e2d1c4b-8a7f-4e3d-b2c1-0f9e8d7c6b5a",
        "visibility": "private",
        "created_at": "2026-11-20T09:30:00Z",
        "updated_at": "2026-11-25T16:45:12Z",
        "stats": {"renders": 1234, "copies": 56, "favourites": 7},
    });
    let mut text = serde_json::to_string(&body).unwrap_or_default();
    // Pad to exactly 1024 bytes (JSON whitespace before the closing brace).
    while text.len() < 1024 {
        text.insert(text.len() - 1, ' ');
    }
    Bytes::from(text)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("{}", listener.local_addr()?);
    let item = item();
    let app = Router::new()
        .route("/health", get(|| async { "{\"status\":\"UP\"}" }))
        .route(
            "/api/bench/item",
            get(move || {
                let item = item.clone();
                async move { ([(CONTENT_TYPE, "application/json")], item) }
            }),
        );
    axum::serve(listener, app).await
}
