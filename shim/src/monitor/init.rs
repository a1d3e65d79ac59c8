//! The built-in init (`--builtin-init`): PID 1 of a pod's shared PID namespace. It reaps
//! whatever is reparented to it and exits 0 on SIGTERM or SIGINT.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Runs as the container's PID 1 instead of exec'ing `process.args`. Never returns.
pub fn builtin_init() -> ! {
    // PID 1 only receives signals it handles or (as here) has blocked and waits for; the
    // kernel drops default-action signals sent to a namespace's init.
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(signal);
    }
    if signals.thread_block().is_err() {
        // SAFETY: _exit is always safe to call.
        unsafe { libc::_exit(1) }
    }
    loop {
        reap_all();
        match signals.wait() {
            Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => {
                reap_all();
                // SAFETY: _exit is always safe to call.
                unsafe { libc::_exit(0) }
            }
            _ => {}
        }
    }
}

fn reap_all() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
