//! `runp`: RunPodSandbox from a config file.

use k8s_cri::v1::{PodSandboxConfig, RunPodSandboxRequest};

use crate::cli::RunpArgs;
use crate::client::Connection;
use crate::{config_file, output};

pub async fn run(conn: &Connection, args: &RunpArgs) -> anyhow::Result<()> {
    let config: PodSandboxConfig = config_file::load(&args.config)?;
    ensure_log_directory(&config);
    let mut rt = conn.long().runtime().await?;
    let request = RunPodSandboxRequest { config: Some(config), runtime_handler: args.runtime.clone() };
    let response = rt.run_pod_sandbox(request).await.map_err(|s| conn.error("run pod", s))?.into_inner();
    output::print_str(&format!("{}\n", response.pod_sandbox_id));
    Ok(())
}

/// kubelet makes the pod's log directory before it runs the pod; a crictl-style recipe
/// names one (often /tmp) and expects it to be there, so berthctl makes it as kubelet would.
pub fn ensure_log_directory(config: &PodSandboxConfig) {
    if !config.log_directory.is_empty() {
        if let Err(e) = std::fs::create_dir_all(&config.log_directory) {
            eprintln!("berthctl: warning: cannot create log directory {}: {e}", config.log_directory);
        }
    }
}
