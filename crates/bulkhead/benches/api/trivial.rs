//! The trivial server the daemon's `GET /nodes` is compared with: axum on a UNIX socket,
//! answering the bytes the daemon answered, with a runtime like the daemon's.

/// Set in the environment of the trivial server: the socket it listens on.
pub const SOCK_ENV: &str = "BULKHEAD_BENCH_TRIVIAL";
/// Set in the environment of the trivial server: the file holding the bytes it answers.
pub const BODY_ENV: &str = "BULKHEAD_BENCH_TRIVIAL_BODY";

/// Serves `GET /nodes` with the bytes in the file named by [`BODY_ENV`], and `GET /healthz`
/// as the daemon answers it, on `sock` until killed.
pub fn serve(sock: &str) {
    let body = bytes::Bytes::from(std::fs::read(std::env::var(BODY_ENV).unwrap()).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let l = tokio::net::UnixListener::bind(sock).unwrap();
        let app = axum::Router::new()
            .route(
                "/healthz",
                axum::routing::get(|| async {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        r#"{"status":"ok"}"#,
                    )
                }),
            )
            .route(
                "/nodes",
                axum::routing::get(move || {
                    let body = body.clone();
                    async move {
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            body,
                        )
                    }
                }),
            );
        axum::serve(l, app).await.unwrap();
    });
}
