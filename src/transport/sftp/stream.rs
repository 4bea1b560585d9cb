//! The byte stream the SFTP server reads requests from and writes replies to.
//!
//! Feeding `Channel::into_stream()` straight to the SFTP server can deadlock a download: the
//! channel's bounded queue fills with data and window-adjust messages while the SFTP task waits
//! for send window, and neither moves again. Here a pump task drains the channel continuously
//! into a bounded queue, dropping everything but data; each reply the server flushes goes as one
//! owned buffer through a second bounded queue to a task that owns the channel's write half and
//! waits for window there. Buffers move between the tasks without being copied, which is what a
//! download's throughput depends on. The stream ends as soon as the session is cancelled, so the
//! SFTP task (and any open file) never outlives its connection, and when the SFTP task ends the
//! channel is closed so the client exits.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use russh::ChannelMsg;
use russh::server::Msg;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, PollSender, WaitForCancellationFutureOwned};

/// Channel data messages queued for the SFTP server. A client's messages are at most the
/// advertised maximum packet size (64 KiB), so this holds at most 4 MiB.
const REQUEST_QUEUE: usize = 64;
/// Reply buffers queued for the channel. A buffer holds under `REPLY_BATCH` plus one reply (at
/// most one 256 KiB read), so this holds at most 8 MiB.
const REPLY_QUEUE: usize = 16;
/// Reply bytes gathered before they are queued even without a flush.
const REPLY_BATCH: usize = 256 << 10;

/// When a connection's channels last moved (a request in, a reply out), for the idle timeout.
pub struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    pub fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    /// Time since the last movement.
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

pub struct SftpStream {
    requests: mpsc::Receiver<Bytes>,
    /// The part of the last request message not yet read by the server.
    pending: Bytes,
    replies: PollSender<Bytes>,
    /// Reply bytes written since the last flush.
    reply: BytesMut,
    session_end: Pin<Box<WaitForCancellationFutureOwned>>,
    ended: bool,
}

/// Splits the channel, starts the pump and the writer, and returns the stream for the server.
/// `held` is dropped once the writer has closed the channel.
pub fn open(
    channel: russh::Channel<Msg>,
    session_end: CancellationToken,
    activity: Arc<Activity>,
    held: impl Send + 'static,
) -> SftpStream {
    let (mut read_half, write_half) = channel.split();
    let (requests_tx, requests) = mpsc::channel::<Bytes>(REQUEST_QUEUE);
    let (replies_tx, mut replies_rx) = mpsc::channel::<Bytes>(REPLY_QUEUE);

    let pump_end = session_end.clone();
    let pump_activity = activity.clone();
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = pump_end.cancelled() => break,
                m = read_half.wait() => m,
            };
            match msg {
                Some(ChannelMsg::Data { data }) => {
                    pump_activity.touch();
                    let queued = tokio::select! {
                        _ = pump_end.cancelled() => break,
                        r = requests_tx.send(data) => r,
                    };
                    if queued.is_err() {
                        break;
                    }
                }
                Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            }
        }
        // Dropping the sender ends the server's input.
    });

    let writer_end = session_end.clone();
    tokio::spawn(async move {
        // The queue ends when the server drops the stream; what it wrote before is still sent.
        loop {
            let reply = tokio::select! {
                biased;
                r = replies_rx.recv() => match r {
                    Some(reply) => reply,
                    None => break,
                },
                _ = writer_end.cancelled() => break,
            };
            let sent = tokio::select! {
                r = write_half.data_bytes(reply) => r,
                _ = writer_end.cancelled() => break,
            };
            if sent.is_err() {
                break;
            }
            activity.touch();
        }
        let _ = write_half.eof().await;
        let _ = write_half.close().await;
        drop(held);
    });

    SftpStream {
        requests,
        pending: Bytes::new(),
        replies: PollSender::new(replies_tx),
        reply: BytesMut::new(),
        session_end: Box::pin(session_end.cancelled_owned()),
        ended: false,
    }
}

impl SftpStream {
    fn check_end(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.ended && self.session_end.as_mut().poll(cx).is_ready() {
            self.ended = true;
        }
        self.ended
    }

    /// Queues the reply bytes gathered so far as one buffer.
    fn poll_queue_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.reply.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if ready!(self.replies.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let reply = self.reply.split().freeze();
        match self.replies.send_item(reply) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }
}

impl Drop for SftpStream {
    fn drop(&mut self) {
        // Replies are held back only while a request waits, so this is rare: the server ended
        // with requests unanswered. What it did answer is still sent if there is room.
        if !self.reply.is_empty()
            && let Some(replies) = self.replies.get_ref()
        {
            let _ = replies.try_send(self.reply.split().freeze());
        }
    }
}

/// What [`SftpStream::next_frame`] read.
#[derive(Debug)]
pub enum Frame {
    /// The bytes of one request, after its length.
    Request(Bytes),
    /// A length over the limit: nothing more of it was read.
    TooLong(u32),
    /// The client or the session ended.
    End,
}

impl SftpStream {
    /// Makes `pending` hold bytes of the client's stream; `false` once it has ended.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.check_end(cx) {
            return Poll::Ready(Ok(false));
        }
        while self.pending.is_empty() {
            match self.requests.poll_recv(cx) {
                Poll::Ready(Some(data)) => self.pending = data,
                Poll::Ready(None) => {
                    ready!(self.poll_queue_reply(cx))?;
                    return Poll::Ready(Ok(false));
                }
                Poll::Pending => {
                    // The server waits for the client now: replies held back go out first.
                    ready!(self.poll_queue_reply(cx))?;
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(true))
    }

    /// Takes up to `n` bytes of the stream as they came: a slice of one channel message.
    async fn take(&mut self, n: usize) -> io::Result<Option<Bytes>> {
        if !std::future::poll_fn(|cx| self.poll_fill(cx)).await? {
            return Ok(None);
        }
        let n = n.min(self.pending.len());
        Ok(Some(self.pending.split_to(n)))
    }

    /// Reads the next request: a 32-bit length, then that many bytes, cut from the channel's
    /// message without a copy when the request lies within one, gathered (never zeroed) when it
    /// spans several.
    pub async fn next_frame(&mut self, max: u32) -> io::Result<Frame> {
        let mut len = [0u8; 4];
        let mut have = 0;
        while have < 4 {
            let Some(piece) = self.take(4 - have).await? else {
                return Ok(Frame::End);
            };
            len[have..have + piece.len()].copy_from_slice(&piece);
            have += piece.len();
        }
        let len = u32::from_be_bytes(len);
        if len > max {
            return Ok(Frame::TooLong(len));
        }
        let len = len as usize;
        if len == 0 {
            // Nothing to wait for: an empty request, answered as a bad message.
            return Ok(Frame::Request(Bytes::new()));
        }
        let Some(first) = self.take(len).await? else {
            return Ok(Frame::End);
        };
        if first.len() == len {
            return Ok(Frame::Request(first));
        }
        let mut whole = BytesMut::with_capacity(len);
        whole.extend_from_slice(&first);
        while whole.len() < len {
            let Some(piece) = self.take(len - whole.len()).await? else {
                return Ok(Frame::End);
            };
            whole.extend_from_slice(&piece);
        }
        Ok(Frame::Request(whole.freeze()))
    }
}

impl AsyncWrite for SftpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.check_end(cx) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if self.reply.len() >= REPLY_BATCH {
            ready!(self.poll_queue_reply(cx))?;
        }
        self.reply.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    /// Holds the reply back while the next request is already waiting and the batch is not
    /// full: the server answers that at once, and consecutive replies leave as one buffer, which
    /// the channel cuts into full-size packets instead of a full and a 13-byte one per read.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.check_end(cx) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let request_waiting = !self.pending.is_empty() || !self.requests.is_empty();
        if request_waiting && self.reply.len() < REPLY_BATCH {
            return Poll::Ready(Ok(()));
        }
        self.poll_queue_reply(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_queue_reply(cx))?;
        self.replies.close();
        Poll::Ready(Ok(()))
    }
}

/// A connection's socket that reads as ended, and refuses writes, once `cut` is cancelled: the
/// one way to end a russh session that does not act on a disconnect (during a key exchange the
/// client never finishes, russh leaves queued messages alone).
pub struct Cuttable<S> {
    inner: S,
    cut: CancellationToken,
    /// Wakes a pending read when the cut comes. Only reads poll it: one future keeps one waker.
    cut_wait: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> Cuttable<S> {
    pub fn new(inner: S, cut: CancellationToken) -> Cuttable<S> {
        let cut_wait = Box::pin(cut.clone().cancelled_owned());
        Cuttable {
            inner,
            cut,
            cut_wait,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Cuttable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.cut_wait.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Cuttable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.cut.is_cancelled() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
