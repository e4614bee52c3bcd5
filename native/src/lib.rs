//! vsw's native addon. Small and boring on purpose: frame I/O in batches,
//! checksums, hashing. Policy lives in TypeScript.
//!
//! Every exported function validates its arguments and throws a JS Error with
//! one sentence instead of touching memory it was not given.

mod csum;
mod hash;
mod napi;
mod rx;
mod sys;
mod tap;

use napi::*;
use std::os::raw::c_void;
use std::ptr;

macro_rules! tri {
    ($env:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(msg) => return throw($env, &msg),
        }
    };
}

unsafe fn optional_string(env: napi_env, v: napi_value, what: &str) -> Result<Option<String>, String> {
    match type_of(env, v) {
        NAPI_UNDEFINED | NAPI_NULL => Ok(None),
        NAPI_STRING => get_string(env, v, what).map(Some),
        _ => Err(format!("{what} must be a string or undefined")),
    }
}

/// tapOpen(name, netnsPath?, exclusive, persist) -> fd
unsafe extern "C" fn tap_open(env: napi_env, info: napi_callback_info) -> napi_value {
    let [name, netns, exclusive, persist] = args::<4>(env, info);
    let name = tri!(env, get_string(env, name, "name"));
    let netns = tri!(env, optional_string(env, netns, "netns"));
    let opts = tap::TapOptions { name: &name, netns: netns.as_deref(), exclusive: get_bool(env, exclusive), persist: get_bool(env, persist) };
    let fd = tri!(env, tap::tap_open(&opts));
    int32(env, fd)
}

/// tapSetPersist(fd, persist)
unsafe extern "C" fn tap_set_persist(env: napi_env, info: napi_callback_info) -> napi_value {
    let [fd, persist] = args::<2>(env, info);
    let fd = tri!(env, get_i32(env, fd, "fd"));
    tri!(env, tap::tap_set_persist(fd, get_bool(env, persist)));
    undefined(env)
}

/// closeFd(fd)
unsafe extern "C" fn close_fd(env: napi_env, info: napi_callback_info) -> napi_value {
    let [fd] = args::<1>(env, info);
    let fd = tri!(env, get_i32(env, fd, "fd"));
    if sys::close(fd) != 0 {
        return throw(env, &sys::last_error(&format!("close fd {fd}")));
    }
    undefined(env)
}

unsafe fn byte_range(env: napi_env, buf: napi_value, off: napi_value, len: napi_value) -> Result<&'static [u8], String> {
    let (data, size) = get_bytes(env, buf, "buffer")?;
    let off = get_u32(env, off, "offset")? as usize;
    let len = get_u32(env, len, "length")? as usize;
    if off.checked_add(len).map_or(true, |end| end > size) {
        return Err(format!("range {off}+{len} is outside the buffer of {size} bytes"));
    }
    Ok(std::slice::from_raw_parts(data.add(off), len))
}

/// internetChecksum(buf, offset, length, initial = 0) -> the value for a checksum field
unsafe extern "C" fn internet_checksum(env: napi_env, info: napi_callback_info) -> napi_value {
    let [buf, off, len, initial] = args::<4>(env, info);
    let bytes = tri!(env, byte_range(env, buf, off, len));
    let initial = if type_of(env, initial) == NAPI_NUMBER { tri!(env, get_u32(env, initial, "initial")) } else { 0 };
    uint32(env, csum::checksum(bytes, initial) as u32)
}

struct Descriptors {
    buf: *mut u8,
    size: usize,
    offsets: *const u32,
    lengths: *mut u32,
    count: usize,
}

unsafe fn descriptors(env: napi_env, buf: napi_value, offsets: napi_value, lengths: napi_value, count: napi_value) -> Result<Descriptors, String> {
    let (buf, size) = get_bytes(env, buf, "buffer")?;
    let (offsets, n_off) = get_u32_array(env, offsets, TYPED_UINT32, "offsets")?;
    let (lengths, n_len) = get_u32_array(env, lengths, TYPED_UINT32, "lengths")?;
    let count = get_u32(env, count, "count")? as usize;
    if count > n_off || count > n_len {
        return Err(format!("count {count} exceeds the descriptor arrays ({n_off} offsets, {n_len} lengths)"));
    }
    Ok(Descriptors { buf, size, offsets, lengths, count })
}

/// flowHashBatch(buf, offsets, lengths, count, out)
unsafe extern "C" fn flow_hash_batch(env: napi_env, info: napi_callback_info) -> napi_value {
    let [buf, offsets, lengths, count, out] = args::<5>(env, info);
    let d = tri!(env, descriptors(env, buf, offsets, lengths, count));
    let (out, n_out) = tri!(env, get_u32_array(env, out, TYPED_UINT32, "out"));
    if d.count > n_out {
        return throw(env, &format!("count {} exceeds the output array of {n_out}", d.count));
    }
    for i in 0..d.count {
        let off = *d.offsets.add(i) as usize;
        let len = *d.lengths.add(i) as usize;
        let h = if off + len <= d.size { hash::flow_hash(std::slice::from_raw_parts(d.buf.add(off), len)) } else { 0 };
        *out.add(i) = h;
    }
    undefined(env)
}

/// writeBatch(fd, buf, offsets, lengths, count, vnetHdrLen) -> frames written.
/// Each descriptor names a frame; its vnet header sits in the vnetHdrLen bytes before it.
/// lengths[i] is set to 0 for each frame the device refused, so the caller can count exact bytes.
/// A TAP takes one frame per write(); there is no vectored batch for it, so the batch is the JS crossing.
unsafe extern "C" fn write_batch(env: napi_env, info: napi_callback_info) -> napi_value {
    let [fd, buf, offsets, lengths, count, vnet] = args::<6>(env, info);
    let fd = tri!(env, get_i32(env, fd, "fd"));
    let d = tri!(env, descriptors(env, buf, offsets, lengths, count));
    let vnet = tri!(env, get_u32(env, vnet, "vnetHdrLen")) as usize;
    let mut written = 0u32;
    for i in 0..d.count {
        let off = *d.offsets.add(i) as usize;
        let len = *d.lengths.add(i) as usize;
        let accepted = off >= vnet && off + len <= d.size && loop {
            let n = sys::write(fd, d.buf.add(off - vnet) as *const c_void, len + vnet);
            if n < 0 && sys::errno() == sys::EINTR {
                continue;
            }
            break n >= 0;
        };
        if accepted {
            written += 1;
        } else {
            *d.lengths.add(i) = 0;
        }
    }
    uint32(env, written)
}

/// rxCreate(buffer, lengths: Int32Array, slotSize, slotCount, headroom, vnetHdrLen, onBatch) -> engine handle
unsafe extern "C" fn rx_create(env: napi_env, info: napi_callback_info) -> napi_value {
    let [buffer, lengths, slot_size, slot_count, headroom, vnet, callback] = args::<7>(env, info);
    let (buf, size) = tri!(env, get_bytes(env, buffer, "buffer"));
    let (lens, n_lens) = tri!(env, get_u32_array(env, lengths, TYPED_INT32, "lengths"));
    let cfg = rx::EngineConfig {
        slot_size: tri!(env, get_u32(env, slot_size, "slotSize")) as usize,
        slot_count: tri!(env, get_u32(env, slot_count, "slotCount")) as usize,
        headroom: tri!(env, get_u32(env, headroom, "headroom")) as usize,
        vnet_len: tri!(env, get_u32(env, vnet, "vnetHdrLen")) as usize,
    };
    if cfg.slot_count == 0 || cfg.slot_count > n_lens || cfg.slot_size * cfg.slot_count > size {
        return throw(env, "the rx buffer or lengths array is smaller than slotSize * slotCount");
    }
    if cfg.headroom < cfg.vnet_len || cfg.headroom >= cfg.slot_size {
        return throw(env, "headroom must hold the vnet header and leave room for a frame");
    }
    if type_of(env, callback) != 7 {
        return throw(env, "onBatch must be a function");
    }
    let engine = tri!(env, rx::Engine::create(env, buffer, buf, lengths, lens as *mut i32, callback, cfg));
    let mut handle = ptr::null_mut();
    if napi_create_external(env, engine as *mut c_void, Some(rx::finalize_engine), ptr::null_mut(), &mut handle) != NAPI_OK {
        rx::finalize_engine(env, engine as *mut c_void, ptr::null_mut());
        return throw(env, "could not create the receive engine handle");
    }
    handle
}

unsafe fn engine_of(env: napi_env, v: napi_value) -> Result<&'static mut rx::Engine, String> {
    let mut data = ptr::null_mut();
    if napi_get_value_external(env, v, &mut data) != NAPI_OK || data.is_null() {
        return Err("expected a receive engine handle".into());
    }
    Ok(&mut *(data as *mut rx::Engine))
}

/// rxAddPort(engine, portId, fd)
unsafe extern "C" fn rx_add_port(env: napi_env, info: napi_callback_info) -> napi_value {
    let [h, id, fd] = args::<3>(env, info);
    let engine = tri!(env, engine_of(env, h));
    let id = tri!(env, get_u32(env, id, "portId"));
    let fd = tri!(env, get_i32(env, fd, "fd"));
    tri!(env, engine.add_port(id, fd));
    undefined(env)
}

/// rxRemovePort(engine, portId) -> whether it was polled
unsafe extern "C" fn rx_remove_port(env: napi_env, info: napi_callback_info) -> napi_value {
    let [h, id] = args::<2>(env, info);
    let engine = tri!(env, engine_of(env, h));
    let id = tri!(env, get_u32(env, id, "portId"));
    uint32(env, engine.remove_port(id) as u32)
}

/// rxPausePort(engine, portId, paused) -> whether the port exists and is in that state
unsafe extern "C" fn rx_pause_port(env: napi_env, info: napi_callback_info) -> napi_value {
    let [h, id, paused] = args::<3>(env, info);
    let engine = tri!(env, engine_of(env, h));
    let id = tri!(env, get_u32(env, id, "portId"));
    let paused = tri!(env, get_u32(env, paused, "paused")) != 0;
    uint32(env, engine.set_paused(id, paused) as u32)
}

/// rxClose(engine)
unsafe extern "C" fn rx_close(env: napi_env, info: napi_callback_info) -> napi_value {
    let [h] = args::<1>(env, info);
    let engine = tri!(env, engine_of(env, h));
    engine.close();
    undefined(env)
}

#[no_mangle]
pub unsafe extern "C" fn napi_register_module_v1(env: napi_env, exports: napi_value) -> napi_value {
    set_fn(env, exports, "tapOpen", tap_open);
    set_fn(env, exports, "tapSetPersist", tap_set_persist);
    set_fn(env, exports, "closeFd", close_fd);
    set_fn(env, exports, "internetChecksum", internet_checksum);
    set_fn(env, exports, "flowHashBatch", flow_hash_batch);
    set_fn(env, exports, "writeBatch", write_batch);
    set_fn(env, exports, "rxCreate", rx_create);
    set_fn(env, exports, "rxAddPort", rx_add_port);
    set_fn(env, exports, "rxRemovePort", rx_remove_port);
    set_fn(env, exports, "rxPausePort", rx_pause_port);
    set_fn(env, exports, "rxClose", rx_close);
    let mut v = ptr::null_mut();
    napi_create_uint32(env, tap::VNET_HDR_LEN as u32, &mut v);
    napi_set_named_property(env, exports, b"VNET_HDR_LEN\0".as_ptr() as *const _, v);
    exports
}
