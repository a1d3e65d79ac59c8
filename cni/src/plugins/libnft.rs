//! libnftables (the library behind the `nft` tool) loaded at run time with dlopen, so
//! berth can run nft commands in-process: no fork/exec and no tool start-up per command
//! (which costs more than the kernel work itself for our small transactions).
//!
//! Loaded lazily once; when the library is missing, [`Lib::get`] is `None` and callers
//! exec the `nft` tool instead (`BERTH_NFT_EXEC=1` forces that). Each command gets a
//! fresh context (whose netlink socket is opened in the calling thread's namespace), and
//! commands are serialised: libnftables keeps some global state.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxInt = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxStr = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type SetFlags = unsafe extern "C" fn(*mut c_void, c_uint);
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

const NFT_CTX_DEFAULT: u32 = 0;
const NFT_CTX_OUTPUT_JSON: c_uint = 1 << 4;

pub struct Lib {
    ctx_new: CtxNew,
    ctx_free: CtxFree,
    buffer_output: CtxInt,
    buffer_error: CtxInt,
    get_output: CtxStr,
    get_error: CtxStr,
    set_output_flags: SetFlags,
    run_cmd: RunCmd,
    lock: Mutex<()>,
}

// SAFETY: the function pointers are plain C functions; calls are serialised by `lock`.
unsafe impl Send for Lib {}
unsafe impl Sync for Lib {}

static LIB: OnceLock<Option<Lib>> = OnceLock::new();

impl Lib {
    pub fn get() -> Option<&'static Lib> {
        LIB.get_or_init(|| {
            if std::env::var_os("BERTH_NFT_EXEC").is_some_and(|v| v == "1") {
                return None;
            }
            // SAFETY: dlopen/dlsym with NUL-terminated names; the library stays loaded for
            // the life of the process (never dlclosed), so the pointers stay valid.
            unsafe { Lib::load() }
        })
        .as_ref()
    }

    unsafe fn load() -> Option<Lib> {
        let handle = libc::dlopen(
            c"libnftables.so.1".as_ptr(),
            libc::RTLD_NOW | libc::RTLD_LOCAL,
        );
        if handle.is_null() {
            return None;
        }
        let sym = |name: &CStr| -> Option<*mut c_void> {
            let p = libc::dlsym(handle, name.as_ptr());
            (!p.is_null()).then_some(p)
        };
        Some(Lib {
            ctx_new: std::mem::transmute::<*mut c_void, CtxNew>(sym(c"nft_ctx_new")?),
            ctx_free: std::mem::transmute::<*mut c_void, CtxFree>(sym(c"nft_ctx_free")?),
            buffer_output: std::mem::transmute::<*mut c_void, CtxInt>(sym(
                c"nft_ctx_buffer_output",
            )?),
            buffer_error: std::mem::transmute::<*mut c_void, CtxInt>(sym(c"nft_ctx_buffer_error")?),
            get_output: std::mem::transmute::<*mut c_void, CtxStr>(sym(
                c"nft_ctx_get_output_buffer",
            )?),
            get_error: std::mem::transmute::<*mut c_void, CtxStr>(sym(
                c"nft_ctx_get_error_buffer",
            )?),
            set_output_flags: std::mem::transmute::<*mut c_void, SetFlags>(sym(
                c"nft_ctx_output_set_flags",
            )?),
            run_cmd: std::mem::transmute::<*mut c_void, RunCmd>(sym(c"nft_run_cmd_from_buffer")?),
            lock: Mutex::new(()),
        })
    }

    /// Runs `commands` (nft syntax, one transaction); returns (ok, output, error text).
    pub fn run(&self, commands: &str, json: bool) -> (bool, String, String) {
        let Ok(text) = CString::new(commands) else {
            return (false, String::new(), "command contains a NUL byte".into());
        };
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // SAFETY: a context is created, used and freed here only; the buffers it returns
        // are copied before it is freed.
        unsafe {
            let ctx = (self.ctx_new)(NFT_CTX_DEFAULT);
            if ctx.is_null() {
                return (false, String::new(), "nft_ctx_new failed".into());
            }
            (self.buffer_output)(ctx);
            (self.buffer_error)(ctx);
            if json {
                (self.set_output_flags)(ctx, NFT_CTX_OUTPUT_JSON);
            }
            let rc = (self.run_cmd)(ctx, text.as_ptr());
            let copy = |p: *const c_char| {
                if p.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            let out = copy((self.get_output)(ctx));
            let err = copy((self.get_error)(ctx));
            (self.ctx_free)(ctx);
            (rc == 0, out, err)
        }
    }
}
