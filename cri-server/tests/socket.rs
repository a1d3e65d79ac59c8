//! The CRI server over a real unix socket, in-process, with an in-memory image store:
//! the tonic stack, the request-span layer, socket permissions, stale-socket handling and
//! graceful shutdown, without needing a registry.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_cri::config::Config;
use berth_cri::image::{ImageBackend, ImageServer};
use berth_cri::runtime::context::RuntimeContext;
use berth_cri::runtime::RuntimeServer;
use berth_cri::sandbox::network::LoopbackNetwork;
use berth_cri::store::RuntimeStore;
use berth_cri::server::{ensure_socket_free, serve, BoundSocket, ServerError};
use berth_images::error::Result as StoreResult;
use berth_images::{Credentials, Error as StoreError, FsUsage, Image};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListContainersRequest, PodSandboxStatusRequest, PullImageRequest,
    RemoveImageRequest,
    StatusRequest, VersionRequest,
};
use tokio::sync::oneshot;
mod common;
use common::channel;
use tonic::Code;

/// A store with no images that knows no registry.
struct EmptyStore {
    root: PathBuf,
}

impl ImageBackend for EmptyStore {
    async fn pull(&self, reference: &str, _credentials: Option<Credentials>) -> StoreResult<Image> {
        Err(StoreError::NotInRegistry { reference: reference.to_string(), registry: "nowhere".to_string() })
    }
    fn list(&self) -> StoreResult<Vec<Image>> {
        Ok(Vec::new())
    }
    fn resolve(&self, _reference: &str) -> StoreResult<Option<Image>> {
        Ok(None)
    }
    fn remove(&self, _reference: &str) -> StoreResult<bool> {
        Ok(false)
    }
    fn fs_usage(&self) -> StoreResult<FsUsage> {
        Ok(FsUsage { used_bytes: 1, inodes_used: 1, timestamp_ns: 1 })
    }
    fn root(&self) -> &Path {
        &self.root
    }
}

/// A RuntimeService over a root and state inside `dir` (its config JSON names /test/root,
/// like the image side).
fn runtime_server(dir: &Path) -> RuntimeServer {
    let mut config = Config::default();
    config.root = dir.join("root");
    config.state = dir.join("state");
    std::fs::create_dir_all(&config.root).expect("root dir");
    let db = Arc::new(redb::Database::create(config.metadata_db_path()).expect("image db"));
    let images = Arc::new(berth_images::ImageStore::open(&config.root, db, config.images.clone()).expect("image store"));
    let store = RuntimeStore::open(&config.runtime_db_path()).expect("runtime store");
    let ctx = RuntimeContext::new(config, "{\"root\":\"/test/root\"}".into(), store, images, Arc::new(LoopbackNetwork));
    RuntimeServer::new(Arc::new(ctx))
}

struct RunningServer {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    async fn start(socket: &Path) -> RunningServer {
        ensure_socket_free(socket).await.expect("socket path is free");
        let bound = BoundSocket::bind(socket).expect("bind");
        let (stop, stopped) = oneshot::channel::<()>();
        let images = ImageServer::new(Arc::new(EmptyStore { root: PathBuf::from("/test/root") }));
        let runtime = runtime_server(socket.parent().expect("socket dir"));
        let task = tokio::spawn(serve(bound, runtime, images, async {
            let _ = stopped.await;
        }));
        RunningServer { stop: Some(stop), task }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(std::time::Duration::from_secs(10), &mut self.task)
            .await
            .expect("server stops within 10s")
            .expect("server task");
        result.expect("server exits cleanly");
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // On a failed assertion the server must not outlive the test.
        self.task.abort();
    }
}

#[tokio::test]
async fn answers_runtime_and_image_rpcs_over_the_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("berth.sock");
    let server = RunningServer::start(&socket).await;

    let metadata = std::fs::symlink_metadata(&socket).expect("socket exists");
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600, "socket must be private to root");

    let channel = channel(&socket).await;
    let mut runtime = RuntimeServiceClient::new(channel.clone());
    let mut images = ImageServiceClient::new(channel);

    let version = runtime.version(VersionRequest { version: "v1".into() }).await.expect("Version");
    assert!(version.metadata().get("x-request-id").is_some(), "responses carry the request id");
    let version = version.into_inner();
    assert_eq!(version.runtime_name, "berth");
    assert_eq!(version.runtime_api_version, "v1");

    let status = runtime.status(StatusRequest { verbose: true }).await.expect("Status").into_inner();
    let conditions = status.status.expect("conditions").conditions;
    assert!(conditions.iter().any(|c| c.r#type == "RuntimeReady" && c.status));
    assert!(conditions.iter().any(|c| c.r#type == "NetworkReady" && !c.status && c.reason == "NetworkPluginNotReady"));
    assert!(status.info["config"].contains("/test/root"));

    let containers = runtime.list_containers(ListContainersRequest::default()).await.expect("ListContainers");
    assert!(containers.into_inner().containers.is_empty());
    let mut request = tonic::Request::new(PodSandboxStatusRequest { pod_sandbox_id: "nope".into(), verbose: false });
    request.metadata_mut().insert("x-request-id", "test-id-1".parse().expect("header value"));
    let unknown = runtime.pod_sandbox_status(request).await.expect_err("unknown pod");
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(unknown.metadata().get("x-request-id").and_then(|v| v.to_str().ok()), Some("test-id-1"), "errors carry the request id");

    let spec = |image: &str| Some(ImageSpec { image: image.into(), ..Default::default() });
    let status = images.image_status(ImageStatusRequest { image: spec("busybox"), verbose: false }).await.expect("ImageStatus");
    assert!(status.into_inner().image.is_none(), "unknown image: OK with no image");
    images.remove_image(RemoveImageRequest { image: spec("busybox") }).await.expect("RemoveImage of unknown is OK");
    let pull = images.pull_image(PullImageRequest { image: spec("busybox"), ..Default::default() }).await.expect_err("nothing to pull");
    assert_eq!(pull.code(), Code::NotFound);
    let pull = images.pull_image(PullImageRequest::default()).await.expect_err("empty image");
    assert_eq!(pull.code(), Code::InvalidArgument);
    let fs = images.image_fs_info(ImageFsInfoRequest {}).await.expect("ImageFsInfo").into_inner();
    assert_eq!(fs.image_filesystems[0].fs_id.as_ref().map(|id| id.mountpoint.as_str()), Some("/test/root"));

    server.stop().await;
    assert!(!socket.exists(), "graceful shutdown removes the socket");
}

#[tokio::test]
async fn refuses_a_socket_another_server_answers_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("berth.sock");
    let server = RunningServer::start(&socket).await;
    match ensure_socket_free(&socket).await {
        Err(ServerError::SocketInUse { path }) => assert_eq!(path, socket),
        other => panic!("expected SocketInUse, got {other:?}"),
    }
    assert!(socket.exists(), "the live server's socket is left alone");
    server.stop().await;
}

#[tokio::test]
async fn replaces_a_stale_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("berth.sock");
    // A socket file whose server is gone, as after kill -9.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind stale"));
    assert!(socket.exists());
    let server = RunningServer::start(&socket).await;
    let mut runtime = RuntimeServiceClient::new(channel(&socket).await);
    runtime.version(VersionRequest::default()).await.expect("Version on the new socket");
    server.stop().await;
}

#[tokio::test]
async fn refuses_a_path_that_is_not_a_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("berth.sock");
    std::fs::write(&path, b"not a socket").expect("write file");
    match ensure_socket_free(&path).await {
        Err(ServerError::NotASocket { .. }) => {}
        other => panic!("expected NotASocket, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).expect("file kept"), b"not a socket");
}
