//! TAP devices created or attached inside a network namespace.
//!
//! The device is created in the namespace of the thread that opens
//! /dev/net/tun, so we switch only the calling thread into the target
//! namespace (setns is per thread for CLONE_NEWNET), open and configure, and
//! switch back. Nothing has to be moved afterwards, and a persistent TAP can be
//! re-attached later by name the same way.

use crate::sys::*;
use std::ffi::CString;
use std::os::raw::{c_int, c_ulong};

const TUNSETIFF: c_ulong = 0x4004_54ca;
const TUNSETPERSIST: c_ulong = 0x4004_54cb;
const TUNSETOFFLOAD: c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: c_ulong = 0x4004_54d8;

const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
const IFF_TUN_EXCL: i16 = -0x8000; // 0x8000 as a C short

const TUN_F_CSUM: c_ulong = 0x01;
const TUN_F_TSO4: c_ulong = 0x02;
const TUN_F_TSO6: c_ulong = 0x04;
const TUN_F_TSO_ECN: c_ulong = 0x08;

pub const VNET_HDR_LEN: c_int = 10;
const IFNAMSIZ: usize = 16;

/// struct ifreq: 16 bytes of name, then a union whose first member we use is `short ifr_flags`.
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

pub struct TapOptions<'a> {
    pub name: &'a str,
    pub netns: Option<&'a str>,
    pub exclusive: bool,
    pub persist: bool,
}

/// Restores the thread's original network namespace when dropped, even on early return.
pub struct NamespaceGuard {
    original: c_int,
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        unsafe {
            if setns(self.original, CLONE_NEWNET) != 0 {
                // Carrying on in the container's namespace would put every later
                // TAP and socket of this thread in the wrong place.
                eprintln!("vsw native: {}; aborting", last_error("setns back to the original network namespace"));
                std::process::abort();
            }
            close(self.original);
        }
    }
}

pub fn enter_netns(path: &str) -> Result<NamespaceGuard, String> {
    let own = CString::new("/proc/thread-self/ns/net").unwrap();
    let target = CString::new(path).map_err(|_| format!("namespace path {path:?} contains a NUL byte"))?;
    unsafe {
        let original = open(own.as_ptr(), O_RDONLY | O_CLOEXEC);
        if original < 0 {
            return Err(last_error("open /proc/thread-self/ns/net"));
        }
        let nsfd = open(target.as_ptr(), O_RDONLY | O_CLOEXEC);
        if nsfd < 0 {
            let e = last_error(&format!("open network namespace {path}"));
            close(original);
            return Err(e);
        }
        let rc = setns(nsfd, CLONE_NEWNET);
        let err = errno();
        close(nsfd);
        if rc != 0 {
            close(original);
            return Err(format!("setns into {path}: {}", describe_errno(err)));
        }
        Ok(NamespaceGuard { original })
    }
}

/// Opens (creates, or attaches to an existing persistent) TAP and returns its non-blocking fd.
pub fn tap_open(opts: &TapOptions) -> Result<c_int, String> {
    let name = opts.name.as_bytes();
    if name.is_empty() || name.len() >= IFNAMSIZ {
        return Err(format!("interface name {:?} must be 1 to {} bytes long", opts.name, IFNAMSIZ - 1));
    }
    let _guard = match opts.netns {
        Some(path) => Some(enter_netns(path)?),
        None => None,
    };
    let dev = CString::new("/dev/net/tun").unwrap();
    unsafe {
        let fd = open(dev.as_ptr(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if fd < 0 {
            return Err(last_error("open /dev/net/tun"));
        }
        let fail = |what: String| -> Result<c_int, String> {
            let e = last_error(&what);
            close(fd);
            Err(e)
        };
        let mut req = IfReq { name: [0; IFNAMSIZ], flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, _pad: [0; 22] };
        req.name[..name.len()].copy_from_slice(name);
        if opts.exclusive {
            req.flags |= IFF_TUN_EXCL;
        }
        if ioctl(fd, TUNSETIFF, &mut req as *mut IfReq) != 0 {
            return fail(format!("TUNSETIFF on {}", opts.name));
        }
        let hdr_len: c_int = VNET_HDR_LEN;
        if ioctl(fd, TUNSETVNETHDRSZ, &hdr_len as *const c_int) != 0 {
            return fail(format!("TUNSETVNETHDRSZ on {}", opts.name));
        }
        // TUNSETOFFLOAD takes its flags by value, unlike the other TUN ioctls.
        if ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN) != 0 {
            return fail(format!("TUNSETOFFLOAD on {}", opts.name));
        }
        if ioctl(fd, TUNSETPERSIST, opts.persist as c_ulong) != 0 {
            return fail(format!("TUNSETPERSIST on {}", opts.name));
        }
        Ok(fd)
    }
}

pub fn tap_set_persist(fd: c_int, persist: bool) -> Result<(), String> {
    unsafe {
        if ioctl(fd, TUNSETPERSIST, persist as c_ulong) != 0 {
            return Err(last_error("TUNSETPERSIST"));
        }
    }
    Ok(())
}

const SIOCGIFFLAGS: c_ulong = 0x8913;
const SIOCGIFADDR: c_ulong = 0x8915;
const SIOCGIFMTU: c_ulong = 0x8921;
const SIOCGIFHWADDR: c_ulong = 0x8927;
const IFF_UP: i16 = 0x1;

/// struct ifreq with the union seen as raw bytes: flags (short), mtu (int), or a struct sockaddr.
#[repr(C)]
struct IfReqRaw {
    name: [u8; IFNAMSIZ],
    data: [u8; 24],
}

const _: () = assert!(std::mem::size_of::<IfReqRaw>() == 40);

/// What the daemon checks of an interface it re-attaches to after a restart.
pub struct LinkInfo {
    pub mac: [u8; 6],
    pub up: bool,
    pub mtu: u32,
    /// The primary IPv4 address, host order; None when the interface has none.
    pub ipv4: Option<u32>,
}

/// The MAC, admin state, MTU and primary IPv4 address of `name` inside the
/// namespace at `netns` (or the caller's), from ioctls on a socket opened
/// there: no ip(8) process per interface, so a restart with a thousand
/// endpoints checks them all in milliseconds. Ok(None) when there is no such interface.
pub fn link_info(name: &str, netns: Option<&str>) -> Result<Option<LinkInfo>, String> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= IFNAMSIZ {
        return Err(format!("interface name {name:?} must be 1 to {} bytes long", IFNAMSIZ - 1));
    }
    let _guard = match netns {
        Some(path) => Some(enter_netns(path)?),
        None => None,
    };
    unsafe {
        let sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(last_error("socket(AF_INET, SOCK_DGRAM)"));
        }
        let query = |request: c_ulong| -> Result<Option<[u8; 24]>, i32> {
            let mut req = IfReqRaw { name: [0; IFNAMSIZ], data: [0; 24] };
            req.name[..bytes.len()].copy_from_slice(bytes);
            if ioctl(sock, request, &mut req as *mut IfReqRaw) == 0 {
                Ok(Some(req.data))
            } else {
                let err = errno();
                if err == EADDRNOTAVAIL { Ok(None) } else { Err(err) }
            }
        };
        let result = (|| {
            let flags = match query(SIOCGIFFLAGS) {
                Ok(d) => d.unwrap_or([0; 24]),
                Err(e) if e == ENODEV => return Ok(None),
                Err(e) => return Err(format!("SIOCGIFFLAGS on {name}: {}", describe_errno(e))),
            };
            let hw = query(SIOCGIFHWADDR).map_err(|e| format!("SIOCGIFHWADDR on {name}: {}", describe_errno(e)))?.unwrap_or([0; 24]);
            let mtu = query(SIOCGIFMTU).map_err(|e| format!("SIOCGIFMTU on {name}: {}", describe_errno(e)))?.unwrap_or([0; 24]);
            let addr = query(SIOCGIFADDR).map_err(|e| format!("SIOCGIFADDR on {name}: {}", describe_errno(e)))?;
            let mut mac = [0u8; 6];
            // struct sockaddr: sa_family (2 bytes), then the hardware address in sa_data.
            mac.copy_from_slice(&hw[2..8]);
            // struct sockaddr_in: family, port, then the address in network order.
            let ipv4 = addr.map(|a| u32::from_be_bytes([a[4], a[5], a[6], a[7]]));
            Ok(Some(LinkInfo {
                mac,
                up: i16::from_ne_bytes([flags[0], flags[1]]) & IFF_UP != 0,
                mtu: i32::from_ne_bytes([mtu[0], mtu[1], mtu[2], mtu[3]]) as u32,
                ipv4,
            }))
        })();
        close(sock);
        result
    }
}

/// A non-blocking TCP socket made inside the network namespace at `path` (a socket keeps the
/// namespace it was made in): the load balancer's health probes connect from a backend's own
/// compartment, where its address is reachable whatever the network's mode.
pub fn tcp_socket_in(path: &str) -> Result<c_int, String> {
    const SOCK_STREAM: c_int = 1;
    let _guard = enter_netns(path)?;
    unsafe {
        let fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(last_error(&format!("socket in network namespace {path}")));
        }
        Ok(fd)
    }
}
