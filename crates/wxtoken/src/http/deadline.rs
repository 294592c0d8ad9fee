//! `server.body_read_timeout_ms`: a request body must have arrived whole this long after
//! its handler starts reading it, however it trickles in (one byte every few seconds
//! keeps a per-read timeout happy, not this one). Only routes that read a body carry the
//! layer; the GET routes pay nothing for it.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::error::ApiError;

/// Wraps each request's body in a [`DeadlineBody`] of `timeout`.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadlineLayer {
    pub timeout: Duration,
}

impl<S> tower::Layer<S> for BodyDeadlineLayer {
    type Service = BodyDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyDeadline {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BodyDeadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S> tower::Service<Request> for BodyDeadline<S>
where
    S: tower::Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let timeout = self.timeout;
        self.inner
            .call(request.map(|body| Body::new(DeadlineBody::new(body, timeout))))
    }
}

/// The body ran past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

pin_project! {
    /// A body that fails with [`BodyTimedOut`] if it has not ended `timeout` after it
    /// was first read.
    pub struct DeadlineBody {
        #[pin]
        inner: Body,
        timeout: Duration,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl DeadlineBody {
    pub fn new(inner: Body, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            sleep: None,
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut this = self.project();
        if this.sleep.is_none() {
            let deadline = Instant::now() + *this.timeout;
            this.sleep.set(Some(tokio::time::sleep_until(deadline)));
        }
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if let Some(sleep) = this.sleep.as_pin_mut() {
            ready!(sleep.poll(cx));
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `error` (or what caused it) is a [`BodyTimedOut`].
pub fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// The answer to a body that did not arrive in time.
pub fn error() -> ApiError {
    ApiError::RequestTimeout(
        "the request body did not arrive within server.body_read_timeout_ms".into(),
    )
}
