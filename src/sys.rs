//! System calls that std does not wrap and no module of their own owns, each behind a safe
//! function. With the libxml2 binding ([`crate::validate::xml`]), the box layer's file-system
//! calls (`boxes::fsops`), the `O_DIRECT` switch of [`crate::direct_io`] and the clock read of
//! [`crate::audit::clock`], this is where the crate's `unsafe` code is.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Makes a write to a pipe or socket whose reader has gone end the process, as it does for
/// Unix tools, instead of failing with `EPIPE` (Rust starts programs with SIGPIPE ignored).
pub fn die_on_broken_pipe() {
    // SAFETY: SIG_DFL installs no handler, so no code of ours ever runs in signal context; the
    // call changes only what the kernel does to the process on a write to a broken pipe, and
    // nothing in Rust's runtime relies on SIGPIPE being ignored.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Atomically exchanges two paths (`renameat2` with `RENAME_EXCHANGE`): both must exist.
pub fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    let a = CString::new(a.as_os_str().as_bytes())?;
    let b = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: `a` and `b` are NUL-terminated strings that live until the call returns, which
    // reads them and nothing else of ours; AT_FDCWD makes relative paths relative to the working
    // directory, as std's functions do.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
