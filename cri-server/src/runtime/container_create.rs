//! CreateContainer: validate, reserve the name, mount the rootfs, write the bundle, start
//! the shim (which creates the container and holds it before exec), persist the record.
//!
//! Each step registers its undo; a failure at any step takes back every earlier one, so a
//! failed CreateContainer leaves no mount, lease, directory, shim, cgroup or name. The
//! work runs in its own task under the name reservation: a kubelet that gives up does not
//! interrupt it halfway, and its retry receives the result.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_images::Image;
use k8s_cri::v1::{ContainerConfig, CreateContainerRequest, CreateContainerResponse, NamespaceMode};

use crate::container::exit::now_ns;
use crate::container::lifecycle::reap_shim;
use crate::container::name::container_name;
use crate::container::rootfs;
use crate::container::shim::{self as shim_mod, read_pid_file, ShimCommand};
use crate::container::step_timer::StepTimer;
use crate::container::undo::Undo;
use crate::container::{remove_container, spawn_shim, stop_container};
use crate::errors::RuntimeError;
use crate::runtime::context::RuntimeContext;
use crate::runtime::spec::{self, ContainerSpecInput, PodFiles, SandboxNamespaces};
use crate::store::{new_id, ContainerRecord, ContainerState, SandboxRecord, SandboxState};

pub async fn create_container(ctx: &Arc<RuntimeContext>, request: CreateContainerRequest) -> Result<CreateContainerResponse, RuntimeError> {
    let sandbox_id = request.pod_sandbox_id.trim().to_string();
    if sandbox_id.is_empty() {
        return Err(RuntimeError::InvalidArgument("pod_sandbox_id is required".into()));
    }
    let config = request.config.ok_or_else(|| RuntimeError::InvalidArgument("container config is required".into()))?;
    let sandbox = ctx
        .store
        .sandbox(&sandbox_id)?
        .ok_or_else(|| RuntimeError::NotFound(format!("pod sandbox {sandbox_id} not found")))?;
    if sandbox.state != SandboxState::Ready {
        return Err(RuntimeError::FailedPrecondition(format!(
            "pod sandbox {sandbox_id} is not ready: a container can only be created in a ready pod"
        )));
    }
    let name = container_name(config.metadata.as_ref(), sandbox.config.metadata.as_ref())
        .map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
    let image_name = config.image.as_ref().map(|i| i.image.trim().to_string()).unwrap_or_default();
    if image_name.is_empty() {
        return Err(RuntimeError::InvalidArgument("container config names no image".into()));
    }
    let id = new_id();
    let mut steps = StepTimer::new("CreateContainer", &id);
    let images = ctx.images.clone();
    let lookup = image_name.clone();
    let image = tokio::task::spawn_blocking(move || images.resolve(&lookup))
        .await??
        .ok_or_else(|| RuntimeError::NotFound(format!("image {image_name:?} not found: pull it first")))?;
    steps.done("resolve image");

    let work = {
        let ctx = ctx.clone();
        let id = id.clone();
        let name = name.clone();
        async move { create_reserved(&ctx, id, name, sandbox, config, image, image_name).await }
    };
    let cleanup: crate::store::reservations::Cleanup = {
        let ctx = ctx.clone();
        Box::new(move |id: String| {
            Box::pin(async move {
                tracing::info!(container = %id, "removing a container nobody claimed");
                let _ = stop_container(&ctx, &id, Duration::ZERO).await;
                if let Err(e) = remove_container(&ctx, &id).await {
                    tracing::warn!(container = %id, error = %e, "removing an unclaimed container");
                }
            })
        })
    };
    let container_id = ctx.container_names.run_reserved(&name, &id, work, cleanup).await?;
    Ok(CreateContainerResponse { container_id })
}

/// The work under the name reservation.
async fn create_reserved(
    ctx: &Arc<RuntimeContext>,
    id: String,
    name: String,
    sandbox: SandboxRecord,
    config: ContainerConfig,
    image: Image,
    image_name: String,
) -> Result<String, RuntimeError> {
    // No container is created into a pod that is being stopped or removed.
    let mut steps = StepTimer::new("CreateContainer", &id);
    let _pod_lock = ctx.lock_pod(&sandbox.id).await;
    match ctx.store.sandbox(&sandbox.id)? {
        Some(current) if current.state == SandboxState::Ready => {}
        _ => {
            return Err(RuntimeError::FailedPrecondition(format!(
                "pod sandbox {} was stopped or removed while the container was being created",
                sandbox.id
            )))
        }
    }
    steps.done("pod lock");
    let mut undo = Undo::new(format!("create container {id}"));
    match create_steps(ctx, &id, &name, &sandbox, config, &image, image_name, &mut undo, &mut steps).await {
        Ok(()) => {
            undo.dismiss();
            tracing::info!(container = %id, %name, pod = %sandbox.id, "container created");
            Ok(id)
        }
        Err(e) => {
            tracing::warn!(container = %id, %name, error = %e, "container creation failed; undoing");
            undo.run().await;
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn create_steps(
    ctx: &Arc<RuntimeContext>,
    id: &str,
    name: &str,
    sandbox: &SandboxRecord,
    config: ContainerConfig,
    image: &Image,
    image_name: String,
    undo: &mut Undo,
    steps: &mut StepTimer<'_>,
) -> Result<(), RuntimeError> {
    let container_dir = ctx.container_dir(id);
    let shim_dir = ctx.shim_dir(id);
    let runtime = ctx.runtime_for_handler(&sandbox.runtime_handler)?;

    // 1. The container dir (bundle, overlay upper and work dirs).
    create_private_dir(&container_dir)?;
    {
        let dir = container_dir.clone();
        undo.push_blocking("remove container dir", move || {
            if let Err(e) = rootfs::remove_container_dir(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "removing container dir");
            }
        });
    }
    steps.done("container dir");

    // 2. The rootfs: lease the image's snapshots, mount the overlay.
    let rootfs_dir = {
        let images = ctx.images.clone();
        let (image_id, cid, dir) = (image.id.clone(), id.to_string(), container_dir.clone());
        tokio::task::spawn_blocking(move || rootfs::mount_rootfs(&images, &image_id, &cid, &dir)).await??
    };
    {
        let images = ctx.images.clone();
        let (cid, dir) = (id.to_string(), container_dir.clone());
        undo.push_blocking("unmount rootfs", move || {
            if let Err(e) = rootfs::unmount_rootfs(&images, &cid, &dir) {
                tracing::warn!(container = %cid, error = %e, "unmounting rootfs");
            }
        });
    }
    steps.done("rootfs");

    // 3. The OCI spec (reads the image's /etc/passwd and /etc/group) and the bundle.
    let cgroups_path = format!("{}/{}", sandbox.cgroup_path.trim_end_matches('/'), id);
    let input = ContainerSpecInput {
        container_id: id.to_string(),
        sandbox_id: sandbox.id.clone(),
        config: config.clone(),
        sandbox_config: sandbox.config.clone(),
        image: image.config.clone(),
        image_name: image_name.clone(),
        rootfs: rootfs_dir.clone(),
        namespaces: SandboxNamespaces {
            net: sandbox.namespace_path("net"),
            ipc: sandbox.namespace_path("ipc"),
            uts: sandbox.namespace_path("uts"),
            pid: pid_namespace(sandbox, &config)?,
        },
        pod_files: PodFiles {
            hostname: existing(sandbox.hostname_path()),
            hosts: existing(sandbox.hosts_path()),
            resolv_conf: existing(sandbox.resolv_conf_path()),
            // The pod's /dev/shm (a tmpfs shared like its IPC namespace), when it has one.
            shm: sandbox.shm_path.clone().filter(|p| p.exists()),
        },
        cgroups_path: cgroups_path.clone(),
        host_min_oom_score_adj: ctx.host_min_oom_score_adj,
        options: Default::default(),
    };
    let bundle_dir = container_dir.clone();
    tokio::task::spawn_blocking(move || -> Result<(), RuntimeError> {
        let spec = spec::container_spec(&input).map_err(spec_error)?;
        spec::write_bundle(&bundle_dir, &spec).map_err(spec_error)?;
        Ok(())
    })
    .await??;
    steps.done("spec and bundle");

    // 4. The log file's directory (kubelet creates the pod's log directory, not the
    // container's subdirectories).
    let log_path = log_path(&sandbox.config.log_directory, &config.log_path);
    if let Some(parent) = log_path.as_ref().and_then(|p| p.parent()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| RuntimeError::internal_ctx(format!("creating log directory {}", parent.display()), e))?;
    }
    steps.done("log dir");

    // 5. The shim: creates the container (namespaces, cgroup, init blocked before exec).
    {
        let shim_dir = shim_dir.clone();
        let cgroup = cgroups_path.clone();
        undo.push("stop the shim", async move {
            let _ = shim_mod::call(&shim_dir, |client| client.signal(libc::SIGKILL, true)).await;
            let dir = shim_dir.clone();
            let _ = tokio::task::spawn_blocking(move || {
                reap_shim(&dir);
                if let Ok(manager) = berth_shim::cgroups::manager(&cgroup) {
                    if manager.exists() {
                        let _ = manager.destroy();
                    }
                }
                let _ = berth_images::snapshot::remove_tree(&dir);
            })
            .await;
        });
    }
    let command = ShimCommand {
        id: id.to_string(),
        bundle: container_dir.clone(),
        state_dir: shim_dir.clone(),
        log_path: log_path.clone(),
        runtime: runtime.clone(),
        builtin_init: false,
    };
    spawn_shim(&ctx.shim_path, &command)
        .await
        .map_err(|e| RuntimeError::Internal(format!("creating container {name}: {e}")))?;
    steps.done("shim");

    // 6. The record, before the answer.
    let record = ContainerRecord {
        id: id.to_string(),
        sandbox_id: sandbox.id.clone(),
        name: name.to_string(),
        config,
        image_ref: image_name,
        image_id: image.id.clone(),
        state: ContainerState::Created,
        created_at_ns: now_ns(),
        started_at_ns: 0,
        finished_at_ns: 0,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
        log_path,
        bundle_dir: container_dir,
        rootfs_dir,
        shim_dir: shim_dir.clone(),
        cgroup_path: cgroups_path,
        runtime: runtime.map(|p| p.to_string_lossy().into_owned()),
        pid: read_pid_file(&shim_dir, berth_shim::protocol::INIT_PID_FILE).unwrap_or(0),
        oom_killed: false,
    };
    ctx.store.put_container(&record)?;
    steps.done("record");
    Ok(())
}

/// The PID namespace to join: the pod's shared one when the container's pid mode is POD.
fn pid_namespace(sandbox: &SandboxRecord, config: &ContainerConfig) -> Result<Option<PathBuf>, RuntimeError> {
    let sc = config.linux.as_ref().and_then(|l| l.security_context.clone()).unwrap_or_default();
    if spec::namespaces::pid_mode(&sc, &sandbox.config) == NamespaceMode::Target {
        return Err(RuntimeError::InvalidArgument(
            "pid namespace mode TARGET (ephemeral debug containers) is not supported by berth yet".into(),
        ));
    }
    Ok(sandbox.shared_pid_namespace())
}

fn existing(path: PathBuf) -> Option<PathBuf> {
    path.exists().then_some(path)
}

/// `log_directory/log_path`, None when either is empty (kubelet sends both; crictl may not).
pub fn log_path(log_directory: &str, log_path: &str) -> Option<PathBuf> {
    if log_directory.is_empty() || log_path.is_empty() {
        return None;
    }
    Some(PathBuf::from(log_directory).join(log_path))
}

fn create_private_dir(dir: &std::path::Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)
        .map_err(|e| RuntimeError::internal_ctx(format!("creating {}", dir.display()), e))
}

fn spec_error(err: spec::SpecError) -> RuntimeError {
    match err.kind() {
        spec::SpecErrorKind::InvalidArgument => RuntimeError::InvalidArgument(err.to_string()),
        spec::SpecErrorKind::NotFound => RuntimeError::NotFound(err.to_string()),
        spec::SpecErrorKind::Internal => RuntimeError::Internal(err.to_string()),
    }
}
