//! A split virtqueue (virtio 1.1, 2.6) seen from the device side, over guest
//! memory that the guest writes concurrently.
//!
//! The guest is not trusted. Every index read from the rings is checked
//! against the queue size, every descriptor is read once into a local copy
//! (a guest rewriting it meanwhile changes nothing we act on), chains longer
//! than the queue are loops, and every buffer address goes through
//! GuestMemory. A violation is a `Broken` with one sentence, and the caller
//! stops the queue: it never touches memory outside the guest's regions.
//!
//! Rings are little-endian (virtio 1.0; legacy guests on x86 and arm64 are
//! too). Ring fields are read and written with volatile unaligned accesses
//! and ordered with fences where the spec asks for barriers.

use crate::guest_mem::GuestMemory;
use std::ptr;
use std::sync::atomic::{fence, AtomicU16, AtomicU32, Ordering};

pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
pub const DESC_F_INDIRECT: u16 = 4;
const AVAIL_F_NO_INTERRUPT: u16 = 1;
const USED_F_NO_NOTIFY: u16 = 1;
pub const MAX_QUEUE_SIZE: u32 = 32768;

pub type Broken = String;

#[derive(Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

/// Where a queue lives, in the VMM's virtual addresses (SET_VRING_ADDR), kept so the host
/// pointers can be found again when a new memory table replaces the mapping.
#[derive(Clone, Copy, Default)]
pub struct RingAddrs {
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

pub struct Vring {
    pub num: u16,
    desc: *mut u8,
    avail: *mut u8,
    used: *mut u8,
    /// The next avail ring entry to take.
    pub last_avail: u16,
    /// The used ring's next index; written to the guest by `publish_used`.
    pub used_idx: u16,
    /// used_idx when the guest was last notified (or chose not to be).
    signalled: u16,
    event_idx: bool,
}

// The ring's 16-bit fields (indices, flags, event indices) are read and written whole, with one
// atomic access each: two byte accesses could see half of a guest's update (an index going from
// 0x00ff to 0x0100 read as 0x01ff), and the guest could see half of ours. Vring::new checks the
// alignment that makes these accesses single instructions.
#[inline]
unsafe fn rd16(p: *const u8) -> u16 {
    u16::from_le((*(p as *const AtomicU16)).load(Ordering::Relaxed))
}
#[inline]
unsafe fn wr16(p: *mut u8, v: u16) {
    (*(p as *const AtomicU16)).store(v.to_le(), Ordering::Relaxed);
}
#[inline]
unsafe fn wr32(p: *mut u8, v: u32) {
    (*(p as *const AtomicU32)).store(v.to_le(), Ordering::Relaxed);
}

impl Vring {
    /// Finds the three ring structures in guest memory; each must lie whole in one region.
    pub fn new(mem: &GuestMemory, num: u32, addrs: RingAddrs, base: u16, event_idx: bool) -> Result<Vring, Broken> {
        if num == 0 || num > MAX_QUEUE_SIZE || !num.is_power_of_two() {
            return Err(format!("queue size {num} is not a power of two up to {MAX_QUEUE_SIZE}"));
        }
        let n = num as u64;
        let desc = mem.uva(addrs.desc, 16 * n).ok_or_else(|| format!("the descriptor table at {:#x} is outside the guest's memory", addrs.desc))?;
        let avail = mem.uva(addrs.avail, 6 + 2 * n).ok_or_else(|| format!("the available ring at {:#x} is outside the guest's memory", addrs.avail))?;
        let used = mem.uva(addrs.used, 6 + 8 * n).ok_or_else(|| format!("the used ring at {:#x} is outside the guest's memory", addrs.used))?;
        // virtio 1.1 2.6: descriptor table 16-byte aligned, available ring 2, used ring 4.
        if desc as usize % 16 != 0 || avail as usize % 2 != 0 || used as usize % 4 != 0 {
            return Err(format!("the rings at {:#x}, {:#x} and {:#x} are not aligned as virtio requires", addrs.desc, addrs.avail, addrs.used));
        }
        // The used index the guest sees is where it left off (SET_VRING_BASE names the avail side;
        // on a new connection both are equal, in-flight buffers having been given back by the VMM).
        let used_idx = unsafe { rd16(used.add(2)) };
        Ok(Vring { num: num as u16, desc, avail, used, last_avail: base, used_idx, signalled: used_idx, event_idx })
    }

    #[inline]
    fn avail_idx(&self) -> u16 {
        let v = unsafe { rd16(self.avail.add(2)) };
        // The entries up to idx are read after idx (the guest wrote them before it).
        fence(Ordering::Acquire);
        v
    }

    /// How many chains the guest made available that we have not taken.
    #[inline]
    pub fn pending(&self) -> Result<u16, Broken> {
        let n = self.avail_idx().wrapping_sub(self.last_avail);
        if n > self.num {
            return Err(format!("the available index ran {n} entries ahead of the device, more than the queue's {}", self.num));
        }
        Ok(n)
    }

    /// The head of the next available chain; advances last_avail.
    #[inline]
    fn take_head(&mut self) -> Result<u16, Broken> {
        let slot = (self.last_avail & (self.num - 1)) as usize;
        let head = unsafe { rd16(self.avail.add(4 + 2 * slot)) };
        if head >= self.num {
            return Err(format!("available entry {} names descriptor {head}, beyond the queue's {}", self.last_avail, self.num));
        }
        self.last_avail = self.last_avail.wrapping_add(1);
        Ok(head)
    }

    #[inline]
    fn desc(&self, i: u16) -> Desc {
        unsafe {
            let p = self.desc.add(16 * i as usize);
            let raw = ptr::read_volatile(p as *const [u8; 16]);
            Desc {
                addr: u64::from_le_bytes([raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7]]),
                len: u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]),
                flags: u16::from_le_bytes([raw[12], raw[13]]),
                next: u16::from_le_bytes([raw[14], raw[15]]),
            }
        }
    }

    /// Walks the chain at `head`, calling `visit(host, len)` for each piece of each buffer (a
    /// buffer crossing a region boundary comes in pieces). Every buffer must be device-writable
    /// (`writable`) or device-readable (not). `visit` returns false once it needs no more room:
    /// the rest of the chain is then neither read nor checked.
    fn walk(&self, mem: &GuestMemory, head: u16, writable: bool, mut visit: impl FnMut(*mut u8, usize) -> Result<bool, Broken>) -> Result<(), Broken> {
        let mut i = head;
        let mut seen = 0u32;
        loop {
            seen += 1;
            if seen > self.num as u32 {
                return Err(format!("the chain at descriptor {head} is longer than the queue ({}): a loop", self.num));
            }
            let d = self.desc(i);
            if d.flags & DESC_F_INDIRECT != 0 {
                return Err(format!("descriptor {i} is indirect, a feature vsw did not offer"));
            }
            if (d.flags & DESC_F_WRITE != 0) != writable {
                let what = if writable { "read-only in a receive chain" } else { "write-only in a transmit chain" };
                return Err(format!("descriptor {i} is {what}"));
            }
            let mut addr = d.addr;
            let mut left = d.len as u64;
            while left > 0 {
                let (host, n) = mem.gpa(addr, left).ok_or_else(|| format!("descriptor {i} points at {addr:#x}, outside the guest's memory"))?;
                if !visit(host, n)? {
                    return Ok(());
                }
                addr += n as u64;
                left -= n as u64;
            }
            if d.flags & DESC_F_NEXT == 0 {
                return Ok(());
            }
            if d.next >= self.num {
                return Err(format!("descriptor {i} chains to {}, beyond the queue's {}", d.next, self.num));
            }
            i = d.next;
        }
    }

    /// Takes the next available chain and copies its bytes into out[..cap]; returns the bytes
    /// copied. A chain holding more than `cap` bytes is Broken: no guest sends one.
    pub fn pop_gather(&mut self, mem: &GuestMemory, out: *mut u8, cap: usize) -> Result<usize, Broken> {
        let head = self.take_head()?;
        let mut at = 0usize;
        self.walk(mem, head, false, |host, n| {
            if n > cap - at {
                return Err(format!("the transmit chain at descriptor {head} holds more than {cap} bytes"));
            }
            unsafe { ptr::copy_nonoverlapping(host, out.add(at), n) };
            at += n;
            Ok(true)
        })?;
        self.put_used(head, 0);
        Ok(at)
    }

    /// Takes the next available chain and copies into it from `src`, a stream of `total` bytes read
    /// by `src(offset, dst, n)`, starting at stream offset `from`. Returns the bytes written into
    /// this chain; the chain is marked used with that length.
    pub fn pop_scatter(&mut self, mem: &GuestMemory, from: usize, total: usize, mut src: impl FnMut(usize, *mut u8, usize)) -> Result<usize, Broken> {
        let head = self.take_head()?;
        let mut at = from;
        self.walk(mem, head, true, |host, n| {
            let k = n.min(total - at);
            src(at, host, k);
            at += k;
            Ok(at < total)
        })?;
        let written = at - from;
        self.put_used(head, written as u32);
        Ok(written)
    }

    #[inline]
    fn put_used(&mut self, head: u16, len: u32) {
        let slot = (self.used_idx & (self.num - 1)) as usize;
        unsafe {
            let e = self.used.add(4 + 8 * slot);
            wr32(e, head as u32);
            wr32(e.add(4), len);
        }
        self.used_idx = self.used_idx.wrapping_add(1);
    }

    /// Forgets chains taken since a saved (last_avail, used_idx): a frame that did not fit.
    pub fn rewind(&mut self, last_avail: u16, used_idx: u16) {
        self.last_avail = last_avail;
        self.used_idx = used_idx;
    }

    /// Makes the used entries written so far visible to the guest.
    #[inline]
    pub fn publish_used(&mut self) {
        fence(Ordering::Release);
        unsafe { wr16(self.used.add(2), self.used_idx) };
    }

    /// Whether the guest wants an interrupt for the entries published since the last one (event
    /// index: it names the used index it waits for; otherwise its NO_INTERRUPT flag).
    pub fn needs_call(&mut self) -> bool {
        if self.used_idx == self.signalled {
            return false;
        }
        fence(Ordering::SeqCst);
        let old = self.signalled;
        self.signalled = self.used_idx;
        let n = self.num as usize;
        if self.event_idx {
            let event = unsafe { rd16(self.avail.add(4 + 2 * n)) };
            // virtio's vring_need_event: did used_idx move past `event` since `old`?
            self.used_idx.wrapping_sub(event).wrapping_sub(1) < self.used_idx.wrapping_sub(old)
        } else {
            unsafe { rd16(self.avail) & AVAIL_F_NO_INTERRUPT == 0 }
        }
    }

    /// Tells the guest when to kick next: once it makes entry last_avail available (event index),
    /// or always. Then checks again for entries the guest added before it could see that.
    pub fn arm_kick(&mut self) -> Result<u16, Broken> {
        let n = self.num as usize;
        unsafe {
            if self.event_idx {
                wr16(self.used.add(4 + 8 * n), self.last_avail);
            } else {
                wr16(self.used, 0);
            }
        }
        fence(Ordering::SeqCst);
        self.pending()
    }

    /// Asks the guest not to kick this queue (the receive queue: vsw fills it when it has frames).
    pub fn suppress_kicks(&mut self) {
        if !self.event_idx {
            unsafe { wr16(self.used, USED_F_NO_NOTIFY) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPA: u64 = 0x10_0000;
    const UVA: u64 = 0x7f00_0000_0000;
    const NUM: u32 = 8;
    // Layout inside the test's guest memory: descriptors, avail ring, used ring, then buffers.
    const DESC: usize = 0;
    const AVAIL: usize = 0x100;
    const USED: usize = 0x200;
    const DATA: usize = 0x1000;

    fn ring(mem: &GuestMemory, event_idx: bool) -> Vring {
        let addrs = RingAddrs { desc: UVA + DESC as u64, avail: UVA + AVAIL as u64, used: UVA + USED as u64 };
        Vring::new(mem, NUM, addrs, 0, event_idx).unwrap()
    }

    fn put_desc(buf: &mut [u8], i: usize, addr: u64, len: u32, flags: u16, next: u16) {
        let d = &mut buf[DESC + 16 * i..DESC + 16 * i + 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
    }

    /// Makes `heads` available after whatever the avail ring holds.
    fn offer(buf: &mut [u8], heads: &[u16]) {
        let idx = u16::from_le_bytes([buf[AVAIL + 2], buf[AVAIL + 3]]);
        for (k, h) in heads.iter().enumerate() {
            let slot = (idx as usize + k) % NUM as usize;
            buf[AVAIL + 4 + 2 * slot..AVAIL + 6 + 2 * slot].copy_from_slice(&h.to_le_bytes());
        }
        buf[AVAIL + 2..AVAIL + 4].copy_from_slice(&(idx.wrapping_add(heads.len() as u16)).to_le_bytes());
    }

    fn used(buf: &[u8], k: usize) -> (u32, u32) {
        let e = USED + 4 + 8 * k;
        (u32::from_le_bytes(buf[e..e + 4].try_into().unwrap()), u32::from_le_bytes(buf[e + 4..e + 8].try_into().unwrap()))
    }

    #[test]
    fn gathers_a_chain_and_gives_it_back() {
        let mut buf = vec![0u8; 0x4000];
        buf[DATA..DATA + 3].copy_from_slice(b"abc");
        buf[DATA + 0x100..DATA + 0x102].copy_from_slice(b"de");
        put_desc(&mut buf, 2, GPA + DATA as u64, 3, DESC_F_NEXT, 5);
        put_desc(&mut buf, 5, GPA + DATA as u64 + 0x100, 2, 0, 0);
        offer(&mut buf, &[2]);
        let mem = GuestMemory::over(&mut buf, GPA, UVA);
        let mut r = ring(&mem, false);
        assert_eq!(r.pending().unwrap(), 1);
        let mut out = [0u8; 16];
        assert_eq!(r.pop_gather(&mem, out.as_mut_ptr(), out.len()).unwrap(), 5);
        assert_eq!(&out[..5], b"abcde");
        r.publish_used();
        drop(mem);
        assert_eq!(u16::from_le_bytes([buf[USED + 2], buf[USED + 3]]), 1);
        assert_eq!(used(&buf, 0), (2, 0));
    }

    #[test]
    fn refuses_what_a_guest_must_not_do() {
        let cases: [(&str, fn(&mut [u8])); 6] = [
            ("a loop", |b| {
                // Empty buffers: only the chain's length gives the loop away.
                put_desc(b, 0, GPA + DATA as u64, 0, DESC_F_NEXT, 1);
                put_desc(b, 1, GPA + DATA as u64, 0, DESC_F_NEXT, 0);
                offer(b, &[0]);
            }),
            ("outside the guest's memory", |b| {
                put_desc(b, 0, 0xdead_0000, 4, 0, 0);
                offer(b, &[0]);
            }),
            ("outside the guest's memory", |b| {
                // Starts inside, runs past the end.
                put_desc(b, 0, GPA + 0x4000 - 2, 8, 0, 0);
                offer(b, &[0]);
            }),
            ("beyond the queue", |b| offer(b, &[NUM as u16 + 3])),
            ("chains to", |b| {
                put_desc(b, 0, GPA + DATA as u64, 4, DESC_F_NEXT, 9);
                offer(b, &[0]);
            }),
            ("more than 16 bytes", |b| {
                put_desc(b, 0, GPA + DATA as u64, 64, 0, 0);
                offer(b, &[0]);
            }),
        ];
        for (reason, make) in cases {
            let mut buf = vec![0u8; 0x4000];
            make(&mut buf);
            let mem = GuestMemory::over(&mut buf, GPA, UVA);
            let mut r = ring(&mem, false);
            let mut out = [0u8; 16];
            let err = r.pop_gather(&mem, out.as_mut_ptr(), out.len()).unwrap_err();
            assert!(err.contains(reason), "{reason}: {err}");
        }
        // An available index more than a queue ahead.
        let mut buf = vec![0u8; 0x4000];
        buf[AVAIL + 2..AVAIL + 4].copy_from_slice(&(NUM as u16 + 1).to_le_bytes());
        let mem = GuestMemory::over(&mut buf, GPA, UVA);
        assert!(ring(&mem, false).pending().unwrap_err().contains("ahead"));
    }

    #[test]
    fn scatters_over_buffers_and_refuses_read_only_ones() {
        let mut buf = vec![0u8; 0x4000];
        put_desc(&mut buf, 0, GPA + DATA as u64, 4, DESC_F_WRITE | DESC_F_NEXT, 1);
        put_desc(&mut buf, 1, GPA + DATA as u64 + 0x100, 4, DESC_F_WRITE, 0);
        put_desc(&mut buf, 2, GPA + DATA as u64 + 0x200, 4, 0, 0);
        offer(&mut buf, &[0, 2]);
        let mem = GuestMemory::over(&mut buf, GPA, UVA);
        let mut r = ring(&mem, false);
        let src = b"0123456";
        let n = r.pop_scatter(&mem, 0, src.len(), |at, dst, k| unsafe { ptr::copy_nonoverlapping(src.as_ptr().add(at), dst, k) }).unwrap();
        assert_eq!(n, 7);
        let err = r.pop_scatter(&mem, 0, 1, |_, _, _| {}).unwrap_err();
        assert!(err.contains("read-only in a receive chain"), "{err}");
        r.publish_used();
        drop(mem);
        assert_eq!(&buf[DATA..DATA + 4], b"0123");
        assert_eq!(&buf[DATA + 0x100..DATA + 0x103], b"456");
        assert_eq!(&buf[DATA + 0x200..DATA + 0x204], [0u8; 4], "nothing written into the read-only buffer");
        assert_eq!(used(&buf, 0), (0, 7));
    }

    #[test]
    fn event_index_decides_interrupts_and_kicks() {
        let mut buf = vec![0u8; 0x4000];
        for i in 0..4 {
            put_desc(&mut buf, i, GPA + DATA as u64, 1, 0, 0);
        }
        offer(&mut buf, &[0, 1, 2, 3]);
        // The guest wants an interrupt once used reaches 3 (used_event = 2).
        let used_event = AVAIL + 4 + 2 * NUM as usize;
        buf[used_event..used_event + 2].copy_from_slice(&2u16.to_le_bytes());
        let mem = GuestMemory::over(&mut buf, GPA, UVA);
        let mut r = ring(&mem, true);
        let mut out = [0u8; 4];
        r.pop_gather(&mem, out.as_mut_ptr(), 4).unwrap();
        r.publish_used();
        assert!(!r.needs_call(), "used 1: the guest waits for 3");
        r.pop_gather(&mem, out.as_mut_ptr(), 4).unwrap();
        r.pop_gather(&mem, out.as_mut_ptr(), 4).unwrap();
        r.publish_used();
        assert!(r.needs_call(), "used 3 passed used_event 2");
        assert_eq!(r.arm_kick().unwrap(), 1, "one chain is still there after arming");
        drop(mem);
        let avail_event = USED + 4 + 8 * NUM as usize;
        assert_eq!(u16::from_le_bytes([buf[avail_event], buf[avail_event + 1]]), 3, "the guest kicks once it makes entry 3 available");
    }
}
