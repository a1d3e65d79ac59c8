//! The container process: what it runs, with which environment, where, on a tty or not.

use std::path::{Component, Path, PathBuf};

use berth_images::ImageConfig;
use k8s_cri::v1::{ContainerConfig, KeyValue, PodSandboxConfig};
use oci_spec::runtime::Process;

use super::{ContainerSpecInput, PodNamespaceModes, SpecError};

/// The PATH a container gets when its image does not set one (containerd's and Docker's).
pub const DEFAULT_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `process` of the spec, without user, capabilities, no_new_privs and oom_score_adj
/// (the caller fills those from the security context).
pub(super) fn build_process(input: &ContainerSpecInput, pod_modes: PodNamespaceModes) -> Result<Process, SpecError> {
    let config = &input.config;
    let args = process_args(config, &input.image, &input.image_name)?;
    let hostname = env_hostname(&input.sandbox_config, pod_modes);
    let env = process_env(&hostname, &input.image.env, &config.envs, config.tty);
    let cwd = working_dir(&config.working_dir, input.image.working_dir.as_deref())?;

    let mut process = Process::default();
    process
        .set_terminal(Some(config.tty))
        .set_console_size(None)
        .set_args(Some(args))
        .set_env(Some(env))
        .set_cwd(cwd)
        .set_rlimits(if input.options.rlimits.is_empty() { None } else { Some(input.options.rlimits.clone()) })
        .set_apparmor_profile(None)
        .set_selinux_label(None)
        .set_scheduler(None)
        .set_io_priority(None);
    Ok(process)
}

/// The process arguments, as Docker and containerd (`getProcessArgs`) derive them:
///
/// | CRI command | CRI args | result                      |
/// |-------------|----------|-----------------------------|
/// | set         | any      | command + args (image unused)|
/// | empty       | set      | image entrypoint + args     |
/// | empty       | empty    | image entrypoint + image cmd|
///
/// An image entrypoint of exactly `[""]` means "no entrypoint" (how `ENTRYPOINT []` is
/// sometimes written). Nothing at all to run is an error.
pub fn process_args(config: &ContainerConfig, image: &ImageConfig, image_name: &str) -> Result<Vec<String>, SpecError> {
    let mut argv: Vec<String>;
    if !config.command.is_empty() {
        argv = config.command.clone();
        argv.extend(config.args.iter().cloned());
    } else {
        let entrypoint_unset = image.entrypoint.len() == 1 && image.entrypoint[0].is_empty();
        argv = if entrypoint_unset { Vec::new() } else { image.entrypoint.clone() };
        if config.args.is_empty() {
            argv.extend(image.cmd.iter().cloned());
        } else {
            argv.extend(config.args.iter().cloned());
        }
    }
    if argv.is_empty() {
        return Err(SpecError::NoCommand { image: image_name.to_string() });
    }
    Ok(argv)
}

/// The environment: the default PATH, HOSTNAME, then the image's variables, then the CRI's,
/// each later one replacing an earlier one of the same name in place; TERM=xterm on a tty
/// unless set. (containerd's order and rules.)
pub fn process_env(hostname: &str, image_env: &[String], cri_envs: &[KeyValue], tty: bool) -> Vec<String> {
    let mut env: Vec<String> = vec![DEFAULT_PATH_ENV.to_string()];
    if !hostname.is_empty() {
        set_env(&mut env, format!("HOSTNAME={hostname}"));
    }
    for var in image_env {
        set_env(&mut env, var.clone());
    }
    for kv in cri_envs {
        if kv.key.is_empty() {
            tracing::warn!(value = %kv.value, "ignoring a CRI environment variable with an empty name");
            continue;
        }
        set_env(&mut env, format!("{}={}", kv.key, kv.value));
    }
    if tty && !env.iter().any(|v| env_key(v) == "TERM") {
        env.push("TERM=xterm".to_string());
    }
    env
}

fn env_key(var: &str) -> &str {
    var.split_once('=').map_or(var, |(k, _)| k)
}

fn set_env(env: &mut Vec<String>, var: String) {
    let key = env_key(&var).to_string();
    match env.iter_mut().find(|v| env_key(v) == key) {
        Some(slot) => *slot = var,
        None => env.push(var),
    }
}

/// HOSTNAME in the environment: the pod's hostname; with the host network, the node's
/// (containerd does the same).
fn env_hostname(sandbox: &PodSandboxConfig, pod_modes: PodNamespaceModes) -> String {
    if !sandbox.hostname.is_empty() && !pod_modes.host_network {
        return sandbox.hostname.clone();
    }
    if pod_modes.host_network {
        if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            return name.trim().to_string();
        }
    }
    sandbox.hostname.clone()
}

/// The working directory: the CRI's, else the image's, else `/`. The CRI's must be
/// absolute; an image's relative WORKDIR is taken from `/`.
pub fn working_dir(cri: &str, image: Option<&str>) -> Result<PathBuf, SpecError> {
    if !cri.is_empty() {
        if !cri.starts_with('/') {
            return Err(SpecError::invalid(format!("working_dir {cri:?} is not an absolute path")));
        }
        return Ok(clean_absolute(Path::new(cri)));
    }
    match image {
        Some(dir) if !dir.is_empty() => Ok(clean_absolute(&Path::new("/").join(dir))),
        _ => Ok(PathBuf::from("/")),
    }
}

/// Lexically cleans an absolute path: no `.`, `..` resolved against the root, no trailing `/`.
pub(crate) fn clean_absolute(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for comp in path.components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(command: &[&str], args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn img(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        ImageConfig {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn args_follow_docker_and_containerd() {
        type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], &'a [&'a str], Option<&'a [&'a str]>);
        let cases: &[Case] = &[
            // command, args, entrypoint, cmd -> argv
            (&["cmd"], &[], &["ep"], &["c"], Some(&["cmd"])),
            (&["cmd"], &["a1", "a2"], &["ep"], &["c"], Some(&["cmd", "a1", "a2"])),
            (&[], &["a1"], &["ep", "x"], &["c"], Some(&["ep", "x", "a1"])),
            (&[], &[], &["ep"], &["c1", "c2"], Some(&["ep", "c1", "c2"])),
            (&[], &[], &[], &["sh"], Some(&["sh"])),
            (&[], &["a1"], &[], &["sh"], Some(&["a1"])),
            (&[], &[], &[""], &["sh"], Some(&["sh"])),
            (&[], &[], &["ep"], &[], Some(&["ep"])),
            (&["cmd"], &[], &[], &[], Some(&["cmd"])),
            (&[], &[], &[], &[], None),
            (&[], &[], &[""], &[], None),
        ];
        for (command, args, ep, cmd, want) in cases {
            let got = process_args(&cfg(command, args), &img(ep, cmd), "img");
            match want {
                Some(want) => assert_eq!(got.unwrap(), want.to_vec(), "{command:?} {args:?} {ep:?} {cmd:?}"),
                None => {
                    let err = got.unwrap_err();
                    assert!(err.to_string().contains("no command specified"), "{err}");
                    assert_eq!(err.code(), tonic::Code::InvalidArgument);
                }
            }
        }
    }

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue { key: k.into(), value: v.into() }
    }

    #[test]
    fn env_layers_override_in_place() {
        let env = process_env(
            "pod-a",
            &["PATH=/img/bin".into(), "A=1".into(), "B=2".into(), "NOVALUE".into()],
            &[kv("B", "cri"), kv("C", "3"), kv("", "ignored"), kv("HOSTNAME", "mine")],
            false,
        );
        assert_eq!(env, vec!["PATH=/img/bin", "HOSTNAME=mine", "A=1", "B=cri", "NOVALUE", "C=3"]);

        let env = process_env("h", &[], &[], true);
        assert_eq!(env, vec![DEFAULT_PATH_ENV.to_string(), "HOSTNAME=h".into(), "TERM=xterm".into()]);

        let env = process_env("", &["TERM=vt100".into()], &[], true);
        assert_eq!(env, vec![DEFAULT_PATH_ENV.to_string(), "TERM=vt100".into()]);

        // A value may itself contain '='.
        let env = process_env("", &["X=a=b".into()], &[kv("Y", "c=d")], false);
        assert_eq!(env[1..], ["X=a=b".to_string(), "Y=c=d".to_string()]);
    }

    #[test]
    fn working_dir_rules() {
        let cases: &[(&str, Option<&str>, Result<&str, ()>)] = &[
            ("", None, Ok("/")),
            ("", Some(""), Ok("/")),
            ("", Some("/app"), Ok("/app")),
            ("", Some("app/"), Ok("/app")),
            ("/work", Some("/app"), Ok("/work")),
            ("/a/./b/../c/", None, Ok("/a/c")),
            ("relative", None, Err(())),
        ];
        for (cri, image, want) in cases {
            let got = working_dir(cri, *image);
            match want {
                Ok(w) => assert_eq!(got.unwrap(), PathBuf::from(w), "{cri:?} {image:?}"),
                Err(()) => assert_eq!(got.unwrap_err().code(), tonic::Code::InvalidArgument),
            }
        }
    }

    #[test]
    fn clean_absolute_cannot_climb_above_root() {
        assert_eq!(clean_absolute(Path::new("/../../etc")), PathBuf::from("/etc"));
        assert_eq!(clean_absolute(Path::new("/")), PathBuf::from("/"));
    }
}
