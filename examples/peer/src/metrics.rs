//! `--metrics ADDR`: the host's Prometheus registry over HTTP, at
//! `http://ADDR/metrics`, in the OpenMetrics text format Prometheus scrapes.
//! The server is axum's; nothing here speaks HTTP by hand.

use std::net::SocketAddr;

/// The bound endpoint, serving once [`Endpoint::serve`] is called.
#[cfg(feature = "metrics")]
pub(crate) struct Endpoint {
    listener: tokio::net::TcpListener,
    url: String,
}

#[cfg(feature = "metrics")]
impl Endpoint {
    /// Binds `address` now, so a taken port fails the start.
    pub(crate) async fn bind(address: SocketAddr) -> Result<Self, String> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| format!("--metrics {address}: {e}"))?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("--metrics {address}: {e}"))?;
        Ok(Self {
            listener,
            url: format!("http://{local}/metrics"),
        })
    }

    /// Where it serves.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Serves `registry` until the process ends.
    pub(crate) fn serve(self, registry: liquid_p2p::prometheus_client::registry::Registry) {
        use std::sync::Arc;

        use axum::{Router, http::header, response::IntoResponse, routing::get};
        use liquid_p2p::prometheus_client::encoding::text::encode;

        let registry = Arc::new(registry);
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let registry = Arc::clone(&registry);
                async move {
                    let mut body = String::new();
                    match encode(&mut body, &registry) {
                        Ok(()) => (
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            body,
                        )
                            .into_response(),
                        Err(e) => (
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            format!("cannot encode the metrics: {e}"),
                        )
                            .into_response(),
                    }
                }
            }),
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(self.listener, app).await {
                tracing::warn!(error = %e, "the metrics endpoint stopped");
            }
        });
    }
}

/// Without the `metrics` feature there is no endpoint.
#[cfg(not(feature = "metrics"))]
pub(crate) struct Endpoint;

#[cfg(not(feature = "metrics"))]
impl Endpoint {
    pub(crate) async fn bind(address: SocketAddr) -> Result<Self, String> {
        Err(format!(
            "--metrics {address}: this peer was built without the `metrics` feature"
        ))
    }
}
