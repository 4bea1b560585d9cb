//! The few file-system calls the box layer needs, all relative to directory handles.
//!
//! `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS` is the
//! confinement; where the kernel lacks it (before Linux 5.6) `openat` with `O_NOFOLLOW` on a
//! single, already-checked name component gives the same guarantee.
//!
//! A system-call module: the `unsafe` here is the calls themselves. Every descriptor passed in
//! is borrowed from an `OwnedFd` or `File`, so it is open for the duration of the call.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens a directory by absolute path (the box and staging roots, which the gateway created).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call, which only reads it.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `check` let through only a descriptor that open(2) just returned: open, and
    // owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2` beneath `dir`, refusing any symlink; falls back to `openat(O_NOFOLLOW)`.
fn open_beneath(
    dir: &OwnedFd,
    name: &str,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: `open_how` is three integers, for which all-zero bytes are a valid value (and
    // the kernel wants every field it is not given to be zero).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
    how.mode = if flags & libc::O_CREAT != 0 {
        u64::from(mode)
    } else {
        0
    };
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads the NUL-terminated `c` and the fully initialised `how` of the size
    // given, both alive until it returns, and writes no memory of ours.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    let fd = if ret < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ENOSYS) {
            return Err(err);
        }
        if name.contains('/') || name == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a single name",
            ));
        }
        // SAFETY: openat reads only the NUL-terminated `c`, alive until it returns.
        check(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                libc::c_uint::from(mode),
            )
        })?
    } else {
        ret as libc::c_int
    };
    // SAFETY: `fd` is what openat2 or openat just returned, checked to be a descriptor: open,
    // and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn open_beneath_dir(dir: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    open_beneath(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

pub fn open_file_beneath(dir: &OwnedFd, name: &str) -> io::Result<File> {
    open_beneath(dir, name, libc::O_RDONLY, 0).map(File::from)
}

/// Creates a new file that did not exist (O_EXCL), mode 0600.
pub fn create_exclusive(dir: &OwnedFd, name: &str) -> io::Result<File> {
    open_beneath(
        dir,
        name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        0o600,
    )
    .map(File::from)
}

pub struct Meta {
    pub size: u64,
    pub modified: SystemTime,
}

/// Size and time of a regular file beneath `dir`; `None` if absent or not a regular file
/// (symlinks are not followed and count as absent).
pub fn stat_beneath(dir: &OwnedFd, name: &str) -> io::Result<Option<Meta>> {
    let c = cstr(name)?;
    // SAFETY: `stat` is integers only, for which all-zero bytes are a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat reads the NUL-terminated `c` and writes one `stat` into `st`, which is
    // exclusively borrowed for the call.
    let ret = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if ret < 0 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::NotFound {
            Ok(None)
        } else {
            Err(err)
        };
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(None);
    }
    let modified = SystemTime::UNIX_EPOCH
        + Duration::new(
            u64::try_from(st.st_mtime).unwrap_or(0),
            u32::try_from(st.st_mtime_nsec).unwrap_or(0),
        );
    Ok(Some(Meta {
        size: u64::try_from(st.st_size).unwrap_or(0),
        modified,
    }))
}

pub fn unlink_beneath(dir: &OwnedFd, name: &str) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: unlinkat reads only the NUL-terminated `c`, alive until it returns.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) }).map(drop)
}

/// Hard-links `from` (in `from_dir`) to `to` (in `to_dir`); fails with `AlreadyExists` rather
/// than replace anything.
pub fn link_beneath(from_dir: &OwnedFd, from: &str, to_dir: &OwnedFd, to: &str) -> io::Result<()> {
    let (a, b) = (cstr(from)?, cstr(to)?);
    // SAFETY: linkat reads only the NUL-terminated `a` and `b`, alive until it returns (flags 0:
    // a symlink is linked itself, never followed).
    check(unsafe {
        libc::linkat(
            from_dir.as_raw_fd(),
            a.as_ptr(),
            to_dir.as_raw_fd(),
            b.as_ptr(),
            0,
        )
    })
    .map(drop)
}

pub fn sync_dir(dir: &OwnedFd) -> io::Result<()> {
    // SAFETY: fsync takes only the descriptor and touches no memory of ours.
    check(unsafe { libc::fsync(dir.as_raw_fd()) }).map(drop)
}

/// Sets an extended attribute of an open file.
pub fn set_xattr(file: &File, name: &str, value: &[u8]) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: fsetxattr reads the NUL-terminated `name` and `value.len()` bytes from `value`,
    // both alive until it returns.
    check(unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// An extended attribute of an open file, if it is set and at most `max` bytes long.
pub fn get_xattr(file: &File, name: &str, max: usize) -> Option<Vec<u8>> {
    let name = cstr(name).ok()?;
    let mut value = vec![0u8; max];
    // SAFETY: fgetxattr reads the NUL-terminated `name` and writes at most `value.len()` bytes
    // into `value`, which is exclusively borrowed for the call.
    let n = unsafe {
        libc::fgetxattr(
            file.as_raw_fd(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    value.truncate(n);
    Some(value)
}

/// Names in a directory, read through its handle.
pub fn read_dir_names(dir: &OwnedFd) -> io::Result<Vec<String>> {
    let proc_path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(proc_path)? {
        if let Ok(name) = entry?.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// Bytes available to unprivileged writers on the file system holding `path`.
pub fn free_space(path: &Path) -> io::Result<u64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: `statvfs` is integers only, for which all-zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs reads the NUL-terminated `c` and writes one `statvfs` into `st`, which
    // is exclusively borrowed for the call.
    check(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}
