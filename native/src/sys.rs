//! libc calls declared by hand (no libc crate here). x86_64 / aarch64 Linux.
#![allow(dead_code)]

use std::os::raw::{c_char, c_int, c_uint, c_ulong, c_void};

pub const O_RDONLY: c_int = 0;
pub const O_RDWR: c_int = 2;
pub const O_NONBLOCK: c_int = 0o4000;
pub const O_CLOEXEC: c_int = 0o2000000;
pub const O_CREAT: c_int = 0o100;
pub const CLONE_NEWNET: c_int = 0x4000_0000;

pub const EINTR: i32 = 4;
pub const EBADF: i32 = 9;
pub const EAGAIN: i32 = 11;
pub const ENOMEM: i32 = 12;
pub const ENODEV: i32 = 19;
pub const EFAULT: i32 = 14;
pub const EINVAL: i32 = 22;
pub const ENOTSOCK: i32 = 88;
pub const ENOBUFS: i32 = 105;
pub const EADDRNOTAVAIL: i32 = 99;

pub const AF_INET: c_int = 2;
pub const SOCK_DGRAM: c_int = 2;
pub const SOCK_NONBLOCK: c_int = 0o4000;
pub const SOCK_CLOEXEC: c_int = 0o2000000;
pub const SOL_SOCKET: c_int = 1;
pub const SO_SNDBUF: c_int = 7;
pub const SO_RCVBUF: c_int = 8;
pub const SO_SNDBUFFORCE: c_int = 32;
pub const SO_RCVBUFFORCE: c_int = 33;
pub const SOL_UDP: c_int = 17;
/// setsockopt/cmsg: the datagram size of a UDP GSO send (linux/udp.h).
pub const UDP_SEGMENT: c_int = 103;
/// setsockopt: receive coalesced datagrams; cmsg: their size.
pub const UDP_GRO: c_int = 104;
pub const MSG_TRUNC: c_int = 0x20;
pub const MSG_DONTWAIT: c_int = 0x40;

/// struct sockaddr_in: family in host order, port and address in network order.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockAddrIn {
    pub family: u16,
    pub port_be: u16,
    pub addr_be: u32,
    pub zero: [u8; 8],
}

impl SockAddrIn {
    /// `addr` and `port` in host order.
    pub fn new(addr: u32, port: u16) -> SockAddrIn {
        SockAddrIn { family: AF_INET as u16, port_be: port.to_be(), addr_be: addr.to_be(), zero: [0; 8] }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct IoVec {
    pub base: *mut c_void,
    pub len: usize,
}

/// struct msghdr as glibc lays it out on 64-bit Linux (56 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MsgHdr {
    pub name: *mut c_void,
    pub namelen: u32,
    pub iov: *mut IoVec,
    pub iovlen: usize,
    pub control: *mut c_void,
    pub controllen: usize,
    pub flags: c_int,
}

/// struct mmsghdr (64 bytes): one message of a sendmmsg/recvmmsg batch; `len` is what the kernel moved.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MMsgHdr {
    pub hdr: MsgHdr,
    pub len: u32,
}

impl MMsgHdr {
    pub const EMPTY: MMsgHdr = MMsgHdr {
        hdr: MsgHdr {
            name: std::ptr::null_mut(),
            namelen: 0,
            iov: std::ptr::null_mut(),
            iovlen: 0,
            control: std::ptr::null_mut(),
            controllen: 0,
            flags: 0,
        },
        len: 0,
    };
}

extern "C" {
    pub fn open(path: *const c_char, flags: c_int, ...) -> c_int;
    pub fn close(fd: c_int) -> c_int;
    pub fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize;
    pub fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    pub fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
    pub fn setns(fd: c_int, nstype: c_int) -> c_int;
    pub fn flock(fd: c_int, operation: c_int) -> c_int;
    pub fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int;
    pub fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: u32) -> c_int;
    pub fn bind(fd: c_int, addr: *const SockAddrIn, len: u32) -> c_int;
    pub fn getsockname(fd: c_int, addr: *mut SockAddrIn, len: *mut u32) -> c_int;
    pub fn sendmmsg(fd: c_int, msgs: *mut MMsgHdr, vlen: c_uint, flags: c_int) -> c_int;
    pub fn recvmmsg(fd: c_int, msgs: *mut MMsgHdr, vlen: c_uint, flags: c_int, timeout: *mut c_void) -> c_int;
    pub fn lseek(fd: c_int, offset: i64, whence: c_int) -> i64;
    pub fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    pub fn readlink(path: *const c_char, buf: *mut c_char, size: usize) -> isize;
    pub fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, offset: i64) -> *mut c_void;
    pub fn munmap(addr: *mut c_void, len: usize) -> c_int;
    pub fn unlink(path: *const c_char) -> c_int;
    pub fn listen(fd: c_int, backlog: c_int) -> c_int;
    pub fn accept4(fd: c_int, addr: *mut c_void, len: *mut u32, flags: c_int) -> c_int;
    pub fn connect(fd: c_int, addr: *const SockAddrUn, len: u32) -> c_int;
    pub fn recvmsg(fd: c_int, msg: *mut MsgHdr, flags: c_int) -> isize;
    pub fn sendmsg(fd: c_int, msg: *const MsgHdr, flags: c_int) -> isize;
    fn __errno_location() -> *mut c_int;
}

pub const SEEK_END: c_int = 2;
pub const F_GETFL: c_int = 3;
pub const F_SETFL: c_int = 4;
pub const F_ADD_SEALS: c_int = 1033;
pub const F_GET_SEALS: c_int = 1034;
pub const F_SEAL_SHRINK: c_int = 2;
pub const PROT_READ: c_int = 1;
pub const PROT_WRITE: c_int = 2;
pub const MAP_SHARED: c_int = 1;
pub const MAP_NORESERVE: c_int = 0x4000;
pub const MAP_FAILED: *mut c_void = !0usize as *mut c_void;
pub const AF_UNIX: c_int = 1;
pub const SOCK_STREAM: c_int = 1;
pub const SCM_RIGHTS: c_int = 1;
pub const MSG_CTRUNC: c_int = 0x8;
pub const MSG_NOSIGNAL: c_int = 0x4000;
pub const MSG_CMSG_CLOEXEC: c_int = 0x4000_0000;
pub const ECONNREFUSED: i32 = 111;
pub const ENOENT: i32 = 2;

/// struct sockaddr_un: a path of at most 107 bytes and its NUL.
#[repr(C)]
pub struct SockAddrUn {
    pub family: u16,
    pub path: [u8; 108],
}

impl SockAddrUn {
    pub fn new(path: &str) -> Result<SockAddrUn, String> {
        let bytes = path.as_bytes();
        if bytes.is_empty() || bytes.len() > 107 || bytes.contains(&0) {
            return Err(format!("socket path {path:?} must be 1 to 107 bytes with no NUL"));
        }
        let mut a = SockAddrUn { family: AF_UNIX as u16, path: [0; 108] };
        a.path[..bytes.len()].copy_from_slice(bytes);
        Ok(a)
    }
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
        24 => "EMFILE", 77 => "EBADFD", 88 => "ENOTSOCK", 95 => "EOPNOTSUPP", 98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL", 100 => "ENETDOWN", 101 => "ENETUNREACH", 105 => "ENOBUFS",
        _ => "",
    };
    if name.is_empty() { format!("{text} (errno {code})") } else { format!("{text} ({name})") }
}

pub fn last_error(what: &str) -> String {
    format!("{what}: {}", describe_errno(errno()))
}

// The kernel reads these layouts; a mismatch would be silent corruption, so fail the build instead.
const _: () = assert!(std::mem::size_of::<SockAddrIn>() == 16);
const _: () = assert!(std::mem::size_of::<IoVec>() == 16);
const _: () = assert!(std::mem::size_of::<MMsgHdr>() == 64);
const _: () = assert!(std::mem::size_of::<SockAddrUn>() == 110);

/// Asks for `size`-byte receive and send buffers. The *FORCE variants pass net.core.[rw]mem_max
/// when we are root; otherwise the plain ones get what the sysctl allows. A smaller buffer only
/// costs drops under bursts, so neither failing is an error.
pub unsafe fn grow_buffers(fd: c_int, size: c_int) {
    for (force, plain) in [(SO_RCVBUFFORCE, SO_RCVBUF), (SO_SNDBUFFORCE, SO_SNDBUF)] {
        let value = &size as *const c_int as *const c_void;
        if setsockopt(fd, SOL_SOCKET, force, value, 4) != 0 {
            setsockopt(fd, SOL_SOCKET, plain, value, 4);
        }
    }
}
