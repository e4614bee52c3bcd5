//! An AF_PACKET socket on a host interface (the uplink, a fabric port): with
//! PACKET_VNET_HDR each frame carries the same 10-byte virtio_net_hdr a TAP's
//! does, so TSO super-frames and partial checksums cross it as they cross TAPs
//! (the kernel segments in software where the interface cannot).
//!
//! Unlike a TAP, a socket takes batches: the rx engine drains it with one
//! recvmmsg per readiness event, each frame landing where a TAP read puts it,
//! and send_batch writes a batch with one sendmmsg (mmsg.rs, shared with the
//! VXLAN underlay). Measured against a read() and a write() per frame on this
//! project's 2-core machine (docs/TRANSPARENT.md): half the syscalls per frame
//! forwarded (the TAP's side keeps one each), rates and CPU the same within
//! the runs' spread. A TPACKET_V3 ring was measured too and not kept: it hands
//! frames over a block at a time, so lone frames (ACKs, pings) wait for its
//! retire timer (ping 0.95 against 0.27 ms, TCP 10 to 14% slower).
use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_uint, c_void};

use crate::mmsg::{self, Receiver};
use crate::sys::{bind, close, grow_buffers, last_error, setsockopt, socket, IoVec, SockAddrIn, SOCK_CLOEXEC, SOCK_NONBLOCK};
use crate::tap::VNET_HDR_LEN;

const AF_PACKET: c_int = 17;
const SOCK_RAW: c_int = 3;
const ETH_P_ALL: u16 = 0x0003;
const SOL_PACKET: c_int = 263;
const PACKET_ADD_MEMBERSHIP: c_int = 1;
const PACKET_MR_PROMISC: u16 = 1;
const PACKET_VNET_HDR: c_int = 15;
const PACKET_IGNORE_OUTGOING: c_int = 23;
const SOL_SOCKET: c_int = 1;
const SO_ATTACH_FILTER: c_int = 26;
/// Socket buffers: the default (about 208 KiB) holds three TSO super-frames, and a TCP stream from
/// the LAN into a container overruns it between two reads (the kernel drops, the sender retransmits).
const PACKET_SOCKET_BUFFER: c_int = 8 << 20;

/// struct sock_filter: one classic BPF instruction.
#[repr(C)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// struct sock_fprog.
#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
const BPF_ALU_AND_K: u16 = 0x54;
/// SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT: the ancillary load "does the skb carry a VLAN tag".
const SKF_VLAN_TAG_PRESENT: u32 = (-0x1000i32 + 48) as u32;
/// SKF_AD_OFF + SKF_AD_VLAN_TAG: the ancillary load of the tag's TCI (priority, DEI, VID).
const SKF_VLAN_TAG: u32 = (-0x1000i32 + 44) as u32;
const VID_MASK: u32 = 0x0fff;

/// Takes only the frames of VLAN `vid` (802.1Q tagged with it; the kernel hands them over with the
/// tag taken out, so the network sees them untagged, and the uplink's flush tags what it sends).
fn one_vlan_only(vid: u16) -> [SockFilter; 7] {
    [
        SockFilter { code: BPF_LD_W_ABS, jt: 0, jf: 0, k: SKF_VLAN_TAG_PRESENT },
        SockFilter { code: BPF_JEQ_K, jt: 3, jf: 0, k: 0 },
        SockFilter { code: BPF_LD_W_ABS, jt: 0, jf: 0, k: SKF_VLAN_TAG },
        SockFilter { code: BPF_ALU_AND_K, jt: 0, jf: 0, k: VID_MASK },
        SockFilter { code: BPF_JEQ_K, jt: 1, jf: 0, k: vid as u32 },
        SockFilter { code: BPF_RET_K, jt: 0, jf: 0, k: 0 },
        SockFilter { code: BPF_RET_K, jt: 0, jf: 0, k: 0xffff_ffff },
    ]
}

/// Drops frames that carry an 802.1Q tag: the kernel takes the tag out of the frame before a
/// packet socket sees it, so another VLAN's traffic would reach the network untagged. What is
/// left (untagged frames) is taken whole.
static UNTAGGED_ONLY: [SockFilter; 4] = [
    SockFilter { code: BPF_LD_W_ABS, jt: 0, jf: 0, k: SKF_VLAN_TAG_PRESENT },
    SockFilter { code: BPF_JEQ_K, jt: 0, jf: 1, k: 0 },
    SockFilter { code: BPF_RET_K, jt: 0, jf: 0, k: 0xffff_ffff },
    SockFilter { code: BPF_RET_K, jt: 0, jf: 0, k: 0 },
];

// The kernel's layouts on 64-bit Linux: checked where they are declared, not found out at run time.
const _: () = assert!(std::mem::size_of::<SockAddrLl>() == 20);
const _: () = assert!(std::mem::size_of::<PacketMreq>() == 16);
const _: () = assert!(std::mem::size_of::<SockFilter>() == 8);
const _: () = assert!(std::mem::size_of::<SockFprog>() == 16);

/// struct sockaddr_ll (linux/if_packet.h).
#[repr(C)]
struct SockAddrLl {
    family: u16,
    protocol_be: u16,
    ifindex: c_int,
    hatype: u16,
    pkttype: u8,
    halen: u8,
    addr: [u8; 8],
}

/// struct packet_mreq.
#[repr(C)]
struct PacketMreq {
    ifindex: c_int,
    kind: u16,
    alen: u16,
    address: [u8; 8],
}

extern "C" {
    fn if_nametoindex(name: *const c_char) -> c_uint;
}

/// Opens a non-blocking AF_PACKET socket bound to interface `name`, with vnet headers,
/// without the frames the host itself sends on it, with the untagged frames only (`vlan` 0) or
/// those of one VLAN, and, when `promisc`, with the interface in promiscuous mode for as long as
/// the socket lives (frames for other MACs reach it).
pub fn packet_open(name: &str, promisc: bool, vlan: u16) -> Result<c_int, String> {
    if vlan > 4094 {
        return Err(format!("VLAN {} is out of range 0..4094", vlan));
    }
    let cname = CString::new(name).map_err(|_| format!("interface name {:?} has a NUL byte", name))?;
    unsafe {
        let ifindex = if_nametoindex(cname.as_ptr());
        if ifindex == 0 {
            return Err(last_error(&format!("interface {}", name)));
        }
        // Protocol 0 until bound: no frame of another interface is queued in between.
        let fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(last_error("socket(AF_PACKET)"));
        }
        let fail = |what: &str| -> Result<c_int, String> {
            let e = last_error(&format!("{} on {}", what, name));
            close(fd);
            Err(e)
        };
        let one: c_int = 1;
        let opt = &one as *const c_int as *const c_void;
        if setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, opt, 4) != 0 {
            return fail("PACKET_VNET_HDR");
        }
        if setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, opt, 4) != 0 {
            return fail("PACKET_IGNORE_OUTGOING");
        }
        grow_buffers(fd, PACKET_SOCKET_BUFFER);
        // The kernel copies the program: a local one is enough.
        let tagged = one_vlan_only(vlan);
        let prog = if vlan == 0 {
            SockFprog { len: UNTAGGED_ONLY.len() as u16, filter: UNTAGGED_ONLY.as_ptr() }
        } else {
            SockFprog { len: tagged.len() as u16, filter: tagged.as_ptr() }
        };
        if setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog as *const SockFprog as *const c_void, std::mem::size_of::<SockFprog>() as u32) != 0 {
            return fail("SO_ATTACH_FILTER");
        }
        if promisc {
            let mreq = PacketMreq { ifindex: ifindex as c_int, kind: PACKET_MR_PROMISC, alen: 0, address: [0; 8] };
            if setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq as *const PacketMreq as *const c_void, std::mem::size_of::<PacketMreq>() as u32) != 0 {
                return fail("PACKET_ADD_MEMBERSHIP");
            }
        }
        let sll = SockAddrLl { family: AF_PACKET as u16, protocol_be: ETH_P_ALL.to_be(), ifindex: ifindex as c_int, hatype: 0, pkttype: 0, halen: 0, addr: [0; 8] };
        if bind(fd, &sll as *const SockAddrLl as *const SockAddrIn, std::mem::size_of::<SockAddrLl>() as u32) != 0 {
            return fail("bind");
        }
        Ok(fd)
    }
}

/// The receive side (rx engine, packet ports): frame k lands at the slot's headroom with its vnet
/// header in the VNET_HDR_LEN bytes before it, exactly where a TAP read puts it, so the switch
/// cannot tell the two apart. Caller guarantees `headroom >= VNET_HDR_LEN`.
pub unsafe fn receiver(buf: *mut u8, slot_size: usize, slot_count: usize, headroom: usize) -> Receiver {
    Receiver::new(buf, slot_size, slot_count, headroom, VNET_HDR_LEN as usize, false)
}

/// Frame k of the last batch as the engine reports it: its length without the vnet header; 0, a
/// runt for the switch to count, for a message shorter than the header or larger than its slot
/// (MSG_TRUNC: a cut frame must not pass for a whole one), as a TAP's short read is reported.
pub fn frame_length(rx: &Receiver, k: usize) -> i32 {
    match rx.length(k) {
        Some(len) => len.saturating_sub(VNET_HDR_LEN as usize) as i32,
        None => 0,
    }
}

/// Sends each frame buf[offsets[i], +lengths[i]) behind its vnet header (the VNET_HDR_LEN bytes
/// before it) on a bound packet socket, so no address, with one sendmmsg per 64 frames; returns
/// how many the kernel took. Refusals as in mmsg::send_batch (lengths[i] = 0); a frame whose header
/// would start before the buffer or that ends past it is refused without a syscall.
pub unsafe fn send_batch(fd: c_int, buf: *mut u8, size: usize, offsets: *const u32, lengths: *mut u32, count: usize) -> u32 {
    let vnet = VNET_HDR_LEN as usize;
    mmsg::send_batch(fd, count, lengths, |i, _, _, iov| {
        let off = *offsets.add(i) as usize;
        let len = *lengths.add(i) as usize;
        if off < vnet || off.checked_add(len).map_or(true, |end| end > size) {
            return false;
        }
        *iov = IoVec { base: buf.add(off - vnet) as *mut c_void, len: len + vnet };
        true
    })
}
