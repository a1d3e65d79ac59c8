//! berthd's lifecycle: directories, metadata database, image store, the CRI socket,
//! serving, and graceful shutdown.
//!
//! Startup order matters: we check that no other berthd answers on the socket before
//! touching anything, open the database and the image store (which cleans up after
//! crashed pulls), and only then create the socket, so a socket that exists is a socket
//! that serves.

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use berth_images::ImageStore;
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use nix::sys::stat::Mode;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::image::{ImageBackend, ImageServer};
use crate::request_span::RequestSpanLayer;
use crate::runtime::{RuntimeContext, RuntimeServer};
use crate::sandbox::cni_network::CniNetwork;
use crate::sandbox::network::{LoopbackNetwork, PodNetwork};
use crate::store::{RuntimeStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("creating directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another berthd is already serving on {path}: stop it, or give this one another --address")]
    SocketInUse { path: PathBuf },
    #[error("{path} exists and is not a socket: remove it, or choose another --address")]
    NotASocket { path: PathBuf },
    #[error("{context} {path}: {source}")]
    Socket {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata database {path} is open in another process (another berthd on the same --root?)")]
    DatabaseInUse { path: PathBuf },
    #[error("opening metadata database {path}: {source}")]
    Database {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("opening the image store: {0}")]
    ImageStore(#[from] berth_images::Error),
    #[error("opening the runtime store: {0}")]
    RuntimeStore(#[from] StoreError),
    #[error("recovering pods and containers: {0}")]
    Recovery(#[from] crate::errors::RuntimeError),
    #[error("{what} failed unexpectedly: {reason}")]
    StartupTask { what: &'static str, reason: String },
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("serving CRI: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Runs berthd until SIGTERM or SIGINT. In-flight requests get `shutdown_timeout_secs`
/// to finish; a second signal exits at once.
pub async fn run(mut config: Config) -> Result<(), ServerError> {
    let started = Instant::now();
    // Installed first: a signal during startup then stops berthd right after it is up,
    // instead of killing it halfway through opening the store.
    let mut signals = ShutdownSignals::install()?;

    let socket_path = config.socket_path();
    config.address = Some(socket_path.clone());
    create_private_dir(&config.root)?;
    create_private_dir(&config.state)?;
    if let Some(parent) = socket_path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        create_private_dir(parent)?;
    }
    ensure_socket_free(&socket_path).await?;

    let store = open_image_store(&config).await?;
    let config_json = serde_json::to_string(&config).unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"));
    let runtime_store = open_runtime_store(&config).await?;
    let network: Arc<dyn PodNetwork> = if config.network.enabled {
        let config = config.clone();
        Arc::new(tokio::task::spawn_blocking(move || CniNetwork::from_config(&config)).await.map_err(|err| {
            ServerError::StartupTask { what: "setting up the pod network", reason: err.to_string() }
        })??)
    } else {
        tracing::warn!("pod networking is disabled ([network] enabled = false): pods get only loopback");
        Arc::new(LoopbackNetwork)
    };
    let runtime_ctx = Arc::new(RuntimeContext::new(config.clone(), config_json, runtime_store, store.clone(), network));
    // Pods first (their names, leftovers of interrupted creations), then containers, which
    // need to know the pods' PID holders. Both before the socket serves.
    let pods = crate::runtime::restore_sandboxes(&runtime_ctx).await?;
    let containers = crate::runtime::restart::recover_containers(&runtime_ctx).await?;
    tracing::info!(pods, containers = ?containers, "pods and containers recovered");
    // Networks of pods that no longer exist (removed while a DEL failed, or a crash
    // between the network's setup and the pod's record) are released, so no IP leaks.
    let live: std::collections::HashSet<String> = runtime_ctx.store.sandboxes()?.into_iter().map(|r| r.id).collect();
    let released = runtime_ctx.network.reconcile(&live).await?;
    if released > 0 {
        tracing::info!(released, "released the networks of pods that no longer exist");
    }

    let socket = BoundSocket::bind(&socket_path)?;
    tracing::info!(
        socket = %socket_path.display(),
        root = %config.root.display(),
        state = %config.state.display(),
        startup_ms = started.elapsed().as_millis() as u64,
        "berthd is serving CRI v1"
    );

    let shutdown_timeout = std::time::Duration::from_secs(config.shutdown_timeout_secs);
    let (first_signal_tx, first_signal_rx) = tokio::sync::oneshot::channel::<()>();
    let graceful = async move {
        let name = signals.next().await;
        tracing::info!(signal = name, "shutting down: finishing in-flight requests (send it again to exit at once)");
        let _ = first_signal_tx.send(());
        // A client that never finishes its requests (or never acknowledges the goodbye)
        // must not keep berthd alive forever.
        tokio::select! {
            name = signals.next() => {
                tracing::warn!(signal = name, "second signal: exiting without waiting for in-flight requests");
            }
            () = tokio::time::sleep(shutdown_timeout) => {
                tracing::warn!(
                    timeout_secs = shutdown_timeout.as_secs(),
                    "in-flight requests did not finish within shutdown_timeout_secs; exiting anyway"
                );
            }
        }
    };
    let serving = serve(socket, RuntimeServer::new(runtime_ctx), ImageServer::new(store), async {
        let _ = first_signal_rx.await;
    });
    let socket_path_for_log = socket_path.clone();
    tokio::select! {
        result = serving => {
            result?;
            tracing::info!(socket = %socket_path_for_log.display(), "berthd stopped");
        }
        () = graceful => {
            // `serving` is dropped here, which closes connections; remove the socket
            // ourselves since serve() did not get to.
            remove_socket_file(&socket_path);
        }
    }
    Ok(())
}

/// Serves the CRI services on `socket` until `shutdown` resolves, then stops accepting,
/// lets in-flight requests finish and removes the socket file.
pub async fn serve<B: ImageBackend>(
    socket: BoundSocket,
    runtime: RuntimeServer,
    images: ImageServer<B>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let BoundSocket { listener, path, identity } = socket;
    // berth's own pull progress stream, beside CRI on the same socket (berthctl only).
    let progress = crate::progress::ProgressService::new(images.store()).into_server();
    let result = tonic::transport::Server::builder()
        .layer(RequestSpanLayer)
        .add_service(RuntimeServiceServer::new(runtime))
        .add_service(ImageServiceServer::new(images))
        .add_service(progress)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    remove_socket_if_ours(&path, identity);
    Ok(result?)
}

/// A listening CRI socket, remembering which file it is so that shutdown removes only
/// its own socket and never one a newer berthd created at the same path.
pub struct BoundSocket {
    listener: UnixListener,
    path: PathBuf,
    identity: (u64, u64),
}

impl BoundSocket {
    /// Binds `path` with mode 0600. A stale socket file must be gone already
    /// ([`ensure_socket_free`]).
    pub fn bind(path: &Path) -> Result<BoundSocket, ServerError> {
        // The umask makes the socket 0600 from its first moment: a chmod after bind would
        // leave a window in which anyone could connect. Startup is single-threaded as far
        // as file creation goes, so changing the process umask briefly is safe.
        let previous_umask = nix::sys::stat::umask(Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(previous_umask);
        let listener = bound.map_err(|source| ServerError::Socket { context: "binding socket", path: path.to_path_buf(), source })?;
        // Explicit as well, in case the filesystem ignored the umask.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|source| ServerError::Socket { context: "setting mode 0600 on socket", path: path.to_path_buf(), source })?;
        let metadata = std::fs::symlink_metadata(path)
            .map_err(|source| ServerError::Socket { context: "inspecting socket", path: path.to_path_buf(), source })?;
        Ok(BoundSocket { listener, path: path.to_path_buf(), identity: (metadata.dev(), metadata.ino()) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Makes sure `path` can be bound: nothing there, or a stale socket (which is removed).
/// Refuses when a live server answers on it or when it is not a socket at all.
pub async fn ensure_socket_free(path: &Path) -> Result<(), ServerError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(ServerError::Socket { context: "inspecting", path: path.to_path_buf(), source }),
    };
    if !metadata.file_type().is_socket() {
        return Err(ServerError::NotASocket { path: path.to_path_buf() });
    }
    match tokio::net::UnixStream::connect(path).await {
        Ok(_) => Err(ServerError::SocketInUse { path: path.to_path_buf() }),
        Err(err) => {
            // Connection refused: the berthd that made it is gone (crashed or killed -9).
            tracing::info!(socket = %path.display(), reason = %err, "removing stale socket");
            std::fs::remove_file(path)
                .or_else(|err| if err.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(err) })
                .map_err(|source| ServerError::Socket { context: "removing stale socket", path: path.to_path_buf(), source })
        }
    }
}

fn remove_socket_if_ours(path: &Path, identity: (u64, u64)) {
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if (metadata.dev(), metadata.ino()) == identity => remove_socket_file(path),
        Ok(_) => tracing::warn!(socket = %path.display(), "socket was replaced by someone else; leaving it"),
        Err(_) => {}
    }
}

fn remove_socket_file(path: &Path) {
    if let Err(err) = std::fs::remove_file(path) {
        if err.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(socket = %path.display(), error = %err, "could not remove socket");
        }
    }
}

/// Creates `path` and its missing parents with mode 0711 (traversable, not listable), as
/// containerd does for its root and state; existing directories are left as they are.
fn create_private_dir(path: &Path) -> Result<(), ServerError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(path)
        .map_err(|source| ServerError::CreateDir { path: path.to_path_buf(), source })
}

/// Opens `<root>/meta.redb` and the image store on the blocking pool: both read and
/// repair files, and the store removes leftovers of interrupted pulls.
async fn open_image_store(config: &Config) -> Result<Arc<ImageStore>, ServerError> {
    let db_path = config.metadata_db_path();
    let root = config.root.clone();
    let images_config = config.images.clone();
    let opened = tokio::task::spawn_blocking(move || -> Result<ImageStore, ServerError> {
        let db = redb::Database::create(&db_path).map_err(|source| match source {
            redb::DatabaseError::DatabaseAlreadyOpen => ServerError::DatabaseInUse { path: db_path.clone() },
            source => ServerError::Database { path: db_path.clone(), source },
        })?;
        Ok(ImageStore::open(&root, Arc::new(db), images_config)?)
    })
    .await
    .map_err(|err| ServerError::StartupTask { what: "opening the image store", reason: panic_reason(err) })??;
    Ok(Arc::new(opened))
}

/// Opens `<root>/runtime.redb` (pod and container records) on the blocking pool.
async fn open_runtime_store(config: &Config) -> Result<RuntimeStore, ServerError> {
    let path = config.runtime_db_path();
    tokio::task::spawn_blocking(move || RuntimeStore::open(&path))
        .await
        .map_err(|err| ServerError::StartupTask { what: "opening the runtime store", reason: panic_reason(err) })?
        .map_err(ServerError::from)
}

fn panic_reason(err: tokio::task::JoinError) -> String {
    match err.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string()),
        Err(err) => err.to_string(),
    }
}

/// SIGTERM (systemd, kubelet tooling) and SIGINT (a terminal's Ctrl-C).
struct ShutdownSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl ShutdownSignals {
    fn install() -> Result<Self, ServerError> {
        Ok(Self {
            terminate: signal(SignalKind::terminate()).map_err(ServerError::Signals)?,
            interrupt: signal(SignalKind::interrupt()).map_err(ServerError::Signals)?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}
