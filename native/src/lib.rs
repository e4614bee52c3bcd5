//! vsw's native addon. Small and boring on purpose: frame I/O in batches
//! (TAP, AF_PACKET, UDP), checksums, hashing, TCP segmentation. Policy lives in TypeScript.
//!
//! Every exported function validates its arguments and throws a JS Error with
//! one sentence instead of touching memory it was not given.

mod callback;
mod csum;
mod gro;
mod hash;
mod lock;
mod mmsg;
mod napi;
mod packet;
mod rx;
mod segment;
mod sys;
mod tap;
mod udp;
mod guest_mem;
mod vhost;
mod virtq;

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

/// packetOpen(interfaceName, promisc, vlan) -> fd: an AF_PACKET socket on a host interface, each frame behind a vnet
/// header as on a TAP (read by the engine as a packet port, written with packetSendBatch); vlan 0 takes untagged
/// frames, 1..4094 that VLAN's.
unsafe extern "C" fn packet_open(env: napi_env, info: napi_callback_info) -> napi_value {
    let [name, promisc, vlan] = args::<3>(env, info);
    let name = tri!(env, get_string(env, name, "name"));
    let vlan = tri!(env, get_i32(env, vlan, "vlan"));
    if !(0..=4094).contains(&vlan) {
        return throw(env, &format!("vlan {} is out of range 0..4094", vlan));
    }
    let fd = tri!(env, packet::packet_open(&name, get_bool(env, promisc), vlan as u16));
    int32(env, fd)
}

/// tcpSocketIn(netnsPath) -> fd: a non-blocking TCP socket made in that network namespace.
unsafe extern "C" fn tcp_socket_in(env: napi_env, info: napi_callback_info) -> napi_value {
    let [path] = args::<1>(env, info);
    let path = tri!(env, get_string(env, path, "netnsPath"));
    let fd = tri!(env, tap::tcp_socket_in(&path));
    int32(env, fd)
}

/// tapSetPersist(fd, persist)
unsafe extern "C" fn tap_set_persist(env: napi_env, info: napi_callback_info) -> napi_value {
    let [fd, persist] = args::<2>(env, info);
    let fd = tri!(env, get_i32(env, fd, "fd"));
    tri!(env, tap::tap_set_persist(fd, get_bool(env, persist)));
    undefined(env)
}

/// tapLinkInfo(name, netnsPath?) -> { mac, up, mtu, ipv4 } or null when the interface does not exist
unsafe extern "C" fn tap_link_info(env: napi_env, info: napi_callback_info) -> napi_value {
    let [name, netns] = args::<2>(env, info);
    let name = tri!(env, get_string(env, name, "name"));
    let netns = tri!(env, optional_string(env, netns, "netns"));
    let found = tri!(env, tap::link_info(&name, netns.as_deref()));
    let mut out = ptr::null_mut();
    let link = match found {
        Some(link) => link,
        None => {
            napi_get_null(env, &mut out);
            return out;
        }
    };
    napi_create_object(env, &mut out);
    let m = link.mac;
    let mac = format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]);
    set_property(env, out, b"mac\0", string(env, &mac));
    let mut up = ptr::null_mut();
    napi_get_boolean(env, link.up, &mut up);
    set_property(env, out, b"up\0", up);
    set_property(env, out, b"mtu\0", uint32(env, link.mtu));
    let ipv4 = match link.ipv4 {
        Some(a) => string(env, &std::net::Ipv4Addr::from(a).to_string()),
        None => {
            let mut null = ptr::null_mut();
            napi_get_null(env, &mut null);
            null
        }
    };
    set_property(env, out, b"ipv4\0", ipv4);
    out
}

unsafe fn string(env: napi_env, text: &str) -> napi_value {
    let mut v = ptr::null_mut();
    napi_create_string_utf8(env, text.as_ptr() as *const _, text.len(), &mut v);
    v
}

unsafe fn set_property(env: napi_env, object: napi_value, name: &[u8], value: napi_value) {
    napi_set_named_property(env, object, name.as_ptr() as *const _, value);
}

/// lockFile(path) -> fd holding an exclusive flock on the file (created 0600 if missing)
unsafe extern "C" fn lock_file(env: napi_env, info: napi_callback_info) -> napi_value {
    let [path] = args::<1>(env, info);
    let path = tri!(env, get_string(env, path, "path"));
    int32(env, tri!(env, lock::lock_file(&path)))
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

/// packetSendBatch(fd, buf, offsets, lengths, count, vnetHdrLen) -> frames sent: writeBatch's contract for a packet
/// socket (packetOpen), with one sendmmsg per 64 frames instead of a write() each. vnetHdrLen must be the socket's (10).
/// Refused frames get lengths[i] = 0; a full queue (EAGAIN, ENOBUFS) refuses the rest of the batch (mmsg::send_batch).
unsafe extern "C" fn packet_send_batch(env: napi_env, info: napi_callback_info) -> napi_value {
    let [fd, buf, offsets, lengths, count, vnet] = args::<6>(env, info);
    let fd = tri!(env, get_i32(env, fd, "fd"));
    let d = tri!(env, descriptors(env, buf, offsets, lengths, count));
    let vnet = tri!(env, get_u32(env, vnet, "vnetHdrLen"));
    if vnet != tap::VNET_HDR_LEN as u32 {
        return throw(env, &format!("vnetHdrLen must be {}: a packet socket takes a virtio_net_hdr before every frame", tap::VNET_HDR_LEN));
    }
    uint32(env, packet::send_batch(fd, d.buf, d.size, d.offsets, d.lengths, d.count))
}

/// rxCreate(buffer, lengths: Int32Array, slotSize, slotCount, headroom, vnetHdrLen, onBatch, sources?: Uint32Array) -> engine handle.
/// `sources` (4 words per slot) is needed only by UDP ports, which report each datagram's sender there.
unsafe extern "C" fn rx_create(env: napi_env, info: napi_callback_info) -> napi_value {
    let [buffer, lengths, slot_size, slot_count, headroom, vnet, callback, sources] = args::<8>(env, info);
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
    let sources = match type_of(env, sources) {
        NAPI_UNDEFINED | NAPI_NULL => None,
        _ => {
            let (data, n) = tri!(env, get_u32_array(env, sources, TYPED_UINT32, "sources"));
            if n < rx::SOURCE_WORDS * cfg.slot_count {
                return throw(env, "the sources array must hold 4 words per slot");
            }
            Some((sources, data))
        }
    };
    let engine = tri!(env, rx::Engine::create(env, buffer, buf, lengths, lens as *mut i32, sources, callback, cfg));
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

/// rxAddPort(engine, portId, fd, kind = 0): kind 0 is a TAP (read per frame), 1 a UDP socket (recvmmsg, VXLAN layout),
/// 2 a packet socket (recvmmsg, TAP layout).
unsafe extern "C" fn rx_add_port(env: napi_env, info: napi_callback_info) -> napi_value {
    let [h, id, fd, kind] = args::<4>(env, info);
    let engine = tri!(env, engine_of(env, h));
    let id = tri!(env, get_u32(env, id, "portId"));
    let fd = tri!(env, get_i32(env, fd, "fd"));
    let kind = match type_of(env, kind) {
        NAPI_UNDEFINED => rx::PortKind::Tap,
        _ => match tri!(env, get_u32(env, kind, "kind")) {
            0 => rx::PortKind::Tap,
            1 => rx::PortKind::Udp,
            2 => rx::PortKind::Packet,
            k => return throw(env, &format!("kind {k} is not 0 (TAP), 1 (UDP) or 2 (packet socket)")),
        },
    };
    tri!(env, engine.add_port(id, fd, kind));
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

/// udpOpen(bindAddress, port, netns?) -> fd
unsafe extern "C" fn udp_open(env: napi_env, info: napi_callback_info) -> napi_value {
    let [addr, port, netns, gro] = args::<4>(env, info);
    let addr = tri!(env, get_string(env, addr, "bindAddress"));
    let bind: std::net::Ipv4Addr = match addr.parse() {
        Ok(a) => a,
        Err(_) => return throw(env, &format!("bindAddress {addr:?} is not an IPv4 address")),
    };
    let port = tri!(env, get_u32(env, port, "port"));
    if port > 0xffff {
        return throw(env, &format!("port {port} is above 65535"));
    }
    let netns = tri!(env, optional_string(env, netns, "netns"));
    let gro = match type_of(env, gro) {
        NAPI_UNDEFINED | NAPI_NULL => false,
        _ => get_bool(env, gro),
    };
    let fd = tri!(env, udp::udp_open(&udp::UdpOptions { bind: u32::from(bind), port: port as u16, netns: netns.as_deref(), gro }));
    int32(env, fd)
}

/// udpLocalPort(fd) -> the bound port
unsafe extern "C" fn udp_local_port(env: napi_env, info: napi_callback_info) -> napi_value {
    let [fd] = args::<1>(env, info);
    let fd = tri!(env, get_i32(env, fd, "fd"));
    uint32(env, tri!(env, udp::local_port(fd)) as u32)
}

/// udpSendBatch(fd, buf, offsets, lengths, count, dstAddrs: Uint32Array, dstPorts: Uint16Array | Uint32Array) -> datagrams sent.
/// Refused datagrams get lengths[i] = 0, as in writeBatch (see udp::send_batch for which ones).
unsafe extern "C" fn udp_send_batch(env: napi_env, info: napi_callback_info) -> napi_value {
    let [fd, buf, offsets, lengths, count, addrs, ports, segment_sizes] = args::<8>(env, info);
    let fd = tri!(env, get_i32(env, fd, "fd"));
    let d = tri!(env, descriptors(env, buf, offsets, lengths, count));
    let (addrs, n_addrs) = tri!(env, get_u32_array(env, addrs, TYPED_UINT32, "dstAddrs"));
    let (kind, data, n_ports) = tri!(env, get_typed_array(env, ports, "dstPorts"));
    let ports = match kind {
        TYPED_UINT16 => udp::Ports::U16(data as *const u16),
        TYPED_UINT32 => udp::Ports::U32(data as *const u32),
        _ => return throw(env, "dstPorts must be a Uint16Array or a Uint32Array"),
    };
    if d.count > n_addrs || d.count > n_ports {
        return throw(env, &format!("count {} exceeds the destination arrays ({n_addrs} addresses, {n_ports} ports)", d.count));
    }
    let segment_sizes = match type_of(env, segment_sizes) {
        NAPI_UNDEFINED | NAPI_NULL => None,
        _ => {
            let (kind, data, n) = tri!(env, get_typed_array(env, segment_sizes, "segmentSizes"));
            if n < d.count {
                return throw(env, &format!("count {} exceeds the segmentSizes array ({n})", d.count));
            }
            match kind {
                TYPED_UINT16 => Some(udp::Ports::U16(data as *const u16)),
                TYPED_UINT32 => Some(udp::Ports::U32(data as *const u32)),
                _ => return throw(env, "segmentSizes must be a Uint16Array or a Uint32Array"),
            }
        }
    };
    let batch = udp::SendBatch { buf: d.buf, size: d.size, offsets: d.offsets, lengths: d.lengths, count: d.count, addrs, ports, segment_sizes };
    uint32(env, udp::send_batch(fd, &batch))
}

/// The frame at buf[offset, +length) with its vnet header in the 10 bytes before it.
unsafe fn vnet_frame(env: napi_env, buf: napi_value, off: napi_value, len: napi_value) -> Result<(*mut u8, usize), String> {
    let (data, size) = get_bytes(env, buf, "buffer")?;
    let off = get_u32(env, off, "frameOffset")? as usize;
    let len = get_u32(env, len, "frameLength")? as usize;
    if off < segment::VNET_LEN || off + len > size {
        return Err(format!("frame {off}+{len} with its vnet header is outside the buffer of {size} bytes"));
    }
    Ok((data.add(off), len))
}

/// segmentTso(buf, frameOffset, frameLength, out, outOffsets, outLengths, maxSegments, outVnetLen) -> segments or a negative code.
unsafe extern "C" fn segment_tso(env: napi_env, info: napi_callback_info) -> napi_value {
    let [buf, off, len, out, out_offsets, out_lengths, max, out_vnet] = args::<8>(env, info);
    let (frame, frame_len) = tri!(env, vnet_frame(env, buf, off, len));
    let (out_buf, out_size) = tri!(env, get_bytes(env, out, "out"));
    let (offsets, n_off) = tri!(env, get_u32_array(env, out_offsets, TYPED_UINT32, "outOffsets"));
    let (lengths, n_len) = tri!(env, get_u32_array(env, out_lengths, TYPED_UINT32, "outLengths"));
    let max = tri!(env, get_u32(env, max, "maxSegments")) as usize;
    if max > n_off || max > n_len {
        return throw(env, &format!("maxSegments {max} exceeds the descriptor arrays ({n_off} offsets, {n_len} lengths)"));
    }
    // Segment i's offset is read after length i-1 is written: the two arrays must not alias.
    let (o_start, l_start) = (offsets as usize, lengths as usize);
    if o_start < l_start + 4 * max && l_start < o_start + 4 * max {
        return throw(env, "outOffsets and outLengths must not share memory");
    }
    let vnet_len = tri!(env, get_u32(env, out_vnet, "outVnetLen")) as usize;
    if vnet_len != 0 && vnet_len != segment::VNET_LEN {
        return throw(env, &format!("outVnetLen must be 0 or {}", segment::VNET_LEN));
    }
    let mut o = segment::Output {
        buf: out_buf,
        size: out_size,
        offsets: std::slice::from_raw_parts(offsets, max),
        lengths: std::slice::from_raw_parts_mut(lengths, max),
        vnet_len,
    };
    int32(env, segment::segment_tso(frame, frame_len, &mut o))
}

/// completeChecksum(buf, frameOffset, frameLength) -> 1 completed, 0 nothing to do, or a negative code.
unsafe extern "C" fn complete_checksum(env: napi_env, info: napi_callback_info) -> napi_value {
    let [buf, off, len] = args::<3>(env, info);
    let (frame, frame_len) = tri!(env, vnet_frame(env, buf, off, len));
    let vnet = std::slice::from_raw_parts_mut(frame.sub(segment::VNET_LEN), segment::VNET_LEN);
    int32(env, segment::complete_checksum(vnet, std::slice::from_raw_parts_mut(frame, frame_len)))
}

/// vxlanGro(buf, blobOffset, blobLength, segmentSize, outOffset, outLimit, frameOffsets, frameLengths, headerOffsets, maxFrames)
/// -> frames or a negative code. Argument values that make no sense are gro::MALFORMED, not a throw.
unsafe extern "C" fn vxlan_gro(env: napi_env, info: napi_callback_info) -> napi_value {
    let [buf, blob_off, blob_len, seg, out_off, out_limit, offsets, lengths, headers, max] = args::<10>(env, info);
    let (data, size) = tri!(env, get_bytes(env, buf, "buffer"));
    let req = gro::Request {
        blob_offset: tri!(env, get_u32(env, blob_off, "blobOffset")) as usize,
        blob_length: tri!(env, get_u32(env, blob_len, "blobLength")) as usize,
        segment_size: tri!(env, get_u32(env, seg, "segmentSize")) as usize,
        out_offset: tri!(env, get_u32(env, out_off, "outOffset")) as usize,
        out_limit: tri!(env, get_u32(env, out_limit, "outLimit")) as usize,
    };
    let offsets = tri!(env, get_u32_array(env, offsets, TYPED_UINT32, "frameOffsets"));
    let lengths = tri!(env, get_u32_array(env, lengths, TYPED_UINT32, "frameLengths"));
    let headers = tri!(env, get_u32_array(env, headers, TYPED_UINT32, "headerOffsets"));
    let max = tri!(env, get_u32(env, max, "maxFrames")) as usize;
    int32(env, gro::vxlan_gro(data, size, &req, offsets, lengths, headers, max))
}

/// vxlanGroSlots(buf, slotSize, headroom, count, lengths: Int32Array, sources: Uint32Array, info: Uint32Array)
/// -> merged runs or gro::MALFORMED: GRO across the single datagrams of an rx batch, in place (gro.rs).
unsafe extern "C" fn vxlan_gro_slots(env: napi_env, info: napi_callback_info) -> napi_value {
    let [buf, slot_size, headroom, count, lengths, sources, out] = args::<7>(env, info);
    let (data, size) = tri!(env, get_bytes(env, buf, "buffer"));
    let slots = gro::Slots {
        slot_size: tri!(env, get_u32(env, slot_size, "slotSize")) as usize,
        headroom: tri!(env, get_u32(env, headroom, "headroom")) as usize,
        count: tri!(env, get_u32(env, count, "count")) as usize,
    };
    let (lens, n_lens) = tri!(env, get_u32_array(env, lengths, TYPED_INT32, "lengths"));
    let (srcs, n_srcs) = tri!(env, get_u32_array(env, sources, TYPED_UINT32, "sources"));
    let out = tri!(env, get_u32_array(env, out, TYPED_UINT32, "info"));
    int32(env, gro::vxlan_gro_slots(data, size, &slots, (lens as *const i32, n_lens), (srcs as *const u32, n_srcs), out))
}

unsafe fn device_of(env: napi_env, v: napi_value) -> Result<*mut vhost::Device, String> {
    let mut data = ptr::null_mut();
    if napi_get_value_external(env, v, &mut data) != NAPI_OK || data.is_null() {
        return Err("expected a vhost-user device handle".into());
    }
    Ok(data as *mut vhost::Device)
}

/// vhostOpen(path, server, onEvent(code, detail)) -> device handle. A server listens on path now (a
/// socket file already there is replaced: the caller checked it is one); a client connects with vhostConnect.
unsafe extern "C" fn vhost_open(env: napi_env, info: napi_callback_info) -> napi_value {
    let [path, server, callback] = args::<3>(env, info);
    let path = tri!(env, get_string(env, path, "path"));
    if type_of(env, callback) != 7 {
        return throw(env, "onEvent must be a function");
    }
    let dev = tri!(env, vhost::Device::create(env, &path, get_bool(env, server), callback));
    let mut handle = ptr::null_mut();
    if napi_create_external(env, dev as *mut c_void, Some(vhost::finalize_device), ptr::null_mut(), &mut handle) != NAPI_OK {
        vhost::finalize_device(env, dev as *mut c_void, ptr::null_mut());
        return throw(env, "could not create the vhost-user device handle");
    }
    handle
}

/// vhostConnect(device) -> whether it is connected (false: nothing serves the path yet).
unsafe extern "C" fn vhost_connect(env: napi_env, info: napi_callback_info) -> napi_value {
    let [h] = args::<1>(env, info);
    let dev = tri!(env, device_of(env, h));
    let mut out = ptr::null_mut();
    napi_get_boolean(env, tri!(env, vhost::Device::connect(dev)), &mut out);
    out
}

/// vhostClose(device): drops the connection, stops listening and removes the socket file it made.
unsafe extern "C" fn vhost_close(env: napi_env, info: napi_callback_info) -> napi_value {
    let [h] = args::<1>(env, info);
    let dev = tri!(env, device_of(env, h));
    vhost::Device::close(dev);
    undefined(env)
}

unsafe fn number(env: napi_env, v: f64) -> napi_value {
    let mut out = ptr::null_mut();
    napi_create_double(env, v, &mut out);
    out
}

/// vhostStatus(device) -> { connected, running, features, broken, regions, memoryBytes, memorySealed, connections, brokenCount, rxNoBuffer, rxUnfit, kicks, calls }
unsafe extern "C" fn vhost_status(env: napi_env, info: napi_callback_info) -> napi_value {
    let [h] = args::<1>(env, info);
    let dev = &*tri!(env, device_of(env, h));
    let (connected, running, features, broken, regions) = dev.status();
    let mut out = ptr::null_mut();
    napi_create_object(env, &mut out);
    let mut b = ptr::null_mut();
    napi_get_boolean(env, connected, &mut b);
    set_property(env, out, b"connected\0", b);
    let mut b = ptr::null_mut();
    napi_get_boolean(env, running, &mut b);
    set_property(env, out, b"running\0", b);
    set_property(env, out, b"features\0", string(env, &format!("{features:#x}")));
    let broken = match broken {
        Some(reason) => string(env, reason),
        None => {
            let mut null = ptr::null_mut();
            napi_get_null(env, &mut null);
            null
        }
    };
    set_property(env, out, b"broken\0", broken);
    set_property(env, out, b"regions\0", uint32(env, regions));
    set_property(env, out, b"memoryBytes\0", number(env, dev.memory_bytes() as f64));
    let mut sealed = ptr::null_mut();
    napi_get_boolean(env, dev.memory_sealed(), &mut sealed);
    set_property(env, out, b"memorySealed\0", sealed);
    let s = dev.stats;
    set_property(env, out, b"connections\0", uint32(env, s.connections));
    set_property(env, out, b"brokenCount\0", uint32(env, s.broken));
    set_property(env, out, b"rxNoBuffer\0", number(env, s.rx_no_buffer));
    set_property(env, out, b"rxUnfit\0", number(env, s.rx_unfit));
    set_property(env, out, b"kicks\0", number(env, s.kicks));
    set_property(env, out, b"calls\0", number(env, s.calls));
    out
}

/// rxAddVhostPort(engine, portId, device): the device's transmit queue feeds the engine as port portId.
unsafe extern "C" fn rx_add_vhost_port(env: napi_env, info: napi_callback_info) -> napi_value {
    let [h, id, d] = args::<3>(env, info);
    let engine = tri!(env, engine_of(env, h));
    let id = tri!(env, get_u32(env, id, "portId"));
    let dev = tri!(env, device_of(env, d));
    tri!(env, engine.add_vhost(id, dev));
    undefined(env)
}

/// vhostTransmit(device, buf, offsets, lengths, count) -> frames the guest took: writeBatch's contract
/// (each frame's vnet header in the 10 bytes before it; refused frames get lengths[i] = 0).
unsafe extern "C" fn vhost_transmit(env: napi_env, info: napi_callback_info) -> napi_value {
    let [h, buf, offsets, lengths, count] = args::<5>(env, info);
    let dev = tri!(env, device_of(env, h));
    let d = tri!(env, descriptors(env, buf, offsets, lengths, count));
    uint32(env, vhost::Device::transmit(dev, d.buf, d.size, d.offsets, d.lengths, d.count))
}

#[no_mangle]
pub unsafe extern "C" fn napi_register_module_v1(env: napi_env, exports: napi_value) -> napi_value {
    set_fn(env, exports, "tapOpen", tap_open);
    set_fn(env, exports, "packetOpen", packet_open);
    set_fn(env, exports, "packetSendBatch", packet_send_batch);
    set_fn(env, exports, "tapSetPersist", tap_set_persist);
    set_fn(env, exports, "tcpSocketIn", tcp_socket_in);
    set_fn(env, exports, "closeFd", close_fd);
    set_fn(env, exports, "tapLinkInfo", tap_link_info);
    set_fn(env, exports, "lockFile", lock_file);
    set_fn(env, exports, "internetChecksum", internet_checksum);
    set_fn(env, exports, "flowHashBatch", flow_hash_batch);
    set_fn(env, exports, "writeBatch", write_batch);
    set_fn(env, exports, "rxCreate", rx_create);
    set_fn(env, exports, "rxAddPort", rx_add_port);
    set_fn(env, exports, "rxRemovePort", rx_remove_port);
    set_fn(env, exports, "rxPausePort", rx_pause_port);
    set_fn(env, exports, "rxClose", rx_close);
    set_fn(env, exports, "udpOpen", udp_open);
    set_fn(env, exports, "udpLocalPort", udp_local_port);
    set_fn(env, exports, "udpSendBatch", udp_send_batch);
    set_fn(env, exports, "segmentTso", segment_tso);
    set_fn(env, exports, "completeChecksum", complete_checksum);
    set_fn(env, exports, "vxlanGro", vxlan_gro);
    set_fn(env, exports, "vxlanGroSlots", vxlan_gro_slots);
    set_fn(env, exports, "vhostOpen", vhost_open);
    set_fn(env, exports, "vhostConnect", vhost_connect);
    set_fn(env, exports, "vhostClose", vhost_close);
    set_fn(env, exports, "vhostStatus", vhost_status);
    set_fn(env, exports, "vhostTransmit", vhost_transmit);
    set_fn(env, exports, "rxAddVhostPort", rx_add_vhost_port);
    let mut v = ptr::null_mut();
    napi_create_uint32(env, tap::VNET_HDR_LEN as u32, &mut v);
    napi_set_named_property(env, exports, b"VNET_HDR_LEN\0".as_ptr() as *const _, v);
    exports
}
