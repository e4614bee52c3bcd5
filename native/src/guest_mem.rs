//! A VM's memory as its VMM's vhost-user memory table describes it: regions
//! of guest-physical addresses, each backed by a file descriptor (a memfd or
//! hugetlbfs file) that vsw maps shared.
//!
//! Every address the guest hands us (descriptor buffers: guest-physical;
//! ring addresses: the VMM's own virtual addresses) goes through `gpa` or
//! `uva` here, which return a host pointer only for bytes inside a mapped
//! region. Nothing else in the addon turns a guest address into a pointer,
//! so a buggy or hostile guest can at worst name bytes of its own memory.

use crate::sys::*;
use std::os::raw::{c_int, c_void};
use std::ptr;

/// The most regions a vhost-user frontend sends without the CONFIGURE_MEM_SLOTS protocol feature.
pub const MAX_REGIONS: usize = 8;

/// One entry of SET_MEM_TABLE as the frontend sends it.
#[derive(Clone, Copy)]
pub struct RegionDesc {
    pub guest_phys: u64,
    pub size: u64,
    pub user_addr: u64,
    pub mmap_offset: u64,
}

struct Region {
    guest_phys: u64,
    size: u64,
    user_addr: u64,
    host: *mut u8,
    map: *mut c_void,
    map_len: usize,
}

pub struct GuestMemory {
    regions: Vec<Region>,
    /// Whether every region's file is sealed against shrinking (see `map`).
    sealed: bool,
}

impl GuestMemory {
    /// Maps each region's fd (the fds are the caller's and stay open). A file shorter than the
    /// region would fault (SIGBUS) when touched past its end, so its size is checked first.
    pub unsafe fn map(table: &[RegionDesc], fds: &[c_int]) -> Result<GuestMemory, String> {
        if table.len() != fds.len() {
            return Err(format!("the memory table names {} regions but came with {} file descriptors", table.len(), fds.len()));
        }
        let mut mem = GuestMemory { regions: Vec::with_capacity(table.len()), sealed: true };
        for (i, (r, &fd)) in table.iter().zip(fds).enumerate() {
            let len = r.size.checked_add(r.mmap_offset).filter(|&l| r.size > 0 && l <= isize::MAX as u64);
            let len = match len {
                Some(l) => l as usize,
                None => return Err(format!("memory region {i} has an impossible size {} at offset {}", r.size, r.mmap_offset)),
            };
            if r.guest_phys.checked_add(r.size).is_none() || r.user_addr.checked_add(r.size).is_none() {
                return Err(format!("memory region {i} wraps around the address space"));
            }
            // A file that shrank under the mapping would fault (SIGBUS) on the next touch past its end: a
            // memfd is sealed against that (QEMU's memory-backend-memfd comes sealed; one that allows
            // sealing gets the seal here). Other files (hugetlbfs, memory-backend-file) cannot be: for
            // them the VMM is trusted not to truncate its guest's memory.
            let seals = fcntl(fd, F_GET_SEALS);
            if seals < 0 || (seals & F_SEAL_SHRINK == 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) {
                mem.sealed = false;
            }
            let file_len = lseek(fd, 0, SEEK_END);
            if file_len < 0 || (file_len as u64) < len as u64 {
                return Err(format!("memory region {i} needs {len} bytes but its file has {file_len}"));
            }
            let map = mmap(ptr::null_mut(), len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
            if map == MAP_FAILED {
                return Err(last_error(&format!("mmap memory region {i} ({len} bytes)")));
            }
            mem.regions.push(Region {
                guest_phys: r.guest_phys,
                size: r.size,
                user_addr: r.user_addr,
                host: (map as *mut u8).add(r.mmap_offset as usize),
                map,
                map_len: len,
            });
        }
        Ok(mem)
    }

    /// The host address of guest-physical `addr` and how many of the `len` bytes from there lie
    /// in the same region (at least 1), or None when `addr` is in no region. A buffer that
    /// crosses into a neighbouring region is copied piece by piece by the caller.
    #[inline]
    pub fn gpa(&self, addr: u64, len: u64) -> Option<(*mut u8, usize)> {
        for r in &self.regions {
            let off = addr.wrapping_sub(r.guest_phys);
            if addr >= r.guest_phys && off < r.size {
                let n = len.min(r.size - off);
                return Some((unsafe { r.host.add(off as usize) }, n as usize));
            }
        }
        None
    }

    /// The host address of the VMM's virtual address `addr` when all `len` bytes lie in one region
    /// (ring structures are never split), else None.
    pub fn uva(&self, addr: u64, len: u64) -> Option<*mut u8> {
        for r in &self.regions {
            let off = addr.wrapping_sub(r.user_addr);
            if addr >= r.user_addr && off < r.size && len <= r.size - off {
                return Some(unsafe { r.host.add(off as usize) });
            }
        }
        None
    }

    /// Guest memory over a buffer of the test's own (guest-physical `guest_phys`, "VMM address" `user_addr`).
    #[cfg(test)]
    pub fn over(buf: &mut [u8], guest_phys: u64, user_addr: u64) -> GuestMemory {
        GuestMemory {
            regions: vec![Region { guest_phys, size: buf.len() as u64, user_addr, host: buf.as_mut_ptr(), map: ptr::null_mut(), map_len: 0 }],
            sealed: true,
        }
    }

    pub fn regions(&self) -> usize {
        self.regions.len()
    }

    /// Whether no region's file can shrink under its mapping.
    pub fn sealed(&self) -> bool {
        self.sealed
    }

    pub fn bytes(&self) -> u64 {
        self.regions.iter().map(|r| r.size).sum()
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        for r in self.regions.iter().filter(|r| !r.map.is_null()) {
            unsafe { munmap(r.map, r.map_len) };
        }
    }
}
