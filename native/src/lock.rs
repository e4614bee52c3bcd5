//! An advisory lock on a file (flock), held for as long as its fd stays open.
//!
//! The daemon holds one on its state directory so that a second daemon (or a
//! `vsw system reset`) on the same directory is refused. flock is the right
//! primitive because the kernel drops it when the holder dies in any way,
//! SIGKILL included, so a crashed daemon never leaves a stale lock behind.

use crate::sys::*;
use std::ffi::CString;
use std::os::raw::{c_int, c_uint};

const LOCK_EX: c_int = 2;
const LOCK_NB: c_int = 4;

/// Opens (creating it, mode 0600) and locks `path`; the lock lives as long as the returned fd.
/// A lock held elsewhere is an error naming EWOULDBLOCK so the caller can say who to stop.
pub fn lock_file(path: &str) -> Result<c_int, String> {
    let c_path = CString::new(path).map_err(|_| format!("lock file path {path:?} contains a NUL byte"))?;
    unsafe {
        let fd = open(c_path.as_ptr(), O_RDWR | O_CREAT | O_CLOEXEC, 0o600 as c_uint);
        if fd < 0 {
            return Err(last_error(&format!("open {path}")));
        }
        loop {
            if flock(fd, LOCK_EX | LOCK_NB) == 0 {
                return Ok(fd);
            }
            let err = errno();
            if err == EINTR {
                continue;
            }
            close(fd);
            // EWOULDBLOCK is EAGAIN on Linux; name it the way flock(2) does.
            return Err(if err == EAGAIN { format!("flock {path}: the lock is held by another process (EWOULDBLOCK)") } else { format!("flock {path}: {}", describe_errno(err)) });
        }
    }
}
