//! The transports: SFTP and mutual-TLS HTTPS front ends onto the same drop boxes
//! ([`crate::boxes`]). What they share beyond the boxes lives here: rate limits and bans, and
//! the registry of live sessions that revocation acts on.

pub mod bans;
pub mod gate;
pub mod https;
pub mod limits;
pub mod sessions;
pub mod sftp;

/// Makes the coming close of a TCP socket abortive (RST): a revoked client must lose the
/// connection now, not after it has read everything already in the socket buffers.
///
/// `fd` must be an open TCP socket owned by the caller for the duration of the call.
pub(crate) fn abort_on_close(fd: std::os::fd::RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the caller guarantees `fd` is an open socket; the option value is a valid
    // `linger` of the size given. A failure only leaves the close graceful.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
