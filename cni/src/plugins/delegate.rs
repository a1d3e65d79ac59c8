//! Delegation to an IPAM plugin (`ipam.type`): host-local runs in-process, any other type
//! is exec'd from CNI_PATH with the same environment and config, as the spec describes.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};

use crate::plugins::{host_local, internal};
use crate::types::{error_code, CniResult, Command, PluginEnv, PluginError};

/// ADD through the IPAM plugin; returns its result.
pub fn ipam_add(
    ipam_type: &str,
    env: &PluginEnv,
    stdin: &[u8],
    cni_version: &str,
) -> Result<CniResult, PluginError> {
    if ipam_type == "host-local" {
        return host_local::add_result(env, stdin);
    }
    let out = exec(ipam_type, Command::Add, env, stdin)?;
    CniResult::parse(&out, cni_version).map_err(|e| {
        PluginError::new(
            error_code::DECODE_FAILURE,
            format!("result of IPAM plugin {ipam_type}: {e}"),
        )
    })
}

/// DEL through the IPAM plugin.
pub fn ipam_del(ipam_type: &str, env: &PluginEnv, stdin: &[u8]) -> Result<(), PluginError> {
    if ipam_type == "host-local" {
        return host_local::release(env, stdin).map(|_| ());
    }
    exec(ipam_type, Command::Del, env, stdin).map(|_| ())
}

/// CHECK through the IPAM plugin.
pub fn ipam_check(ipam_type: &str, env: &PluginEnv, stdin: &[u8]) -> Result<(), PluginError> {
    if ipam_type == "host-local" {
        return host_local::check(env, stdin).map(|_| ());
    }
    exec(ipam_type, Command::Check, env, stdin).map(|_| ())
}

fn find_plugin(plugin_type: &str, env: &PluginEnv) -> Result<PathBuf, PluginError> {
    if plugin_type.is_empty() || plugin_type.contains('/') {
        return Err(PluginError::new(
            error_code::INVALID_CONFIG,
            format!("IPAM type {plugin_type:?} is not a plugin name"),
        ));
    }
    env.path
        .iter()
        .map(|dir| dir.join(plugin_type))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            PluginError::new(
                error_code::INVALID_CONFIG,
                format!(
                    "IPAM plugin {plugin_type:?} not found in CNI_PATH {:?}",
                    env.path
                ),
            )
        })
}

fn exec(
    plugin_type: &str,
    command: Command,
    env: &PluginEnv,
    stdin: &[u8],
) -> Result<Vec<u8>, PluginError> {
    let binary = find_plugin(plugin_type, env)?;
    let env = PluginEnv {
        command,
        ..env.clone()
    };
    let mut child = Process::new(&binary)
        .env_clear()
        .envs(env.to_env_vars())
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| internal(format!("run IPAM plugin {}: {e}", binary.display())))?;
    if let Some(mut pipe) = child.stdin.take() {
        // A plugin may exit without reading its config (a usage error): what it printed
        // and its exit status tell more than our broken pipe.
        let _ = pipe.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| internal(format!("wait for IPAM plugin {}: {e}", binary.display())))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    // The spec's error object on stdout, else whatever it said on stderr.
    match serde_json::from_slice::<PluginError>(&out.stdout) {
        Ok(err) => Err(err),
        Err(_) => Err(internal(format!(
            "IPAM plugin {} failed ({}): {}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}
