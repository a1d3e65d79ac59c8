//! The `berth-shim` command line (tiny on purpose: no argument library in a per-container process).
//!
//! ```text
//! berth-shim create --id <cid> --bundle <dir> --state-dir <dir> [--log-path <file>]
//!                   [--runtime <path-to-runc-or-crun>] [--builtin-init]
//! ```

use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateArgs {
    pub id: String,
    pub bundle: PathBuf,
    pub state_dir: PathBuf,
    pub log_path: Option<PathBuf>,
    /// An external OCI runtime binary (runc, crun) instead of the built-in one.
    pub runtime: Option<PathBuf>,
    /// The container's PID 1 is the shim's own tiny init (a pod's shared PID namespace holder).
    pub builtin_init: bool,
}

pub const USAGE: &str = "usage: berth-shim create --id <cid> --bundle <dir> --state-dir <dir> \
[--log-path <file>] [--runtime <oci-runtime>] [--builtin-init]";

/// Parse the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<CreateArgs, String> {
    let mut args = args.into_iter();
    match args.next() {
        Some(command) if command == "create" => {}
        Some(command) => return Err(format!("unknown command {:?}\n{USAGE}", command)),
        None => return Err(USAGE.to_string()),
    }
    let (mut id, mut bundle, mut state_dir, mut log_path, mut runtime) =
        (None, None, None, None, None);
    let mut builtin_init = false;
    while let Some(flag) = args.next() {
        let flag = flag
            .into_string()
            .map_err(|f| format!("unknown argument {f:?}"))?;
        if flag == "--builtin-init" {
            builtin_init = true;
            continue;
        }
        let slot = match flag.as_str() {
            "--id" => &mut id,
            "--bundle" => &mut bundle,
            "--state-dir" => &mut state_dir,
            "--log-path" => &mut log_path,
            "--runtime" => &mut runtime,
            _ => return Err(format!("unknown argument {flag:?}\n{USAGE}")),
        };
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        if value.is_empty() {
            return Err(format!("{flag} needs a non-empty value"));
        }
        if slot.replace(value).is_some() {
            return Err(format!("{flag} given twice"));
        }
    }
    let id = id
        .ok_or("--id is required")?
        .into_string()
        .map_err(|_| "--id is not UTF-8".to_string())?;
    // The id names files and the runtime's state: keep it to a safe alphabet.
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        || id.starts_with('.')
    {
        return Err(format!(
            "--id {id:?} may only hold letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(CreateArgs {
        id,
        bundle: bundle.ok_or("--bundle is required")?.into(),
        state_dir: state_dir.ok_or("--state-dir is required")?.into(),
        log_path: log_path.map(PathBuf::from),
        runtime: runtime.map(PathBuf::from),
        builtin_init,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<CreateArgs, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn full_command_line() {
        let args = parse_str(&[
            "create",
            "--id",
            "abc",
            "--bundle",
            "/b",
            "--state-dir",
            "/s",
            "--log-path",
            "/l",
            "--runtime",
            "/usr/sbin/runc",
            "--builtin-init",
        ])
        .unwrap();
        assert_eq!(
            args,
            CreateArgs {
                id: "abc".into(),
                bundle: "/b".into(),
                state_dir: "/s".into(),
                log_path: Some("/l".into()),
                runtime: Some("/usr/sbin/runc".into()),
                builtin_init: true,
            }
        );
        let minimal =
            parse_str(&["create", "--state-dir", "/s", "--id", "x", "--bundle", "/b"]).unwrap();
        assert_eq!(minimal.log_path, None);
        assert!(!minimal.builtin_init);
    }

    #[test]
    fn bad_command_lines() {
        assert!(parse_str(&[]).is_err());
        assert!(parse_str(&["start"]).is_err());
        assert!(parse_str(&["create", "--id", "x", "--bundle", "/b"])
            .unwrap_err()
            .contains("--state-dir"));
        assert!(parse_str(&["create", "--id"])
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse_str(&["create", "--id", "x", "--id", "y"])
            .unwrap_err()
            .contains("twice"));
        assert!(parse_str(&["create", "--bogus"])
            .unwrap_err()
            .contains("unknown"));
        assert!(parse_str(&[
            "create",
            "--id",
            "../x",
            "--bundle",
            "/b",
            "--state-dir",
            "/s"
        ])
        .is_err());
    }
}
