//! Software TSO and checksum completion, for egresses that cannot take what a
//! TAP with offloads hands us: a VXLAN underlay, an uplink without offload, a
//! policy that must see every segment.
//!
//! Input is a frame with its 10-byte virtio_net_hdr in the bytes before it
//! (the rx slot layout). The header lengths come from parsing the frame, not
//! from hdr_len: the kernel fills hdr_len with the skb's linear length, which
//! may include payload, so hdr_len is only checked to lie within the frame.
//! csum_start/csum_offset are not needed either, since every segment's TCP
//! checksum is computed whole.
//!
//! Every length and offset is checked before it is used; anything inconsistent
//! returns a negative code and writes nothing. Nothing here allocates.

use crate::csum;
use std::ptr;

pub const MALFORMED: i32 = -1;
/// Well-formed but not handled: UFO, GSO_NONE given to segmentation, IPv6 extension headers, jumbograms.
pub const UNSUPPORTED: i32 = -2;
pub const TOO_MANY_SEGMENTS: i32 = -3;
/// An output offset leaves no room for its segment (or its vnet header) inside the output buffer.
pub const NO_ROOM: i32 = -4;

pub const VNET_LEN: usize = 10;
const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;
const IPPROTO_TCP: u8 = 6;

/// Ethernet, two VLAN tags, a 60-byte IPv4 header and a 60-byte TCP header take 142 bytes.
const MAX_HEADERS: usize = 256;

fn be16(b: &[u8], at: usize) -> usize {
    ((b[at] as usize) << 8) | b[at + 1] as usize
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn le16(b: &[u8], at: usize) -> usize {
    b[at] as usize | ((b[at + 1] as usize) << 8)
}

/// Where the headers of a TCP frame are. `end` is the end of the TCP header (the bytes copied in
/// front of every segment), `ip_end` the end of the IP packet (the frame may carry padding after it).
struct Headers {
    v4: bool,
    l3: usize,
    l4: usize,
    end: usize,
    ip_end: usize,
}

/// Parses Ethernet (up to two VLAN tags), IPv4 or IPv6 without extension headers, and TCP.
/// `hdr` holds the frame's first bytes; `frame_len` bounds the IP length fields.
fn parse(hdr: &[u8], frame_len: usize) -> Result<Headers, i32> {
    if hdr.len() < 14 {
        return Err(MALFORMED);
    }
    let mut l3 = 14;
    let mut ether_type = be16(hdr, 12);
    for _ in 0..2 {
        if ether_type == 0x8100 || ether_type == 0x88a8 {
            if hdr.len() < l3 + 4 {
                return Err(MALFORMED);
            }
            ether_type = be16(hdr, l3 + 2);
            l3 += 4;
        }
    }
    let (v4, l4, ip_end) = match ether_type {
        0x0800 => {
            if hdr.len() < l3 + 20 || hdr[l3] >> 4 != 4 {
                return Err(MALFORMED);
            }
            let ihl = ((hdr[l3] & 0x0f) as usize) * 4;
            let total = be16(hdr, l3 + 2);
            // A fragment cannot be segmented: only its first piece has a TCP header.
            if ihl < 20 || total < ihl || hdr[l3 + 9] != IPPROTO_TCP || be16(hdr, l3 + 6) & 0x3fff != 0 {
                return Err(MALFORMED);
            }
            (true, l3 + ihl, l3 + total)
        }
        0x86dd => {
            if hdr.len() < l3 + 40 || hdr[l3] >> 4 != 6 {
                return Err(MALFORMED);
            }
            let payload = be16(hdr, l3 + 4);
            if hdr[l3 + 6] != IPPROTO_TCP || payload == 0 {
                return Err(UNSUPPORTED);
            }
            (false, l3 + 40, l3 + 40 + payload)
        }
        _ => return Err(MALFORMED),
    };
    if ip_end > frame_len || hdr.len() < l4 + 20 {
        return Err(MALFORMED);
    }
    let end = l4 + ((hdr[l4 + 12] >> 4) as usize) * 4;
    if end < l4 + 20 || end > ip_end || end > hdr.len() {
        return Err(MALFORMED);
    }
    Ok(Headers { v4, l3, l4, end, ip_end })
}

/// The one's complement sum of the TCP pseudo-header for an L4 length.
fn pseudo_sum(seg: &[u8], h: &Headers, l4_len: usize) -> u32 {
    let (from, to) = if h.v4 { (h.l3 + 12, h.l3 + 20) } else { (h.l3 + 8, h.l3 + 40) };
    let mut sum = IPPROTO_TCP as u32 + (l4_len as u32 >> 16) + (l4_len as u32 & 0xffff);
    let mut i = from;
    while i < to {
        sum += be16(seg, i) as u32;
        i += 2;
    }
    sum
}

/// Where to write segments: out[offsets[i] - vnet_len, offsets[i] + lengths[i]) for segment i.
pub struct Output<'a> {
    pub buf: *mut u8,
    pub size: usize,
    pub offsets: &'a [u32],
    pub lengths: &'a mut [u32],
    /// 0, or VNET_LEN to put a zeroed virtio_net_hdr (a plain, complete frame) before each segment.
    pub vnet_len: usize,
}

/// Splits the TSO frame at `frame` (its virtio_net_hdr in the VNET_LEN bytes before it) into
/// gso_size-payload TCP segments. Returns the number of segments, or a negative code.
///
/// Per segment: IPv4 total length, an identification incremented per segment and the header
/// checksum, or the IPv6 payload length; the sequence number advanced by the payload before it;
/// FIN and PSH kept only on the last segment, CWR only on the first (as the kernel's
/// tcp_gso_segment does); a complete TCP checksum.
///
/// `frame` is read through raw pointers and each output segment is written before the next is
/// read, so an output that overlaps the input gives garbage, never a fault.
///
/// # Safety
/// `frame` must be readable for `frame_len` bytes and preceded by VNET_LEN readable bytes;
/// `out.buf` must be writable for `out.size` bytes.
pub unsafe fn segment_tso(frame: *const u8, frame_len: usize, out: &mut Output) -> i32 {
    let mut vnet = [0u8; VNET_LEN];
    ptr::copy_nonoverlapping(frame.sub(VNET_LEN), vnet.as_mut_ptr(), VNET_LEN);
    let kind = vnet[1] & !GSO_ECN;
    if kind != GSO_TCPV4 && kind != GSO_TCPV6 {
        return UNSUPPORTED;
    }
    let (hdr_len, mss) = (le16(&vnet, 2), le16(&vnet, 4));
    if mss == 0 || hdr_len > frame_len {
        return MALFORMED;
    }
    // The headers are parsed from, and copied out of, a private template.
    let mut tpl = [0u8; MAX_HEADERS];
    let t = frame_len.min(MAX_HEADERS);
    ptr::copy_nonoverlapping(frame, tpl.as_mut_ptr(), t);
    let h = match parse(&tpl[..t], frame_len) {
        Ok(h) => h,
        Err(code) => return code,
    };
    if h.v4 != (kind == GSO_TCPV4) {
        return MALFORMED;
    }
    let payload = h.ip_end - h.end;
    let count = if payload == 0 { 1 } else { (payload + mss - 1) / mss };
    if count > out.offsets.len() || count > out.lengths.len() {
        return TOO_MANY_SEGMENTS;
    }
    // Check every destination before writing any, so a failure leaves the output untouched.
    for i in 0..count {
        let chunk = (payload - i * mss).min(mss);
        let off = out.offsets[i] as usize;
        if off < out.vnet_len || off + h.end + chunk > out.size {
            return NO_ROOM;
        }
    }
    let seq0 = u32::from_be_bytes([tpl[h.l4 + 4], tpl[h.l4 + 5], tpl[h.l4 + 6], tpl[h.l4 + 7]]);
    let flags0 = tpl[h.l4 + 13];
    let id0 = if h.v4 { be16(&tpl, h.l3 + 4) as u16 } else { 0 };
    for i in 0..count {
        let done = i * mss;
        let chunk = (payload - done).min(mss);
        let off = out.offsets[i] as usize;
        let dst = out.buf.add(off);
        ptr::write_bytes(dst.sub(out.vnet_len), 0, out.vnet_len);
        ptr::copy_nonoverlapping(tpl.as_ptr(), dst, h.end);
        ptr::copy(frame.add(h.end + done), dst.add(h.end), chunk);
        let seg = std::slice::from_raw_parts_mut(dst, h.end + chunk);
        let l4_len = h.end - h.l4 + chunk;
        if h.v4 {
            put16(seg, h.l3 + 2, (h.end - h.l3 + chunk) as u16);
            put16(seg, h.l3 + 4, id0.wrapping_add(i as u16));
            put16(seg, h.l3 + 10, 0);
            let c = csum::checksum(&seg[h.l3..h.l4], 0);
            put16(seg, h.l3 + 10, c);
        } else {
            put16(seg, h.l3 + 4, l4_len as u16);
        }
        let seq = seq0.wrapping_add(done as u32);
        seg[h.l4 + 4..h.l4 + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if i + 1 < count {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            flags &= !TCP_CWR;
        }
        seg[h.l4 + 13] = flags;
        put16(seg, h.l4 + 16, 0);
        let c = csum::checksum(&seg[h.l4..], pseudo_sum(seg, &h, l4_len));
        put16(seg, h.l4 + 16, c);
        out.lengths[i] = (h.end + chunk) as u32;
    }
    count as i32
}

/// Completes the partial checksum of a frame without GSO whose vnet header (the VNET_LEN bytes of
/// `vnet`) says NEEDS_CSUM: the field at csum_start + csum_offset holds the pseudo-header sum, and
/// the sum runs from csum_start to the end of the frame (as the kernel's skb_checksum_help does; a
/// frame with trailing padding must be trimmed first). Clears NEEDS_CSUM.
/// Returns 1 when completed, 0 when there was nothing to do, or a negative code.
pub fn complete_checksum(vnet: &mut [u8], frame: &mut [u8]) -> i32 {
    if vnet[0] & F_NEEDS_CSUM == 0 {
        return 0;
    }
    if vnet[1] & !GSO_ECN != GSO_NONE {
        return UNSUPPORTED;
    }
    let (start, field) = (le16(vnet, 6), le16(vnet, 6) + le16(vnet, 8));
    if field + 2 > frame.len() {
        return MALFORMED;
    }
    // A computed 0 goes out as 0xffff: for UDP a 0 field means "no checksum" (RFC 768); for TCP they are equal.
    let c = csum::checksum(&frame[start..], 0);
    put16(frame, field, if c == 0 { 0xffff } else { c });
    vnet[0] &= !F_NEEDS_CSUM;
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// vnet header + Ethernet + IPv4 + TCP + 3000 bytes: TCPV4, gso_size 1000.
    fn base(v6: bool) -> Vec<u8> {
        let payload = 3000usize;
        let mut f = vec![0u8; VNET_LEN];
        f[1] = if v6 { GSO_TCPV6 } else { GSO_TCPV4 };
        f[4..6].copy_from_slice(&1000u16.to_le_bytes());
        f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        if v6 {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&((20 + payload) as u16).to_be_bytes());
            f.extend_from_slice(&[IPPROTO_TCP, 64]);
            f.extend_from_slice(&[0xfd; 32]);
        } else {
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            f.extend_from_slice(&((40 + payload) as u16).to_be_bytes());
            f.extend_from_slice(&[0, 1, 0x40, 0, 64, IPPROTO_TCP, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        }
        f.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x19, 0xff, 0xff, 0, 0, 0, 0]);
        f.resize(f.len() + payload, 0x5a);
        f
    }

    /// Debug builds check every arithmetic step for overflow: mutated headers must never trip one.
    #[test]
    fn mutated_headers_never_fault() {
        let mut out = vec![0u8; 64 * 70_000];
        let offsets: Vec<u32> = (0..64).map(|i| i * 70_000 + 16).collect();
        let mut lengths = vec![0u32; 64];
        let mut x: u32 = 7;
        let mut rand = move || {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            (x >> 8) as usize
        };
        let mut segmented = 0;
        for round in 0..20_000 {
            let mut frame = base(round % 2 == 1);
            assert_eq!(unsafe { segment_tso(frame.as_ptr().add(VNET_LEN), frame.len() - VNET_LEN, &mut out_for(&mut out, &offsets, &mut lengths)) }, 3);
            for _ in 0..1 + rand() % 4 {
                let at = rand() % (VNET_LEN + 80);
                frame[at] = rand() as u8;
            }
            let full = frame.len() - VNET_LEN;
            let len = if rand() % 3 == 0 { rand() % (full + 1) } else { full };
            let n = unsafe { segment_tso(frame.as_ptr().add(VNET_LEN), len, &mut out_for(&mut out, &offsets, &mut lengths)) };
            assert!((NO_ROOM..=64).contains(&n));
            segmented += (n > 0) as u32;
            let (v, f) = frame.split_at_mut(VNET_LEN);
            assert!(complete_checksum(v, &mut f[..len]) <= 1);
        }
        assert!(segmented > 1000);
    }

    fn out_for<'a>(buf: &'a mut [u8], offsets: &'a [u32], lengths: &'a mut [u32]) -> Output<'a> {
        Output { buf: buf.as_mut_ptr(), size: buf.len(), offsets, lengths, vnet_len: VNET_LEN }
    }
}
