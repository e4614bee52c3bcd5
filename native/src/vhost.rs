//! A vhost-user virtio-net device: a VM's NIC whose rings sit in the VM's
//! memory, shared with vsw (QEMU's docs/interop/vhost-user.rst). The VMM
//! (QEMU, cloud-hypervisor) connects to a unix socket vsw serves (or serves
//! one vsw connects to), hands over its memory table and, per queue, the ring
//! addresses and two eventfds: `kick` (the guest added buffers) and `call`
//! (vsw used some: interrupt the guest).
//!
//! Queue 0 receives (vsw -> guest), queue 1 transmits (guest -> vsw). The
//! transmit side is a port of the receive engine (rx.rs): a kick drains up to
//! a batch of chains into the engine's slots, laid out as a TAP read lays
//! them out, and one JS call switches them. The receive side is `transmit`,
//! the flush of the port: frames are copied into the guest's buffers,
//! mergeable when negotiated, and the guest is interrupted once per batch.
//! Neither side makes a syscall per frame.
//!
//! Everything runs on the thread that owns the receive engine (libuv polls on
//! its loop). The control messages are rare; they are parsed without blocking
//! from a per-connection buffer.
//!
//! A guest that breaks the ring rules (virtq.rs lists what is checked) gets
//! its queues stopped: vsw reports BROKEN with the reason and moves nothing
//! more until the VMM sets the queues up again (a driver reset in the guest)
//! or reconnects. The daemon goes on.

use crate::callback::JsCallback;
use crate::guest_mem::{GuestMemory, RegionDesc, MAX_REGIONS};
use crate::napi::*;
use crate::rx::Engine;
use crate::segment;
use crate::sys::*;
use crate::virtq::{RingAddrs, Vring};
use std::ffi::CString;
use std::os::raw::{c_int, c_void};
use std::ptr;

extern "C" {
    fn uv_poll_init(lp: *mut c_void, handle: *mut c_void, fd: c_int) -> c_int;
    fn uv_poll_start(handle: *mut c_void, events: c_int, cb: unsafe extern "C" fn(*mut c_void, c_int, c_int)) -> c_int;
    fn uv_poll_stop(handle: *mut c_void) -> c_int;
    fn uv_close(handle: *mut c_void, cb: unsafe extern "C" fn(*mut c_void));
}
const UV_READABLE: c_int = 1;
const UV_POLL_SIZE: usize = 256;

/// Events reported to JS: onEvent(code, detail).
pub const EV_CONNECTED: i32 = 1;
/// Both queues are live: frames move.
pub const EV_RUNNING: i32 = 2;
/// The VMM stopped the queues (a guest driver reset, the VM paused or shutting down).
pub const EV_STOPPED: i32 = 3;
pub const EV_DISCONNECTED: i32 = 4;
/// The guest broke the ring rules: its queues are stopped, the detail says how.
pub const EV_BROKEN: i32 = 5;

// Feature bits (virtio 1.1 5.1.3, 6; vhost-user.rst).
const F_CSUM: u64 = 1 << 0;
const F_GUEST_CSUM: u64 = 1 << 1;
const F_GUEST_TSO4: u64 = 1 << 7;
const F_GUEST_TSO6: u64 = 1 << 8;
const F_GUEST_ECN: u64 = 1 << 9;
const F_HOST_TSO4: u64 = 1 << 11;
const F_HOST_TSO6: u64 = 1 << 12;
const F_HOST_ECN: u64 = 1 << 13;
const F_MRG_RXBUF: u64 = 1 << 15;
const F_EVENT_IDX: u64 = 1 << 29;
const F_PROTOCOL_FEATURES: u64 = 1 << 30;
const F_VERSION_1: u64 = 1 << 32;
/// What vsw's device offers: the offloads a TAP gets (checksum, TSO both ways), mergeable
/// receive buffers, the event index. No indirect descriptors, no multiqueue, no control queue.
const OFFERED: u64 = F_CSUM
    | F_GUEST_CSUM
    | F_GUEST_TSO4
    | F_GUEST_TSO6
    | F_GUEST_ECN
    | F_HOST_TSO4
    | F_HOST_TSO6
    | F_HOST_ECN
    | F_MRG_RXBUF
    | F_EVENT_IDX
    | F_PROTOCOL_FEATURES
    | F_VERSION_1;
const PF_REPLY_ACK: u64 = 1 << 3;
const PROTOCOL_OFFERED: u64 = PF_REPLY_ACK;

// Requests (vhost-user.rst, "Front-end message types").
const GET_FEATURES: u32 = 1;
const SET_FEATURES: u32 = 2;
const SET_OWNER: u32 = 3;
const RESET_OWNER: u32 = 4;
const SET_MEM_TABLE: u32 = 5;
const SET_VRING_NUM: u32 = 8;
const SET_VRING_ADDR: u32 = 9;
const SET_VRING_BASE: u32 = 10;
const GET_VRING_BASE: u32 = 11;
const SET_VRING_KICK: u32 = 12;
const SET_VRING_CALL: u32 = 13;
const SET_VRING_ERR: u32 = 14;
const GET_PROTOCOL_FEATURES: u32 = 15;
const SET_PROTOCOL_FEATURES: u32 = 16;
const GET_QUEUE_NUM: u32 = 17;
const SET_VRING_ENABLE: u32 = 18;

const HEADER_LEN: usize = 12;
const VERSION: u32 = 1;
const FLAG_REPLY: u32 = 1 << 2;
const FLAG_NEED_REPLY: u32 = 1 << 3;
/// The largest payload of a message vsw takes (a full memory table is 8 + 8 * 32 bytes).
const MAX_PAYLOAD: usize = 512;
const VRING_NOFD: u64 = 1 << 8;

const RX_Q: usize = 0;
const TX_Q: usize = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;
const VNET_F_NEEDS_CSUM: u8 = 1;
const VNET_LEN: usize = segment::VNET_LEN;

#[repr(C, align(16))]
struct Watch {
    poll: [u8; UV_POLL_SIZE], // first: libuv hands us this address
    dev: *mut Device,
    role: Role,
    polling: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Listen,
    Conn,
    Kick,
}

#[derive(Default)]
struct Queue {
    num: u32,
    addrs: Option<RingAddrs>,
    base: u16,
    kick: Option<c_int>,
    /// The kick eventfd was sent, or NOFD (the VMM polls): either way the queue may start.
    kicked: bool,
    call: Option<c_int>,
    err: Option<c_int>,
    enabled: bool,
    ring: Option<Vring>,
}

impl Queue {
    unsafe fn close_fds(&mut self) {
        for fd in [self.kick.take(), self.call.take(), self.err.take()].into_iter().flatten() {
            close(fd);
        }
    }
}

/// Counters JS reads with vhostStatus.
#[derive(Default, Clone, Copy)]
pub struct Stats {
    pub connections: u32,
    pub broken: u32,
    /// Frames for the guest dropped because it had posted no receive buffer for them.
    pub rx_no_buffer: f64,
    /// Frames for the guest dropped because they could not be put in its buffers whole (no
    /// mergeable buffers and a frame longer than one, or a super-frame vsw could not segment).
    pub rx_unfit: f64,
    pub kicks: f64,
    pub calls: f64,
}

pub struct Device {
    env: napi_env,
    callback: JsCallback,
    path: String,
    server: bool,
    listen_fd: c_int,
    conn_fd: c_int,
    listen: *mut Watch,
    conn: *mut Watch,
    kick: *mut Watch,
    inbuf: [u8; HEADER_LEN + MAX_PAYLOAD],
    inlen: usize,
    infds: Vec<c_int>,
    features: u64,
    protocol: u64,
    owner: bool,
    mem: Option<GuestMemory>,
    queues: [Queue; 2],
    running: bool,
    broken: Option<String>,
    pub stats: Stats,
    engine: *mut Engine,
    port_id: u32,
    paused: bool,
    /// Segments of a super-frame for a guest that did not take TSO.
    scratch: Vec<u8>,
    seg_offsets: Vec<u32>,
    seg_lengths: Vec<u32>,
    closing: usize,
    closed: bool,
    finalized: bool,
    env_gone: bool,
}

impl Device {
    /// A device serving `path` (a listening socket; a stale socket file there is replaced: the
    /// caller checked it is a socket), or one that will connect to it (vhostConnect).
    pub unsafe fn create(env: napi_env, path: &str, server: bool, callback: napi_value) -> Result<*mut Device, String> {
        let addr = SockAddrUn::new(path)?;
        let mut dev = Box::new(Device {
            env,
            callback: JsCallback::new(env, callback, b"vsw.vhost\0")?,
            path: path.to_string(),
            server,
            listen_fd: -1,
            conn_fd: -1,
            listen: ptr::null_mut(),
            conn: ptr::null_mut(),
            kick: ptr::null_mut(),
            inbuf: [0; HEADER_LEN + MAX_PAYLOAD],
            inlen: 0,
            infds: Vec::with_capacity(MAX_REGIONS),
            features: 0,
            protocol: 0,
            owner: false,
            mem: None,
            queues: Default::default(),
            running: false,
            broken: None,
            stats: Stats::default(),
            engine: ptr::null_mut(),
            port_id: 0,
            paused: false,
            scratch: Vec::new(),
            seg_offsets: Vec::new(),
            seg_lengths: Vec::new(),
            closing: 0,
            closed: false,
            finalized: false,
            env_gone: false,
        });
        if server {
            let fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if fd < 0 {
                dev.release_js();
                return Err(last_error("socket(AF_UNIX)"));
            }
            let c_path = CString::new(path).unwrap();
            unlink(c_path.as_ptr());
            let len = std::mem::size_of::<SockAddrUn>() as u32;
            if bind(fd, &addr as *const SockAddrUn as *const SockAddrIn, len) != 0 || listen(fd, 4) != 0 {
                let msg = last_error(&format!("listen on {path}"));
                close(fd);
                dev.release_js();
                return Err(msg);
            }
            dev.listen_fd = fd;
        }
        let raw = Box::into_raw(dev);
        if server {
            match Device::watch(raw, (*raw).listen_fd, Role::Listen) {
                Ok(w) => (*raw).listen = w,
                Err(e) => {
                    Device::close(raw);
                    Device::finalize(raw);
                    return Err(e);
                }
            }
        }
        napi_add_env_cleanup_hook(env, env_cleanup, raw as *mut c_void);
        Ok(raw)
    }

    unsafe fn release_js(&mut self) {
        self.callback.release();
    }

    unsafe fn watch(this: *mut Device, fd: c_int, role: Role) -> Result<*mut Watch, String> {
        let mut lp = ptr::null_mut();
        if napi_get_uv_event_loop((*this).env, &mut lp) != NAPI_OK {
            return Err("no libuv loop for this thread".into());
        }
        let w = Box::into_raw(Box::new(Watch { poll: [0; UV_POLL_SIZE], dev: this, role, polling: false }));
        if uv_poll_init(lp, w as *mut c_void, fd) != 0 {
            drop(Box::from_raw(w));
            return Err(format!("uv_poll_init on fd {fd} failed"));
        }
        if uv_poll_start(w as *mut c_void, UV_READABLE, on_readable) != 0 {
            (*this).closing += 1;
            uv_close(w as *mut c_void, on_watch_closed);
            return Err(format!("uv_poll_start on fd {fd} failed"));
        }
        (*w).polling = true;
        Ok(w)
    }

    unsafe fn unwatch(this: *mut Device, w: *mut Watch) {
        if w.is_null() {
            return;
        }
        uv_poll_stop(w as *mut c_void);
        (*w).polling = false;
        (*this).closing += 1;
        uv_close(w as *mut c_void, on_watch_closed);
    }

    unsafe fn set_polling(w: *mut Watch, on: bool) {
        if w.is_null() || (*w).polling == on {
            return;
        }
        if on {
            if uv_poll_start(w as *mut c_void, UV_READABLE, on_readable) == 0 {
                (*w).polling = true;
            }
        } else {
            uv_poll_stop(w as *mut c_void);
            (*w).polling = false;
        }
    }

    /// Client mode: one attempt to connect. Ok(false): nobody serves the path yet (try later).
    pub unsafe fn connect(this: *mut Device) -> Result<bool, String> {
        if (*this).closed || (*this).server {
            return Err("only an open client-mode vhost-user device connects".into());
        }
        if (*this).conn_fd >= 0 {
            return Ok(true);
        }
        let addr = SockAddrUn::new(&(*this).path)?;
        let fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(last_error("socket(AF_UNIX)"));
        }
        if connect(fd, &addr, std::mem::size_of::<SockAddrUn>() as u32) != 0 {
            let err = errno();
            close(fd);
            if err == ENOENT || err == ECONNREFUSED || err == EAGAIN {
                return Ok(false);
            }
            return Err(format!("connect to {}: {}", (*this).path, describe_errno(err)));
        }
        Device::adopt(this, fd)?;
        Ok(true)
    }

    unsafe fn adopt(this: *mut Device, fd: c_int) -> Result<(), String> {
        match Device::watch(this, fd, Role::Conn) {
            Ok(w) => {
                (*this).conn_fd = fd;
                (*this).conn = w;
                (*this).stats.connections += 1;
                // One VMM at a time: later ones wait in the backlog until this one leaves.
                Device::set_polling((*this).listen, false);
                Device::emit(this, EV_CONNECTED, "");
                Ok(())
            }
            Err(e) => {
                close(fd);
                Err(e)
            }
        }
    }

    unsafe fn accept(this: *mut Device) {
        let fd = accept4((*this).listen_fd, ptr::null_mut(), ptr::null_mut(), SOCK_NONBLOCK | SOCK_CLOEXEC);
        if fd < 0 {
            return;
        }
        if (*this).conn_fd >= 0 {
            close(fd);
            return;
        }
        let _ = Device::adopt(this, fd);
    }

    /// Forgets the connection and everything it set up; a server listens again.
    unsafe fn disconnect(this: *mut Device, reason: &str) {
        let d = &mut *this;
        if d.conn_fd < 0 {
            return;
        }
        Device::unwatch(this, d.conn);
        d.conn = ptr::null_mut();
        close(d.conn_fd);
        d.conn_fd = -1;
        Device::reset(this);
        if !d.closed {
            Device::set_polling(d.listen, true);
            Device::emit(this, EV_DISCONNECTED, reason);
        }
    }

    /// Back to a device nobody set up: no memory, no queues, no features.
    unsafe fn reset(this: *mut Device) {
        let d = &mut *this;
        Device::stop_queues(this);
        for q in d.queues.iter_mut() {
            q.close_fds();
            *q = Queue::default();
        }
        for fd in d.infds.drain(..) {
            close(fd);
        }
        d.inlen = 0;
        d.mem = None;
        d.features = 0;
        d.protocol = 0;
        d.owner = false;
        d.broken = None;
    }

    /// Drops both rings; where each had got to is the base of its next start.
    unsafe fn stop_queues(this: *mut Device) {
        let d = &mut *this;
        Device::unwatch(this, d.kick);
        d.kick = ptr::null_mut();
        for q in d.queues.iter_mut() {
            if let Some(r) = q.ring.take() {
                q.base = r.last_avail;
            }
        }
        d.running = false;
    }

    pub unsafe fn close(this: *mut Device) {
        let d = &mut *this;
        if d.closed {
            return;
        }
        d.closed = true;
        Device::detach(this);
        Device::disconnect(this, "closed");
        Device::unwatch(this, d.listen);
        d.listen = ptr::null_mut();
        if d.listen_fd >= 0 {
            close(d.listen_fd);
            d.listen_fd = -1;
            if let Ok(c_path) = CString::new(d.path.clone()) {
                unlink(c_path.as_ptr());
            }
        }
        d.release_js();
    }

    pub unsafe fn finalize(this: *mut Device) {
        (*this).finalized = true;
        Device::maybe_free(this);
    }

    unsafe fn maybe_free(this: *mut Device) {
        let d = &*this;
        if d.finalized && d.closed && d.closing == 0 {
            if !d.env_gone {
                napi_remove_env_cleanup_hook(d.env, env_cleanup, this as *mut c_void);
            }
            drop(Box::from_raw(this));
        }
    }

    /// Becomes port `id` of `engine`: its transmit queue feeds the engine's slots.
    pub unsafe fn attach(this: *mut Device, engine: *mut Engine, id: u32) -> Result<(), String> {
        let d = &mut *this;
        if d.closed {
            return Err("the vhost-user device is closed".into());
        }
        if !d.engine.is_null() {
            return Err(format!("the vhost-user device is port {} already", d.port_id));
        }
        d.engine = engine;
        d.port_id = id;
        d.paused = false;
        Device::poll_tx(this);
        Ok(())
    }

    /// No longer a port: transmitted chains wait in the ring.
    pub unsafe fn detach(this: *mut Device) {
        let d = &mut *this;
        if !d.engine.is_null() {
            (*d.engine).forget_vhost(d.port_id);
        }
        d.engine = ptr::null_mut();
        Device::set_polling(d.kick, false);
    }

    /// Called by the engine as it closes: it must not be called back.
    pub unsafe fn engine_gone(this: *mut Device) {
        (*this).engine = ptr::null_mut();
        Device::set_polling((*this).kick, false);
    }

    pub unsafe fn set_paused(this: *mut Device, paused: bool) {
        (*this).paused = paused;
        Device::set_polling((*this).kick, !paused && !(*this).engine.is_null());
        if !paused {
            Device::poll_tx(this);
        }
    }

    /// Starts reading the transmit queue's kicks when it is live and the device is a port.
    unsafe fn poll_tx(this: *mut Device) {
        let d = &mut *this;
        if d.engine.is_null() || d.paused || d.closed || !d.running {
            return;
        }
        if d.kick.is_null() {
            if let Some(fd) = d.queues[TX_Q].kick {
                match Device::watch(this, fd, Role::Kick) {
                    Ok(w) => d.kick = w,
                    Err(e) => Device::break_queues(this, &format!("cannot watch the transmit queue's kick: {e}")),
                }
            }
        } else {
            Device::set_polling(d.kick, true);
        }
        // Chains made available while nobody looked get no kick of their own.
        if let Some(fd) = d.queues[TX_Q].kick {
            eventfd_signal(fd);
        }
    }

    unsafe fn emit(this: *mut Device, code: i32, detail: &str) {
        if (*this).closed {
            return;
        }
        (*this).callback.call(|env| {
            let mut text = ptr::null_mut();
            napi_create_string_utf8(env, detail.as_ptr() as *const _, detail.len(), &mut text);
            [int32(env, code), text]
        });
    }

    /// The guest broke the ring rules: stop moving its frames, tell the VMM (the error eventfd)
    /// and JS. The connection stays; a new queue setup starts afresh.
    unsafe fn break_queues(this: *mut Device, reason: &str) {
        let d = &mut *this;
        if d.broken.is_some() {
            return;
        }
        d.broken = Some(reason.to_string());
        d.stats.broken += 1;
        Device::stop_queues(this);
        for q in d.queues.iter() {
            if let Some(fd) = q.err {
                eventfd_signal(fd);
            }
        }
        Device::emit(this, EV_BROKEN, reason);
    }

    fn hdr_len(&self) -> usize {
        if self.features & (F_VERSION_1 | F_MRG_RXBUF) != 0 { 12 } else { 10 }
    }

    fn queue_enabled(&self, q: &Queue) -> bool {
        // Without protocol features a queue is enabled once started; with them, by SET_VRING_ENABLE.
        q.enabled || self.features & F_PROTOCOL_FEATURES == 0
    }

    /// Starts what can start: a queue with memory, a size, addresses and a kick gets its ring.
    /// Reports RUNNING once both are live.
    unsafe fn try_start(this: *mut Device) {
        let d = &mut *this;
        if d.broken.is_some() {
            return;
        }
        let event_idx = d.features & F_EVENT_IDX != 0;
        let mut failure = None;
        if let Some(mem) = d.mem.as_ref() {
            for (i, q) in d.queues.iter_mut().enumerate() {
                if q.ring.is_some() || !q.kicked || q.num == 0 {
                    continue;
                }
                if let Some(addrs) = q.addrs {
                    match Vring::new(mem, q.num, addrs, q.base, event_idx) {
                        Ok(mut ring) => {
                            if i == RX_Q {
                                ring.suppress_kicks();
                            }
                            q.ring = Some(ring)
                        }
                        Err(e) => failure = Some(format!("{} queue: {e}", if i == RX_Q { "receive" } else { "transmit" })),
                    }
                }
            }
        }
        if let Some(reason) = failure {
            Device::break_queues(this, &reason);
            return;
        }
        let live = d.queues.iter().all(|q| q.ring.is_some() && d.queue_enabled(q));
        if live && !d.running {
            d.running = true;
            Device::emit(this, EV_RUNNING, "");
            Device::poll_tx(this);
        } else if !live && d.running {
            d.running = false;
            Device::set_polling(d.kick, false);
            Device::emit(this, EV_STOPPED, "");
        }
    }

    /// Reads what the VMM sent and handles each whole message.
    unsafe fn on_conn_readable(this: *mut Device) {
        loop {
            let d = &mut *this;
            if d.conn_fd < 0 {
                return;
            }
            let need = if d.inlen < HEADER_LEN { HEADER_LEN } else { HEADER_LEN + msg_size(&d.inbuf) };
            let mut iov = IoVec { base: d.inbuf.as_mut_ptr().add(d.inlen) as *mut c_void, len: need - d.inlen };
            let mut control = [0u64; 16]; // room for one cmsg with MAX_REGIONS fds
            let mut msg = MsgHdr {
                name: ptr::null_mut(),
                namelen: 0,
                iov: &mut iov,
                iovlen: 1,
                control: control.as_mut_ptr() as *mut c_void,
                controllen: std::mem::size_of_val(&control),
                flags: 0,
            };
            let n = recvmsg(d.conn_fd, &mut msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
            if n < 0 {
                let err = errno();
                if err == EINTR {
                    continue;
                }
                if err != EAGAIN {
                    Device::disconnect(this, &format!("reading from the VMM: {}", describe_errno(err)));
                }
                return;
            }
            if n == 0 {
                Device::disconnect(this, "the VMM closed the connection");
                return;
            }
            take_fds(&msg, &mut d.infds);
            if msg.flags & MSG_CTRUNC != 0 || d.infds.len() > MAX_REGIONS {
                Device::disconnect(this, "the VMM sent more file descriptors than a message may carry");
                return;
            }
            d.inlen += n as usize;
            if d.inlen == HEADER_LEN {
                let flags = u32::from_le_bytes(d.inbuf[4..8].try_into().unwrap());
                let size = msg_size(&d.inbuf);
                if flags & 3 != VERSION || size > MAX_PAYLOAD {
                    Device::disconnect(this, &format!("the VMM sent a message vsw cannot read (version {}, {size} bytes)", flags & 3));
                    return;
                }
            }
            if d.inlen >= HEADER_LEN && d.inlen == HEADER_LEN + msg_size(&d.inbuf) {
                let fds: Vec<c_int> = d.infds.drain(..).collect();
                d.inlen = 0;
                Device::handle(this, fds);
            }
        }
    }

    /// One message. Its fds are ours: each is kept or closed here.
    unsafe fn handle(this: *mut Device, mut fds: Vec<c_int>) {
        let d = &mut *this;
        let request = u32::from_le_bytes(d.inbuf[0..4].try_into().unwrap());
        let flags = u32::from_le_bytes(d.inbuf[4..8].try_into().unwrap());
        let size = msg_size(&d.inbuf);
        let payload: Vec<u8> = d.inbuf[HEADER_LEN..HEADER_LEN + size].to_vec();
        let result = Device::apply(this, request, &payload, &mut fds);
        for fd in fds {
            close(fd);
        }
        let d = &mut *this;
        if d.conn_fd < 0 {
            return;
        }
        match result {
            Ok(Some(reply)) => Device::reply(this, request, &reply),
            Ok(None) => {
                if flags & FLAG_NEED_REPLY != 0 && d.protocol & PF_REPLY_ACK != 0 {
                    Device::reply(this, request, &0u64.to_le_bytes());
                }
            }
            Err(Fault::Protocol(reason)) => Device::disconnect(this, &reason),
            Err(Fault::Guest(reason)) => {
                Device::break_queues(this, &reason);
                if (*this).conn_fd >= 0 && flags & FLAG_NEED_REPLY != 0 && (*this).protocol & PF_REPLY_ACK != 0 {
                    Device::reply(this, request, &1u64.to_le_bytes());
                }
            }
        }
    }

    unsafe fn apply(this: *mut Device, request: u32, p: &[u8], fds: &mut Vec<c_int>) -> Result<Option<Vec<u8>>, Fault> {
        let d = &mut *this;
        let u64_arg = || -> Result<u64, Fault> { p.get(0..8).map(|b| u64::from_le_bytes(b.try_into().unwrap())).ok_or_else(|| short(request)) };
        let state_arg = || -> Result<(usize, u32), Fault> {
            if p.len() < 8 {
                return Err(short(request));
            }
            Ok((queue(request, u32::from_le_bytes(p[0..4].try_into().unwrap()) as usize)?, u32::from_le_bytes(p[4..8].try_into().unwrap())))
        };
        match request {
            GET_FEATURES => Ok(Some(OFFERED.to_le_bytes().to_vec())),
            SET_FEATURES => {
                d.features = acked(u64_arg()?, OFFERED, "features")?;
                Ok(None)
            }
            GET_PROTOCOL_FEATURES => Ok(Some(PROTOCOL_OFFERED.to_le_bytes().to_vec())),
            SET_PROTOCOL_FEATURES => {
                d.protocol = acked(u64_arg()?, PROTOCOL_OFFERED, "protocol features")?;
                Ok(None)
            }
            GET_QUEUE_NUM => Ok(Some(1u64.to_le_bytes().to_vec())),
            SET_OWNER => {
                d.owner = true;
                Ok(None)
            }
            RESET_OWNER => {
                Device::reset(this);
                Ok(None)
            }
            SET_MEM_TABLE => {
                if p.len() < 8 {
                    return Err(short(request));
                }
                let n = u32::from_le_bytes(p[0..4].try_into().unwrap()) as usize;
                if n == 0 || n > MAX_REGIONS || p.len() < 8 + 32 * n {
                    return Err(Fault::Protocol(format!("a memory table of {n} regions in {} bytes", p.len())));
                }
                let table: Vec<RegionDesc> = (0..n)
                    .map(|i| {
                        let at = |k: usize| u64::from_le_bytes(p[8 + 32 * i + 8 * k..16 + 32 * i + 8 * k].try_into().unwrap());
                        RegionDesc { guest_phys: at(0), size: at(1), user_addr: at(2), mmap_offset: at(3) }
                    })
                    .collect();
                let mem = GuestMemory::map(&table, fds).map_err(Fault::Protocol)?;
                // The rings were found in the old mapping: find them again in the new one.
                Device::stop_queues(this);
                (*this).mem = Some(mem);
                Device::try_start(this);
                Ok(None)
            }
            SET_VRING_NUM => {
                let (i, num) = state_arg()?;
                d.queues[i].num = num;
                Ok(None)
            }
            SET_VRING_ADDR => {
                if p.len() < 40 {
                    return Err(short(request));
                }
                let i = queue(request, u32::from_le_bytes(p[0..4].try_into().unwrap()) as usize)?;
                let at = |k: usize| u64::from_le_bytes(p[8 + 8 * k..16 + 8 * k].try_into().unwrap());
                d.queues[i].addrs = Some(RingAddrs { desc: at(0), used: at(1), avail: at(2) });
                Ok(None)
            }
            SET_VRING_BASE => {
                let (i, base) = state_arg()?;
                d.queues[i].base = base as u16;
                Ok(None)
            }
            GET_VRING_BASE => {
                let (i, _) = state_arg()?;
                // The VMM stops the queues (it asks for each in turn): no more reads or writes of them.
                let was_live = d.queues.iter().any(|q| q.ring.is_some());
                Device::stop_queues(this);
                let d = &mut *this;
                // A guest whose driver resets sets its queues up afresh: a broken ring is behind it.
                d.broken = None;
                let base = d.queues[i].base;
                d.queues[i].kicked = false;
                if let Some(fd) = d.queues[i].kick.take() {
                    close(fd);
                }
                if was_live {
                    Device::emit(this, EV_STOPPED, "");
                }
                let mut reply = (i as u32).to_le_bytes().to_vec();
                reply.extend_from_slice(&(base as u32).to_le_bytes());
                Ok(Some(reply))
            }
            SET_VRING_KICK | SET_VRING_CALL | SET_VRING_ERR => {
                let v = u64_arg()?;
                let i = queue(request, (v & 0xff) as usize)?;
                let fd = if v & VRING_NOFD != 0 {
                    // Without a kick vsw would have to poll the ring: it waits for kicks instead.
                    if request == SET_VRING_KICK {
                        return Err(Fault::Protocol(format!("the VMM asked queue {i} to be polled (no kick eventfd); vsw needs kicks")));
                    }
                    None
                } else if fds.len() == 1 {
                    let fd = fds.pop().unwrap();
                    // vsw reads and writes these on the data-plane thread: anything but a non-blocking
                    // eventfd (a pipe nobody reads, a hung-up socket) could block it or spin it.
                    if let Err(e) = own_eventfd(fd) {
                        close(fd);
                        return Err(Fault::Protocol(format!("request {request}: {e}")));
                    }
                    Some(fd)
                } else {
                    return Err(Fault::Protocol(format!("request {request} came with {} file descriptors instead of one", fds.len())));
                };
                if request == SET_VRING_KICK && i == TX_Q && !d.kick.is_null() {
                    // Out of epoll before its fd closes: a closed fd cannot be removed from it any more.
                    Device::unwatch(this, d.kick);
                    d.kick = ptr::null_mut();
                }
                let q = &mut d.queues[i];
                let slot = match request {
                    SET_VRING_KICK => &mut q.kick,
                    SET_VRING_CALL => &mut q.call,
                    _ => &mut q.err,
                };
                if let Some(old) = std::mem::replace(slot, fd) {
                    close(old);
                }
                if request == SET_VRING_KICK {
                    q.kicked = true;
                    Device::try_start(this);
                    // A running queue goes on with the new eventfd.
                    Device::poll_tx(this);
                }
                Ok(None)
            }
            SET_VRING_ENABLE => {
                let (i, on) = state_arg()?;
                d.queues[i].enabled = on != 0;
                Device::try_start(this);
                Ok(None)
            }
            _ => Err(Fault::Protocol(format!("the VMM sent request {request}, which vsw's vhost-user device does not implement"))),
        }
    }

    unsafe fn reply(this: *mut Device, request: u32, payload: &[u8]) {
        let d = &mut *this;
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(&request.to_le_bytes());
        out.extend_from_slice(&(VERSION | FLAG_REPLY).to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
        let mut iov = IoVec { base: out.as_mut_ptr() as *mut c_void, len: out.len() };
        let msg = MsgHdr { name: ptr::null_mut(), namelen: 0, iov: &mut iov, iovlen: 1, control: ptr::null_mut(), controllen: 0, flags: 0 };
        // A reply of a few bytes fits any socket buffer; a VMM that does not read them is gone.
        if sendmsg(d.conn_fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) != out.len() as isize {
            Device::disconnect(this, &format!("replying to the VMM: {}", describe_errno(errno())));
        }
    }

    unsafe fn on_kick(this: *mut Device) {
        let d = &mut *this;
        if let Some(fd) = d.queues[TX_Q].kick {
            let mut v = 0u64;
            read(fd, &mut v as *mut u64 as *mut c_void, 8);
        }
        d.stats.kicks += 1.0;
        Device::drain_tx(this);
    }

    /// Takes up to a batch of the guest's transmitted chains into the engine's slots, gives the
    /// buffers back, and hands the batch to JS. Each frame lands where a TAP read puts it: its
    /// vnet header in the 10 bytes before the slot's headroom.
    unsafe fn drain_tx(this: *mut Device) {
        let d = &mut *this;
        if d.engine.is_null() || !d.running || d.paused {
            return;
        }
        let engine = d.engine;
        let id = d.port_id;
        let slots = (*engine).slots();
        let hdr = d.hdr_len();
        let (mem, ring) = match (d.mem.as_ref(), d.queues[TX_Q].ring.as_mut()) {
            (Some(m), Some(r)) => (m, r),
            _ => return,
        };
        let mut count = 0usize;
        let mut fault = None;
        // The avail index is read once per batch: the guest's cache line is not pulled over per frame.
        let ready = match ring.pending() {
            Ok(n) => (n as usize).min(slots.count),
            Err(e) => {
                fault = Some(e);
                0
            }
        };
        while count < ready {
            let base = slots.buf.add(count * slots.size + slots.headroom - hdr);
            match ring.pop_gather(mem, base, slots.size - slots.headroom + hdr) {
                Ok(n) if n >= hdr => {
                    if hdr != VNET_LEN {
                        // virtio 1.0's header ends with num_buffers: the first 10 bytes are a TAP's header.
                        ptr::copy(base, base.add(hdr - VNET_LEN), VNET_LEN);
                    }
                    // A driver may set NEEDS_CSUM only (virtio 1.1 5.1.6.2): a DATA_VALID it made up must not
                    // tell another guest that a checksum was checked.
                    *base.add(hdr - VNET_LEN) &= VNET_F_NEEDS_CSUM;
                    *slots.lengths.add(count) = (n - hdr) as i32;
                }
                // A runt, counted by the switch as a TAP read shorter than its header is.
                Ok(_) => *slots.lengths.add(count) = 0,
                Err(e) => {
                    fault = Some(e);
                    break;
                }
            }
            count += 1;
        }
        ring.publish_used();
        let call = ring.needs_call();
        // A batch that found frames looks again on the next loop turn before it asks the guest to kick:
        // a guest that keeps sending then never kicks (under TCG a kick costs it an emulated MMIO write,
        // and QEMU an eventfd write). Only a look that finds nothing arms the kick.
        let more = if fault.is_some() {
            0
        } else if count > 0 {
            1
        } else {
            match ring.arm_kick() {
                Ok(n) => n,
                Err(e) => {
                    fault = Some(e);
                    0
                }
            }
        };
        if call {
            Device::signal(this, TX_Q);
        }
        let d = &mut *this;
        if let Some(reason) = fault {
            Device::break_queues(this, &format!("transmit queue: {reason}"));
        } else if more > 0 {
            // The next look waits for the next loop turn, as a TAP's backlog does: other ports get theirs.
            if let Some(fd) = d.queues[TX_Q].kick {
                eventfd_signal(fd);
            }
        }
        if count > 0 {
            Engine::deliver(engine, id, count as i32);
        }
    }

    unsafe fn signal(this: *mut Device, q: usize) {
        let d = &mut *this;
        if let Some(fd) = d.queues[q].call {
            eventfd_signal(fd);
            d.stats.calls += 1.0;
        }
    }

    /// Copies frames (each with its 10-byte vnet header before it) into the guest's receive
    /// buffers. Returns how many it took; the others get lengths[i] = 0, as writeBatch does.
    pub unsafe fn transmit(this: *mut Device, buf: *mut u8, size: usize, offsets: *const u32, lengths: *mut u32, count: usize) -> u32 {
        let d = &mut *this;
        if !d.running || d.mem.is_none() || d.queues[RX_Q].ring.is_none() {
            for i in 0..count {
                *lengths.add(i) = 0;
            }
            return 0;
        }
        let hdr = d.hdr_len();
        let mergeable = d.features & F_MRG_RXBUF != 0;
        let csum = d.features & F_GUEST_CSUM != 0;
        let tso4 = d.features & F_GUEST_TSO4 != 0;
        let tso6 = d.features & F_GUEST_TSO6 != 0;
        let ecn = d.features & F_GUEST_ECN != 0;
        let mut taken = 0u32;
        let mut fault = None;
        for i in 0..count {
            let off = *offsets.add(i) as usize;
            let len = *lengths.add(i) as usize;
            if off < VNET_LEN || off + len > size || fault.is_some() {
                *lengths.add(i) = 0;
                continue;
            }
            let frame = buf.add(off);
            let mut vnet = [0u8; VNET_LEN];
            ptr::copy_nonoverlapping(frame.sub(VNET_LEN), vnet.as_mut_ptr(), VNET_LEN);
            let gso = vnet[1] & !GSO_ECN;
            let guest_takes_gso = gso == GSO_NONE
                || (csum && (vnet[1] & GSO_ECN == 0 || ecn) && ((gso == GSO_TCPV4 && tso4) || (gso == GSO_TCPV6 && tso6)));
            let outcome = if guest_takes_gso {
                if gso == GSO_NONE && vnet[0] & VNET_F_NEEDS_CSUM != 0 && !csum {
                    let f = std::slice::from_raw_parts_mut(frame, len);
                    if segment::complete_checksum(&mut vnet, f) < 0 {
                        *lengths.add(i) = 0;
                        d.stats.rx_unfit += 1.0;
                        continue;
                    }
                }
                if !csum {
                    // Without GUEST_CSUM the device must leave the flags 0 (virtio 1.1 5.1.6.3.2).
                    vnet[0] = 0;
                }
                Device::put_frame(this, hdr, mergeable, &vnet, frame, len)
            } else {
                Device::put_segments(this, hdr, mergeable, frame, len)
            };
            match outcome {
                Ok(true) => taken += 1,
                Ok(false) => *lengths.add(i) = 0,
                Err(e) => {
                    *lengths.add(i) = 0;
                    fault = Some(e);
                }
            }
        }
        let d = &mut *this;
        if let Some(ring) = d.queues[RX_Q].ring.as_mut() {
            ring.publish_used();
            if ring.needs_call() {
                Device::signal(this, RX_Q);
            }
        }
        if let Some(reason) = fault {
            Device::break_queues(this, &format!("receive queue: {reason}"));
        }
        taken
    }

    /// A super-frame for a guest that did not take TSO: cut here, each segment delivered whole.
    unsafe fn put_segments(this: *mut Device, hdr: usize, mergeable: bool, frame: *mut u8, len: usize) -> Result<bool, String> {
        let d = &mut *this;
        let mss = u16::from_le_bytes([*frame.sub(VNET_LEN - 4), *frame.sub(VNET_LEN - 5)]) as usize;
        let mss = if mss == 0 { 1 } else { mss };
        let max = (len / mss + 2).min(512);
        let stride = VNET_LEN + 256 + mss;
        if d.scratch.len() < max * stride {
            d.scratch.resize(max * stride, 0);
        }
        if d.seg_offsets.len() < max {
            d.seg_offsets.resize(max, 0);
            d.seg_lengths.resize(max, 0);
        }
        for k in 0..max {
            d.seg_offsets[k] = (k * stride + VNET_LEN) as u32;
        }
        let mut out = segment::Output {
            buf: d.scratch.as_mut_ptr(),
            size: d.scratch.len(),
            offsets: &d.seg_offsets[..max],
            lengths: &mut d.seg_lengths[..max],
            vnet_len: VNET_LEN,
        };
        let n = segment::segment_tso(frame, len, &mut out);
        if n <= 0 {
            d.stats.rx_unfit += 1.0;
            return Ok(false);
        }
        let zero = [0u8; VNET_LEN];
        let mut all = true;
        for k in 0..n as usize {
            let d = &mut *this;
            let (seg_off, seg_len) = (d.seg_offsets[k] as usize, d.seg_lengths[k] as usize);
            let seg = d.scratch.as_mut_ptr().add(seg_off);
            all &= Device::put_frame(this, hdr, mergeable, &zero, seg, seg_len)?;
        }
        Ok(all)
    }

    /// One frame into as many receive chains as it needs (one without mergeable buffers).
    /// Ok(false): it did not fit (no buffers, or too long for one); nothing of it is visible.
    unsafe fn put_frame(this: *mut Device, hdr: usize, mergeable: bool, vnet: &[u8; VNET_LEN], frame: *const u8, len: usize) -> Result<bool, String> {
        let d = &mut *this;
        let (mem, ring) = match (d.mem.as_ref(), d.queues[RX_Q].ring.as_mut()) {
            (Some(m), Some(r)) => (m, r),
            _ => return Ok(false),
        };
        let mut head = [0u8; 12];
        head[..VNET_LEN].copy_from_slice(vnet);
        let total = hdr + len;
        let (avail0, used0) = (ring.last_avail, ring.used_idx);
        // Where the header's num_buffers field landed (it may straddle two buffers).
        let mut num_at: [*mut u8; 2] = [ptr::null_mut(); 2];
        let mut written = 0usize;
        let mut buffers = 0u16;
        while written < total {
            // A broken chain takes back the ones this frame already filled: nothing of it is published.
            let pending = ring.pending().map_err(|e| {
                ring.rewind(avail0, used0);
                e
            })?;
            if pending == 0 {
                ring.rewind(avail0, used0);
                d.stats.rx_no_buffer += 1.0;
                return Ok(false);
            }
            if buffers == 1 && !mergeable {
                ring.rewind(avail0, used0);
                d.stats.rx_unfit += 1.0;
                return Ok(false);
            }
            let scattered = ring.pop_scatter(mem, written, total, |at, dst, n| {
                let mut copied = 0;
                while copied < n {
                    let pos = at + copied;
                    if pos < hdr {
                        if hdr == 12 && pos >= VNET_LEN {
                            num_at[pos - VNET_LEN] = dst.add(copied);
                        }
                        *dst.add(copied) = head[pos];
                        copied += 1;
                    } else {
                        ptr::copy_nonoverlapping(frame.add(pos - hdr), dst.add(copied), n - copied);
                        copied = n;
                    }
                }
            });
            written += match scattered {
                // A receive chain with no room would let a guest make vsw walk its whole ring per frame.
                Ok(0) => {
                    ring.rewind(avail0, used0);
                    return Err(format!("available entry {} is a receive chain with no room", avail0.wrapping_add(buffers)));
                }
                Ok(n) => n,
                Err(e) => {
                    ring.rewind(avail0, used0);
                    return Err(e);
                }
            };
            buffers += 1;
        }
        if hdr == 12 {
            let b = buffers.to_le_bytes();
            for (p, v) in num_at.iter().zip(b) {
                if !p.is_null() {
                    ptr::write_volatile(*p, v);
                }
            }
        }
        Ok(true)
    }

    pub fn status(&self) -> (bool, bool, u64, Option<&str>, u32) {
        (self.conn_fd >= 0, self.running, self.features, self.broken.as_deref(), self.mem.as_ref().map_or(0, |m| m.regions() as u32))
    }

    pub fn memory_bytes(&self) -> u64 {
        self.mem.as_ref().map_or(0, |m| m.bytes())
    }

    pub fn memory_sealed(&self) -> bool {
        self.mem.as_ref().map_or(false, |m| m.sealed())
    }
}

enum Fault {
    /// The VMM broke the protocol: drop the connection.
    Protocol(String),
    /// The guest's setup is unusable: stop its queues.
    #[allow(dead_code)]
    Guest(String),
}

/// A queue index of a request: 0 or 1.
fn queue(request: u32, index: usize) -> Result<usize, Fault> {
    if index > 1 {
        return Err(Fault::Protocol(format!("request {request} names queue {index}; vsw's vhost-user port has one queue pair")));
    }
    Ok(index)
}

/// Features the VMM acked, all of them offered.
fn acked(features: u64, offered: u64, what: &str) -> Result<u64, Fault> {
    if features & !offered != 0 {
        return Err(Fault::Protocol(format!("the VMM acked {what} {:#x} that vsw did not offer", features & !offered)));
    }
    Ok(features)
}

fn short(request: u32) -> Fault {
    Fault::Protocol(format!("request {request} came with a payload too short for it"))
}

fn msg_size(buf: &[u8]) -> usize {
    u32::from_le_bytes(buf[8..12].try_into().unwrap()) as usize
}

/// Adds 1 to an eventfd: a kick to ourselves, an interrupt or an error for the VMM. Non-blocking (own_eventfd):
/// a counter at its maximum drops this one, which its reader would have merged anyway.
unsafe fn eventfd_signal(fd: c_int) {
    let one = 1u64;
    write(fd, &one as *const u64 as *const c_void, 8);
}

/// Checks that `fd` is an eventfd and makes it non-blocking.
unsafe fn own_eventfd(fd: c_int) -> Result<(), String> {
    let path = format!("/proc/self/fd/{fd}\0");
    let mut target = [0u8; 64];
    let n = readlink(path.as_ptr() as *const _, target.as_mut_ptr() as *mut _, target.len());
    if n < 0 || &target[..n as usize] != b"anon_inode:[eventfd]" {
        return Err("the file descriptor is not an eventfd".into());
    }
    let flags = fcntl(fd, F_GETFL);
    if flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 {
        return Err(last_error("fcntl(O_NONBLOCK) on the eventfd"));
    }
    Ok(())
}

/// The fds of an SCM_RIGHTS control message, appended to `out`.
unsafe fn take_fds(msg: &MsgHdr, out: &mut Vec<c_int>) {
    // struct cmsghdr: u64 len, i32 level, i32 type, then data; aligned to 8.
    let mut at = 0usize;
    let base = msg.control as *const u8;
    while at + 16 <= msg.controllen {
        let len = (base.add(at) as *const u64).read_unaligned() as usize;
        let level = (base.add(at + 8) as *const i32).read_unaligned();
        let kind = (base.add(at + 12) as *const i32).read_unaligned();
        if len < 16 || at + len > msg.controllen {
            break;
        }
        if level == SOL_SOCKET && kind == SCM_RIGHTS {
            for k in 0..(len - 16) / 4 {
                out.push((base.add(at + 16 + 4 * k) as *const i32).read_unaligned());
            }
        }
        at += (len + 7) & !7;
    }
}

unsafe extern "C" fn on_readable(handle: *mut c_void, status: c_int, _events: c_int) {
    let w = handle as *mut Watch;
    let dev = (*w).dev;
    match (*w).role {
        Role::Listen => {
            if status >= 0 {
                Device::accept(dev);
            }
        }
        Role::Conn => {
            if status < 0 {
                Device::disconnect(dev, "the connection to the VMM failed");
            } else {
                Device::on_conn_readable(dev);
            }
        }
        Role::Kick => {
            if status < 0 {
                Device::set_polling(w, false);
            } else {
                Device::on_kick(dev);
            }
        }
    }
}

unsafe extern "C" fn on_watch_closed(handle: *mut c_void) {
    let w = Box::from_raw(handle as *mut Watch);
    let dev = w.dev;
    drop(w);
    (*dev).closing -= 1;
    Device::maybe_free(dev);
}

unsafe extern "C" fn env_cleanup(arg: *mut c_void) {
    let dev = arg as *mut Device;
    (*dev).env_gone = true;
    Device::close(dev);
}

/// Finalizer of the JS external that owns the device.
pub unsafe extern "C" fn finalize_device(_env: napi_env, data: *mut c_void, _hint: *mut c_void) {
    let dev = data as *mut Device;
    Device::close(dev);
    Device::finalize(dev);
}
