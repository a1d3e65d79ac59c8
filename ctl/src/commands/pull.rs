//! `pull`: PullImage, with per-layer progress on stderr (see [`crate::progress`]).

use k8s_cri::v1::{AuthConfig, PodSandboxConfig, PullImageRequest};

use crate::cli::PullArgs;
use crate::client::{Connection, CtlError};
use crate::{config_file, output};

pub async fn run(conn: &Connection, args: &PullArgs) -> anyhow::Result<()> {
    let request = pull_request(args)?;
    // Per-layer progress on stderr (berth.v1.Progress; plain CRI PullImage without it).
    let display = if args.quiet { crate::progress::Display::Quiet } else { crate::progress::Display::for_stderr() };
    let image_ref = crate::progress::pull(conn, request, display).await?;
    if args.quiet {
        output::print_str(&format!("{image_ref}\n"));
    } else {
        output::print_str(&format!("Image is up to date for {image_ref}\n"));
    }
    Ok(())
}

/// The PullImage request `args` describe: image, credentials, pod config.
pub fn pull_request(args: &PullArgs) -> Result<PullImageRequest, CtlError> {
    let auth = auth_config(args.creds.as_deref(), args.auth.as_deref())?;
    let sandbox_config = match &args.pod_config {
        Some(path) => Some(config_file::load::<PodSandboxConfig>(path)?),
        None => None,
    };
    Ok(PullImageRequest { image: Some(image_spec(&args.image)), auth, sandbox_config })
}

pub fn image_spec(image: &str) -> k8s_cri::v1::ImageSpec {
    k8s_cri::v1::ImageSpec { image: image.to_string(), ..Default::default() }
}

/// `--creds USER[:PASSWORD]` or `--auth BASE64`, as crictl takes them.
pub fn auth_config(creds: Option<&str>, auth: Option<&str>) -> Result<Option<AuthConfig>, CtlError> {
    match (creds, auth) {
        (Some(_), Some(_)) => Err(CtlError::Usage("give either --creds or --auth, not both".to_string())),
        (Some(creds), None) => {
            let (username, password) = creds.split_once(':').unwrap_or((creds, ""));
            if username.is_empty() {
                return Err(CtlError::Usage("--creds: expected USERNAME[:PASSWORD]".to_string()));
            }
            Ok(Some(AuthConfig {
                username: username.to_string(),
                password: password.to_string(),
                ..Default::default()
            }))
        }
        (None, Some(auth)) => Ok(Some(AuthConfig { auth: auth.to_string(), ..Default::default() })),
        (None, None) => Ok(None),
    }
}
