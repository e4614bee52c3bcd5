//! Socket I/O in batches, shared by the VXLAN underlay (udp.rs) and the physical uplink
//! (packet.rs): one recvmmsg per readiness event straight into the rx slots, and one sendmmsg per
//! batch of up to 64 messages. A syscall per frame is what the rest of the data path avoids; these
//! two sockets can take a batch, so they do.

use crate::sys::*;
use std::os::raw::{c_int, c_uint, c_void};
use std::ptr;

/// Messages per sendmmsg: the scratch arrays live on the stack (about 6 KB), so sending allocates nothing.
pub const SEND_CHUNK: usize = 64;
/// Room for the kernel's UDP_GRO cmsg (an int) and anything else it might add.
const RECV_CMSG_SPACE: usize = 64;

/// struct cmsghdr on x86_64/aarch64 (len is a size_t), then the data at offset 16.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CmsgHdr {
    pub len: usize,
    pub level: c_int,
    pub kind: c_int,
}
pub const CMSG_DATA: usize = std::mem::size_of::<CmsgHdr>();

/// Sends `count` messages with one sendmmsg per SEND_CHUNK; returns how many the kernel took.
///
/// `fill(i, k, msg, iov)` makes descriptor i message k of the current chunk: it points `iov` at the
/// bytes and sets the msg's name and control if the socket needs them (both start empty), or
/// returns false to refuse the descriptor without a syscall.
///
/// Refusals are reported like writeBatch: lengths[i] = 0. A message the kernel rejects on its own
/// (no route, EMSGSIZE, a malformed vnet header, a firewall EPERM) is refused and the rest of the
/// batch still goes; a full socket or device queue (EAGAIN, ENOBUFS) refuses the rest of the
/// batch, since retrying each message would cost a syscall per message to learn the same thing.
/// The data path never blocks.
pub unsafe fn send_batch<F>(fd: c_int, count: usize, lengths: *mut u32, mut fill: F) -> u32
where
    F: FnMut(usize, usize, &mut MMsgHdr, &mut IoVec) -> bool,
{
    let mut msgs = [MMsgHdr::EMPTY; SEND_CHUNK];
    let mut iov = [IoVec { base: ptr::null_mut(), len: 0 }; SEND_CHUNK];
    let mut index = [0usize; SEND_CHUNK];
    let mut sent = 0u32;
    let mut i = 0usize;
    while i < count {
        let mut n = 0usize;
        while i < count && n < SEND_CHUNK {
            msgs[n] = MMsgHdr::EMPTY;
            if fill(i, n, &mut msgs[n], &mut iov[n]) {
                msgs[n].hdr.iov = &mut iov[n];
                msgs[n].hdr.iovlen = 1;
                index[n] = i;
                n += 1;
            } else {
                *lengths.add(i) = 0;
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
                    *lengths.add(j) = 0;
                }
                for j in i..count {
                    *lengths.add(j) = 0;
                }
                return sent;
            }
            *lengths.add(index[k]) = 0;
            k += 1;
        }
    }
    sent
}

/// The receive side's scratch, allocated once per rx engine and kind of socket: a message header
/// and an iovec for every slot, and, for sockets that report them, source addresses and control
/// messages. The iovecs point at fixed places in the rx buffer, so a batch only resets the fields
/// the kernel writes back.
pub struct Receiver {
    msgs: Vec<MMsgHdr>,
    iov: Vec<IoVec>,
    names: Vec<SockAddrIn>,
    control: Vec<[u8; RECV_CMSG_SPACE]>,
    addressed: bool,
}

impl Receiver {
    /// Message k lands at `slot k * slot_size + headroom - prefix`: its first `prefix` bytes (a
    /// VXLAN header, a vnet header) end where a TAP frame would start, so the frame behind them
    /// needs no copy. `addressed`: keep each message's IPv4 source and control messages (UDP); a
    /// packet socket bound to one interface has nothing there worth a syscall's extra copies.
    ///
    /// Caller guarantees `prefix <= headroom < slot_size` and a buffer of slot_size * slot_count bytes.
    pub unsafe fn new(buf: *mut u8, slot_size: usize, slot_count: usize, headroom: usize, prefix: usize, addressed: bool) -> Receiver {
        let extra = if addressed { slot_count } else { 0 };
        let mut r = Receiver {
            msgs: vec![MMsgHdr::EMPTY; slot_count],
            iov: Vec::with_capacity(slot_count),
            names: vec![SockAddrIn::new(0, 0); extra],
            control: vec![[0u8; RECV_CMSG_SPACE]; extra],
            addressed,
        };
        for k in 0..slot_count {
            let at = buf.add(k * slot_size + headroom - prefix);
            r.iov.push(IoVec { base: at as *mut c_void, len: slot_size - headroom + prefix });
        }
        // Every Vec is complete: their heap blocks no longer move, so these pointers stay valid.
        for k in 0..slot_count {
            r.msgs[k].hdr.iov = r.iov.as_mut_ptr().add(k);
            r.msgs[k].hdr.iovlen = 1;
            if addressed {
                r.msgs[k].hdr.name = r.names.as_mut_ptr().add(k) as *mut c_void;
                r.msgs[k].hdr.control = r.control.as_mut_ptr().add(k) as *mut c_void;
            }
        }
        r
    }

    /// One recvmmsg for up to every slot: Ok(count), or Err(errno) (EAGAIN when nothing was queued).
    pub unsafe fn recv(&mut self, fd: c_int) -> Result<usize, i32> {
        let addressed = self.addressed;
        for m in self.msgs.iter_mut() {
            if addressed {
                m.hdr.namelen = std::mem::size_of::<SockAddrIn>() as u32;
                m.hdr.controllen = RECV_CMSG_SPACE;
            }
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

    /// Message k of the last batch: its length with the prefix, or None when it was larger than its
    /// slot (MSG_TRUNC: the kernel cut it, so what landed is not the message).
    pub fn length(&self, k: usize) -> Option<usize> {
        let m = &self.msgs[k];
        if m.hdr.flags & MSG_TRUNC != 0 {
            None
        } else {
            Some(m.len as usize)
        }
    }

    /// The IPv4 sender of message k (address and port in host order), or None (not addressed, or not IPv4).
    pub fn source(&self, k: usize) -> Option<(u32, u32)> {
        if !self.addressed {
            return None;
        }
        let (m, name) = (&self.msgs[k], &self.names[k]);
        if m.hdr.namelen as usize >= std::mem::size_of::<SockAddrIn>() && name.family == AF_INET as u16 {
            Some((u32::from_be(name.addr_be), u16::from_be(name.port_be) as u32))
        } else {
            None
        }
    }

    /// The int-valued control message (level, kind) of message k, if the kernel attached one.
    pub unsafe fn control_int(&self, k: usize, level: c_int, kind: c_int) -> Option<c_int> {
        if !self.addressed {
            return None;
        }
        let total = self.msgs[k].hdr.controllen.min(RECV_CMSG_SPACE);
        let base = self.control[k].as_ptr();
        let mut at = 0usize;
        while at + CMSG_DATA <= total {
            let h: CmsgHdr = ptr::read_unaligned(base.add(at) as *const CmsgHdr);
            if h.len < CMSG_DATA || at + h.len > total {
                break;
            }
            if h.level == level && h.kind == kind && h.len >= CMSG_DATA + 4 {
                return Some(ptr::read_unaligned(base.add(at + CMSG_DATA) as *const c_int));
            }
            at += (h.len + 7) & !7;
        }
        None
    }
}
