//! A tower layer giving every gRPC request a tracing span with a request id and the RPC
//! name, and one log line when it finishes (code, duration).
//!
//! The request id is the caller's `x-request-id` header when it sends one (berthctl can
//! then match its logs to ours), or a fresh random one; it is echoed back in the response's
//! `x-request-id` header.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::Instrument;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSpanLayer;

impl<S> Layer<S> for RequestSpanLayer {
    type Service = RequestSpan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestSpan { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestSpan<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestSpan<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let request_id = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|id| !id.is_empty() && id.len() <= 64)
            .map(str::to_string)
            .unwrap_or_else(new_request_id);
        let rpc = rpc_name(request.uri().path()).to_string();
        let span = tracing::info_span!("rpc", rpc = %rpc, request_id = %request_id);
        // Calling the inner service inside the span makes synchronous work in `call`
        // (and anything it spawns with `in_current_span`) carry the ids too.
        let response = span.in_scope(|| self.inner.call(request));
        let started = Instant::now();
        Box::pin(
            async move {
                let result = response.await;
                let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
                match &result {
                    Ok(response) => {
                        // Unary errors come back as a trailers-only response: the code is
                        // in the headers. A missing grpc-status means OK so far.
                        let code = response
                            .headers()
                            .get("grpc-status")
                            .and_then(|value| value.to_str().ok())
                            .and_then(|code| code.parse::<i32>().ok())
                            .map(tonic::Code::from_i32)
                            .unwrap_or(tonic::Code::Ok);
                        if code == tonic::Code::Ok {
                            tracing::debug!(elapsed_ms, "rpc done");
                        } else {
                            tracing::info!(elapsed_ms, code = ?code, "rpc failed");
                        }
                    }
                    Err(err) => tracing::warn!(elapsed_ms, error = %err, "rpc transport error"),
                }
                result.map(|mut response| {
                    if let Ok(value) = HeaderValue::from_str(&request_id) {
                        response.headers_mut().insert(REQUEST_ID_HEADER, value);
                    }
                    response
                })
            }
            .instrument(span),
        )
    }
}

/// `/runtime.v1.ImageService/PullImage` -> `ImageService/PullImage`.
fn rpc_name(path: &str) -> &str {
    let path = path.trim_start_matches('/');
    match path.split_once('.') {
        // Drop the package (`runtime.v1.`), keep `Service/Method`.
        Some(_) => path.rsplit_once('/').map_or(path, |(service, _)| {
            let service_start = service.rfind('.').map_or(0, |dot| dot + 1);
            &path[service_start..]
        }),
        None => path,
    }
}

/// 16 hex digits: short enough to read in logs, random enough not to collide in them.
fn new_request_id() -> String {
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    uuid[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_names_drop_the_package() {
        assert_eq!(rpc_name("/runtime.v1.ImageService/PullImage"), "ImageService/PullImage");
        assert_eq!(rpc_name("/runtime.v1.RuntimeService/Version"), "RuntimeService/Version");
        assert_eq!(rpc_name("/Plain/Method"), "Plain/Method");
    }

    #[test]
    fn request_ids_are_fresh() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }
}
