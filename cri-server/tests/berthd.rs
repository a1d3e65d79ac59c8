//! The real `berthd` binary with a temp root and state: it starts fast, answers CRI over
//! its socket, refuses a second instance, survives a stale socket, and exits 0 on SIGTERM
//! with its socket removed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest, StatusRequest, VersionRequest};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
mod common;
use common::channel;

const BERTHD: &str = env!("CARGO_BIN_EXE_berthd");

/// A berthd child process, killed (by its pid) if the test ends before stopping it.
struct Berthd {
    child: Child,
    socket: PathBuf,
    /// berthd's stderr goes to a file: a pipe nobody reads would fill up and block it.
    log: PathBuf,
}

impl Berthd {
    fn spawn(dir: &Path, root: &str) -> Berthd {
        let config = dir.join("config.toml");
        if !config.exists() {
            // Explicit and empty, so a config file on the host cannot change the test.
            std::fs::write(&config, "").expect("write config");
        }
        let log = dir.join(format!("berthd-{root}.log"));
        let log_file = std::fs::File::create(&log).expect("create log file");
        let child = Command::new(BERTHD)
            .arg("--config").arg(&config)
            .arg("--root").arg(dir.join(root))
            .arg("--state").arg(dir.join("state"))
            .arg("--log-level").arg("debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn berthd");
        Berthd { child, socket: dir.join("state").join("berth.sock"), log }
    }

    /// Waits for the socket to accept connections; berthd creates it only when ready.
    async fn wait_ready(&mut self) -> Duration {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("berthd exited during startup with {status}: {}", self.stderr());
            }
            if tokio::net::UnixStream::connect(&self.socket).await.is_ok() {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("berthd did not open {} within 10s", self.socket.display());
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal berthd");
    }

    /// Async, so that clients on the test's runtime keep answering berthd (its graceful
    /// shutdown pings them) while we wait.
    async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait berthd") {
                return status;
            }
            assert!(started.elapsed() < limit, "berthd did not exit within {limit:?}: {}", self.stderr());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test]
async fn berthd_starts_answers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut berthd = Berthd::spawn(dir.path(), "root");
    let startup = berthd.wait_ready().await;
    assert!(startup < Duration::from_secs(3), "startup took {startup:?}");
    assert!(dir.path().join("root/meta.redb").exists(), "metadata database under the root");

    let channel = channel(&berthd.socket).await;
    let mut runtime = RuntimeServiceClient::new(channel.clone());
    let version = runtime.version(VersionRequest { version: "v1".into() }).await.expect("Version").into_inner();
    assert_eq!(version.runtime_name, "berth");
    let status = runtime.status(StatusRequest { verbose: false }).await.expect("Status").into_inner();
    assert!(status.status.expect("status").conditions.iter().any(|c| c.r#type == "RuntimeReady" && c.status));

    let mut images = ImageServiceClient::new(channel);
    let listed = images.list_images(ListImagesRequest::default()).await.expect("ListImages").into_inner();
    assert!(listed.images.is_empty(), "a fresh root has no images");
    let spec = Some(ImageSpec { image: "docker.io/library/busybox:latest".into(), ..Default::default() });
    let status = images.image_status(ImageStatusRequest { image: spec, verbose: true }).await.expect("ImageStatus");
    assert!(status.into_inner().image.is_none());
    let fs = images.image_fs_info(ImageFsInfoRequest {}).await.expect("ImageFsInfo").into_inner();
    assert_eq!(fs.image_filesystems.len(), 1);

    berthd.signal(Signal::SIGTERM);
    let exit = berthd.wait_exit(Duration::from_secs(10)).await;
    assert!(exit.success(), "SIGTERM must exit 0, got {exit}: {}", berthd.stderr());
    assert!(!berthd.socket.exists(), "socket removed on shutdown");
    let log = berthd.stderr();
    assert!(log.contains("request_id"), "requests are logged with their id: {log}");
}

#[tokio::test]
async fn second_berthd_on_the_same_socket_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = Berthd::spawn(dir.path(), "root");
    first.wait_ready().await;

    let mut second = Berthd::spawn(dir.path(), "root2");
    let exit = second.wait_exit(Duration::from_secs(10)).await;
    assert!(!exit.success());
    let message = second.stderr();
    assert!(message.contains("another berthd is already serving"), "{message}");

    // The first one is unharmed.
    let mut runtime = RuntimeServiceClient::new(channel(&first.socket).await);
    runtime.version(VersionRequest::default()).await.expect("first berthd still answers");
    first.signal(Signal::SIGINT);
    assert!(first.wait_exit(Duration::from_secs(10)).await.success(), "SIGINT exits 0 too");
}

#[tokio::test]
async fn restarts_after_being_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = Berthd::spawn(dir.path(), "root");
    first.wait_ready().await;
    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(10)).await;
    assert!(first.socket.exists(), "kill -9 leaves a stale socket behind");

    let mut second = Berthd::spawn(dir.path(), "root");
    second.wait_ready().await;
    let mut runtime = RuntimeServiceClient::new(channel(&second.socket).await);
    runtime.version(VersionRequest::default()).await.expect("restarted berthd answers");
    second.signal(Signal::SIGTERM);
    assert!(second.wait_exit(Duration::from_secs(10)).await.success());
}

#[test]
fn missing_explicit_config_is_an_error_and_unknown_keys_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(BERTHD)
        .arg("--config").arg(dir.path().join("absent.toml"))
        .args(["config", "dump"])
        .output()
        .expect("run berthd");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("absent.toml"));

    let config = dir.path().join("typo.toml");
    std::fs::write(&config, "log_levle = \"debug\"\n").expect("write");
    let output = Command::new(BERTHD).arg("--config").arg(&config).args(["config", "dump"]).output().expect("run berthd");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("log_levle"));
}

#[test]
fn config_default_prints_a_config_that_berthd_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(BERTHD).args(["config", "default"]).output().expect("run berthd");
    assert!(output.status.success());
    let config = dir.path().join("config.toml");
    std::fs::write(&config, &output.stdout).expect("write");
    let dumped = Command::new(BERTHD)
        .arg("--config").arg(&config)
        .arg("--root").arg("/flag/root")
        .args(["config", "dump"])
        .output()
        .expect("run berthd");
    assert!(dumped.status.success(), "{}", String::from_utf8_lossy(&dumped.stderr));
    let dumped = String::from_utf8_lossy(&dumped.stdout);
    assert!(dumped.contains("root = \"/flag/root\""), "flags override the file: {dumped}");
    assert!(dumped.contains("state = \"/run/berth\""), "{dumped}");
}
