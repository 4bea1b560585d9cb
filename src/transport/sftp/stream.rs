//! The byte stream the SFTP server reads requests from and writes replies to.
//!
//! Feeding `Channel::into_stream()` straight to the SFTP server can deadlock a download: the
//! channel's bounded queue fills with data and window-adjust messages while the SFTP task waits
//! for send window, and neither moves again. Here a pump task drains the channel continuously
//! into a bounded in-memory pipe, dropping everything but data; replies go through a second pipe
//! to a task that owns the channel's write half and waits for window there. The stream ends as
//! soon as the session is cancelled, so the SFTP task (and any open file) never outlives its
//! connection, and when the SFTP task ends the channel is closed so the client exits.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::FutureExt;
use russh::ChannelMsg;
use russh::server::Msg;
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, SimplexStream, WriteHalf,
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Bytes buffered in each direction between the channel and the SFTP server.
const PIPE_BYTES: usize = 4 << 20;
/// Largest chunk handed to the channel at once.
const CHUNK: usize = 256 << 10;

pub struct SftpStream {
    rx: ReadHalf<SimplexStream>,
    tx: WriteHalf<SimplexStream>,
    session_end: Pin<Box<WaitForCancellationFutureOwned>>,
    ended: bool,
    /// Cancelled when the SFTP server drops the stream: the writer then flushes and closes.
    sftp_done: CancellationToken,
}

/// Splits the channel, starts the pump and the writer, and returns the stream for the server.
pub fn open(channel: russh::Channel<Msg>, session_end: CancellationToken) -> SftpStream {
    let (mut read_half, write_half) = channel.split();
    let (rx, mut requests_tx) = tokio::io::simplex(PIPE_BYTES);
    let (mut replies_rx, replies_tx) = tokio::io::simplex(PIPE_BYTES);
    let sftp_done = CancellationToken::new();

    let pump_end = session_end.clone();
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = pump_end.cancelled() => break,
                m = read_half.wait() => m,
            };
            match msg {
                Some(ChannelMsg::Data { data }) => {
                    let written = tokio::select! {
                        _ = pump_end.cancelled() => break,
                        r = requests_tx.write_all(&data) => r,
                    };
                    if written.is_err() {
                        break;
                    }
                }
                Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            }
        }
        // The write half of a simplex pipe signals EOF only on shutdown.
        let _ = requests_tx.shutdown().await;
    });

    let writer_end = session_end.clone();
    let done = sftp_done.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = tokio::select! {
                biased;
                r = replies_rx.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
                _ = done.cancelled() => {
                    // Send what the server wrote before it ended, without waiting for more.
                    while let Some(Ok(n)) = replies_rx.read(&mut buf).now_or_never() {
                        if n == 0 || write_half.data_bytes(bytes::Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                            break;
                        }
                    }
                    break;
                }
                _ = writer_end.cancelled() => break,
            };
            let sent = tokio::select! {
                r = write_half.data_bytes(bytes::Bytes::copy_from_slice(&buf[..n])) => r,
                _ = writer_end.cancelled() => break,
            };
            if sent.is_err() {
                break;
            }
        }
        let _ = write_half.eof().await;
        let _ = write_half.close().await;
    });

    SftpStream {
        rx,
        tx: replies_tx,
        session_end: Box::pin(session_end.cancelled_owned()),
        ended: false,
        sftp_done,
    }
}

impl SftpStream {
    fn check_end(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.ended && self.session_end.as_mut().poll(cx).is_ready() {
            self.ended = true;
        }
        self.ended
    }
}

impl Drop for SftpStream {
    fn drop(&mut self) {
        self.sftp_done.cancel();
    }
}

impl AsyncRead for SftpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.check_end(cx) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.rx).poll_read(cx, buf)
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
        Pin::new(&mut self.tx).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.check_end(cx) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.tx).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tx).poll_shutdown(cx)
    }
}
