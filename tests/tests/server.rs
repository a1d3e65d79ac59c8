//! berthd as a daemon: what it answers before any image or pod exists, how it guards its
//! socket, how it shuts down, and that its printed default config is one it accepts.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::berthd::run_berthd_command;
use berth_tests::{paths, Berthd};
use k8s_cri::v1::{
    CreateContainerRequest, RunPodSandboxRequest, RuntimeConfigRequest, StatusRequest, VersionRequest,
};
use nix::sys::signal::Signal;
use tonic::Code;

#[tokio::test]
async fn version_status_and_runtime_config_answer() {
    let berthd = Berthd::start().await;
    let mut runtime = berthd.runtime().await;

    let version = runtime.version(VersionRequest { version: "v1".into() }).await.expect("Version").into_inner();
    assert_eq!(version.runtime_name, "berth", "{version:?}");
    assert_eq!(version.runtime_api_version, "v1", "{version:?}");
    assert!(!version.runtime_version.is_empty(), "{version:?}");
    assert!(!version.version.is_empty(), "{version:?}");

    let status = runtime.status(StatusRequest { verbose: false }).await.expect("Status").into_inner();
    let conditions = status.status.expect("Status carries a RuntimeStatus").conditions;
    let runtime_ready = conditions
        .iter()
        .find(|c| c.r#type == "RuntimeReady")
        .unwrap_or_else(|| panic!("no RuntimeReady condition in {conditions:?}"));
    assert!(runtime_ready.status, "RuntimeReady is false: {runtime_ready:?}");
    // kubelet requires both conditions to be reported; NetworkReady may truthfully be false
    // until networking exists, but then it must say why.
    let network_ready = conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap_or_else(|| panic!("no NetworkReady condition in {conditions:?}"));
    if !network_ready.status {
        assert!(!network_ready.reason.is_empty() && !network_ready.message.is_empty(), "{network_ready:?}");
    }

    let config = runtime.runtime_config(RuntimeConfigRequest {}).await.expect("RuntimeConfig").into_inner();
    assert!(config.linux.is_some(), "RuntimeConfig names the cgroup driver: {config:?}");
}

#[tokio::test]
async fn empty_runtime_requests_are_invalid_argument() {
    let berthd = Berthd::start().await;
    let mut runtime = berthd.runtime().await;

    let err = runtime.run_pod_sandbox(RunPodSandboxRequest::default()).await.expect_err("RunPodSandbox without a config");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(!err.message().is_empty(), "the error says what is missing: {err:?}");

    let err = runtime.create_container(CreateContainerRequest::default()).await.expect_err("CreateContainer without a config");
    assert!(matches!(err.code(), Code::InvalidArgument | Code::NotFound), "{err:?}");

    // The daemon is still fine afterwards.
    runtime.version(VersionRequest::default()).await.expect("Version after refused requests");
}

#[tokio::test]
async fn socket_is_a_unix_socket_only_root_can_use() {
    let berthd = Berthd::start().await;
    let meta = std::fs::symlink_metadata(berthd.socket()).expect("stat socket");
    assert!(meta.file_type().is_socket(), "{} is not a socket", berthd.socket().display());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode is {:o}", meta.permissions().mode() & 0o777);
}

#[tokio::test]
async fn sigterm_exits_zero_and_removes_the_socket() {
    let mut berthd = Berthd::start().await;
    berthd.images().await; // a client connected at shutdown must not block it
    berthd.stop();
    assert!(!berthd.socket().exists(), "socket {} left behind", berthd.socket().display());
    berthd.assert_no_leaks();
}

#[tokio::test]
async fn sigint_exits_zero_and_removes_the_socket() {
    let mut berthd = Berthd::start().await;
    let status = berthd.terminate_with(Signal::SIGINT);
    assert!(status.success(), "berthd exited with {status} after SIGINT\n{}", berthd.log());
    assert!(!berthd.socket().exists(), "socket left behind");
    berthd.assert_no_leaks();
}

#[tokio::test]
async fn restart_after_kill9_takes_over_the_stale_socket() {
    let mut berthd = Berthd::start().await;
    berthd.kill9();
    assert!(berthd.socket().exists(), "a killed berthd cannot remove its socket");
    berthd.restart().await;
    let mut runtime = berthd.runtime().await;
    runtime.version(VersionRequest::default()).await.expect("Version after restart");
    berthd.stop();
    berthd.assert_no_leaks();
}

#[tokio::test]
async fn default_config_is_accepted_back() {
    let output = run_berthd_command(&["config", "default"]);
    assert!(output.status.success(), "`berthd config default` failed: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).expect("config is UTF-8");
    let parsed: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("not TOML: {e}\n{text}"));
    for key in ["root", "state", "log_level", "images"] {
        assert!(parsed.contains_key(key), "default config lacks `{key}`:\n{text}");
    }
    let images = parsed["images"].as_table().expect("[images] is a table");
    for key in ["max_concurrent_downloads", "connect_timeout_secs"] {
        assert!(images.contains_key(key), "default config lacks `images.{key}`:\n{text}");
    }

    // The flags override root, state and address, so the printed defaults are safe to use.
    let berthd = Berthd::start_with(&text).await;
    berthd.runtime().await.version(VersionRequest::default()).await.expect("Version with the default config");
}

#[tokio::test]
async fn config_with_an_unknown_key_is_refused_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[images]\nmax_concurent_downloads = 4\n").expect("write config");
    let mut child = Command::new(paths::berthd_bin())
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berthd");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait berthd") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berthd started with an unknown config key instead of refusing it");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().expect("berthd output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success(), "berthd accepted a config with a typo");
    assert!(stderr.contains("max_concurent_downloads"), "the error names the unknown key: {stderr}");
}
