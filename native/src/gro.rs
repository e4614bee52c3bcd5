//! Software GRO for VXLAN receive: the inverse of segment.rs, for the socket side.
//!
//! The VXLAN socket has UDP_GRO on, so one recvmmsg slot can hold a "GRO blob":
//! k datagrams back to back, each exactly segment_size bytes but the last (1 to
//! segment_size bytes). Each is an 8-byte VXLAN header and an inner Ethernet
//! frame, and usually they are consecutive TCP segments of one inner flow, cut
//! by the sender from one TSO super-frame. Writing each of them to a TAP costs a
//! syscall and a full trip through the receiver's TCP stack; writing one TSO
//! super-frame (virtio_net_hdr GSO_TCPV4) costs one of each. So runs of
//! segments that the kernel's own GRO would merge are merged back here.
//!
//! Only plain IPv4/TCP is merged: untagged Ethernet, a 20-byte IP header with no
//! padding after the packet and no fragmentation, ACK or ACK|PSH only. Every
//! segment's IP and TCP checksums are verified in full before it joins a run
//! (a partial TCP checksum, the pseudo-header sum alone, is taken as it is),
//! because the merged frame goes to the TAP as CHECKSUM_PARTIAL (NEEDS_CSUM)
//! and the receiving stack will not look at the payload's checksum again; a
//! segment that fails goes out alone and unchanged, for the kernel to drop.
//! Everything else (ARP, UDP, IPv6, a SYN, a corrupt segment...) is copied as a
//! standalone frame with an all-zero vnet header, exactly as it arrived.
//!
//! The blob is only read (the caller still checks each run's VXLAN header in
//! place); the output is written into a separate region of the same buffer.
//! Every length and offset is checked before use; nothing here allocates.

use crate::csum;
use crate::rx::SOURCE_WORDS;
use std::ptr;

/// Arguments that make no sense: segment_size 0, ranges outside the buffer, regions or arrays that overlap.
pub const MALFORMED: i32 = -1;
/// The output region or the descriptor arrays cannot hold the result.
pub const NO_ROOM: i32 = -4;

/// headers[i] of a datagram too short to hold a VXLAN header.
pub const SHORT_DATAGRAM: u32 = 0xffff_ffff;

const VNET_LEN: usize = 10;
const VXLAN_LEN: usize = 8;
const F_NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;

/// Offsets in the inner frame: untagged Ethernet, then a 20-byte IPv4 header.
const IP: usize = 14;
const TCP: usize = IP + 20;
const IPPROTO_TCP: u8 = 6;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const MAX_IP_LEN: usize = 0xffff;

fn be16(b: &[u8], at: usize) -> usize {
    ((b[at] as usize) << 8) | b[at + 1] as usize
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// out[at, at + src.len()) = src, one memcpy (the slice index is the bounds check).
fn put(out: &mut [u8], at: usize, src: &[u8]) {
    let dst = &mut out[at..at + src.len()];
    // Safety: dst is exactly src.len() bytes, and a &mut cannot overlap a &.
    unsafe { ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr(), src.len()) };
}

/// The IPv4 pseudo-header sum (addresses from the frame, protocol 6, TCP length), unfolded.
fn pseudo_sum(f: &[u8], tcp_len: usize) -> u32 {
    let mut sum = IPPROTO_TCP as u32 + tcp_len as u32;
    let mut i = IP + 12;
    while i < IP + 20 {
        sum += be16(f, i) as u32;
        i += 2;
    }
    sum
}

/// A segment that may head or join a run.
#[derive(Clone, Copy)]
struct Segment {
    /// End of the TCP header in the inner frame.
    end: usize,
    payload: usize,
    seq: u32,
    psh: bool,
}

/// The per-segment rules, on the inner frame `f`: Ethernet + IPv4 (IHL 5, total length equal to
/// the frame minus Ethernet, not a fragment, TCP, valid header checksum) + TCP (flags exactly ACK
/// or ACK|PSH, payload > 0, valid checksum over pseudo-header, header and payload).
fn qualify(f: &[u8]) -> Option<Segment> {
    if f.len() < TCP + 20 || be16(f, 12) != 0x0800 || f[IP] != 0x45 {
        return None;
    }
    if be16(f, IP + 2) != f.len() - IP || be16(f, IP + 6) & 0x3fff != 0 || f[IP + 9] != IPPROTO_TCP {
        return None;
    }
    let flags = f[TCP + 13];
    if flags != TCP_ACK && flags != TCP_ACK | TCP_PSH {
        return None;
    }
    let end = TCP + ((f[TCP + 12] >> 4) as usize) * 4;
    if end < TCP + 20 || end >= f.len() {
        return None;
    }
    // A partial TCP checksum (the field holds just the pseudo-header sum: a kernel peer whose veth
    // has tx checksum offload sends those) is as good as a verified one here: the merged frame
    // leaves as NEEDS_CSUM either way, which is how the peer's own stack would hand it on.
    let pseudo = pseudo_sum(f, f.len() - TCP);
    let partial = be16(f, TCP + 16) == csum::sum16(&[], pseudo) as usize;
    if csum::sum16(&f[IP..TCP], 0) != 0xffff || (!partial && csum::sum16(&f[TCP..], pseudo) != 0xffff) {
        return None;
    }
    let seq = u32::from_be_bytes([f[TCP + 4], f[TCP + 5], f[TCP + 6], f[TCP + 7]]);
    Some(Segment { end, payload: f.len() - end, seq, psh: flags & TCP_PSH != 0 })
}

/// Consecutive datagrams merged so far, the first at blob[first..].
struct Run {
    first: usize,
    count: usize,
    head: Segment,
    /// Payload bytes merged so far, the head's included.
    merged: usize,
    /// The last segment had PSH.
    psh: bool,
    /// Whether another segment may still join (no PSH yet, no short segment yet).
    open: bool,
}

/// The merge rules between a run's head datagram `h` and a candidate datagram `c` (VXLAN header
/// included) that qualified as `s`.
fn joins(run: &Run, h: &[u8], c: &[u8], s: &Segment) -> bool {
    let (hf, cf) = (&h[VXLAN_LEN..], &c[VXLAN_LEN..]);
    let end = run.head.end;
    // Byte 46 of the TCP header is the data offset (and reserved bits): equal offsets make equal ends.
    run.open
        && s.end == end
        && s.payload <= run.head.payload
        && s.seq == run.head.seq.wrapping_add(run.merged as u32)
        && end - IP + run.merged + s.payload <= MAX_IP_LEN
        && h[..VXLAN_LEN] == c[..VXLAN_LEN]
        // MACs and EtherType.
        && hf[..IP] == cf[..IP]
        // TOS; flags/fragment word and TTL.
        && hf[IP + 1] == cf[IP + 1]
        && hf[IP + 6..IP + 9] == cf[IP + 6..IP + 9]
        // Addresses and ports.
        && hf[IP + 12..TCP + 4] == cf[IP + 12..TCP + 4]
        // Ack number and data offset; window.
        && hf[TCP + 8..TCP + 13] == cf[TCP + 8..TCP + 13]
        && hf[TCP + 14..TCP + 16] == cf[TCP + 14..TCP + 16]
        // Options.
        && hf[TCP + 20..end] == cf[TCP + 20..end]
}

/// Where output frames and their descriptors go.
struct Out<'a> {
    /// buf[out_offset, out_limit).
    buf: &'a mut [u8],
    /// out_offset: added to positions in `buf` to make buffer offsets.
    base: usize,
    /// Next free byte in `buf`.
    cursor: usize,
    offsets: &'a mut [u32],
    lengths: &'a mut [u32],
    headers: &'a mut [u32],
    count: usize,
}

impl<'a> Out<'a> {
    /// Reserves frame `count` of `len` bytes after its vnet header; returns its position in `buf`.
    fn frame(&mut self, len: usize, header: u32) -> Result<usize, i32> {
        let at = self.cursor + VNET_LEN;
        if self.count >= self.offsets.len() || at + len > self.buf.len() {
            return Err(NO_ROOM);
        }
        self.offsets[self.count] = (self.base + at) as u32;
        self.lengths[self.count] = len as u32;
        self.headers[self.count] = header;
        self.count += 1;
        self.cursor = at + len;
        Ok(at)
    }

    /// A datagram too short for a VXLAN header: a descriptor, no bytes.
    fn short(&mut self) -> Result<(), i32> {
        if self.count >= self.offsets.len() {
            return Err(NO_ROOM);
        }
        self.offsets[self.count] = 0;
        self.lengths[self.count] = 0;
        self.headers[self.count] = SHORT_DATAGRAM;
        self.count += 1;
        Ok(())
    }

    /// The inner frame of datagram `d` (at blob offset `header`) as it is, behind a zero vnet header.
    fn single(&mut self, d: &[u8], header: u32) -> Result<(), i32> {
        let inner = &d[VXLAN_LEN..];
        let at = self.frame(inner.len(), header)?;
        self.buf[at - VNET_LEN..at].fill(0);
        put(self.buf, at, inner);
        Ok(())
    }
}

/// The blob being read: datagram i starts at i * seg (all but the last are seg bytes long).
struct Blob<'a> {
    bytes: &'a [u8],
    base: usize,
    seg: usize,
}

impl<'a> Blob<'a> {
    fn datagram(&self, at: usize) -> &'a [u8] {
        &self.bytes[at..at + self.seg.min(self.bytes.len() - at)]
    }

    fn header(&self, at: usize) -> u32 {
        (self.base + at) as u32
    }
}

/// Writes a finished run: alone and unchanged if it is one datagram, else as one TSO super-frame.
fn flush(blob: &Blob, run: &Run, out: &mut Out) -> Result<(), i32> {
    let head = blob.datagram(run.first);
    if run.count == 1 {
        return out.single(head, blob.header(run.first));
    }
    let end = run.head.end;
    let len = end + run.merged;
    let at = out.frame(len, blob.header(run.first))?;
    put(out.buf, at, &head[VXLAN_LEN..VXLAN_LEN + end]);
    let mut to = at + end;
    let mut from = run.first;
    for _ in 0..run.count {
        let payload = &blob.datagram(from)[VXLAN_LEN + end..];
        put(out.buf, to, payload);
        to += payload.len();
        from += blob.seg;
    }
    finish_merged(&mut out.buf[at..at + len], run.psh);
    let v = &mut out.buf[at - VNET_LEN..at];
    v[0] = F_NEEDS_CSUM;
    v[1] = GSO_TCPV4;
    v[2..4].copy_from_slice(&(end as u16).to_le_bytes());
    v[4..6].copy_from_slice(&(run.head.payload as u16).to_le_bytes());
    v[6..8].copy_from_slice(&(TCP as u16).to_le_bytes());
    v[8..10].copy_from_slice(&16u16.to_le_bytes());
    Ok(())
}

/// The GRO pass over checked, disjoint input and output. Returns the number of frames.
fn merge(blob: &Blob, out: &mut Out) -> Result<usize, i32> {
    let mut run: Option<Run> = None;
    let mut at = 0;
    // An empty blob is one empty datagram, as recvmmsg reports it.
    loop {
        let d = blob.datagram(at);
        let s = if d.len() >= VXLAN_LEN { qualify(&d[VXLAN_LEN..]) } else { None };
        let mut joined = false;
        if let (Some(r), Some(s)) = (run.as_mut(), s.as_ref()) {
            if joins(r, blob.datagram(r.first), d, s) {
                r.count += 1;
                r.merged += s.payload;
                r.psh = s.psh;
                r.open = !s.psh && s.payload == r.head.payload;
                joined = true;
            }
        }
        if !joined {
            if let Some(r) = run.take() {
                flush(blob, &r, out)?;
            }
            if d.len() < VXLAN_LEN {
                out.short()?;
            } else if let Some(s) = s {
                run = Some(Run { first: at, count: 1, head: s, merged: s.payload, psh: s.psh, open: !s.psh });
            } else {
                out.single(d, blob.header(at))?;
            }
        }
        at += d.len();
        if at >= blob.bytes.len() {
            break;
        }
    }
    if let Some(r) = run.take() {
        flush(blob, &r, out)?;
    }
    Ok(out.count)
}

fn disjoint(a: usize, a_len: usize, b: usize, b_len: usize) -> bool {
    a_len == 0 || b_len == 0 || a + a_len <= b || b + b_len <= a
}

/// An empty buffer or typed array may have a null data pointer, which from_raw_parts does not accept.
unsafe fn slice<'a, T>(data: *mut T, len: usize) -> &'a mut [T] {
    if len == 0 {
        &mut []
    } else {
        std::slice::from_raw_parts_mut(data, len)
    }
}

/// What vxlanGro was given, offsets into the buffer.
pub struct Request {
    pub blob_offset: usize,
    pub blob_length: usize,
    pub segment_size: usize,
    pub out_offset: usize,
    pub out_limit: usize,
}

/// A Uint32Array: its data and element count.
pub type Array = (*mut u32, usize);

/// Merges the GRO blob at buf[blob_offset, +blob_length) into frames packed from buf[out_offset]
/// up to buf[out_limit], each behind a 10-byte virtio_net_hdr. For output frame i: offsets[i] is
/// where it starts, lengths[i] its length, headers[i] the buffer offset of the VXLAN header of the
/// first datagram it was made from (SHORT_DATAGRAM, with offset and length 0, for a datagram
/// shorter than that header). Returns the number of frames, MALFORMED or NO_ROOM.
///
/// # Safety
/// `buf` must be writable for `size` bytes and each array writable for its element count.
pub unsafe fn vxlan_gro(buf: *mut u8, size: usize, r: &Request, offsets: Array, lengths: Array, headers: Array, max_frames: usize) -> i32 {
    // Datagram offsets go out as u32 and must stay below SHORT_DATAGRAM.
    if r.blob_offset.checked_add(r.blob_length).map_or(true, |end| end > size || end >= SHORT_DATAGRAM as usize) {
        return MALFORMED;
    }
    if r.segment_size == 0 || r.out_offset > r.out_limit || r.out_limit > size {
        return MALFORMED;
    }
    let out_len = r.out_limit - r.out_offset;
    if !disjoint(r.blob_offset, r.blob_length, r.out_offset, out_len) {
        return MALFORMED;
    }
    if max_frames > offsets.1 || max_frames > lengths.1 || max_frames > headers.1 {
        return MALFORMED;
    }
    // The arrays are written through &mut slices: they must not share memory with each other or the regions.
    let regions = [
        (offsets.0 as usize, 4 * max_frames),
        (lengths.0 as usize, 4 * max_frames),
        (headers.0 as usize, 4 * max_frames),
        (buf as usize + r.blob_offset, r.blob_length),
        (buf as usize + r.out_offset, out_len),
    ];
    for i in 0..3 {
        for j in i + 1..regions.len() {
            if !disjoint(regions[i].0, regions[i].1, regions[j].0, regions[j].1) {
                return MALFORMED;
            }
        }
    }
    let blob = Blob { bytes: slice(buf.add(r.blob_offset), r.blob_length), base: r.blob_offset, seg: r.segment_size };
    let mut out = Out {
        buf: slice(buf.add(r.out_offset), out_len),
        base: r.out_offset,
        cursor: 0,
        offsets: slice(offsets.0, max_frames),
        lengths: slice(lengths.0, max_frames),
        headers: slice(headers.0, max_frames),
        count: 0,
    };
    match merge(&blob, &mut out) {
        Ok(n) => n as i32,
        Err(code) => code,
    }
}

/// info[2k] of a slot whose datagram joined the frame of an earlier slot (vxlan_gro_slots).
pub const SLOT_ABSORBED: u32 = 0xffff_ffff;

/// The rx batch vxlan_gro_slots works on, as the rx engine lands it (see rx.rs): datagram k at
/// k * slot_size + headroom - 8, its inner frame lengths[k] bytes long (negative: none),
/// sources[SOURCE_WORDS * k] its sender, sources[SOURCE_WORDS * k + 2] nonzero when the kernel
/// coalesced several datagrams into the slot (a GRO blob: vxlan_gro's).
pub struct Slots {
    pub slot_size: usize,
    pub headroom: usize,
    pub count: usize,
}

/// Datagram k of the batch (VXLAN header included), or None for a blob, a malformed slot or a length the slot cannot hold.
unsafe fn slot_datagram<'a>(buf: *const u8, s: &Slots, lengths: &[i32], sources: &[u32], k: usize) -> Option<&'a [u8]> {
    if sources[SOURCE_WORDS * k + 2] != 0 || lengths[k] < 0 {
        return None;
    }
    let len = lengths[k] as usize + VXLAN_LEN;
    if len > s.slot_size - s.headroom + VXLAN_LEN {
        return None;
    }
    Some(std::slice::from_raw_parts(buf.add(k * s.slot_size + s.headroom - VXLAN_LEN), len))
}

/// Appends the payloads of the run's other datagrams to the first one's inner frame, in its own
/// slot, and makes that frame a TSO super-frame (IP length and checksum, PSH, the TCP checksum
/// field holding the pseudo-header sum). False, touching nothing, when the slot cannot hold it.
unsafe fn flush_slots(buf: *mut u8, s: &Slots, lengths: &[i32], run: &Run) -> bool {
    let end = run.head.end;
    let len = end + run.merged;
    if s.headroom + len > s.slot_size {
        return false;
    }
    let frame = buf.add(run.first * s.slot_size + s.headroom);
    let mut to = lengths[run.first] as usize;
    for k in run.first + 1..run.first + run.count {
        let n = lengths[k] as usize - end;
        // Another slot's bytes into this slot's free room: never the same memory.
        ptr::copy_nonoverlapping(buf.add(k * s.slot_size + s.headroom + end), frame.add(to), n);
        to += n;
    }
    finish_merged(std::slice::from_raw_parts_mut(frame, len), run.psh);
    true
}

/// Software GRO across the single datagrams of one rx batch, in place: where a veth or a NIC
/// without GRO hands a UDP_GRO socket every datagram on its own, consecutive slots holding
/// consecutive TCP segments of one inner flow from one sender (the rules of a GRO blob: same
/// VXLAN header, MACs, addresses, ports, ack, window and options, ACK or ACK|PSH, verified
/// checksums, MSS-sized but the last) become one TSO super-frame in the first slot: the others'
/// payloads are appended after its own (a slot holds 64 KiB). Their VXLAN headers stay where
/// they were, so the caller still checks the first one in place.
///
/// info (2 words per slot) says what became of each: info[2k] = 0 for a slot left as it came;
/// (hdr_len << 16) | gso_size and info[2k + 1] = the new inner frame length for the first slot
/// of a merged run (its vnet header is the caller's to write: NEEDS_CSUM at byte 34 + 16, GSO
/// TCPV4, once the VXLAN header has been read); SLOT_ABSORBED for a slot whose payload is now in
/// an earlier slot's frame. lengths and sources are only read. Returns the number of merged runs,
/// or MALFORMED for arguments that make no sense.
///
/// # Safety
/// `buf` must be writable for `size` bytes and each array readable (info writable) for its element count.
pub unsafe fn vxlan_gro_slots(buf: *mut u8, size: usize, s: &Slots, lengths: (*const i32, usize), sources: (*const u32, usize), info: Array) -> i32 {
    if s.headroom < VXLAN_LEN || s.headroom >= s.slot_size || s.slot_size.checked_mul(s.count).map_or(true, |n| n > size) {
        return MALFORMED;
    }
    if s.count > lengths.1 || s.count.checked_mul(SOURCE_WORDS).map_or(true, |n| n > sources.1) || s.count.checked_mul(2).map_or(true, |n| n > info.1) {
        return MALFORMED;
    }
    if s.count == 0 {
        return 0;
    }
    // info is written and the slots are: neither may share memory with anything else here.
    let regions = [
        (info.0 as usize, 8 * s.count),
        (buf as usize, s.slot_size * s.count),
        (lengths.0 as usize, 4 * s.count),
        (sources.0 as usize, 4 * SOURCE_WORDS * s.count),
    ];
    for i in 0..2 {
        for j in i + 1..regions.len() {
            if !disjoint(regions[i].0, regions[i].1, regions[j].0, regions[j].1) {
                return MALFORMED;
            }
        }
    }
    let lengths = std::slice::from_raw_parts(lengths.0, s.count);
    let sources = std::slice::from_raw_parts(sources.0, SOURCE_WORDS * s.count);
    let info = slice(info.0, 2 * s.count);
    info.fill(0);
    let mut runs = 0;
    let mut k = 0;
    while k < s.count {
        let head = slot_datagram(buf, s, lengths, sources, k).and_then(|d| qualify(&d[VXLAN_LEN..]).map(|q| (d, q)));
        let (d, q) = match head {
            Some(h) => h,
            None => {
                k += 1;
                continue;
            }
        };
        let mut run = Run { first: k, count: 1, head: q, merged: q.payload, psh: q.psh, open: !q.psh };
        let mut j = k + 1;
        while j < s.count && run.open && sources[SOURCE_WORDS * j] == sources[SOURCE_WORDS * k] {
            let c = match slot_datagram(buf, s, lengths, sources, j) {
                Some(c) => c,
                None => break,
            };
            match qualify(&c[VXLAN_LEN..]) {
                Some(cq) if joins(&run, d, c, &cq) => {
                    run.count += 1;
                    run.merged += cq.payload;
                    run.psh = cq.psh;
                    run.open = !cq.psh && cq.payload == run.head.payload;
                    j += 1;
                }
                _ => break,
            }
        }
        if run.count > 1 && flush_slots(buf, s, lengths, &run) {
            let end = run.head.end;
            info[2 * k] = (end as u32) << 16 | run.head.payload as u32;
            info[2 * k + 1] = (end + run.merged) as u32;
            for a in k + 1..j {
                info[2 * a] = SLOT_ABSORBED;
            }
            runs += 1;
        }
        k = j;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: usize = 1000;

    /// VXLAN header + Ethernet + IPv4 + TCP (12 bytes of options) + `payload` bytes, checksums valid.
    fn datagram(seq: u32, payload: usize, flags: u8) -> Vec<u8> {
        let mut d = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
        d.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        d.extend_from_slice(&[0x45, 0]);
        d.extend_from_slice(&((52 + payload) as u16).to_be_bytes());
        d.extend_from_slice(&[0, 1, 0x40, 0, 64, IPPROTO_TCP, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        d.extend_from_slice(&[0x9c, 0x40, 0, 80]);
        d.extend_from_slice(&seq.to_be_bytes());
        d.extend_from_slice(&[0, 0, 0, 7, 0x80, flags, 0xff, 0xff, 0, 0, 0, 0, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        for i in 0..payload {
            d.push((i * 31 + seq as usize) as u8);
        }
        let f = &mut d[VXLAN_LEN..];
        let c = csum::checksum(&f[IP..TCP], 0);
        put16(f, IP + 10, c);
        let c = csum::checksum(&f[TCP..], pseudo_sum(f, f.len() - TCP));
        put16(f, TCP + 16, c);
        d
    }

    /// n segments of MSS payload (the last `last` bytes), padded to the segment size as UDP GRO packs them.
    fn blob(n: usize, last: usize) -> (Vec<u8>, usize) {
        let seg = VXLAN_LEN + 66 + MSS;
        let mut b = Vec::new();
        for i in 0..n {
            let p = if i + 1 == n { last } else { MSS };
            b.extend_from_slice(&datagram(5000 + (i * MSS) as u32, p, TCP_ACK));
        }
        (b, seg)
    }

    fn run(buf: &mut Vec<u8>, blob_len: usize, seg: usize, max: usize) -> (i32, Vec<u32>, Vec<u32>, Vec<u32>) {
        let (mut o, mut l, mut h) = (vec![0u32; max], vec![0u32; max], vec![0u32; max]);
        let req = Request { blob_offset: 0, blob_length: blob_len, segment_size: seg, out_offset: blob_len, out_limit: buf.len() };
        let n = unsafe { vxlan_gro(buf.as_mut_ptr(), buf.len(), &req, (o.as_mut_ptr(), max), (l.as_mut_ptr(), max), (h.as_mut_ptr(), max), max) };
        (n, o, l, h)
    }

    #[test]
    fn merges_a_run_and_accounts_for_every_datagram() {
        let (mut b, seg) = blob(5, 300);
        let len = b.len();
        b.resize(len + 70_000, 0);
        let (n, o, l, h) = run(&mut b, len, seg, 8);
        assert_eq!(n, 1);
        assert_eq!(h[0], 0);
        assert_eq!(l[0] as usize, 66 + 4 * MSS + 300);
        let f = &b[o[0] as usize..(o[0] + l[0]) as usize];
        assert_eq!(csum::sum16(&f[IP..TCP], 0), 0xffff);
        assert_eq!(be16(f, TCP + 16), csum::sum16(&[], pseudo_sum(f, f.len() - TCP)) as usize);
    }

    /// Debug builds check every arithmetic step for overflow: mutated blobs must never trip one,
    /// and every datagram must end up in exactly one frame.
    #[test]
    fn mutated_blobs_never_fault() {
        let mut x: u32 = 99;
        let mut rand = move || {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            (x >> 8) as usize
        };
        let mut merged = 0;
        for round in 0..3000 {
            let (mut b, mut seg) = blob(1 + rand() % 6, 1 + rand() % MSS);
            for _ in 0..1 + rand() % 6 {
                let at = rand() % b.len();
                b[at] = rand() as u8;
            }
            if round % 5 == 0 {
                seg = 1 + rand() % 1200;
            }
            let len = if round % 7 == 0 { rand() % (b.len() + 1) } else { b.len() };
            let room = if round % 11 == 0 { rand() % 8000 } else { 80_000 };
            b.truncate(len);
            b.resize(len + room, 0);
            let max = 1 + rand() % 64;
            let (n, o, l, h) = run(&mut b, len, seg, max);
            assert!(n == NO_ROOM || n >= 0, "round {round}: {n}");
            if n < 0 {
                continue;
            }
            // Count the datagrams behind each frame: all but a run's last carry exactly gso_size bytes.
            let datagrams = if len == 0 { 1 } else { (len + seg - 1) / seg };
            let mut seen = 0;
            for i in 0..n as usize {
                assert!(h[i] == SHORT_DATAGRAM || h[i] as usize == seen * seg, "round {round} frame {i}");
                if h[i] == SHORT_DATAGRAM {
                    assert_eq!((o[i], l[i]), (0, 0));
                    seen += 1;
                    continue;
                }
                let v = &b[o[i] as usize - VNET_LEN..o[i] as usize];
                if v[1] == GSO_TCPV4 {
                    let mss = v[4] as usize | (v[5] as usize) << 8;
                    let payload = l[i] as usize - (v[2] as usize | (v[3] as usize) << 8);
                    seen += (payload + mss - 1) / mss;
                    merged += 1;
                } else {
                    seen += 1;
                }
            }
            assert_eq!(seen, datagrams, "round {round}");
        }
        assert!(merged > 100, "{merged}");
    }
    const SLOT: usize = 70_000;
    const HEADROOM: usize = 128;

    /// An rx batch: datagram k in slot k (VXLAN header at HEADROOM - 8), from sender `from[k]`.
    fn batch(datagrams: &[Vec<u8>], from: &[u32]) -> (Vec<u8>, Vec<i32>, Vec<u32>) {
        let mut b = vec![0u8; SLOT * datagrams.len()];
        let mut l = vec![0i32; datagrams.len()];
        let mut src = vec![0u32; SOURCE_WORDS * datagrams.len()];
        for (k, d) in datagrams.iter().enumerate() {
            let at = k * SLOT + HEADROOM - VXLAN_LEN;
            b[at..at + d.len()].copy_from_slice(d);
            l[k] = d.len() as i32 - VXLAN_LEN as i32;
            src[SOURCE_WORDS * k] = from[k];
        }
        (b, l, src)
    }

    fn run_slots(b: &mut [u8], l: &[i32], src: &[u32]) -> (i32, Vec<u32>) {
        let n = l.len();
        let mut info = vec![7u32; 2 * n];
        let s = Slots { slot_size: SLOT, headroom: HEADROOM, count: n };
        let r = unsafe { vxlan_gro_slots(b.as_mut_ptr(), b.len(), &s, (l.as_ptr(), n), (src.as_ptr(), src.len()), (info.as_mut_ptr(), info.len())) };
        (r, info)
    }

    #[test]
    fn slots_merge_in_place() {
        let ds: Vec<Vec<u8>> = (0..4).map(|i| datagram(5000 + (i * MSS) as u32, if i == 3 { 300 } else { MSS }, TCP_ACK)).collect();
        let (mut b, l, src) = batch(&ds, &[9, 9, 9, 9]);
        let (r, info) = run_slots(&mut b, &l, &src);
        assert_eq!(r, 1);
        assert_eq!(info[0], (66 << 16) | MSS as u32);
        assert_eq!(info[1] as usize, 66 + 3 * MSS + 300);
        assert_eq!(&info[2..], &[SLOT_ABSORBED, 0, SLOT_ABSORBED, 0, SLOT_ABSORBED, 0]);
        let f = &b[HEADROOM..HEADROOM + info[1] as usize];
        assert_eq!(&b[HEADROOM - VXLAN_LEN..HEADROOM], &ds[0][..VXLAN_LEN], "the VXLAN header is left for the caller");
        assert_eq!(csum::sum16(&f[IP..TCP], 0), 0xffff);
        assert_eq!(be16(f, IP + 2), f.len() - IP);
        assert_eq!(be16(f, TCP + 16), csum::sum16(&[], pseudo_sum(f, f.len() - TCP)) as usize);
        let mut payload = Vec::new();
        for d in &ds {
            payload.extend_from_slice(&d[VXLAN_LEN + 66..]);
        }
        assert_eq!(&f[66..], &payload[..]);
    }

    #[test]
    fn slots_runs_stop_at_other_senders_blobs_gaps_and_psh() {
        let seg = |i: usize, flags: u8| datagram(5000 + (i * MSS) as u32, MSS, flags);
        // 0,1 merge; 2 is from another sender; 3,4 merge, 4 has PSH and closes; 5 is alone (a gap in seq); 6 is a blob.
        let ds = vec![seg(0, TCP_ACK), seg(1, TCP_ACK), seg(2, TCP_ACK), seg(3, TCP_ACK), seg(4, TCP_ACK | TCP_PSH), seg(6, TCP_ACK), seg(7, TCP_ACK)];
        let (mut b, l, mut src) = batch(&ds, &[1, 1, 2, 1, 1, 1, 1]);
        src[SOURCE_WORDS * 6 + 2] = 1000;
        let (r, info) = run_slots(&mut b, &l, &src);
        assert_eq!(r, 2);
        assert_eq!(info[1] as usize, 66 + 2 * MSS);
        assert_eq!(info[2], SLOT_ABSORBED);
        assert_eq!(info[4], 0);
        assert_eq!(info[6] >> 16, 66);
        assert_eq!(info[8], SLOT_ABSORBED);
        let f = &b[3 * SLOT + HEADROOM..];
        assert_eq!(f[TCP + 13], TCP_ACK | TCP_PSH, "the run's last PSH is kept");
        assert_eq!((info[10], info[12]), (0, 0));
        // Nothing but the merged heads changed.
        for k in [2usize, 5, 6] {
            let at = k * SLOT + HEADROOM - VXLAN_LEN;
            assert_eq!(&b[at..at + ds[k].len()], &ds[k][..]);
        }
    }

    #[test]
    fn slots_arguments_that_make_no_sense() {
        let ds = vec![datagram(1, MSS, TCP_ACK)];
        let (mut b, l, src) = batch(&ds, &[1]);
        let mut info = vec![0u32; 2];
        let bad = |s: Slots, b: &mut [u8], info: &mut [u32]| unsafe { vxlan_gro_slots(b.as_mut_ptr(), b.len(), &s, (l.as_ptr(), 1), (src.as_ptr(), 4), (info.as_mut_ptr(), info.len())) };
        assert_eq!(bad(Slots { slot_size: SLOT, headroom: 4, count: 1 }, &mut b, &mut info), MALFORMED);
        assert_eq!(bad(Slots { slot_size: SLOT, headroom: HEADROOM, count: 2 }, &mut b, &mut info), MALFORMED);
        assert_eq!(bad(Slots { slot_size: SLOT, headroom: SLOT, count: 1 }, &mut b, &mut info), MALFORMED);
        let mut short = vec![0u32; 1];
        assert_eq!(bad(Slots { slot_size: SLOT, headroom: HEADROOM, count: 1 }, &mut b, &mut short), MALFORMED);
        assert_eq!(bad(Slots { slot_size: SLOT, headroom: HEADROOM, count: 1 }, &mut b, &mut info), 0);
    }

    /// Mutated batches never fault, and every datagram is accounted for once: in a merged frame or on its own.
    #[test]
    fn slots_mutated_batches_never_fault() {
        let mut x: u32 = 7;
        let mut rand = move || {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            (x >> 8) as usize
        };
        let mut merged = 0;
        for round in 0..1500 {
            let n = 1 + rand() % 8;
            let mss = 1 + rand() % MSS;
            let ds: Vec<Vec<u8>> = (0..n).map(|i| datagram(5000 + (i * mss) as u32, if i + 1 == n { 1 + rand() % mss } else { mss }, TCP_ACK)).collect();
            let from: Vec<u32> = (0..n).map(|_| if rand() % 9 == 0 { 2 } else { 1 }).collect();
            let (mut b, mut l, src) = batch(&ds, &from);
            for _ in 0..rand() % 4 {
                let k = rand() % n;
                let at = k * SLOT + HEADROOM - VXLAN_LEN + rand() % ds[k].len();
                b[at] = rand() as u8;
            }
            if round % 7 == 0 {
                let k = rand() % n;
                l[k] = rand() as i32 % (SLOT as i32) - 1;
            }
            let (r, info) = run_slots(&mut b, &l, &src);
            assert!(r >= 0, "round {round}");
            let mut seen = 0;
            for k in 0..n {
                match info[2 * k] {
                    0 => seen += 1,
                    SLOT_ABSORBED => {}
                    v => {
                        let (hdr, size) = ((v >> 16) as usize, (v & 0xffff) as usize);
                        let payload = info[2 * k + 1] as usize - hdr;
                        seen += (payload + size - 1) / size;
                        merged += 1;
                    }
                }
            }
            assert_eq!(seen, n, "round {round}");
        }
        assert!(merged > 100, "{merged}");
    }
}

/// The headers of a merged IPv4/TCP frame `f` (the whole of it) made true: the IP total length and
/// header checksum, PSH if any merged segment had it, and the TCP checksum field as
/// CHECKSUM_PARTIAL (the pseudo-header sum, folded and not complemented) for the receiver to finish.
fn finish_merged(f: &mut [u8], psh: bool) {
    let len = f.len();
    put16(f, IP + 2, (len - IP) as u16);
    put16(f, IP + 10, 0);
    let c = csum::checksum(&f[IP..TCP], 0);
    put16(f, IP + 10, c);
    if psh {
        f[TCP + 13] |= TCP_PSH;
    }
    let partial = csum::sum16(&[], pseudo_sum(f, len - TCP));
    put16(f, TCP + 16, partial);
}
