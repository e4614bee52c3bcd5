//! An AF_PACKET socket on a host interface, read and written like a TAP: with
//! PACKET_VNET_HDR each frame carries the same 10-byte virtio_net_hdr, so TSO
//! super-frames and partial checksums cross it as they cross TAPs (the kernel
//! segments in software where the interface cannot).
use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_uint, c_void};

use crate::sys::{bind, close, last_error, setsockopt, socket, SockAddrIn, SOCK_CLOEXEC, SOCK_NONBLOCK};

const AF_PACKET: c_int = 17;
const SOCK_RAW: c_int = 3;
const ETH_P_ALL: u16 = 0x0003;
const SOL_PACKET: c_int = 263;
const PACKET_ADD_MEMBERSHIP: c_int = 1;
const PACKET_MR_PROMISC: u16 = 1;
const PACKET_VNET_HDR: c_int = 15;
const PACKET_IGNORE_OUTGOING: c_int = 23;

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
/// without the frames the host itself sends on it, and, when `promisc`, with the interface
/// in promiscuous mode for as long as the socket lives (frames for other MACs reach it).
pub fn packet_open(name: &str, promisc: bool) -> Result<c_int, String> {
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
