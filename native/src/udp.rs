//! Batched UDP for the VXLAN underlay: one recvmmsg per readiness event and
//! one sendmmsg per batch, because Node's dgram costs a syscall and a JS call
//! per datagram (about 200k datagrams/s from one core, see DESIGN).
//!
//! Receive layout (rx engine, UDP ports): datagram k of a batch lands at
//! `slot k * slot_size + headroom - VXLAN_LEN`, so its 8-byte VXLAN header
//! fills the end of the headroom and the inner Ethernet frame starts exactly
//! where a TAP frame would. Nothing is copied to decapsulate.

use crate::sys::*;
use crate::tap::enter_netns;
use std::os::raw::{c_int, c_uint, c_void};
use std::ptr;

/// RFC 7348 header in front of the inner frame.
pub const VXLAN_LEN: usize = 8;
/// Messages per sendmmsg: the scratch arrays live on the stack (about 6 KB), so sending allocates nothing.
const SEND_CHUNK: usize = 64;
/// Socket buffers absorb bursts while JS is busy with the previous batch; the kernel default (208 KB) holds ~140 full datagrams.
const SOCKET_BUFFER: c_int = 4 << 20;

/// struct cmsghdr on x86_64/aarch64 (len is a size_t), then the data at offset 16.
#[repr(C)]
#[derive(Clone, Copy)]
struct CmsgHdr {
    len: usize,
    level: c_int,
    kind: c_int,
}
const CMSG_DATA: usize = std::mem::size_of::<CmsgHdr>();
/// CMSG_SPACE(sizeof(u16)) for UDP_SEGMENT: header plus the value, rounded to 8.
const SEGMENT_CMSG_SPACE: usize = CMSG_DATA + 8;
/// Room for the kernel's UDP_GRO cmsg (an int) and anything else it might add.
const RECV_CMSG_SPACE: usize = 64;

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
/// Refusals are reported like writeBatch: lengths[i] = 0. A descriptor outside the buffer or a port
/// above 65535 is refused without a syscall. A message the kernel rejects on its own (no route,
/// EMSGSIZE, a firewall EPERM) is refused and the rest of the batch still goes; a full socket or
/// device queue (EAGAIN, ENOBUFS) refuses the rest of the batch, since retrying each message would
/// cost a syscall per datagram to learn the same thing. The data path never blocks.
pub unsafe fn send_batch(fd: c_int, b: &SendBatch) -> u32 {
    let mut msgs = [MMsgHdr::EMPTY; SEND_CHUNK];
    let mut iov = [IoVec { base: ptr::null_mut(), len: 0 }; SEND_CHUNK];
    let mut names = [SockAddrIn::new(0, 0); SEND_CHUNK];
    let mut index = [0usize; SEND_CHUNK];
    let mut control = [[0u8; SEGMENT_CMSG_SPACE]; SEND_CHUNK];
    let mut sent = 0u32;
    let mut i = 0usize;
    while i < b.count {
        // Gather up to SEND_CHUNK valid descriptors.
        let mut n = 0usize;
        while i < b.count && n < SEND_CHUNK {
            let off = *b.offsets.add(i) as usize;
            let len = *b.lengths.add(i) as usize;
            let port = match b.ports {
                Ports::U16(p) => *p.add(i) as u32,
                Ports::U32(p) => *p.add(i),
            };
            if off.checked_add(len).map_or(false, |end| end <= b.size) && port <= 0xffff {
                names[n] = SockAddrIn::new(*b.addrs.add(i), port as u16);
                iov[n] = IoVec { base: b.buf.add(off) as *mut c_void, len };
                msgs[n].hdr.name = &mut names[n] as *mut SockAddrIn as *mut c_void;
                msgs[n].hdr.namelen = std::mem::size_of::<SockAddrIn>() as u32;
                msgs[n].hdr.iov = &mut iov[n];
                msgs[n].hdr.iovlen = 1;
                let segment = match b.segment_sizes {
                    Some(Ports::U16(p)) => *p.add(i) as usize,
                    Some(Ports::U32(p)) => *p.add(i) as usize,
                    None => 0,
                };
                if segment > 0 && segment < len && segment <= 0xffff {
                    let c = control[n].as_mut_ptr();
                    ptr::write_unaligned(c as *mut CmsgHdr, CmsgHdr { len: CMSG_DATA + 2, level: SOL_UDP, kind: UDP_SEGMENT });
                    ptr::write_unaligned(c.add(CMSG_DATA) as *mut u16, segment as u16);
                    msgs[n].hdr.control = c as *mut c_void;
                    msgs[n].hdr.controllen = SEGMENT_CMSG_SPACE;
                } else {
                    msgs[n].hdr.control = ptr::null_mut();
                    msgs[n].hdr.controllen = 0;
                }
                index[n] = i;
                n += 1;
            } else {
                *b.lengths.add(i) = 0;
            }
            i += 1;
        }
        // sendmmsg stops at the first message that fails and reports the ones before it;
        // the failing one's error comes from the next call, which starts with it.
        let mut k = 0usize;
        while k < n {
            let r = sendmmsg(fd, msgs.as_mut_ptr().add(k), (n - k) as c_uint, MSG_DONTWAIT);
            if r > 0 {
                k += r as usize;
                sent += r as u32;
                continue;
            }
            let err = if r < 0 { errno() } else { EAGAIN };
            if err == EINTR {
                continue;
            }
            if err == EAGAIN || err == ENOBUFS {
                for &j in &index[k..n] {
                    *b.lengths.add(j) = 0;
                }
                for j in i..b.count {
                    *b.lengths.add(j) = 0;
                }
                return sent;
            }
            *b.lengths.add(index[k]) = 0;
            k += 1;
        }
    }
    sent
}

/// The receive side's scratch, allocated once per rx engine: message headers, iovecs and source
/// addresses for every slot. The iovecs point at fixed places in the rx buffer, so a batch only
/// resets the fields the kernel writes back.
pub struct Receiver {
    msgs: Vec<MMsgHdr>,
    iov: Vec<IoVec>,
    names: Vec<SockAddrIn>,
    control: Vec<[u8; RECV_CMSG_SPACE]>,
}

impl Receiver {
    /// Caller guarantees `headroom >= VXLAN_LEN`, `headroom < slot_size` and a buffer of slot_size * slot_count bytes.
    pub unsafe fn new(buf: *mut u8, slot_size: usize, slot_count: usize, headroom: usize) -> Receiver {
        let mut r = Receiver {
            msgs: vec![MMsgHdr::EMPTY; slot_count],
            iov: Vec::with_capacity(slot_count),
            names: vec![SockAddrIn::new(0, 0); slot_count],
            control: vec![[0u8; RECV_CMSG_SPACE]; slot_count],
        };
        for k in 0..slot_count {
            let at = buf.add(k * slot_size + headroom - VXLAN_LEN);
            r.iov.push(IoVec { base: at as *mut c_void, len: slot_size - headroom + VXLAN_LEN });
        }
        // Both Vecs are complete: their heap blocks no longer move, so these pointers stay valid.
        for k in 0..slot_count {
            r.msgs[k].hdr.iov = r.iov.as_mut_ptr().add(k);
            r.msgs[k].hdr.iovlen = 1;
            r.msgs[k].hdr.name = r.names.as_mut_ptr().add(k) as *mut c_void;
            r.msgs[k].hdr.control = r.control.as_mut_ptr().add(k) as *mut c_void;
        }
        r
    }

    /// One recvmmsg for up to every slot: Ok(count), or Err(errno) (EAGAIN when nothing was queued).
    pub unsafe fn recv(&mut self, fd: c_int) -> Result<usize, i32> {
        for m in self.msgs.iter_mut() {
            m.hdr.namelen = std::mem::size_of::<SockAddrIn>() as u32;
            m.hdr.controllen = RECV_CMSG_SPACE;
            m.hdr.flags = 0;
        }
        loop {
            // MSG_DONTWAIT as well as O_NONBLOCK: a blocking fd handed to us must not stall the loop.
            let n = recvmmsg(fd, self.msgs.as_mut_ptr(), self.msgs.len() as c_uint, MSG_DONTWAIT, ptr::null_mut());
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = errno();
            if err != EINTR {
                return Err(err);
            }
        }
    }

    /// Message k of the last batch: (inner frame length or -1, source IPv4 in host order, source
    /// port, coalesced datagram size or 0). -1 marks a message shorter than the VXLAN header, or one
    /// larger than its slot (truncated). With UDP_GRO a message may hold several datagrams of the
    /// given size (the last may be shorter); the "inner length" is then the message length - 8.
    pub fn datagram(&self, k: usize) -> (i32, u32, u32, u32) {
        let m = &self.msgs[k];
        let len = m.len as usize;
        let inner = if len < VXLAN_LEN || m.hdr.flags & MSG_TRUNC != 0 { -1 } else { (len - VXLAN_LEN) as i32 };
        let segment = unsafe { self.gro_size(k) };
        let name = &self.names[k];
        if m.hdr.namelen as usize >= std::mem::size_of::<SockAddrIn>() && name.family == AF_INET as u16 {
            (inner, u32::from_be(name.addr_be), u16::from_be(name.port_be) as u32, segment)
        } else {
            (inner, 0, 0, segment)
        }
    }

    /// The UDP_GRO cmsg of message k: the size of the datagrams it coalesced, or 0.
    unsafe fn gro_size(&self, k: usize) -> u32 {
        let m = &self.msgs[k];
        let total = m.hdr.controllen.min(RECV_CMSG_SPACE);
        let base = self.control[k].as_ptr();
        let mut at = 0usize;
        while at + CMSG_DATA <= total {
            let h: CmsgHdr = ptr::read_unaligned(base.add(at) as *const CmsgHdr);
            if h.len < CMSG_DATA || at + h.len > total {
                break;
            }
            if h.level == SOL_UDP && h.kind == UDP_GRO && h.len >= CMSG_DATA + 4 {
                return ptr::read_unaligned(base.add(at + CMSG_DATA) as *const c_int).max(0) as u32;
            }
            at += (h.len + 7) & !7;
        }
        0
    }
}

/// Errors after which polling the socket again would spin or make no sense. Everything else
/// (a queued ICMP error, ENOMEM) is consumed by the failing call and the port keeps running.
pub fn fatal_recv_error(err: i32) -> bool {
    err == EBADF || err == ENOTSOCK || err == EINVAL || err == EFAULT
}
