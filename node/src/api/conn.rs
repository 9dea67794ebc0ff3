//! JSON bodies for the answers the HTTP layer gives by itself.
//!
//! Hyper answers a request it cannot parse (a request target over 64 KiB, a header section over
//! its buffer, a malformed request line) with a bodiless 400, 414 or 431 and closes the
//! connection, before any handler or middleware sees the request. [`JsonParseErrors`] wraps a
//! connection's socket, follows the framing of the responses written on it (RFC 9112 section
//! 6.3), and gives those automatic answers the API's error body. A response head is ours when the
//! service was called for a request still waiting for its answer; any other head is hyper's.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The requests the service took and has not answered yet, oldest first: `true` for a HEAD
/// request (its answer has no body whatever its headers say).
#[derive(Clone, Default)]
pub struct Pending(Arc<Mutex<VecDeque<bool>>>);

impl Pending {
    /// Records a request handed to the service.
    pub fn push(&self, is_head: bool) {
        self.0.lock().expect("lock").push_back(is_head);
    }

    fn pop(&self) -> Option<bool> {
        self.0.lock().expect("lock").pop_front()
    }
}

/// A response head longer than this is not followed (it is passed through and framing is given
/// up for the rest of the connection); ours are a few hundred bytes.
const HEAD_MAX_BYTES: usize = 64 << 10;

/// Where the writer is in the response stream.
#[derive(Debug)]
enum Framing {
    /// Collecting a response head; held back until complete.
    Head(Vec<u8>),
    /// Body bytes left of a `Content-Length` body.
    Body(u64),
    /// Collecting a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Bytes left of a chunk's data and its closing CRLF.
    ChunkData(u64),
    /// After the last chunk: trailer lines until an empty one.
    Trailers(Vec<u8>),
    /// Framing unknown (a body delimited by the connection's close): pass everything through.
    Opaque,
}

/// A connection's socket that rewrites hyper's automatic error answers into JSON ones.
pub struct JsonParseErrors<IO> {
    io: IO,
    pending: Pending,
    framing: Framing,
    /// Bytes accepted from the writer and not yet written to `io`, from `out_at` on.
    out: Vec<u8>,
    out_at: usize,
}

impl<IO> JsonParseErrors<IO> {
    pub fn new(io: IO, pending: Pending) -> JsonParseErrors<IO> {
        JsonParseErrors { io, pending, framing: Framing::Head(Vec::new()), out: Vec::new(), out_at: 0 }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The status and the headers (lower-cased names) of a complete response head.
fn parse_head(head: &[u8]) -> Option<(u16, Vec<(String, String)>)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Some((status, headers))
}

/// The API's form of one of hyper's automatic answers.
fn json_answer(status: u16, headers: &[(String, String)]) -> Vec<u8> {
    let (reason, message) = match status {
        414 => ("URI Too Long", "request target over 64 KiB: the HTTP layer refuses it"),
        431 => ("Request Header Fields Too Large", "request header section too large"),
        _ => ("Bad Request", "malformed HTTP request: the request line or a header could not be parsed"),
    };
    let body = serde_json::to_vec(&serde_json::json!({ "error": message })).expect("a JSON string");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        if !matches!(name.as_str(), "content-length" | "content-type" | "transfer-encoding") {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    out
}

impl<IO> JsonParseErrors<IO> {
    /// What follows a complete response head, and the bytes to write for it.
    fn after_head(&mut self, head: Vec<u8>) -> (Framing, Vec<u8>) {
        let Some((status, headers)) = parse_head(&head) else {
            return (Framing::Opaque, head);
        };
        if (100..200).contains(&status) {
            return (Framing::Head(Vec::new()), head); // 100 Continue: the final answer follows
        }
        let Some(is_head) = self.pending.pop() else {
            tracing::debug!(status, "the HTTP layer refused a request");
            return (Framing::Head(Vec::new()), json_answer(status, &headers));
        };
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let framing = if is_head || status == 204 || status == 304 {
            Framing::Head(Vec::new())
        } else if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            Framing::ChunkSize(Vec::new())
        } else if let Some(length) = header("content-length").and_then(|v| v.parse::<u64>().ok()) {
            if length == 0 { Framing::Head(Vec::new()) } else { Framing::Body(length) }
        } else {
            Framing::Opaque
        };
        (framing, head)
    }

    /// Takes bytes of a head, chunk-size line or trailers from `buf` into the state's buffer;
    /// returns how many were taken. Completed pieces move to `out`.
    fn take_framing(&mut self, buf: &[u8]) -> usize {
        let (collected, terminator): (&mut Vec<u8>, &[u8]) = match &mut self.framing {
            Framing::Head(collected) => (collected, b"\r\n\r\n"),
            Framing::ChunkSize(collected) => (collected, b"\r\n"),
            Framing::Trailers(collected) => (collected, b"\r\n"),
            _ => unreachable!("only called while collecting"),
        };
        // Search from a little before the new bytes, so a terminator split across writes is found.
        let from = collected.len().saturating_sub(terminator.len() - 1);
        let before = collected.len();
        collected.extend_from_slice(buf);
        let Some(at) = find(&collected[from..], terminator).map(|i| from + i + terminator.len()) else {
            if collected.len() > HEAD_MAX_BYTES {
                let passed = std::mem::take(collected);
                self.out.extend_from_slice(&passed);
                self.framing = Framing::Opaque;
            }
            return buf.len();
        };
        collected.truncate(at);
        let taken = at - before;
        let piece = std::mem::take(collected);
        let (next, bytes) = match &self.framing {
            Framing::Head(_) => self.after_head(piece),
            Framing::ChunkSize(_) => {
                let size = std::str::from_utf8(&piece)
                    .ok()
                    .and_then(|line| u64::from_str_radix(line.trim_end().split(';').next()?.trim(), 16).ok());
                let next = match size {
                    Some(0) => Framing::Trailers(Vec::new()),
                    Some(size) => Framing::ChunkData(size + 2),
                    None => Framing::Opaque,
                };
                (next, piece)
            }
            Framing::Trailers(_) if piece == b"\r\n" => (Framing::Head(Vec::new()), piece),
            _ => (Framing::Trailers(Vec::new()), piece), // a trailer line; more may follow
        };
        self.out.extend_from_slice(&bytes);
        self.framing = next;
        taken
    }
}

impl<IO: AsyncWrite + Unpin> JsonParseErrors<IO> {
    /// Writes what `out` holds.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at < self.out.len() {
            let written = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_at..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_at += written;
        }
        self.out.clear();
        self.out_at = 0;
        Poll::Ready(Ok(()))
    }

    fn write_some(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_drain(cx))?;
        let mut consumed = 0;
        while consumed < buf.len() {
            let rest = &buf[consumed..];
            let direct = match self.framing {
                Framing::Body(left) | Framing::ChunkData(left) => Some(left.min(rest.len() as u64) as usize),
                Framing::Opaque => Some(rest.len()),
                _ => None,
            };
            let Some(take) = direct else {
                consumed += self.take_framing(rest);
                continue;
            };
            if !self.out.is_empty() {
                match self.poll_drain(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) if consumed == 0 => return Poll::Ready(Err(e)),
                    Poll::Pending if consumed == 0 => return Poll::Pending,
                    _ => break, // report what was taken; the error or wait comes on the next call
                }
            }
            let written = match Pin::new(&mut self.io).poll_write(cx, &rest[..take]) {
                Poll::Ready(Ok(written)) => written,
                Poll::Ready(Err(e)) if consumed == 0 => return Poll::Ready(Err(e)),
                Poll::Pending if consumed == 0 => return Poll::Pending,
                _ => break, // report what was taken; the error or wait comes on the next call
            };
            consumed += written;
            match &mut self.framing {
                Framing::Body(left) => {
                    *left -= written as u64;
                    if *left == 0 {
                        self.framing = Framing::Head(Vec::new());
                    }
                }
                Framing::ChunkData(left) => {
                    *left -= written as u64;
                    if *left == 0 {
                        self.framing = Framing::ChunkSize(Vec::new());
                    }
                }
                _ => {}
            }
            if written < take {
                break;
            }
        }
        if consumed > 0 {
            // Try to send what was collected now; whatever is left goes on the next write or flush.
            let _ = self.poll_drain(cx);
        }
        Poll::Ready(Ok(consumed))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().write_some(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for JsonParseErrors<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A socket that takes at most `limits[i]` bytes on its i-th write (cycling), and sometimes
    /// is not ready.
    struct Trickle {
        written: Vec<u8>,
        limits: Vec<usize>,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let limit = this.limits[this.calls % this.limits.len()];
            this.calls += 1;
            if limit == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = limit.min(buf.len());
            this.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// One response as hyper writes it, and whether the request was HEAD.
    fn response(kind: u8, body: &[u8]) -> (Vec<u8>, bool) {
        let date = "date: Sun, 06 Dec 2026 03:00:00 GMT\r\n";
        match kind % 5 {
            0 => {
                let mut r =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{date}\r\n", body.len()).into_bytes();
                r.extend_from_slice(body);
                (r, false)
            }
            1 => {
                let mut r =
                    format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n{date}\r\n").into_bytes();
                for chunk in body.chunks(7) {
                    r.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    r.extend_from_slice(chunk);
                    r.extend_from_slice(b"\r\n");
                }
                r.extend_from_slice(b"0\r\n\r\n");
                (r, false)
            }
            // A HEAD answer announces a length and sends no body.
            2 => (
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{date}\r\n", body.len() + 5).into_bytes(),
                true,
            ),
            3 => (format!("HTTP/1.1 204 No Content\r\n{date}\r\n").into_bytes(), false),
            _ => {
                let mut r = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
                r.extend_from_slice(
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes(),
                );
                r.extend_from_slice(body);
                (r, false)
            }
        }
    }

    /// Feeds `input` through the wrapper in writes of the given sizes, to a socket taking
    /// `limits` bytes per call; returns what reached the socket.
    fn run(input: &[u8], pending: Pending, writes: &[usize], limits: Vec<usize>) -> Vec<u8> {
        let mut wrapper = JsonParseErrors::new(Trickle { written: Vec::new(), limits, calls: 0 }, pending);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut at = 0;
        let mut i = 0;
        while at < input.len() {
            let size = writes[i % writes.len()].max(1).min(input.len() - at);
            i += 1;
            if let Poll::Ready(result) = Pin::new(&mut wrapper).poll_write(&mut cx, &input[at..at + size]) {
                at += result.unwrap();
            }
        }
        while Pin::new(&mut wrapper).poll_flush(&mut cx).is_pending() {}
        wrapper.io.written
    }

    proptest! {
        /// Our responses pass through byte for byte, however the writes and the socket split them;
        /// an automatic answer after them becomes JSON.
        #[test]
        fn responses_pass_and_automatic_answers_become_json(
            responses in prop::collection::vec((any::<u8>(), prop::collection::vec(any::<u8>(), 0..40)), 0..6),
            writes in prop::collection::vec(1usize..50, 1..8),
            limits in prop::collection::vec(0usize..30, 1..8).prop_filter("progress", |l| l.iter().any(|&n| n > 0)),
            automatic in prop::sample::select(vec![400u16, 414, 431]),
        ) {
            let pending = Pending::default();
            let mut ours = Vec::new();
            for (kind, body) in &responses {
                let (bytes, is_head) = response(*kind, body);
                pending.push(is_head);
                ours.extend_from_slice(&bytes);
            }
            let mut input = ours.clone();
            let reason = match automatic { 414 => "URI Too Long", 431 => "Request Header Fields Too Large", _ => "Bad Request" };
            input.extend_from_slice(format!("HTTP/1.1 {automatic} {reason}\r\ncontent-length: 0\r\ndate: x\r\n\r\n").as_bytes());
            let output = run(&input, pending, &writes, limits);
            prop_assert_eq!(&output[..ours.len()], &ours[..]);
            let answer = String::from_utf8(output[ours.len()..].to_vec()).unwrap();
            let status_line = format!("HTTP/1.1 {automatic} ");
            prop_assert!(answer.starts_with(&status_line), "{}", answer);
            prop_assert!(answer.contains("content-type: application/json\r\n"), "{}", answer);
            prop_assert!(answer.contains("date: x\r\n"), "{}", answer);
            let (head, body) = answer.split_once("\r\n\r\n").unwrap();
            prop_assert!(head.contains(&format!("content-length: {}\r\n", body.len())), "{}", answer);
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            prop_assert!(json["error"].is_string());
        }
    }

    /// A body that looks like an automatic answer is body, not an answer.
    #[test]
    fn bodies_are_never_rewritten() {
        let inner = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n";
        let pending = Pending::default();
        pending.push(false);
        let mut input = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", inner.len()).into_bytes();
        input.extend_from_slice(inner);
        assert_eq!(run(&input, pending, &[1000], vec![1000]), input);
    }
}
