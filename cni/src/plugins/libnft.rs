//! libnftables (the library behind the `nft` tool) loaded at run time with dlopen, so
//! berth can run nft commands in-process: no fork/exec and no tool start-up per command
//! (which costs more than the kernel work itself for our small transactions).
//!
//! Loaded lazily once; when the library is missing, [`Lib::get`] is `None` and callers
//! exec the `nft` tool instead (`BERTH_NFT_EXEC=1` forces that). Commands are serialised:
//! libnftables keeps some global state.
//!
//! One context is kept open between commands, for the network namespace of the thread that
//! ran the last one (its netlink socket belongs to the namespace it was opened in). Why:
//! closing an nftables netlink socket makes the kernel wait, under the nftables commit
//! lock, for an RCU grace period when the transaction before it deleted or replaced
//! anything (the freeing of deleted rules is flushed at socket release); that was 8-15 ms
//! per command on a busy 2-core node, more than the commands themselves. With the socket
//! kept, the kernel frees deleted rules in the background. A command from another
//! namespace closes the kept context first (tests run plugins in namespaces of their own;
//! berthd always runs them in the host's). The kept context pins its namespace, so at most
//! one otherwise dead namespace stays alive, until the next command.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::os::unix::fs::MetadataExt;
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
    /// The kept context; the mutex also serialises every command.
    kept: Mutex<Option<KeptCtx>>,
}

/// An open context and the network namespace (device, inode of its nsfs file) it was
/// opened in.
struct KeptCtx {
    ctx: *mut c_void,
    netns: (u64, u64),
}

// SAFETY: the function pointers are plain C functions; the context pointer is only used
// with `kept` locked, so calls are serialised.
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
            kept: Mutex::new(None),
        })
    }

    /// The calling thread's network namespace.
    fn thread_netns() -> Option<(u64, u64)> {
        let meta = std::fs::metadata("/proc/thread-self/ns/net").ok()?;
        Some((meta.dev(), meta.ino()))
    }

    /// A context for the calling thread's namespace: the kept one, or a new one (the kept
    /// one of another namespace is freed first).
    ///
    /// SAFETY: the caller holds `kept` locked.
    unsafe fn ctx_for_thread(&self, kept: &mut Option<KeptCtx>) -> Option<*mut c_void> {
        let netns = Self::thread_netns();
        if let (Some(k), Some(ns)) = (kept.as_ref(), netns) {
            if k.netns == ns {
                return Some(k.ctx);
            }
        }
        if let Some(old) = kept.take() {
            (self.ctx_free)(old.ctx);
        }
        let ctx = (self.ctx_new)(NFT_CTX_DEFAULT);
        if ctx.is_null() {
            return None;
        }
        (self.buffer_output)(ctx);
        (self.buffer_error)(ctx);
        // libnftables opens its socket without O_CLOEXEC: a kept one would be inherited by
        // every process berthd starts (shims, exec'd plugins).
        set_cloexec_on_nfnetlink_sockets();
        if let Some(ns) = netns {
            *kept = Some(KeptCtx { ctx, netns: ns });
        }
        Some(ctx)
    }

    /// Runs `commands` (nft syntax, one transaction); returns (ok, output, error text).
    pub fn run(&self, commands: &str, json: bool) -> (bool, String, String) {
        let Ok(text) = CString::new(commands) else {
            return (false, String::new(), "command contains a NUL byte".into());
        };
        let mut kept = self
            .kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // SAFETY: the context is used with `kept` locked only; the buffers it returns are
        // copied before the next command. A context that could not be kept (namespace
        // unknown) is freed here.
        unsafe {
            let Some(ctx) = self.ctx_for_thread(&mut kept) else {
                return (false, String::new(), "nft_ctx_new failed".into());
            };
            (self.set_output_flags)(ctx, if json { NFT_CTX_OUTPUT_JSON } else { 0 });
            let rc = (self.run_cmd)(ctx, text.as_ptr());
            let copy = |p: *const c_char| {
                if p.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            // Both buffers are read (which also empties them) after every command.
            let out = copy((self.get_output)(ctx));
            let err = copy((self.get_error)(ctx));
            if kept.as_ref().is_none_or(|k| k.ctx != ctx) {
                (self.ctx_free)(ctx);
            }
            (rc == 0, out, err)
        }
    }
}

/// Sets FD_CLOEXEC on every nfnetlink socket of this process that lacks it (only those:
/// other descriptors are left as their owners made them).
fn set_cloexec_on_nfnetlink_sockets() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<c_int>().ok())
        else {
            continue;
        };
        let sockopt = |opt: c_int| -> Option<c_int> {
            let mut value: c_int = 0;
            let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
            // SAFETY: getsockopt with a valid out pointer and length; a non-socket fails.
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&mut value as *mut c_int).cast(),
                    &mut len,
                )
            };
            (rc == 0).then_some(value)
        };
        if sockopt(libc::SO_DOMAIN) != Some(libc::AF_NETLINK)
            || sockopt(libc::SO_PROTOCOL) != Some(libc::NETLINK_NETFILTER)
        {
            continue;
        }
        // SAFETY: fcntl on a descriptor number; a closed one just fails.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}
