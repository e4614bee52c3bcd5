//! libc calls declared by hand (no libc crate here). x86_64 / aarch64 Linux.
#![allow(dead_code)]

use std::os::raw::{c_char, c_int, c_ulong, c_void};

pub const O_RDONLY: c_int = 0;
pub const O_RDWR: c_int = 2;
pub const O_NONBLOCK: c_int = 0o4000;
pub const O_CLOEXEC: c_int = 0o2000000;
pub const CLONE_NEWNET: c_int = 0x4000_0000;

pub const EINTR: i32 = 4;
pub const EAGAIN: i32 = 11;

extern "C" {
    pub fn open(path: *const c_char, flags: c_int, ...) -> c_int;
    pub fn close(fd: c_int) -> c_int;
    pub fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize;
    pub fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    pub fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
    pub fn setns(fd: c_int, nstype: c_int) -> c_int;
    fn __errno_location() -> *mut c_int;
}

pub fn errno() -> i32 {
    unsafe { *__errno_location() }
}

/// "Device or resource busy (EBUSY)": strerror text plus the symbolic name people search for.
pub fn describe_errno(code: i32) -> String {
    let text = std::io::Error::from_raw_os_error(code).to_string();
    let text = match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let name = match code {
        1 => "EPERM", 2 => "ENOENT", 5 => "EIO", 9 => "EBADF", 11 => "EAGAIN", 12 => "ENOMEM",
        13 => "EACCES", 16 => "EBUSY", 17 => "EEXIST", 19 => "ENODEV", 22 => "EINVAL",
        24 => "EMFILE", 77 => "EBADFD", 95 => "EOPNOTSUPP", 100 => "ENETDOWN",
        _ => "",
    };
    if name.is_empty() { format!("{text} (errno {code})") } else { format!("{text} ({name})") }
}

pub fn last_error(what: &str) -> String {
    format!("{what}: {}", describe_errno(errno()))
}
