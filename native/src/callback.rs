//! A JS function the addon calls from libuv callbacks: the receive engine's
//! batches, a vhost-user device's events. It holds the function, a receiver
//! object and an async context (napi_make_callback needs all three), and
//! turns an exception the function throws into an uncaught exception of the
//! thread instead of losing it inside libuv.

use crate::napi::*;
use std::ptr;

pub struct JsCallback {
    env: napi_env,
    func: napi_ref,
    receiver: napi_ref,
    ctx: napi_async_context,
}

impl JsCallback {
    /// `name` is the async resource's name (NUL-terminated), as async hooks show it.
    pub unsafe fn new(env: napi_env, func: napi_value, name: &[u8]) -> Result<JsCallback, String> {
        let mut cb = JsCallback { env, func: ptr::null_mut(), receiver: ptr::null_mut(), ctx: ptr::null_mut() };
        let mut recv = ptr::null_mut();
        napi_create_object(env, &mut recv);
        let mut resource_name = ptr::null_mut();
        napi_create_string_utf8(env, name.as_ptr() as *const _, name.len() - 1, &mut resource_name);
        if napi_create_reference(env, func, 1, &mut cb.func) != NAPI_OK
            || napi_create_reference(env, recv, 1, &mut cb.receiver) != NAPI_OK
            || napi_async_init(env, recv, resource_name, &mut cb.ctx) != NAPI_OK
        {
            cb.release();
            return Err("could not keep a reference to the callback".into());
        }
        Ok(cb)
    }

    pub fn released(&self) -> bool {
        self.func.is_null()
    }

    /// Calls the function with the arguments `args` makes, in a handle scope of its own.
    pub unsafe fn call<const N: usize>(&self, args: impl FnOnce(napi_env) -> [napi_value; N]) {
        if self.released() {
            return;
        }
        let env = self.env;
        let mut scope = ptr::null_mut();
        napi_open_handle_scope(env, &mut scope);
        let mut func = ptr::null_mut();
        let mut recv = ptr::null_mut();
        napi_get_reference_value(env, self.func, &mut func);
        napi_get_reference_value(env, self.receiver, &mut recv);
        let argv = args(env);
        let mut result = ptr::null_mut();
        if napi_make_callback(env, self.ctx, recv, func, N, argv.as_ptr(), &mut result) == NAPI_PENDING_EXCEPTION {
            let mut err = ptr::null_mut();
            napi_get_and_clear_last_exception(env, &mut err);
            napi_fatal_exception(env, err);
        }
        napi_close_handle_scope(env, scope);
    }

    /// Lets the function go (idempotent); later calls do nothing.
    pub unsafe fn release(&mut self) {
        for r in [&mut self.func, &mut self.receiver] {
            if !r.is_null() {
                napi_delete_reference(self.env, *r);
                *r = ptr::null_mut();
            }
        }
        if !self.ctx.is_null() {
            napi_async_destroy(self.env, self.ctx);
            self.ctx = ptr::null_mut();
        }
    }
}
