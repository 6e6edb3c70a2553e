//! Requests that actix-http refuses before any middleware runs (raw non-ASCII bytes or control
//! characters in the head, a URI over 65534 characters, both Content-Length and chunked, a head
//! over 128 KiB) get an ARM error body like every other error.
//!
//! actix-http's HTTP/1 dispatcher answers those with a bare status and no way to change it. So
//! each connection's bytes pass through [`Guarded`], which runs the dispatcher's own decoder
//! ([`h1::Codec`]) over them one step ahead: bytes go on to the dispatcher only once they are
//! known to be part of a valid request head or of a body. When the next head is one the
//! dispatcher would refuse, it never sees that head: it is told the client closed, finishes
//! the requests before, and when it shuts the connection down, [`Guarded`] writes the ARM error
//! answer first. A body whose framing is invalid (chunked encoding) ends where the error
//! begins: the handler reading it answers that the body is incomplete.
//!
//! The first request head's deadline (actix's `client_request_timeout`, whose 408 is bare too)
//! is kept here for the same reason: a connection without a complete head in time gets an ARM
//! 408 `RequestTimeout`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use actix_codec::Decoder;
use actix_http::ServiceConfig;
use actix_http::error::ParseError;
use actix_http::h1::{Codec, Message, MessageType};
use actix_web::http::StatusCode;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::error::{CloudError, CloudErrorBody, ErrorCode};
use crate::metrics::Metrics;

/// Bytes read from the client at a time.
const READ_CHUNK: usize = 16 * 1024;
/// The longest URI the dispatcher takes (that of the `http` crate).
const MAX_URI_LEN: usize = u16::MAX as usize - 1;

/// A client connection whose request heads are checked before the dispatcher reads them.
pub struct Guarded<T> {
    io: T,
    /// Read from the client, not yet taken by the dispatcher: the first `judged` bytes are
    /// known good, the rest begin a request head not yet complete.
    held: BytesMut,
    judged: usize,
    /// The bytes of `held` after `judged`, for the decoder (which consumes what it decodes).
    undecoded: BytesMut,
    decoder: Codec,
    in_body: bool,
    state: State,
    /// Until the first request head is complete.
    head_deadline: Option<Pin<Box<Sleep>>>,
    head_timeout: Duration,
    metrics: Option<Arc<Metrics>>,
}

enum State {
    /// Heads are checked.
    Watching,
    /// Everything passes through: the client closed.
    Transparent,
    /// What comes next is refused: the dispatcher reads end-of-stream after the bytes before
    /// it, and `answer` (if any) is written when it shuts the connection down (if it read that
    /// far).
    Refused {
        answer: Vec<u8>,
        written: usize,
        eof_delivered: bool,
    },
}

impl<T> Guarded<T> {
    /// `config` is the worker's (one per worker: it runs a clock task); the first request head
    /// must be complete within `head_timeout`.
    pub fn new(
        io: T,
        config: ServiceConfig,
        head_timeout: Duration,
        metrics: Option<Arc<Metrics>>,
    ) -> Guarded<T> {
        Guarded {
            io,
            held: BytesMut::new(),
            judged: 0,
            undecoded: BytesMut::new(),
            decoder: Codec::new(config),
            in_body: false,
            state: State::Watching,
            head_deadline: Some(Box::pin(tokio::time::sleep(head_timeout))),
            head_timeout,
            metrics,
        }
    }

    /// Refuses what comes next with `answer`.
    fn refuse(&mut self, answer: Vec<u8>) {
        self.undecoded.clear();
        self.head_deadline = None;
        self.state = State::Refused {
            answer,
            written: 0,
            eof_delivered: false,
        };
    }

    /// Whether the first head is late: refused with a 408 then.
    fn head_late(&mut self, cx: &mut Context<'_>) -> bool {
        let late = self
            .head_deadline
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready());
        if late {
            let message = format!(
                "The request head did not arrive within {} s.",
                self.head_timeout.as_secs()
            );
            let answer = answer(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::RequestTimeout,
                message,
                "request head timed out",
                self.metrics.as_deref(),
            );
            self.refuse(answer);
        }
        late
    }

    /// Decodes what arrived, moving what is known good into `judged`.
    fn judge(&mut self) {
        loop {
            let before = self.undecoded.len();
            let decoded = self.decoder.decode(&mut self.undecoded);
            if decoded.is_ok() {
                // (A refused head may be consumed in part: it stays unjudged.)
                self.judged += before - self.undecoded.len();
            }
            match decoded {
                Ok(Some(Message::Item(_))) => {
                    self.in_body = self.decoder.message_type() != MessageType::None;
                    self.head_deadline = None;
                }
                Ok(Some(Message::Chunk(None))) => self.in_body = false,
                Ok(Some(Message::Chunk(Some(_)))) => {}
                Ok(None) => return,
                Err(e) if self.in_body => {
                    // The dispatcher would drop the connection without an answer: it gets the
                    // body up to the error, then end-of-stream, and the handler reading the body
                    // answers (an ARM 400: the body is incomplete).
                    tracing::info!(error = %e, "request body cut short: not valid HTTP/1.1");
                    self.refuse(Vec::new());
                    return;
                }
                Err(e) => {
                    let (status, message) = refusal_parts(&e, &self.held[self.judged..]);
                    let answer = answer(
                        status,
                        ErrorCode::BadRequest,
                        message,
                        &e.to_string(),
                        self.metrics.as_deref(),
                    );
                    self.refuse(answer);
                    return;
                }
            }
        }
    }
}

/// The status and message of a refused request head.
fn refusal_parts(e: &ParseError, head: &[u8]) -> (StatusCode, String) {
    match e {
        ParseError::TooLarge => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "The request head (request line and headers) is too large: at most 128 KiB and 96 headers.".to_string(),
        ),
        ParseError::Uri(_) if uri_len(head) > MAX_URI_LEN => (
            StatusCode::URI_TOO_LONG,
            format!("The request URI is longer than {MAX_URI_LEN} characters."),
        ),
        ParseError::Uri(e) => (
            StatusCode::BAD_REQUEST,
            format!(
                "The request URI is invalid ({e}): characters outside printable ASCII must be percent-encoded."
            ),
        ),
        ParseError::Method => (
            StatusCode::BAD_REQUEST,
            "The request method is invalid.".to_string(),
        ),
        ParseError::Version => (
            StatusCode::BAD_REQUEST,
            "The request's HTTP version is invalid.".to_string(),
        ),
        ParseError::Header => (
            StatusCode::BAD_REQUEST,
            "The request headers are invalid: a header name or value has a character HTTP does not allow, Content-Length is invalid or repeated, Transfer-Encoding is not chunked or comes with Content-Length, or Host is missing.".to_string(),
        ),
        other => (
            StatusCode::BAD_REQUEST,
            format!("The request is not valid HTTP ({other})."),
        ),
    }
}

/// Length of the request target of a head (`METHOD target VERSION`).
fn uri_len(head: &[u8]) -> usize {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    line.split(|b| *b == b' ').nth(1).map_or(0, <[u8]>::len)
}

/// The complete HTTP answer to a refused head: an ARM error with a request id, logged (with
/// `why`) and counted as every request is.
fn answer(
    status: StatusCode,
    code: ErrorCode,
    message: String,
    why: &str,
    metrics: Option<&Metrics>,
) -> Vec<u8> {
    let request_id = uuid::Uuid::new_v4().to_string();
    tracing::info!(
        request_id = %request_id,
        status = status.as_u16(),
        code = code.as_str(),
        error = %why,
        "request refused before routing"
    );
    if let Some(m) = metrics {
        m.requests.inc();
        m.responses_4xx.inc();
    }
    let body = serde_json::to_vec(&CloudError {
        error: CloudErrorBody {
            code: code.as_str().to_string(),
            message,
            target: None,
            details: vec![],
        },
    })
    .unwrap_or_default();
    let mut answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\nx-ms-request-id: {request_id}\r\nx-ms-correlation-request-id: {request_id}\r\ndate: {}\r\n\r\n",
        body.len(),
        chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT"),
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.judged > 0 {
                let n = this.judged.min(buf.remaining());
                buf.put_slice(&this.held[..n]);
                this.held.advance(n);
                this.judged -= n;
                return Poll::Ready(Ok(()));
            }
            match &mut this.state {
                State::Watching => {}
                State::Transparent if this.held.is_empty() => {
                    return Pin::new(&mut this.io).poll_read(cx, buf);
                }
                State::Transparent => {
                    this.judged = this.held.len();
                    continue;
                }
                State::Refused { eof_delivered, .. } => {
                    *eof_delivered = true;
                    return Poll::Ready(Ok(()));
                }
            }
            if this.head_late(cx) {
                continue;
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            let got = read.filled();
            if got.is_empty() {
                // The client closed: what is held goes on as it is.
                this.undecoded.clear();
                this.state = State::Transparent;
                continue;
            }
            this.held.extend_from_slice(got);
            this.undecoded.extend_from_slice(got);
            this.judge();
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Writes the answer to a refused head (once the dispatcher answered everything before it),
    /// then closes.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let refused = matches!(this.state, State::Refused { .. });
        if let State::Refused {
            answer,
            written,
            eof_delivered: true,
        } = &mut this.state
        {
            while *written < answer.len() {
                let n = ready!(Pin::new(&mut this.io).poll_write(cx, &answer[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
            ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        }
        ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
        if refused {
            // Read what the client already sent after the refused head: closing a socket with
            // unread data resets the connection, and the client might lose the answer.
            let mut scratch = [0u8; 4096];
            loop {
                let mut rest = ReadBuf::new(&mut scratch);
                match Pin::new(&mut this.io).poll_read(cx, &mut rest) {
                    Poll::Ready(Ok(())) if !rest.filled().is_empty() => {}
                    _ => break,
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

    /// What the dispatcher reads through a guarded stream when the client sends `sent` and
    /// closes, and what the client gets when the dispatcher then shuts the stream down.
    async fn through(sent: &[u8]) -> (Vec<u8>, String) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut guarded = Guarded::new(server, ServiceConfig::default(), HEAD_TIMEOUT, None);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write.write_all(sent).await.unwrap();
        client_write.shutdown().await.unwrap();
        let mut seen = vec![];
        guarded.read_to_end(&mut seen).await.unwrap();
        guarded.shutdown().await.unwrap();
        drop(guarded);
        let mut answer = String::new();
        client_read.read_to_string(&mut answer).await.unwrap();
        (seen, answer)
    }

    #[actix_web::test]
    async fn valid_requests_pass_through_untouched() {
        let sent = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        let (seen, answer) = through(sent).await;
        assert_eq!(seen, sent);
        assert_eq!(answer, "");
    }

    #[actix_web::test]
    async fn an_invalid_head_is_answered_after_the_requests_before_it() {
        let good = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        for (bad, status) in [
            (b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n".to_vec(), 400),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
                400,
            ),
            (
                format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000)).into_bytes(),
                414,
            ),
        ] {
            let mut sent = good.clone();
            sent.extend_from_slice(&bad);
            let (seen, answer) = through(&sent).await;
            assert_eq!(seen, good, "{answer}");
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status} ")),
                "{answer}"
            );
            let body: serde_json::Value =
                serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "BadRequest", "{answer}");
            assert!(answer.contains("x-ms-request-id: "), "{answer}");
        }
    }

    #[actix_web::test]
    async fn a_first_head_that_is_late_is_answered_with_a_408() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut guarded = Guarded::new(
            server,
            ServiceConfig::default(),
            Duration::from_millis(200),
            None,
        );
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write
            .write_all(b"GET / HTTP/1.1\r\nHo")
            .await
            .unwrap();
        let mut seen = vec![];
        let started = std::time::Instant::now();
        guarded.read_to_end(&mut seen).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(seen.is_empty());
        guarded.shutdown().await.unwrap();
        drop(guarded);
        let mut answer = String::new();
        client_read.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(answer.contains(r#""code":"RequestTimeout""#), "{answer}");
    }

    #[actix_web::test]
    async fn a_complete_first_head_has_no_deadline_any_more() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut guarded = Guarded::new(
            server,
            ServiceConfig::default(),
            Duration::from_millis(100),
            None,
        );
        let (_client_read, mut client_write) = tokio::io::split(client);
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n";
        client_write.write_all(head).await.unwrap();
        let mut seen = vec![0u8; head.len()];
        guarded.read_exact(&mut seen).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        client_write.write_all(b"ok").await.unwrap();
        client_write.shutdown().await.unwrap();
        let mut rest = vec![];
        guarded.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"ok");
    }

    #[actix_web::test]
    async fn a_body_ends_where_its_framing_is_invalid() {
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
        let mut sent = head.to_vec();
        sent.extend_from_slice(b"zz\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let (seen, answer) = through(&sent).await;
        // Up to the last chunk's data (what the dispatcher would have decoded): the rest of the
        // body, and what follows it, never reach it.
        assert_eq!(seen, head[..head.len() - 2]);
        assert_eq!(answer, "");
    }
}
