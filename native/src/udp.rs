//! Batched UDP for the VXLAN underlay: one recvmmsg per readiness event and
//! one sendmmsg per batch (mmsg.rs, shared with the uplink's packet socket),
//! because Node's dgram costs a syscall and a JS call per datagram (about 200k
//! datagrams/s from one core, see DESIGN).
//!
//! Receive layout (rx engine, UDP ports): datagram k of a batch lands at
//! `slot k * slot_size + headroom - VXLAN_LEN`, so its 8-byte VXLAN header
//! fills the end of the headroom and the inner Ethernet frame starts exactly
//! where a TAP frame would. Nothing is copied to decapsulate.

use crate::mmsg::{self, CmsgHdr, Receiver, CMSG_DATA, SEND_CHUNK};
use crate::sys::*;
use crate::tap::enter_netns;
use std::os::raw::{c_int, c_void};
use std::ptr;

/// RFC 7348 header in front of the inner frame.
pub const VXLAN_LEN: usize = 8;
/// Socket buffers absorb bursts while JS is busy with the previous batch; the kernel default (208 KB) holds ~140 full datagrams.
const SOCKET_BUFFER: c_int = 4 << 20;
/// CMSG_SPACE(sizeof(u16)) for UDP_SEGMENT: header plus the value, rounded to 8.
const SEGMENT_CMSG_SPACE: usize = CMSG_DATA + 8;

pub struct UdpOptions<'a> {
    pub bind: u32,
    pub port: u16,
    /// Ask for coalesced datagrams (UDP_GRO): one message may then hold many, all of one size but the last.
    pub gro: bool,
    pub netns: Option<&'a str>,
}

/// An AF_INET datagram socket, non-blocking, bound; created inside `netns` when given
/// (no SO_REUSEADDR: a second owner of the VXLAN port, such as a kernel vxlan device or another
/// daemon, must be an EADDRINUSE, not a silent split of the traffic)
/// (a socket belongs to the namespace it was created in, so only the creating thread switches).
pub fn udp_open(opts: &UdpOptions) -> Result<c_int, String> {
    let _guard = match opts.netns {
        Some(path) => Some(enter_netns(path)?),
        None => None,
    };
    unsafe {
        let fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(last_error("socket(AF_INET, SOCK_DGRAM)"));
        }
        grow_buffers(fd, SOCKET_BUFFER);
        if opts.gro {
            let one: c_int = 1;
            if setsockopt(fd, SOL_UDP, UDP_GRO, &one as *const c_int as *const c_void, 4) != 0 {
                let e = last_error("UDP_GRO");
                close(fd);
                return Err(e);
            }
        }
        let addr = SockAddrIn::new(opts.bind, opts.port);
        if bind(fd, &addr, std::mem::size_of::<SockAddrIn>() as u32) != 0 {
            let e = last_error(&format!("bind {}:{}", std::net::Ipv4Addr::from(opts.bind), opts.port));
            close(fd);
            return Err(e);
        }
        Ok(fd)
    }
}

/// The bound port, for sockets bound to port 0.
pub fn local_port(fd: c_int) -> Result<u16, String> {
    let mut addr = SockAddrIn::new(0, 0);
    let mut len = std::mem::size_of::<SockAddrIn>() as u32;
    if unsafe { getsockname(fd, &mut addr, &mut len) } != 0 {
        return Err(last_error(&format!("getsockname on fd {fd}")));
    }
    if addr.family != AF_INET as u16 {
        return Err(format!("fd {fd} is not an IPv4 socket"));
    }
    Ok(u16::from_be(addr.port_be))
}

/// Destination ports come as a Uint16Array or a Uint32Array.
#[derive(Clone, Copy)]
pub enum Ports {
    U16(*const u16),
    U32(*const u32),
}

/// One batch for sendmmsg. The caller checked that offsets, lengths, addrs and ports hold `count` entries.
pub struct SendBatch {
    pub buf: *mut u8,
    pub size: usize,
    pub offsets: *const u32,
    pub lengths: *mut u32,
    pub count: usize,
    pub addrs: *const u32,
    pub ports: Ports,
    /// UDP GSO: a nonzero entry makes that message a run of datagrams of this size (the last may be
    /// shorter) that the kernel cuts up, so the whole run costs one trip through the stack.
    pub segment_sizes: Option<Ports>,
}

/// Sends each datagram buf[offsets[i], +lengths[i]) to addrs[i]:ports[i]; returns how many the kernel took.
///
/// Refusals are reported like writeBatch (lengths[i] = 0, see mmsg::send_batch for which ones);
/// a descriptor outside the buffer or a port above 65535 is refused without a syscall.
pub unsafe fn send_batch(fd: c_int, b: &SendBatch) -> u32 {
    // Names and control messages of one chunk: message k uses entry k.
    let mut names = [SockAddrIn::new(0, 0); SEND_CHUNK];
    let mut control = [[0u8; SEGMENT_CMSG_SPACE]; SEND_CHUNK];
    mmsg::send_batch(fd, b.count, b.lengths, |i, k, msg, iov| {
        let off = *b.offsets.add(i) as usize;
        let len = *b.lengths.add(i) as usize;
        let port = match b.ports {
            Ports::U16(p) => *p.add(i) as u32,
            Ports::U32(p) => *p.add(i),
        };
        if !off.checked_add(len).map_or(false, |end| end <= b.size) || port > 0xffff {
            return false;
        }
        names[k] = SockAddrIn::new(*b.addrs.add(i), port as u16);
        *iov = IoVec { base: b.buf.add(off) as *mut c_void, len };
        msg.hdr.name = &mut names[k] as *mut SockAddrIn as *mut c_void;
        msg.hdr.namelen = std::mem::size_of::<SockAddrIn>() as u32;
        let segment = match b.segment_sizes {
            Some(Ports::U16(p)) => *p.add(i) as usize,
            Some(Ports::U32(p)) => *p.add(i) as usize,
            None => 0,
        };
        if segment > 0 && segment < len && segment <= 0xffff {
            let c = control[k].as_mut_ptr();
            ptr::write_unaligned(c as *mut CmsgHdr, CmsgHdr { len: CMSG_DATA + 2, level: SOL_UDP, kind: UDP_SEGMENT });
            ptr::write_unaligned(c.add(CMSG_DATA) as *mut u16, segment as u16);
            msg.hdr.control = c as *mut c_void;
            msg.hdr.controllen = SEGMENT_CMSG_SPACE;
        }
        true
    })
}

/// The receive side (rx engine, UDP ports): datagrams land VXLAN_LEN bytes before the headroom,
/// with their senders and UDP_GRO sizes. Caller guarantees `headroom >= VXLAN_LEN`.
pub unsafe fn receiver(buf: *mut u8, slot_size: usize, slot_count: usize, headroom: usize) -> Receiver {
    Receiver::new(buf, slot_size, slot_count, headroom, VXLAN_LEN, true)
}

/// Message k of the last batch: (inner frame length or -1, source IPv4 in host order, source
/// port, coalesced datagram size or 0). -1 marks a message shorter than the VXLAN header, or one
/// larger than its slot (truncated). With UDP_GRO a message may hold several datagrams of the
/// given size (the last may be shorter); the "inner length" is then the message length - 8.
pub fn datagram(rx: &Receiver, k: usize) -> (i32, u32, u32, u32) {
    let inner = match rx.length(k) {
        Some(len) if len >= VXLAN_LEN => (len - VXLAN_LEN) as i32,
        _ => -1,
    };
    let segment = unsafe { rx.control_int(k, SOL_UDP, UDP_GRO) }.map_or(0, |s| s.max(0) as u32);
    let (addr, port) = rx.source(k).unwrap_or((0, 0));
    (inner, addr, port, segment)
}

/// Errors after which polling the socket again would spin or make no sense. Everything else
/// (a queued ICMP error, ENOMEM) is consumed by the failing call and the port keeps running.
pub fn fatal_recv_error(err: i32) -> bool {
    err == EBADF || err == ENOTSOCK || err == EINVAL || err == EFAULT
}
