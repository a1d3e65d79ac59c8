//! The shim with its built-in runtime (`crate::container` + `crate::cgroups`) on a busybox
//! bundle. Needs root; skipped (with a note) otherwise.

mod monitor_support;
use std::time::Duration;

use monitor_support::*;

fn root() -> bool {
    if !is_root() {
        eprintln!("skipped: needs root");
    }
    is_root()
}

#[test]
fn builtin_lifecycle() {
    if root() {
        lifecycle(None);
    }
}

#[test]
fn builtin_kill_before_start() {
    if root() {
        kill_before_start(None);
    }
}

#[test]
fn builtin_wait_times_out() {
    if root() {
        wait_times_out(None);
    }
}

#[test]
fn builtin_missing_binary_fails_at_start() {
    if root() {
        let (message, failed_at_start) = missing_binary(None);
        eprintln!("start failed with: {message}");
        assert!(failed_at_start, "create succeeds, start fails: {message}");
    }
}

#[test]
fn builtin_survives_parent_death() {
    if root() {
        survives_parent_death(None);
    }
}

#[test]
fn builtin_big_output() {
    if root() {
        big_output(None);
    }
}

#[test]
fn builtin_big_exec_output() {
    if root() {
        big_exec_output(None);
    }
}

#[test]
fn builtin_oom_kill() {
    if root() {
        oom_kill(None);
    }
}

#[test]
fn builtin_serves_during_exec() {
    if root() {
        serves_during_exec(None);
    }
}

/// `--builtin-init`: the shim's own init is PID 1 (root "/" allowed, no rootfs change);
/// SIGTERM ends it with 0.
#[test]
fn builtin_init_exits_zero_on_term() {
    if !root() {
        return;
    }
    let bundle = Bundle::new(&["unused"], None);
    // The pid holder runs on the host's root, without mounts of its own.
    let config = bundle.bundle.join("config.json");
    let mut spec = oci_spec::runtime::Spec::load(&config).unwrap();
    spec.set_root(Some(
        oci_spec::runtime::RootBuilder::default()
            .path("/")
            .readonly(true)
            .build()
            .unwrap(),
    ));
    spec.set_mounts(Some(vec![]));
    let mut linux = spec.linux().clone().unwrap();
    linux.set_masked_paths(None);
    linux.set_readonly_paths(None);
    linux.set_namespaces(Some(vec![
        oci_spec::runtime::LinuxNamespaceBuilder::default()
            .typ(oci_spec::runtime::LinuxNamespaceType::Pid)
            .build()
            .unwrap(),
    ]));
    spec.set_linux(Some(linux));
    spec.save(&config).unwrap();
    let (shim_pid, init_pid) = bundle.create_ok_with(&["--builtin-init"]);
    let client = bundle.client();
    client.start().unwrap();
    // Its PID namespace is joinable by the pod's containers.
    assert!(std::path::Path::new(&format!("/proc/{init_pid}/ns/pid")).exists());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        client.status().unwrap().state,
        berth_shim::protocol::ShimState::Running
    );
    client.signal(15, false).unwrap();
    let exit = wait_exit(&client, Duration::from_secs(10));
    assert_eq!((exit.exit_code, exit.signal), (0, 0));
    bundle.assert_nothing_left(shim_pid, init_pid);
}
