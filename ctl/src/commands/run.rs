//! `run`: docker's `run` over CRI. Pulls the image if berthd lacks it, makes a pod (with
//! the published ports as hostPorts) and one container in it, and starts it. In the
//! foreground it prints the container's output until it exits and exits with its exit code
//! (`--rm` then removes the pod); with `-d` it prints the container id.
//!
//! The pod and container are ordinary CRI objects (namespace `default`, named as the
//! container), so `berthctl ps`, `logs`, `exec`, `stop`, `rm` and `rmp` work on them. If a
//! step fails after the pod exists, the pod is removed again: a failed run leaves nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatusRequest, CreateContainerRequest, ImageSpec, Int64Value,
    KeyValue, LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig, Mount, PodSandboxConfig,
    PodSandboxMetadata, PortMapping, Protocol, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StatusRequest, StopContainerRequest, StopPodSandboxRequest,
};

use crate::cli::RunArgs;
use crate::client::{exit_code, Connection, CtlError, RuntimeClient};
use crate::commands::logs;
use crate::progress;

/// The CRI namespace of pods `run` makes.
pub const POD_NAMESPACE: &str = "default";
/// Label on every pod and container `run` makes (value: the container name).
pub const RUN_LABEL: &str = "io.berth.ctl.run";
/// Where pod log directories go, as kubelet's `/var/log/pods`; `BERTHCTL_POD_LOG_DIR`
/// overrides it (tests point it into their temp dir).
pub const DEFAULT_POD_LOG_DIR: &str = "/var/log/pods";
/// How long a stopping container gets between SIGTERM and SIGKILL (docker's default).
pub const STOP_TIMEOUT_SECS: i64 = 10;

pub async fn run(conn: &Connection, args: &RunArgs) -> anyhow::Result<i32> {
    if args.detach && args.rm {
        return Err(CtlError::Usage(
            "--rm needs berthctl to wait for the exit, which -d does not: run in the foreground, or remove it later with `berthctl rmp NAME`".into(),
        )
        .into());
    }
    let plan = Plan::from_args(args)?;
    let mut rt = conn.runtime().await?;
    if !plan.ports.is_empty() {
        require_pod_network(conn, &mut rt).await?;
    }
    let image_id = ensure_image(conn, &args.image).await?;

    let pod_config = plan.pod_config();
    std::fs::create_dir_all(&pod_config.log_directory).map_err(|err| {
        CtlError::Usage(format!(
            "creating the pod log directory {}: {err} (BERTHCTL_POD_LOG_DIR chooses another place)",
            pod_config.log_directory
        ))
    })?;
    let pod_id = match rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: args.runtime.clone(),
        })
        .await
    {
        Ok(response) => response.into_inner().pod_sandbox_id,
        Err(status) => {
            let _ = std::fs::remove_dir_all(&pod_config.log_directory);
            return Err(conn.error(&format!("run pod {}", plan.name), status).into());
        }
    };
    let pod = PodHandle { id: pod_id, log_directory: PathBuf::from(&pod_config.log_directory) };

    let container_id = match create_and_start(conn, &mut rt, &plan, &pod, &pod_config, &image_id, &args.image).await {
        Ok(id) => id,
        Err(error) => {
            pod.remove(conn, &mut rt).await;
            return Err(error.into());
        }
    };
    if args.detach {
        println!("{container_id}");
        return Ok(exit_code::OK);
    }

    let stopper = stop_on_interrupt(conn.clone(), rt.clone(), container_id.clone());
    let (log_path, _) = logs::log_path_of(conn, &mut rt, &container_id).await?;
    let exited = logs::watch_exit(conn.clone(), rt.clone(), container_id.clone());
    let printed = logs::print_log(&log_path, &logs::reader::Options::default(), Some(exited)).await;
    stopper.abort();
    let status = rt
        .container_status(ContainerStatusRequest { container_id: container_id.clone(), verbose: false })
        .await
        .map_err(|s| conn.error(&format!("status of container {container_id}"), s))
        .map(|response| response.into_inner().status.unwrap_or_default());
    if args.rm {
        pod.remove(conn, &mut rt).await;
    }
    printed?;
    let status = status?;
    if status.reason == "OOMKilled" {
        eprintln!("berthctl: container {} was killed for running out of memory", plan.name);
    }
    Ok(status.exit_code)
}

/// What the command line asks for, checked before anything is made.
#[derive(Debug)]
struct Plan {
    name: String,
    pod_uid: String,
    ports: Vec<PortMapping>,
    envs: Vec<KeyValue>,
    mounts: Vec<Mount>,
    workdir: String,
    user: User,
    command: Vec<String>,
    log_root: PathBuf,
}

#[derive(Debug, Default, PartialEq)]
struct User {
    uid: Option<i64>,
    name: String,
    gid: Option<i64>,
}

impl Plan {
    fn from_args(args: &RunArgs) -> Result<Plan, CtlError> {
        let name = match &args.name {
            Some(name) => validate_name(name)?,
            None => generated_name(&args.image),
        };
        Ok(Plan {
            name,
            pod_uid: random_hex(16),
            ports: args.publish.iter().map(|p| parse_port(p)).collect::<Result<_, _>>()?,
            envs: args.env.iter().map(|e| parse_env(e)).collect::<Result<_, _>>()?,
            mounts: args.volume.iter().map(|v| parse_volume(v)).collect::<Result<_, _>>()?,
            workdir: args.workdir.clone().unwrap_or_default(),
            user: args.user.as_deref().map(parse_user).transpose()?.unwrap_or_default(),
            command: args.command.clone(),
            log_root: std::env::var_os("BERTHCTL_POD_LOG_DIR")
                .map_or_else(|| PathBuf::from(DEFAULT_POD_LOG_DIR), PathBuf::from),
        })
    }

    fn labels(&self) -> HashMap<String, String> {
        HashMap::from([(RUN_LABEL.to_string(), self.name.clone())])
    }

    /// As kubelet makes one: metadata, hostname, a log directory named as kubelet's
    /// (`<namespace>_<name>_<uid>`), and the published ports.
    fn pod_config(&self) -> PodSandboxConfig {
        let log_directory = self.log_root.join(format!("{POD_NAMESPACE}_{}_{}", self.name, self.pod_uid));
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.pod_uid.clone(),
                namespace: POD_NAMESPACE.to_string(),
                attempt: 0,
            }),
            hostname: self.name.clone(),
            log_directory: log_directory.to_string_lossy().into_owned(),
            port_mappings: self.ports.clone(),
            labels: self.labels(),
            linux: Some(LinuxPodSandboxConfig::default()),
            ..Default::default()
        }
    }

    fn container_config(&self, image_id: &str, image_reference: &str) -> ContainerConfig {
        let security_context = LinuxContainerSecurityContext {
            run_as_user: self.user.uid.map(|value| Int64Value { value }),
            run_as_username: self.user.name.clone(),
            run_as_group: self.user.gid.map(|value| Int64Value { value }),
            ..Default::default()
        };
        ContainerConfig {
            metadata: Some(ContainerMetadata { name: self.name.clone(), attempt: 0 }),
            image: Some(ImageSpec {
                image: image_id.to_string(),
                user_specified_image: image_reference.to_string(),
                ..Default::default()
            }),
            // docker's CMD replaces the image's Cmd and keeps its Entrypoint: CRI's args.
            args: self.command.clone(),
            working_dir: self.workdir.clone(),
            envs: self.envs.clone(),
            mounts: self.mounts.clone(),
            labels: self.labels(),
            log_path: format!("{}/0.log", self.name),
            linux: Some(LinuxContainerConfig { security_context: Some(security_context), ..Default::default() }),
            ..Default::default()
        }
    }
}

/// The pod `run` made, removed again when the run fails or with `--rm`.
struct PodHandle {
    id: String,
    log_directory: PathBuf,
}

impl PodHandle {
    /// Stops and removes the pod (and so its container) and its log directory. Errors are
    /// printed, not returned: this runs after the error or exit code that matters.
    async fn remove(&self, conn: &Connection, rt: &mut RuntimeClient) {
        let stopped = rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: self.id.clone() }).await;
        let removed = match stopped {
            Ok(_) => {
                rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: self.id.clone() }).await.map(|_| ())
            }
            Err(status) => Err(status),
        };
        if let Err(status) = removed {
            eprintln!(
                "berthctl: {} (remove it with `berthctl rmp -f {}`)",
                conn.error(&format!("remove pod {}", self.id), status),
                self.id
            );
            return;
        }
        if let Err(err) = std::fs::remove_dir_all(&self.log_directory) {
            if err.kind() != std::io::ErrorKind::NotFound {
                eprintln!("berthctl: removing pod logs {}: {err}", self.log_directory.display());
            }
        }
    }
}

async fn create_and_start(
    conn: &Connection,
    rt: &mut RuntimeClient,
    plan: &Plan,
    pod: &PodHandle,
    pod_config: &PodSandboxConfig,
    image_id: &str,
    image_reference: &str,
) -> Result<String, CtlError> {
    let request = CreateContainerRequest {
        pod_sandbox_id: pod.id.clone(),
        config: Some(plan.container_config(image_id, image_reference)),
        sandbox_config: Some(pod_config.clone()),
    };
    let container_id = rt
        .create_container(request)
        .await
        .map_err(|s| conn.error(&format!("create container {}", plan.name), s))?
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest { container_id: container_id.clone() })
        .await
        .map_err(|s| conn.error(&format!("start container {}", plan.name), s))?;
    Ok(container_id)
}

/// hostPorts need a pod network (CNI with portmap); without one berthd would refuse the
/// pod, so say what is missing before making anything.
async fn require_pod_network(conn: &Connection, rt: &mut RuntimeClient) -> Result<(), CtlError> {
    let response = rt.status(StatusRequest { verbose: false }).await.map_err(|s| conn.error("status", s))?.into_inner();
    let conditions = response.status.map(|s| s.conditions).unwrap_or_default();
    match conditions.iter().find(|c| c.r#type == "NetworkReady") {
        Some(network) if !network.status => Err(CtlError::Runtime(format!(
            "publishing ports (-p) needs pod networking, and berthd reports NetworkReady=false ({}: {}). \
             Configure a CNI network for berthd (see `berthctl info`), or run without -p",
            network.reason, network.message
        ))),
        _ => Ok(()),
    }
}

/// The image id of `reference`, pulled first (with progress on stderr) when berthd lacks it.
async fn ensure_image(conn: &Connection, reference: &str) -> Result<String, CtlError> {
    let mut images = conn.images().await?;
    let request = k8s_cri::v1::ImageStatusRequest {
        image: Some(ImageSpec { image: reference.to_string(), ..Default::default() }),
        verbose: false,
    };
    let status =
        images.image_status(request).await.map_err(|s| conn.error(&format!("status of image {reference}"), s))?;
    if let Some(image) = status.into_inner().image {
        return Ok(image.id);
    }
    let display = progress::Display::for_stderr();
    if display != progress::Display::Quiet {
        eprintln!("Unable to find image {reference} on this node: pulling it");
    }
    progress::pull(conn, progress::pull_request(reference, None), display).await
}

/// Ctrl-C stops the container (SIGTERM, then SIGKILL after [`STOP_TIMEOUT_SECS`]) and
/// lets `run` print the rest of its output and exit with its code; a second Ctrl-C leaves
/// at once (the container keeps going down on its own).
fn stop_on_interrupt(conn: Connection, mut rt: RuntimeClient, container_id: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!("berthctl: stopping the container (Ctrl-C again to leave now)");
        let stop =
            rt.stop_container(StopContainerRequest { container_id: container_id.clone(), timeout: STOP_TIMEOUT_SECS });
        tokio::select! {
            result = stop => {
                if let Err(status) = result {
                    eprintln!("berthctl: {}", conn.error(&format!("stop container {container_id}"), status));
                }
            }
            _ = tokio::signal::ctrl_c() => std::process::exit(130),
        }
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    })
}

/// `[HOST_IP:]HOST:CONTAINER[/tcp|/udp|/sctp]`
fn parse_port(text: &str) -> Result<PortMapping, CtlError> {
    let usage = || {
        CtlError::Usage(format!(
            "-p {text}: expected HOST:CONTAINER[/udp] or HOST_IP:HOST:CONTAINER[/udp], e.g. -p 8080:80"
        ))
    };
    let (ports, protocol) = match text.rsplit_once('/') {
        Some((ports, "tcp")) => (ports, Protocol::Tcp),
        Some((ports, "udp")) => (ports, Protocol::Udp),
        Some((ports, "sctp")) => (ports, Protocol::Sctp),
        Some(_) => return Err(usage()),
        None => (text, Protocol::Tcp),
    };
    let (host_part, container_port) = ports.rsplit_once(':').ok_or_else(usage)?;
    let (host_ip, host_port) = match host_part.rsplit_once(':') {
        Some((ip, port)) => (ip.trim_start_matches('[').trim_end_matches(']'), port),
        None => ("", host_part),
    };
    let port = |text: &str| text.parse::<u16>().ok().filter(|p| *p > 0).map(i32::from).ok_or_else(usage);
    if !host_ip.is_empty() && host_ip.parse::<std::net::IpAddr>().is_err() {
        return Err(usage());
    }
    Ok(PortMapping {
        protocol: protocol as i32,
        container_port: port(container_port)?,
        host_port: port(host_port)?,
        host_ip: host_ip.to_string(),
    })
}

/// `KEY=VALUE`, or `KEY` to pass berthctl's own value (as docker does).
fn parse_env(text: &str) -> Result<KeyValue, CtlError> {
    let (key, value) = match text.split_once('=') {
        Some((key, value)) => (key, value.to_string()),
        None => (text, std::env::var(text).unwrap_or_default()),
    };
    if key.is_empty() {
        return Err(CtlError::Usage(format!("-e {text}: expected KEY=VALUE")));
    }
    Ok(KeyValue { key: key.to_string(), value })
}

/// `HOST:CONTAINER[:ro|:rw]`, both absolute.
fn parse_volume(text: &str) -> Result<Mount, CtlError> {
    let usage =
        |why: &str| CtlError::Usage(format!("-v {text}: {why} (HOST:CONTAINER[:ro], e.g. -v /srv/data:/data:ro)"));
    let parts: Vec<&str> = text.split(':').collect();
    let (host, container, readonly) = match parts.as_slice() {
        [host, container] => (*host, *container, false),
        [host, container, "ro"] => (*host, *container, true),
        [host, container, "rw"] => (*host, *container, false),
        [_, _, option] => return Err(usage(&format!("unknown option {option}: use ro or rw"))),
        _ => return Err(usage("expected two paths")),
    };
    if !Path::new(host).is_absolute() || !Path::new(container).is_absolute() {
        return Err(usage("both paths must be absolute"));
    }
    if !Path::new(host).exists() {
        return Err(usage(&format!("{host} does not exist on this host")));
    }
    Ok(Mount { host_path: host.to_string(), container_path: container.to_string(), readonly, ..Default::default() })
}

/// `UID`, `UID:GID`, `NAME` or `NAME:GID` (names are looked up in the image).
fn parse_user(text: &str) -> Result<User, CtlError> {
    let usage =
        || CtlError::Usage(format!("-u {text}: expected UID[:GID] or NAME[:GID], e.g. -u 1000:1000 or -u nobody"));
    let (user, group) = match text.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (text, None),
    };
    if user.is_empty() {
        return Err(usage());
    }
    let gid = group.map(|g| g.parse::<i64>().map_err(|_| usage())).transpose()?;
    Ok(match user.parse::<i64>() {
        Ok(uid) if uid >= 0 => User { uid: Some(uid), name: String::new(), gid },
        Ok(_) => return Err(usage()),
        Err(_) => User { uid: None, name: user.to_string(), gid },
    })
}

/// Names become CRI names, hostnames and directory names: DNS-label characters only.
fn validate_name(name: &str) -> Result<String, CtlError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(name.to_string())
    } else {
        Err(CtlError::Usage(format!(
            "--name {name}: use lowercase letters, digits and '-' (at most 63, as a hostname)"
        )))
    }
}

/// `<image name>-<6 hex>`: `127.0.0.1:5000/library/busybox:latest` gives `busybox-1a2b3c`.
fn generated_name(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let base: String = last
        .split(':')
        .next()
        .unwrap_or(last)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect();
    let base = base.trim_matches('-');
    let base = if base.is_empty() { "run" } else { &base[..base.len().min(50)] };
    format!("{base}-{}", random_hex(3))
}

fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buffer = vec![0u8; bytes];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buffer)).is_err() {
        // Uniqueness, not secrecy: the clock will do.
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_nanos();
        buffer.iter_mut().enumerate().for_each(|(i, b)| *b = (nanos >> (8 * (i % 16))) as u8);
    }
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let p = parse_port("8080:80").unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol, p.host_ip.as_str()),
            (8080, 80, Protocol::Tcp as i32, "")
        );
        let p = parse_port("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol, p.host_ip.as_str()),
            (5353, 53, Protocol::Udp as i32, "127.0.0.1")
        );
        let p = parse_port("[::1]:8080:80").unwrap();
        assert_eq!(p.host_ip, "::1");
        for bad in ["80", "x:80", "8080:0", "8080:80/icmp", "nothost:1:2", "70000:80"] {
            assert!(matches!(parse_port(bad), Err(CtlError::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn envs_volumes_users() {
        assert_eq!(parse_env("A=b=c").unwrap(), KeyValue { key: "A".into(), value: "b=c".into() });
        assert!(parse_env("=x").is_err());
        let m = parse_volume("/tmp:/data:ro").unwrap();
        assert_eq!((m.host_path.as_str(), m.container_path.as_str(), m.readonly), ("/tmp", "/data", true));
        assert!(!parse_volume("/tmp:/data").unwrap().readonly);
        assert!(parse_volume("rel:/data").is_err());
        assert!(parse_volume("/tmp:/data:rx").is_err());
        assert!(parse_volume("/nonexistent-berth-path:/data").is_err());
        assert_eq!(parse_user("1000:2000").unwrap(), User { uid: Some(1000), name: String::new(), gid: Some(2000) });
        assert_eq!(parse_user("nobody").unwrap(), User { uid: None, name: "nobody".into(), gid: None });
        assert!(parse_user(":1").is_err());
        assert!(parse_user("1:x").is_err());
    }

    #[test]
    fn names() {
        let name = generated_name("127.0.0.1:5000/library/busybox:latest");
        assert!(name.starts_with("busybox-") && name.len() == "busybox-".len() + 6, "{name}");
        assert!(generated_name("Reg/My_App@sha256:abc").starts_with("my-app-"));
        assert!(validate_name("web-1").is_ok());
        assert!(validate_name("Web").is_err());
        assert!(validate_name("-x").is_err());
    }
}
