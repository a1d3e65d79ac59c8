//! `create`: CreateContainer in a pod from a container and a pod config file, as crictl.

use k8s_cri::v1::{ContainerConfig, CreateContainerRequest, PodSandboxConfig, PullImageRequest};

use crate::cli::CreateArgs;
use crate::client::{Connection, CtlError};
use crate::commands::images::status_of;
use crate::commands::pull::image_spec;
use crate::commands::resolve_pod;
use crate::{config_file, output};

pub async fn run(conn: &Connection, args: &CreateArgs) -> anyhow::Result<()> {
    let config: ContainerConfig = config_file::load(&args.container_config)?;
    let pod_config: PodSandboxConfig = config_file::load(&args.pod_config)?;
    let image = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
    if image.is_empty() {
        return Err(CtlError::Usage(format!(
            "container config {} names no image (\"image\": {{\"image\": \"busybox\"}})",
            args.container_config.display()
        ))
        .into());
    }
    if args.pull {
        pull_if_missing(conn, &image, &pod_config).await?;
    }
    let long = conn.long();
    let mut rt = long.runtime().await?;
    let pod = resolve_pod(conn, &mut rt, &args.pod).await?;
    let request =
        CreateContainerRequest { pod_sandbox_id: pod.clone(), config: Some(config), sandbox_config: Some(pod_config) };
    let response =
        rt.create_container(request).await.map_err(|s| conn.error(&format!("create container in pod {pod}"), s));
    let response = match response {
        Ok(response) => response.into_inner(),
        Err(CtlError::NotFound(message)) if message.contains("image") && !args.pull => {
            return Err(
                CtlError::NotFound(format!("{message} (`berthctl pull {image}`, or create with --pull)")).into()
            );
        }
        Err(error) => return Err(error.into()),
    };
    output::print_str(&format!("{}\n", response.container_id));
    Ok(())
}

/// Pulls `image` unless berthd has it already.
pub async fn pull_if_missing(conn: &Connection, image: &str, pod_config: &PodSandboxConfig) -> Result<(), CtlError> {
    let mut images = conn.long().images().await?;
    match status_of(conn, &mut images, image).await {
        Ok(_) => return Ok(()),
        Err(CtlError::NotFound(_)) => {}
        Err(error) => return Err(error),
    }
    let request =
        PullImageRequest { image: Some(image_spec(image)), auth: None, sandbox_config: Some(pod_config.clone()) };
    images.pull_image(request).await.map_err(|s| conn.error(&format!("pull {image}"), s))?;
    Ok(())
}
