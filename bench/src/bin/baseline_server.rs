//! The baseline for memory figures: the smallest axum server on the same runtime, answering
//! `GET /health`. PromptFlow's numbers are reported as ratios to this one's.

use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("{}", listener.local_addr()?);
    let app = Router::new().route("/health", get(|| async { "{\"status\":\"UP\"}" }));
    axum::serve(listener, app).await
}
