//! The HTTP side: accept loop (fix 1), the per-request layer and the network
//! model.
//!
//! Every request passes through [`Frontend::handle`], the one place between
//! the socket and the S3 operations. The first-byte delay lives there, and so
//! does fault injection ([`super::faults`]).
//! The bandwidth cap is a property of the connection, so it wraps the socket
//! ([`Throttled`]) and covers request and response bytes alike.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use s3s::service::S3Service;
use s3s::stream::{ByteStream, DynByteStream};
use s3s::{HttpError, HttpResponse, StdError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::NetworkProfile;
use super::faults::{Fault, Faults};

/// Credit a connection's token bucket holds, as time at the full rate: a
/// short burst, as a shaped link with a small queue allows.
const BURST: Duration = Duration::from_millis(5);

/// Smallest bucket, so that low rates still move whole TCP segments.
const MIN_BURST_BYTES: f64 = 16.0 * 1024.0;

/// Pause after a failed `accept` (for example `EMFILE`) before trying again.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

/// The per-request layer in front of the S3 service.
#[derive(Debug)]
pub(crate) struct Frontend {
    s3: S3Service,
    network: NetworkProfile,
    faults: Arc<Faults>,
}

impl Frontend {
    pub(crate) fn new(s3: S3Service, network: NetworkProfile, faults: Arc<Faults>) -> Self {
        Self {
            s3,
            network,
            faults,
        }
    }

    /// Answers one request: the S3 operation, then the first-byte delay; or the fault the
    /// plan picks for it.
    async fn handle(
        self: Arc<Self>,
        req: http::Request<Incoming>,
    ) -> Result<HttpResponse, HttpError> {
        let Some((fault, duration)) = self.faults.pick() else {
            let resp = self.s3.call(req.map(s3s::Body::from)).await;
            self.first_byte_delay().await;
            return resp;
        };
        tracing::debug!(?fault, method = %req.method(), uri = %req.uri(), "injecting a fault");
        match fault {
            Fault::Unavailable => {
                self.first_byte_delay().await;
                Ok(error_response(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "SlowDown",
                    "Please reduce your request rate.",
                ))
            }
            Fault::ErrorAfter => {
                let resp = self.s3.call(req.map(s3s::Body::from)).await;
                drop(resp);
                self.first_byte_delay().await;
                Ok(error_response(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                ))
            }
            Fault::Hang => {
                tokio::time::sleep(duration).await;
                Err(HttpError::new("injected fault: the request hung".into()))
            }
            Fault::Slow => {
                tokio::time::sleep(duration).await;
                let resp = self.s3.call(req.map(s3s::Body::from)).await;
                self.first_byte_delay().await;
                resp
            }
            Fault::Reset => self.reset(req).await,
        }
    }

    async fn first_byte_delay(&self) {
        let delay = self.network.first_byte_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// Cuts the connection in the middle of a body: the request's, when it has one, else the
    /// response's; before any answer when neither has a body.
    async fn reset(&self, req: http::Request<Incoming>) -> Result<HttpResponse, HttpError> {
        let cut = || HttpError::new("injected fault: connection reset".into());
        let request_len = content_length(req.headers());
        if request_len > 1 {
            let mut body = s3s::Body::from(req.into_body());
            let mut read = 0;
            while read < request_len / 2 {
                match body.next().await {
                    Some(Ok(chunk)) => read += chunk.len() as u64,
                    _ => break,
                }
            }
            return Err(cut());
        }
        let mut resp = self.s3.call(req.map(s3s::Body::from)).await?;
        let response_len = content_length(resp.headers());
        if response_len <= 1 {
            return Err(cut());
        }
        self.first_byte_delay().await;
        let body = std::mem::take(resp.body_mut());
        let half = usize::try_from(response_len / 2).unwrap_or(usize::MAX);
        let stream: DynByteStream = Box::pin(CutShort {
            inner: body,
            left: half,
            done: false,
        });
        *resp.body_mut() = s3s::Body::from(stream);
        Ok(resp)
    }
}

fn content_length(headers: &http::HeaderMap) -> u64 {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// An S3 error answer, as S3 writes them.
fn error_response(status: http::StatusCode, code: &str, message: &str) -> HttpResponse {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>injected-fault</RequestId></Error>"
    );
    let mut resp = http::Response::new(s3s::Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    resp
}

/// A response body that ends in an error after `left` bytes: the connection is cut.
struct CutShort {
    inner: s3s::Body,
    left: usize,
    done: bool,
}

impl Stream for CutShort {
    type Item = Result<Bytes, StdError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.left == 0 {
            this.done = true;
            return Poll::Ready(Some(Err("injected fault: connection reset".into())));
        }
        match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
            Some(Ok(mut chunk)) => {
                if chunk.len() > this.left {
                    chunk.truncate(this.left);
                }
                this.left -= chunk.len();
                Poll::Ready(Some(Ok(chunk)))
            }
            other => {
                this.done = true;
                Poll::Ready(other)
            }
        }
    }
}

impl ByteStream for CutShort {}

/// Accepts and serves connections until `shutdown` is cancelled, then closes
/// the listener and every connection (dropping requests in flight) before
/// returning.
pub(crate) async fn serve(
    listener: TcpListener,
    frontend: Arc<Frontend>,
    shutdown: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Fix 1: without this, each small response waits 20-40 ms
                    // for the client's delayed ACK (Nagle).
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::warn!(%peer, error = %e, "cannot set TCP_NODELAY");
                    }
                    connections.spawn(serve_connection(stream, Arc::clone(&frontend)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Serves HTTP/1.1 on one connection until the client closes it.
async fn serve_connection(stream: TcpStream, frontend: Arc<Frontend>) {
    let bandwidth = frontend.network.bandwidth_bytes_per_sec;
    let service = service_fn(move |req| Arc::clone(&frontend).handle(req));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).keep_alive(true);
    let result = match bandwidth {
        None => {
            builder
                .serve_connection(TokioIo::new(stream), service)
                .await
        }
        Some(rate) => {
            let stream = Throttled::new(stream, rate);
            builder
                .serve_connection(TokioIo::new(stream), service)
                .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// A token bucket: `rate` bytes per second with a burst of [`BURST`].
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl TokenBucket {
    /// A full bucket for `rate` bytes per second (`rate` > 0).
    fn new(rate: u64) -> Self {
        let rate = rate as f64;
        let capacity = (rate * BURST.as_secs_f64()).max(MIN_BURST_BYTES);
        let now = Instant::now();
        Self {
            rate,
            capacity,
            tokens: capacity,
            last: now,
            sleep: Box::pin(tokio::time::sleep_until(now)),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = now;
    }

    /// How many of `want` (> 0) bytes may pass now: between 1 and `want`.
    ///
    /// Waits until a quarter of the bucket (or all of `want`, if smaller) is
    /// available, so that a slow link moves a few large pieces rather than
    /// many tiny ones.
    fn poll_grant(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<usize> {
        loop {
            let now = Instant::now();
            self.refill(now);
            let threshold = (want as f64).min(self.capacity / 4.0).max(1.0);
            if self.tokens >= threshold {
                // `tokens` >= 1 here, and the cast saturates.
                return Poll::Ready((self.tokens as usize).clamp(1, want));
            }
            let wait = Duration::from_secs_f64((threshold - self.tokens) / self.rate);
            self.sleep.as_mut().reset(now + wait);
            ready!(self.sleep.as_mut().poll(cx));
        }
    }

    fn consume(&mut self, n: usize) {
        self.tokens -= n as f64;
    }
}

/// A socket whose reads and writes are each capped at a rate.
#[derive(Debug)]
pub(crate) struct Throttled<S> {
    inner: S,
    read: TokenBucket,
    write: TokenBucket,
}

impl<S> Throttled<S> {
    /// Caps each direction of `inner` at `rate` bytes per second (`rate` > 0).
    pub(crate) fn new(inner: S, rate: u64) -> Self {
        Self {
            inner,
            read: TokenBucket::new(rate),
            write: TokenBucket::new(rate),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Throttled<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let want = buf.remaining();
        if want == 0 {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let allowed = ready!(this.read.poll_grant(cx, want));
        let got = if allowed >= want {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            buf.filled().len() - before
        } else {
            let mut limited = ReadBuf::new(buf.initialize_unfilled_to(allowed));
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
            let got = limited.filled().len();
            buf.advance(got);
            got
        };
        this.read.consume(got);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Throttled<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        let allowed = ready!(this.write.poll_grant(cx, data.len()));
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, &data[..allowed]))?;
        this.write.consume(written);
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn throttled_write_and_read_follow_the_rate() {
        const RATE: u64 = 2_000_000;
        const LEN: usize = 200_000;
        for direction in ["write", "read"] {
            let (a, b) = tokio::io::duplex(64 * 1024);
            let start = Instant::now();
            let (mut writer, mut reader): (
                Box<dyn AsyncWrite + Unpin + Send>,
                Box<dyn AsyncRead + Unpin + Send>,
            ) = if direction == "write" {
                (Box::new(Throttled::new(a, RATE)), Box::new(b))
            } else {
                (Box::new(a), Box::new(Throttled::new(b, RATE)))
            };
            let send = tokio::spawn(async move {
                writer.write_all(&vec![7u8; LEN]).await.unwrap();
                writer.shutdown().await.unwrap();
            });
            let mut got = Vec::new();
            reader.read_to_end(&mut got).await.unwrap();
            send.await.unwrap();
            assert_eq!(got.len(), LEN);
            // 200 kB at 2 MB/s, less the initial burst: about 90 ms.
            let elapsed = start.elapsed();
            let burst = MIN_BURST_BYTES / RATE as f64;
            let floor = Duration::from_secs_f64(LEN as f64 / RATE as f64 - burst);
            assert!(elapsed >= floor, "{direction}: {elapsed:?} < {floor:?}");
            assert!(elapsed < floor * 5, "{direction}: {elapsed:?}");
        }
    }

    #[tokio::test]
    async fn token_bucket_grants_between_one_and_want() {
        let mut bucket = TokenBucket::new(1_000_000);
        let full = bucket.capacity as usize;
        let granted = futures::future::poll_fn(|cx| bucket.poll_grant(cx, 10 * full)).await;
        assert_eq!(granted, full);
        bucket.consume(granted);
        let small = futures::future::poll_fn(|cx| bucket.poll_grant(cx, 100)).await;
        assert!((1..=100).contains(&small), "{small}");
    }
}
