//! The transports: SFTP and mutual-TLS HTTPS front ends onto the same drop boxes
//! ([`crate::boxes`]). What they share beyond the boxes lives here: rate limits and bans, and
//! the registry of live sessions that revocation acts on.

pub mod bans;
pub mod gate;
pub mod https;
pub mod limits;
pub mod sessions;
pub mod sftp;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A client's TCP connection whose close can be made abortive (RST): a revoked client must
/// lose the connection now, not after it has read everything already in the socket buffers.
/// Reads and writes go straight to the stream.
pub(crate) struct Resettable {
    tcp: TcpStream,
    reset: Arc<AtomicBool>,
}

/// Makes the close of its [`Resettable`] abortive.
pub(crate) struct ResetOnClose(Arc<AtomicBool>);

impl Resettable {
    pub(crate) fn new(tcp: TcpStream) -> (Resettable, ResetOnClose) {
        let reset = Arc::new(AtomicBool::new(false));
        let handle = ResetOnClose(reset.clone());
        (Resettable { tcp, reset }, handle)
    }
}

impl ResetOnClose {
    /// The connection ends with a reset when it is dropped, whatever is still unsent.
    pub(crate) fn arm(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Drop for Resettable {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Relaxed) {
            // A failure only leaves the close graceful.
            let _ = self.tcp.set_zero_linger();
        }
    }
}

impl AsyncRead for Resettable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Resettable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
