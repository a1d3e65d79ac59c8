//! ExecSync as kubelet's exec probes use it: output of both streams, exit codes, the
//! container's environment and working dir, timeouts that kill the command, and errors for
//! containers that do not run.

use std::time::{Duration, Instant};

use berth_tests::runtime::assert_code;
use berth_tests::timing::secs;
use berth_tests::RuntimeEnv;
use k8s_cri::v1::ContainerState;
use tonic::Code;

async fn running_container(env: &mut RuntimeEnv, name: &str) -> String {
    let pod = env.run_pod(name).await;
    let mut config = env.container_config("target", &["sleep", "3600"]);
    config.working_dir = "/tmp".to_string();
    let id = env.run_container_with(&pod, config).await;
    env.wait_container_state(&id, ContainerState::ContainerRunning, Duration::from_secs(10)).await;
    id
}

#[tokio::test]
async fn output_exit_code_env_and_cwd() {
    let mut env = RuntimeEnv::start().await;
    let id = running_container(&mut env, "exec").await;

    let out = env.exec(&id, &["sh", "-c", "echo hello; echo oops >&2; exit 0"], 0).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    assert_eq!(out.exit_code, 0);

    for code in [1, 7, 255] {
        let out = env.exec(&id, &["sh", "-c", &format!("exit {code}")], 0).await;
        assert_eq!(out.exit_code, code, "{out:?}");
    }
    assert_eq!(env.exec_ok(&id, &["sh", "-c", "echo $BERTH_TEST"]).await, "1", "exec gets the container's env");
    assert_eq!(env.exec_ok(&id, &["pwd"]).await, "/tmp", "exec starts in the container's working dir");

    let big = env.exec(&id, &["sh", "-c", "head -c 262144 /dev/zero"], 0).await;
    assert_eq!(big.stdout.len(), 262144, "all of a 256 KiB output arrives");

    let missing = env.try_exec(&id, &["/no/such/binary"], 0).await;
    match missing {
        Ok(out) => assert_ne!(out.exit_code, 0, "{out:?}"),
        Err(status) => assert_ne!(status.code(), Code::Ok),
    }
    env.finish().await;
}

#[tokio::test]
async fn timeout_kills_the_command() {
    let mut env = RuntimeEnv::start().await;
    let id = running_container(&mut env, "exectimeout").await;

    let started = Instant::now();
    let result = env.try_exec(&id, &["sleep", "37"], 1).await;
    let took = started.elapsed();
    match &result {
        Err(status) => assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}"),
        Ok(out) => assert_ne!(out.exit_code, 0, "a timed-out exec does not report success: {out:?}"),
    }
    assert!(took >= Duration::from_millis(900), "answered before the 1 s timeout: {took:?}");
    assert!(took < Duration::from_secs(1) + secs(5), "ExecSync with a 1 s timeout took {took:?}");
    // The command is gone, not left running in the container.
    let deadline = Instant::now() + secs(5);
    loop {
        let ps = env.exec_ok(&id, &["ps", "-o", "args"]).await;
        if !ps.contains("sleep 37") {
            break;
        }
        assert!(Instant::now() < deadline, "the timed-out command still runs: {ps}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The container is unaffected.
    assert_eq!(env.container_status(&id).await.expect("status").state, ContainerState::ContainerRunning as i32);
    env.finish().await;
}

#[tokio::test]
async fn exec_in_a_container_that_does_not_run() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("notrunning").await;
    let config = env.container_config("created", &["sleep", "3600"]);
    let created = env.create_container(&pod, config).await;
    assert!(env.try_exec(&created, &["true"], 0).await.is_err(), "exec in a created container");
    let exited = env.run_container(&pod, "exited", &["true"]).await;
    env.wait_exited(&exited).await;
    assert!(env.try_exec(&exited, &["true"], 0).await.is_err(), "exec in an exited container");
    assert_code(env.try_exec(&"e".repeat(64), &["true"], 0).await, Code::NotFound);
    env.finish().await;
}
