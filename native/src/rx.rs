//! The receive engine: readiness of each port's fd on the libuv loop of the
//! thread that owns it, a drain of up to `slot_count` frames into one
//! preallocated buffer, and one JS call per batch.
//!
//! Measured on these machines (see DESIGN): this beats a reader thread per TAP
//! handing batches over through a threadsafe function, which overflowed TAP
//! queues and caused TCP retransmits. Batches above 64 frames gained nothing.
//!
//! Memory: the rx buffer and lengths array belong to JS (kept alive by
//! references); each port is a heap block whose first bytes are the uv_poll_t,
//! so the libuv callback finds its port by casting the handle pointer back.
//!
//! Three kinds of port share the slots and the callback:
//! - TAP: read() per frame (a TAP has no batch read); the frame lands at `headroom`, its vnet
//!   header in the bytes before. A read shorter than the header is a zero-length frame (a runt).
//! - Packet (an AF_PACKET socket with vnet headers: the uplink, a fabric port): one recvmmsg per
//!   event, each frame landing exactly where a TAP read puts it (see packet.rs). lengths[k] is the
//!   frame length, or 0 (a runt) for a message shorter than the vnet header or cut short
//!   (MSG_TRUNC), so a truncated frame is never taken for a whole one.
//! - UDP (the VXLAN underlay): one recvmmsg per event; the datagram lands at `headroom - 8`, so the
//!   inner frame starts at `headroom` with the VXLAN header before it (see udp.rs). lengths[k] is
//!   the inner frame length, or -1 for a datagram too short to hold a VXLAN header (or truncated);
//!   sources[4k], sources[4k+1] are the sender's IPv4 address (host order) and port, sources[4k+2]
//!   the size of the datagrams the message coalesced (UDP_GRO), 0 for a single one.

/// Words per slot in the sources array: address, port, coalesced datagram size, spare.
pub const SOURCE_WORDS: usize = 4;

use crate::callback::JsCallback;
use crate::mmsg::Receiver;
use crate::napi::*;
use crate::packet;
use crate::sys::*;
use crate::tap::VNET_HDR_LEN;
use crate::udp;
use crate::vhost::Device;
use std::collections::HashMap;
use std::os::raw::{c_int, c_void};
use std::ptr;

extern "C" {
    fn uv_poll_init(lp: *mut c_void, handle: *mut c_void, fd: c_int) -> c_int;
    fn uv_poll_start(handle: *mut c_void, events: c_int, cb: unsafe extern "C" fn(*mut c_void, c_int, c_int)) -> c_int;
    fn uv_poll_stop(handle: *mut c_void) -> c_int;
    fn uv_close(handle: *mut c_void, cb: unsafe extern "C" fn(*mut c_void));
    fn uv_strerror(err: c_int) -> *const std::os::raw::c_char;
}

const UV_READABLE: c_int = 1;
/// sizeof(uv_poll_t) is 160 on x86_64 with node 20's libuv; room to spare costs nothing.
const UV_POLL_SIZE: usize = 256;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    Tap,
    Udp,
    Packet,
}

#[repr(C, align(16))]
struct Port {
    poll: [u8; UV_POLL_SIZE], // must stay first: libuv hands us this address
    engine: *mut Engine,
    fd: c_int,
    id: u32,
    kind: PortKind,
    polling: bool,
}

pub struct Engine {
    env: napi_env,
    callback: JsCallback,
    buffer_ref: napi_ref,
    lengths_ref: napi_ref,
    sources_ref: napi_ref,
    buf: *mut u8,
    lengths: *mut i32,
    /// Two words per slot, or null when the engine was created without them (then no UDP ports).
    sources: *mut u32,
    /// recvmmsg scratch, allocated with the first UDP port.
    udp: Option<Receiver>,
    /// recvmmsg scratch, allocated with the first packet port (its frames land elsewhere than datagrams).
    packet: Option<Receiver>,
    slot_size: usize,
    slot_count: usize,
    headroom: usize,
    vnet_len: usize,
    ports: HashMap<u32, *mut Port>,
    /// vhost-user ports: the device polls its own kicks and fills the slots (vhost.rs).
    vhost: HashMap<u32, *mut Device>,
    closing_ports: usize,
    closed: bool,
    finalized: bool,
    env_gone: bool,
}

pub struct Slots {
    pub buf: *mut u8,
    pub lengths: *mut i32,
    pub size: usize,
    pub count: usize,
    pub headroom: usize,
}

pub struct EngineConfig {
    pub slot_size: usize,
    pub slot_count: usize,
    pub headroom: usize,
    pub vnet_len: usize,
}

impl Engine {
    /// # Safety
    /// `buffer`, `lengths`, `sources` (when given) and `callback` must be live JS values of `env`;
    /// the sizes were checked by the caller.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn create(
        env: napi_env,
        buffer: napi_value,
        buf: *mut u8,
        lengths: napi_value,
        lengths_ptr: *mut i32,
        sources: Option<(napi_value, *mut u32)>,
        callback: napi_value,
        cfg: EngineConfig,
    ) -> Result<*mut Engine, String> {
        let mut e = Box::new(Engine {
            env,
            callback: JsCallback::new(env, callback, b"vsw.rx\0")?,
            buffer_ref: ptr::null_mut(),
            lengths_ref: ptr::null_mut(),
            sources_ref: ptr::null_mut(),
            buf,
            lengths: lengths_ptr,
            sources: sources.map_or(ptr::null_mut(), |s| s.1),
            udp: None,
            packet: None,
            slot_size: cfg.slot_size,
            slot_count: cfg.slot_count,
            headroom: cfg.headroom,
            vnet_len: cfg.vnet_len,
            ports: HashMap::new(),
            vhost: HashMap::new(),
            closing_ports: 0,
            closed: false,
            finalized: false,
            env_gone: false,
        });
        if napi_create_reference(env, buffer, 1, &mut e.buffer_ref) != NAPI_OK
            || napi_create_reference(env, lengths, 1, &mut e.lengths_ref) != NAPI_OK
            || sources.map_or(false, |s| napi_create_reference(env, s.0, 1, &mut e.sources_ref) != NAPI_OK)
        {
            e.release_js();
            return Err("could not create the receive engine's references".into());
        }
        let raw = Box::into_raw(e);
        // A worker thread that ends must not leave polls on a loop that is going away.
        napi_add_env_cleanup_hook(env, env_cleanup, raw as *mut c_void);
        Ok(raw)
    }

    pub unsafe fn add_port(&mut self, id: u32, fd: c_int, kind: PortKind) -> Result<(), String> {
        if self.closed {
            return Err("the receive engine is closed".into());
        }
        if self.ports.contains_key(&id) || self.vhost.contains_key(&id) {
            return Err(format!("port {id} is already polled"));
        }
        if kind == PortKind::Udp && self.udp.is_none() {
            if self.sources.is_null() {
                return Err("a UDP port needs an engine created with a sources array".into());
            }
            if self.headroom < udp::VXLAN_LEN {
                return Err(format!("a UDP port needs a headroom of at least {} bytes", udp::VXLAN_LEN));
            }
            self.udp = Some(udp::receiver(self.buf, self.slot_size, self.slot_count, self.headroom));
        }
        if kind == PortKind::Packet && self.packet.is_none() {
            // packetOpen turns PACKET_VNET_HDR on: every frame comes behind a 10-byte header.
            if self.vnet_len != VNET_HDR_LEN as usize {
                return Err(format!("a packet port needs an engine with {VNET_HDR_LEN}-byte vnet headers, not {}", self.vnet_len));
            }
            self.packet = Some(packet::receiver(self.buf, self.slot_size, self.slot_count, self.headroom));
        }
        let mut lp = ptr::null_mut();
        if napi_get_uv_event_loop(self.env, &mut lp) != NAPI_OK {
            return Err("no libuv loop for this thread".into());
        }
        let port = Box::into_raw(Box::new(Port { poll: [0; UV_POLL_SIZE], engine: self, fd, id, kind, polling: false }));
        let rc = uv_poll_init(lp, port as *mut c_void, fd);
        if rc != 0 {
            drop(Box::from_raw(port));
            return Err(format!("uv_poll_init on fd {fd}: {}", uv_error(rc)));
        }
        let rc = uv_poll_start(port as *mut c_void, UV_READABLE, on_readable);
        if rc != 0 {
            self.closing_ports += 1;
            uv_close(port as *mut c_void, on_port_closed);
            return Err(format!("uv_poll_start on fd {fd}: {}", uv_error(rc)));
        }
        (*port).polling = true;
        self.ports.insert(id, port);
        Ok(())
    }

    /// A vhost-user device as port `id`: its transmit queue's chains enter through the slots.
    pub unsafe fn add_vhost(&mut self, id: u32, dev: *mut Device) -> Result<(), String> {
        if self.closed {
            return Err("the receive engine is closed".into());
        }
        if self.ports.contains_key(&id) || self.vhost.contains_key(&id) {
            return Err(format!("port {id} is already polled"));
        }
        if self.vnet_len != VNET_HDR_LEN as usize || self.headroom < 12 {
            return Err(format!("a vhost-user port needs an engine with {VNET_HDR_LEN}-byte vnet headers and 12 bytes of headroom"));
        }
        // In the map before attach: attaching may report to JS, which may remove the port again.
        self.vhost.insert(id, dev);
        if let Err(e) = Device::attach(dev, self, id) {
            self.vhost.remove(&id);
            return Err(e);
        }
        Ok(())
    }

    /// The device detached itself (it closed).
    pub fn forget_vhost(&mut self, id: u32) {
        self.vhost.remove(&id);
    }

    /// Where a vhost-user device puts a batch: the slots, as a TAP read fills them.
    pub fn slots(&self) -> Slots {
        Slots { buf: self.buf, lengths: self.lengths, size: self.slot_size, count: self.slot_count, headroom: self.headroom }
    }

    /// Pauses or resumes readiness for one port without releasing its handle: the egress
    /// shaper stops reading a port that is over its rate, so the sender's TAP queue (and TCP's
    /// small-queue limit behind it) holds back traffic instead of vsw dropping it.
    /// Returns whether the port exists and is now in the asked state.
    pub unsafe fn set_paused(&mut self, id: u32, paused: bool) -> bool {
        if let Some(&dev) = self.vhost.get(&id) {
            Device::set_paused(dev, paused);
            return true;
        }
        let port = match self.ports.get(&id) {
            Some(p) => *p,
            None => return false,
        };
        if paused {
            if (*port).polling {
                uv_poll_stop(port as *mut c_void);
                (*port).polling = false;
            }
            true
        } else {
            if !(*port).polling {
                if uv_poll_start(port as *mut c_void, UV_READABLE, on_readable) != 0 {
                    return false;
                }
                (*port).polling = true;
            }
            true
        }
    }

    /// Stops polling and releases the handle once libuv is done with it. The fd stays open.
    pub unsafe fn remove_port(&mut self, id: u32) -> bool {
        if let Some(dev) = self.vhost.remove(&id) {
            Device::engine_gone(dev);
            return true;
        }
        match self.ports.remove(&id) {
            Some(port) => {
                uv_poll_stop(port as *mut c_void);
                (*port).polling = false;
                self.closing_ports += 1;
                uv_close(port as *mut c_void, on_port_closed);
                true
            }
            None => false,
        }
    }

    pub unsafe fn close(&mut self) {
        for (_, dev) in self.vhost.drain() {
            Device::engine_gone(dev);
        }
        let ids: Vec<u32> = self.ports.keys().copied().collect();
        for id in ids {
            self.remove_port(id);
        }
        if !self.closed {
            self.closed = true;
            self.release_js();
        }
    }

    unsafe fn release_js(&mut self) {
        self.callback.release();
        for r in [&mut self.buffer_ref, &mut self.lengths_ref, &mut self.sources_ref] {
            if !r.is_null() {
                napi_delete_reference(self.env, *r);
                *r = ptr::null_mut();
            }
        }
    }

    unsafe fn maybe_free(this: *mut Engine) {
        if (*this).finalized && (*this).closed && (*this).closing_ports == 0 {
            if !(*this).env_gone {
                napi_remove_env_cleanup_hook((*this).env, env_cleanup, this as *mut c_void);
            }
            drop(Box::from_raw(this));
        }
    }

    /// Drains one port into the rx slots and hands the batch to JS. Works through a raw
    /// pointer: the JS callback may re-enter the addon (remove a port, close the engine),
    /// so no Rust reference to the engine may be alive across it.
    unsafe fn drain(this: *mut Engine, port: *mut Port) {
        let id = (*port).id;
        let (count, failure) = match (*port).kind {
            PortKind::Tap => Engine::read_tap(this, (*port).fd),
            PortKind::Udp => Engine::recv_udp(this, (*port).fd),
            PortKind::Packet => Engine::recv_packet(this, (*port).fd),
        };
        if count > 0 {
            Engine::deliver(this, id, count as i32);
        }
        if failure != 0 {
            // Level-triggered readiness would spin on a broken fd; stop and let JS decide.
            // Compare the pointer: the callback may have removed this port and added another with its id.
            if (*this).ports.get(&id).copied() == Some(port) {
                uv_poll_stop(port as *mut c_void);
                (*port).polling = false;
            }
            Engine::deliver(this, id, -failure);
        }
    }

    /// Up to slot_count frames, one read() each (a TAP has no vectored batch read): (count, errno or 0).
    unsafe fn read_tap(this: *mut Engine, fd: c_int) -> (usize, i32) {
        let (buf, lengths) = ((*this).buf, (*this).lengths);
        let (slot_size, slot_count, headroom, vnet_len) = ((*this).slot_size, (*this).slot_count, (*this).headroom, (*this).vnet_len);
        let readable = slot_size - headroom + vnet_len;
        let mut count = 0usize;
        let mut failure = 0i32;
        while count < slot_count {
            let at = buf.add(count * slot_size + headroom - vnet_len);
            let n = read(fd, at as *mut c_void, readable);
            if n < 0 {
                let err = errno();
                if err == EINTR {
                    continue;
                }
                if err != EAGAIN {
                    failure = err;
                }
                break;
            }
            // A read shorter than the vnet header is reported as a zero-length frame: a runt for JS to count.
            *lengths.add(count) = (n as usize).saturating_sub(vnet_len) as i32;
            count += 1;
        }
        (count, failure)
    }

    /// One recvmmsg for up to slot_count frames: (count, errno or 0). Any error but EAGAIN stops the
    /// port, as a TAP's read() does: the interface went down or away, and the service reopens it.
    unsafe fn recv_packet(this: *mut Engine, fd: c_int) -> (usize, i32) {
        let lengths = (*this).lengths;
        let rx = match (*this).packet.as_mut() {
            Some(rx) => rx,
            None => return (0, 0),
        };
        match rx.recv(fd) {
            Ok(count) => {
                for k in 0..count {
                    *lengths.add(k) = packet::frame_length(rx, k);
                }
                (count, 0)
            }
            Err(err) if err == EAGAIN => (0, 0),
            Err(err) => (0, err),
        }
    }

    /// One recvmmsg for up to slot_count datagrams: (count, errno or 0). Level-triggered readiness
    /// brings us back on the next loop turn if more are queued.
    unsafe fn recv_udp(this: *mut Engine, fd: c_int) -> (usize, i32) {
        let (lengths, sources) = ((*this).lengths, (*this).sources);
        let rx = match (*this).udp.as_mut() {
            Some(rx) => rx,
            None => return (0, 0),
        };
        match rx.recv(fd) {
            Ok(count) => {
                for k in 0..count {
                    let (len, addr, port, segment) = udp::datagram(rx, k);
                    *lengths.add(k) = len;
                    *sources.add(SOURCE_WORDS * k) = addr;
                    *sources.add(SOURCE_WORDS * k + 1) = port;
                    *sources.add(SOURCE_WORDS * k + 2) = segment;
                }
                (count, 0)
            }
            Err(err) if udp::fatal_recv_error(err) => (0, err),
            Err(_) => (0, 0),
        }
    }

    /// One JS call: onBatch(portId, count); a negative count is -errno for a port that stopped.
    pub unsafe fn deliver(this: *mut Engine, id: u32, count: i32) {
        if (*this).closed {
            return;
        }
        (*this).callback.call(|env| [uint32(env, id), int32(env, count)]);
    }
}

unsafe fn uv_error(rc: c_int) -> String {
    std::ffi::CStr::from_ptr(uv_strerror(rc)).to_string_lossy().into_owned()
}

unsafe extern "C" fn on_readable(handle: *mut c_void, status: c_int, _events: c_int) {
    let port = handle as *mut Port;
    let engine = (*port).engine;
    if status < 0 {
        uv_poll_stop(handle);
        (*port).polling = false;
        // libuv reports POLLERR as UV_EBADF whatever the cause; a TAP's read() says what it is
        // (EBADFD: the device was deleted under the fd), and that is what the port stopped for;
        // a packet socket's read() returns its pending error (ENETDOWN) the same way.
        let mut code = status;
        if let PortKind::Tap | PortKind::Packet = (*port).kind {
            let mut probe = [0u8; 64];
            if read((*port).fd, probe.as_mut_ptr() as *mut c_void, probe.len()) < 0 {
                let err = errno();
                if err != EAGAIN && err != EINTR {
                    code = -err;
                }
            }
        }
        Engine::deliver(engine, (*port).id, code);
        return;
    }
    Engine::drain(engine, port);
}

unsafe extern "C" fn on_port_closed(handle: *mut c_void) {
    let port = Box::from_raw(handle as *mut Port);
    let engine = port.engine;
    drop(port);
    (*engine).closing_ports -= 1;
    Engine::maybe_free(engine);
}

unsafe extern "C" fn env_cleanup(arg: *mut c_void) {
    let engine = arg as *mut Engine;
    (*engine).env_gone = true;
    (*engine).close();
}

/// Finalizer of the JS external that owns the engine.
pub unsafe extern "C" fn finalize_engine(_env: napi_env, data: *mut c_void, _hint: *mut c_void) {
    let engine = data as *mut Engine;
    (*engine).close();
    (*engine).finalized = true;
    Engine::maybe_free(engine);
}
