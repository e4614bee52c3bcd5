//! The slice of Node-API that vsw uses, declared by hand (the napi crates are
//! not reachable from this project's machines). The symbols are resolved from
//! the node binary when the addon is loaded, so no link flags are needed.
#![allow(non_camel_case_types, dead_code)]

use std::os::raw::{c_char, c_void};
use std::ptr;

pub type napi_env = *mut c_void;
pub type napi_value = *mut c_void;
pub type napi_ref = *mut c_void;
pub type napi_callback_info = *mut c_void;
pub type napi_handle_scope = *mut c_void;
pub type napi_async_context = *mut c_void;
pub type napi_status = i32;
pub type napi_callback = unsafe extern "C" fn(napi_env, napi_callback_info) -> napi_value;
pub type napi_finalize = unsafe extern "C" fn(napi_env, *mut c_void, *mut c_void);

pub const NAPI_OK: napi_status = 0;
pub const NAPI_PENDING_EXCEPTION: napi_status = 10;

pub const NAPI_UNDEFINED: i32 = 0;
pub const NAPI_NULL: i32 = 1;
pub const NAPI_NUMBER: i32 = 3;
pub const NAPI_STRING: i32 = 4;

pub const TYPED_UINT16: i32 = 4;
pub const TYPED_INT32: i32 = 5;
pub const TYPED_UINT32: i32 = 6;

extern "C" {
    pub fn napi_create_function(env: napi_env, name: *const c_char, len: usize, cb: napi_callback, data: *mut c_void, result: *mut napi_value) -> napi_status;
    pub fn napi_set_named_property(env: napi_env, object: napi_value, name: *const c_char, value: napi_value) -> napi_status;
    pub fn napi_get_cb_info(env: napi_env, info: napi_callback_info, argc: *mut usize, argv: *mut napi_value, this_arg: *mut napi_value, data: *mut *mut c_void) -> napi_status;
    pub fn napi_typeof(env: napi_env, value: napi_value, result: *mut i32) -> napi_status;
    pub fn napi_get_value_int32(env: napi_env, value: napi_value, result: *mut i32) -> napi_status;
    pub fn napi_get_value_uint32(env: napi_env, value: napi_value, result: *mut u32) -> napi_status;
    pub fn napi_get_value_bool(env: napi_env, value: napi_value, result: *mut bool) -> napi_status;
    pub fn napi_get_value_string_utf8(env: napi_env, value: napi_value, buf: *mut c_char, bufsize: usize, result: *mut usize) -> napi_status;
    pub fn napi_create_int32(env: napi_env, value: i32, result: *mut napi_value) -> napi_status;
    pub fn napi_create_double(env: napi_env, value: f64, result: *mut napi_value) -> napi_status;
    pub fn napi_create_uint32(env: napi_env, value: u32, result: *mut napi_value) -> napi_status;
    pub fn napi_create_object(env: napi_env, result: *mut napi_value) -> napi_status;
    pub fn napi_get_undefined(env: napi_env, result: *mut napi_value) -> napi_status;
    pub fn napi_get_null(env: napi_env, result: *mut napi_value) -> napi_status;
    pub fn napi_get_boolean(env: napi_env, value: bool, result: *mut napi_value) -> napi_status;
    pub fn napi_get_buffer_info(env: napi_env, value: napi_value, data: *mut *mut c_void, length: *mut usize) -> napi_status;
    pub fn napi_get_typedarray_info(env: napi_env, value: napi_value, kind: *mut i32, length: *mut usize, data: *mut *mut c_void, arraybuffer: *mut napi_value, byte_offset: *mut usize) -> napi_status;
    pub fn napi_throw_error(env: napi_env, code: *const c_char, msg: *const c_char) -> napi_status;
    pub fn napi_is_exception_pending(env: napi_env, result: *mut bool) -> napi_status;
    pub fn napi_get_and_clear_last_exception(env: napi_env, result: *mut napi_value) -> napi_status;
    pub fn napi_fatal_exception(env: napi_env, err: napi_value) -> napi_status;
    pub fn napi_create_reference(env: napi_env, value: napi_value, initial: u32, result: *mut napi_ref) -> napi_status;
    pub fn napi_delete_reference(env: napi_env, reference: napi_ref) -> napi_status;
    pub fn napi_get_reference_value(env: napi_env, reference: napi_ref, result: *mut napi_value) -> napi_status;
    pub fn napi_open_handle_scope(env: napi_env, result: *mut napi_handle_scope) -> napi_status;
    pub fn napi_close_handle_scope(env: napi_env, scope: napi_handle_scope) -> napi_status;
    pub fn napi_async_init(env: napi_env, resource: napi_value, name: napi_value, result: *mut napi_async_context) -> napi_status;
    pub fn napi_make_callback(env: napi_env, ctx: napi_async_context, recv: napi_value, func: napi_value, argc: usize, argv: *const napi_value, result: *mut napi_value) -> napi_status;
    pub fn napi_create_string_utf8(env: napi_env, s: *const c_char, len: usize, result: *mut napi_value) -> napi_status;
    pub fn napi_create_external(env: napi_env, data: *mut c_void, finalize: Option<napi_finalize>, hint: *mut c_void, result: *mut napi_value) -> napi_status;
    pub fn napi_get_value_external(env: napi_env, value: napi_value, result: *mut *mut c_void) -> napi_status;
    pub fn napi_get_uv_event_loop(env: napi_env, result: *mut *mut c_void) -> napi_status;
    pub fn napi_add_env_cleanup_hook(env: napi_env, fun: unsafe extern "C" fn(*mut c_void), arg: *mut c_void) -> napi_status;
    pub fn napi_remove_env_cleanup_hook(env: napi_env, fun: unsafe extern "C" fn(*mut c_void), arg: *mut c_void) -> napi_status;
    pub fn napi_async_destroy(env: napi_env, ctx: napi_async_context) -> napi_status;
}

/// Throws a JS Error with `msg` and returns `undefined` so callers can `return throw(...)`.
pub unsafe fn throw(env: napi_env, msg: &str) -> napi_value {
    let mut pending = false;
    napi_is_exception_pending(env, &mut pending);
    if !pending {
        let mut text: Vec<u8> = msg.bytes().filter(|b| *b != 0).collect();
        text.push(0);
        napi_throw_error(env, ptr::null(), text.as_ptr() as *const c_char);
    }
    undefined(env)
}

pub unsafe fn undefined(env: napi_env) -> napi_value {
    let mut v = ptr::null_mut();
    napi_get_undefined(env, &mut v);
    v
}

pub unsafe fn int32(env: napi_env, value: i32) -> napi_value {
    let mut v = ptr::null_mut();
    napi_create_int32(env, value, &mut v);
    v
}

pub unsafe fn uint32(env: napi_env, value: u32) -> napi_value {
    let mut v = ptr::null_mut();
    napi_create_uint32(env, value, &mut v);
    v
}

/// Reads up to N arguments; missing ones are `undefined`.
pub unsafe fn args<const N: usize>(env: napi_env, info: napi_callback_info) -> [napi_value; N] {
    let mut argv = [ptr::null_mut(); N];
    let mut argc = N;
    napi_get_cb_info(env, info, &mut argc, argv.as_mut_ptr(), ptr::null_mut(), ptr::null_mut());
    for slot in argv.iter_mut().skip(argc) {
        *slot = undefined(env);
    }
    argv
}

pub unsafe fn type_of(env: napi_env, value: napi_value) -> i32 {
    let mut t = -1;
    napi_typeof(env, value, &mut t);
    t
}

pub unsafe fn get_i32(env: napi_env, value: napi_value, what: &str) -> Result<i32, String> {
    let mut out = 0;
    if napi_get_value_int32(env, value, &mut out) != NAPI_OK {
        return Err(format!("{what} must be a number"));
    }
    Ok(out)
}

pub unsafe fn get_u32(env: napi_env, value: napi_value, what: &str) -> Result<u32, String> {
    let mut out = 0;
    if napi_get_value_uint32(env, value, &mut out) != NAPI_OK {
        return Err(format!("{what} must be a non-negative number"));
    }
    Ok(out)
}

pub unsafe fn get_bool(env: napi_env, value: napi_value) -> bool {
    let mut out = false;
    napi_get_value_bool(env, value, &mut out);
    out
}

pub unsafe fn get_string(env: napi_env, value: napi_value, what: &str) -> Result<String, String> {
    let mut buf = [0u8; 4096];
    let mut len = 0usize;
    if napi_get_value_string_utf8(env, value, buf.as_mut_ptr() as *mut c_char, buf.len(), &mut len) != NAPI_OK {
        return Err(format!("{what} must be a string"));
    }
    if len >= buf.len() - 1 {
        return Err(format!("{what} is longer than {} bytes", buf.len() - 2));
    }
    Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// A Buffer or any TypedArray as raw bytes.
pub unsafe fn get_bytes(env: napi_env, value: napi_value, what: &str) -> Result<(*mut u8, usize), String> {
    let mut data = ptr::null_mut();
    let mut len = 0usize;
    if napi_get_buffer_info(env, value, &mut data, &mut len) == NAPI_OK {
        return Ok((data as *mut u8, len));
    }
    Err(format!("{what} must be a Buffer or Uint8Array"))
}

/// A typed array of 32-bit elements (`kind` is TYPED_INT32 or TYPED_UINT32).
pub unsafe fn get_u32_array(env: napi_env, value: napi_value, kind: i32, what: &str) -> Result<(*mut u32, usize), String> {
    let mut actual = -1;
    let mut len = 0usize;
    let mut data = ptr::null_mut();
    let mut ab = ptr::null_mut();
    let mut off = 0usize;
    if napi_get_typedarray_info(env, value, &mut actual, &mut len, &mut data, &mut ab, &mut off) != NAPI_OK || actual != kind {
        let name = if kind == TYPED_INT32 { "Int32Array" } else { "Uint32Array" };
        return Err(format!("{what} must be a {name}"));
    }
    Ok((data as *mut u32, len))
}

/// Any typed array: (element kind, data, element count), for arguments that accept several kinds.
pub unsafe fn get_typed_array(env: napi_env, value: napi_value, what: &str) -> Result<(i32, *mut c_void, usize), String> {
    let mut kind = -1;
    let mut len = 0usize;
    let mut data = ptr::null_mut();
    let mut ab = ptr::null_mut();
    let mut off = 0usize;
    if napi_get_typedarray_info(env, value, &mut kind, &mut len, &mut data, &mut ab, &mut off) != NAPI_OK {
        return Err(format!("{what} must be a typed array"));
    }
    Ok((kind, data, len))
}

pub unsafe fn set_fn(env: napi_env, exports: napi_value, name: &str, cb: napi_callback) {
    let cname = format!("{name}\0");
    let mut f = ptr::null_mut();
    napi_create_function(env, cname.as_ptr() as *const c_char, name.len(), cb, ptr::null_mut(), &mut f);
    napi_set_named_property(env, exports, cname.as_ptr() as *const c_char, f);
}
