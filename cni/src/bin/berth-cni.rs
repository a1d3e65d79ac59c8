//! `berth-cni`: berth's built-in CNI plugins as one multi-call executable.
//!
//! The plugin is chosen by the name it is run as (a symlink or copy named `bridge`,
//! `host-local`, `loopback` or `portmap` in a CNI bin dir), or by the first argument
//! (`berth-cni bridge`). It speaks the CNI exec protocol: CNI_* environment, network
//! config on stdin, result on stdout; on failure the error object on stdout and exit 1.

use std::io::{Read, Write};
use std::path::Path;

use berth_cni::plugins;
use berth_cni::types::{error_code, PluginEnv, PluginError, CURRENT_VERSION};

fn main() {
    // Plugins must not write logs to stdout (it carries the result); stderr only, and only
    // when asked for.
    if let Ok(filter) = std::env::var("BERTH_CNI_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    let (code, out) = run();
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&out);
    let _ = stdout.flush();
    std::process::exit(code);
}

/// Returns the exit code and what goes to stdout.
fn run() -> (i32, Vec<u8>) {
    let args: Vec<String> = std::env::args().collect();
    let invoked_as = args.first().map(|a| {
        Path::new(a)
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    });
    let plugin_type = match invoked_as.as_deref() {
        Some(name) if plugins::is_builtin(name) => name.to_string(),
        _ => match args.get(1) {
            Some(name) => name.clone(),
            None => {
                let err = PluginError::new(
                    error_code::INVALID_CONFIG,
                    format!(
                        "usage: berth-cni <{}> (or run it under one of those names)",
                        plugins::BUILTIN_TYPES.join("|")
                    ),
                );
                return (1, err.to_json(CURRENT_VERSION));
            }
        },
    };
    if !plugins::is_builtin(&plugin_type) {
        let err = PluginError::new(
            error_code::INVALID_CONFIG,
            format!("berth-cni has no plugin {plugin_type:?}"),
        );
        return (1, err.to_json(CURRENT_VERSION));
    }
    let env = match PluginEnv::from_vars(|k| std::env::var(k).ok()) {
        Ok(env) => env,
        Err(err) => return (1, err.to_json(CURRENT_VERSION)),
    };
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err = PluginError::new(error_code::IO_FAILURE, format!("read stdin: {e}"));
        return (1, err.to_json(CURRENT_VERSION));
    }
    match plugins::invoke(&plugin_type, &env, &stdin) {
        Ok(out) => (0, out),
        Err(err) => (1, err.to_json(&config_version(&stdin))),
    }
}

/// The config's cniVersion for the error object (the current one if unreadable).
fn config_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|s| s.as_str())
                .map(str::to_string)
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| CURRENT_VERSION.to_string())
}
