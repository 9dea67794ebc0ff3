//! Serving the API over HTTP/1.1, with limits on what a client may hold open.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::{Service as _, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::conn::{JsonParseErrors, Pending};
use super::{ApiState, router};

/// What a client may hold open. Defaults suit a node serving a few applications; the `api-*`
/// settings change them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiLimits {
    /// Time a client has to send a request's headers once it starts, and the longest an idle
    /// kept-alive connection stays open.
    pub header_timeout: Duration,
    /// Longest pause between two pieces of an upload's body; when it passes, the upload is
    /// abandoned and rolled back (408).
    pub upload_idle_timeout: Duration,
    /// Uploads read at once; one more is answered 503 with `Retry-After`.
    pub max_uploads: usize,
}

impl Default for ApiLimits {
    fn default() -> ApiLimits {
        ApiLimits {
            header_timeout: Duration::from_secs(30),
            upload_idle_timeout: Duration::from_secs(60),
            max_uploads: 16,
        }
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then lets the requests in progress
/// finish and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.limits;
    let app = router(state);
    let (stop, stopping) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting an API connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let pending = Pending::default();
        let io = TokioIo::new(JsonParseErrors::new(stream, pending.clone()));
        let router = TowerToHyperService::new(app.clone());
        let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            pending.push(request.method() == hyper::Method::HEAD);
            router.call(request)
        });
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(io, service);
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "API connection ended");
            }
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    drop(stop); // every connection finishes its request in progress and closes
    while connections.join_next().await.is_some() {}
    Ok(())
}
