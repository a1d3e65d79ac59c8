//! A pod's shared PID namespace holder: a berth-shim started with `--builtin-init`, whose
//! PID 1 is the shim's own tiny init. The pod's containers join `/proc/<pid>/ns/pid`.
//!
//! Its shim id is the pod id (state dir `<state>/shims/<pod id>`, which container
//! recovery skips because the pod record names it); its bundle lives with the pod's files
//! (`<root>/pods/<id>/pid-holder/`), not under `containers/`. It always runs on the shim's
//! built-in runtime: an external OCI runtime has no built-in init.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_shim::client::ShimClientError;

use crate::container::shim::{call, read_pid_file, ShimCommand};
use crate::container::undo::Undo;
use crate::errors::RuntimeError;
use crate::runtime::context::RuntimeContext;
use crate::runtime::spec::{self, PidHolderSpecInput, SandboxNamespaces};
use crate::store::SandboxRecord;

/// How long the holder gets to exit after SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(5);

pub struct PidHolder {
    /// The shim id.
    pub id: String,
    /// The init's pid (on the host).
    pub pid: i32,
}

/// The holder's shim id: the pod's id. Ids are random, so it never meets a container's;
/// and it must stay 64 characters: the control socket path has at most 107 bytes.
pub fn pid_holder_id(sandbox_id: &str) -> String {
    sandbox_id.to_string()
}

/// The holder's bundle dir: `<root>/pods/<id>/pid-holder`.
pub fn pid_holder_bundle(ctx: &RuntimeContext, sandbox_id: &str) -> PathBuf {
    ctx.pod_dir(sandbox_id).join("pid-holder")
}

/// Starts the holder for `record` (namespaces and cgroup already exist) and registers its
/// stop in `undo`.
pub async fn start_pid_holder(ctx: &Arc<RuntimeContext>, record: &SandboxRecord, undo: &mut Undo) -> Result<PidHolder, RuntimeError> {
    let id = pid_holder_id(&record.id);
    let bundle = pid_holder_bundle(ctx, &record.id);
    let state_dir = ctx.shim_dir(&id);
    let spec = spec::pid_holder_spec(&PidHolderSpecInput {
        sandbox_id: record.id.clone(),
        sandbox_config: record.config.clone(),
        namespaces: SandboxNamespaces {
            net: record.namespace_path("net"),
            ipc: record.namespace_path("ipc"),
            uts: record.namespace_path("uts"),
            pid: None,
        },
        pod_cgroup_path: record.cgroup_path.clone(),
        host_min_oom_score_adj: ctx.host_min_oom_score_adj,
    });
    {
        let bundle = bundle.clone();
        tokio::task::spawn_blocking(move || -> Result<(), RuntimeError> {
            std::fs::create_dir_all(&bundle).map_err(|e| RuntimeError::internal_ctx(format!("creating {}", bundle.display()), e))?;
            spec::write_bundle(&bundle, &spec).map_err(|e| RuntimeError::internal_ctx("writing the pid holder's bundle", e))?;
            Ok(())
        })
        .await??;
    }
    undo.push("stop the pid holder", {
        let state_dir = state_dir.clone();
        async move {
            stop_pid_holder(&state_dir).await;
            remove_shim_dir(&state_dir).await;
        }
    });
    let command = ShimCommand {
        id: id.clone(),
        bundle,
        state_dir: state_dir.clone(),
        log_path: None,
        runtime: None,
        builtin_init: true,
    };
    crate::container::spawn_shim(&ctx.shim_path, &command)
        .await
        .map_err(|e| RuntimeError::internal_ctx("starting the pod's PID namespace holder", e))?;
    call(&state_dir, |client| client.start())
        .await
        .map_err(|e| RuntimeError::internal_ctx("starting the pod's PID namespace holder", e))?;
    let pid = read_pid_file(&state_dir, "pid")
        .ok_or_else(|| RuntimeError::internal(format!("the pid holder wrote no pid file in {}", state_dir.display())))?;
    tracing::debug!(sandbox = %record.id, pid, "pid holder running");
    Ok(PidHolder { id, pid })
}

/// Kills the holder (its init, then the kernel kills everything else in the PID namespace)
/// and waits for it to exit. Idempotent: a shim that is gone is fine.
pub async fn stop_pid_holder(state_dir: &Path) {
    let killed = call(state_dir, |client| {
        client.signal(libc::SIGKILL, false)?;
        client.wait(STOP_WAIT)
    })
    .await;
    match killed {
        Ok(status) if status.exit.is_some() => {}
        Ok(_) => tracing::warn!(shim = %state_dir.display(), "the pid holder did not exit after SIGKILL"),
        Err(ShimClientError::NotRunning) => {}
        Err(err) => tracing::warn!(shim = %state_dir.display(), error = %err, "could not stop the pid holder"),
    }
}

/// Removes the holder's shim state dir (after it stopped). Idempotent.
pub async fn remove_shim_dir(state_dir: &Path) {
    let dir = state_dir.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "could not remove the pid holder's shim dir"),
    })
    .await;
}

/// True when the holder's shim answers and its init has not exited.
pub async fn is_running(state_dir: &Path) -> bool {
    match call(state_dir, |client| client.status()).await {
        Ok(status) => status.exit.is_none(),
        Err(_) => false,
    }
}
