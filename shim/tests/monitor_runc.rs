//! The shim driving Debian's runc (`--runtime /usr/sbin/runc`) on a busybox bundle.
//! Needs root; skipped (with a note) otherwise or when runc is missing.

mod monitor_support;
use monitor_support::*;

fn runc() -> Option<&'static str> {
    if !is_root() || !std::path::Path::new(RUNC).exists() {
        eprintln!("skipped: needs root and {RUNC}");
        return None;
    }
    Some(RUNC)
}

#[test]
fn runc_lifecycle() {
    let Some(runc) = runc() else { return };
    lifecycle(Some(runc));
}

#[test]
fn runc_kill_before_start() {
    let Some(runc) = runc() else { return };
    kill_before_start(Some(runc));
}

#[test]
fn runc_wait_times_out() {
    let Some(runc) = runc() else { return };
    wait_times_out(Some(runc));
}

#[test]
fn runc_missing_binary() {
    let Some(runc) = runc() else { return };
    missing_binary(Some(runc));
}

#[test]
fn runc_survives_parent_death() {
    let Some(runc) = runc() else { return };
    survives_parent_death(Some(runc));
}

#[test]
fn runc_big_output() {
    let Some(runc) = runc() else { return };
    big_output(Some(runc));
}

#[test]
fn runc_big_exec_output() {
    let Some(runc) = runc() else { return };
    big_exec_output(Some(runc));
}

#[test]
fn runc_oom_kill() {
    let Some(runc) = runc() else { return };
    oom_kill(Some(runc));
}

#[test]
fn runc_serves_during_exec() {
    let Some(runc) = runc() else { return };
    serves_during_exec(Some(runc));
}
