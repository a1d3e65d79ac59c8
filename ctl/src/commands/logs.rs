//! `logs CONTAINER`: the container's CRI log file, read directly (as crictl and kubelet do:
//! berthd only tells where it is, in ContainerStatus.log_path).
//!
//! stdout lines go to stdout and stderr lines to stderr, partial records joined into the
//! lines the program printed. `-f` follows the file across kubelet's log rotation until
//! the container exits.

pub mod reader;
pub mod record;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_cri::v1::{ContainerState, ContainerStatusRequest};
use tokio::sync::watch;

use crate::cli::LogsArgs;
use crate::client::{Connection, CtlError, RuntimeClient};
use crate::commands::resolve_container;

/// How often a follower asks berthd whether the container still runs.
pub const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(250);

pub async fn run(conn: &Connection, args: &LogsArgs) -> anyhow::Result<i32> {
    let options = reader::Options {
        tail: args.tail,
        since_ns: args.since.as_deref().map(|since| parse_since(since, SystemTime::now())).transpose()?,
        timestamps: args.timestamps,
    };
    let mut rt = conn.runtime().await?;
    let id = resolve_container(conn, &mut rt, &args.container).await?;
    let (log_path, running) = log_path_of(conn, &mut rt, &id).await?;
    let log_path = if args.previous { previous_attempt_log(&log_path)? } else { log_path };
    // A previous attempt's log is complete: nothing to follow.
    let follow = (args.follow && running && !args.previous).then(|| watch_exit(conn.clone(), rt, id.clone()));
    print_log(&log_path, &options, follow).await?;
    Ok(crate::client::exit_code::OK)
}

/// Prints the log at `path` to this process's stdout and stderr.
pub async fn print_log(
    path: &Path,
    options: &reader::Options,
    follow: Option<watch::Receiver<bool>>,
) -> Result<(), CtlError> {
    let mut printer = reader::Printer {
        stdout: std::io::stdout().lock(),
        stderr: std::io::stderr().lock(),
        timestamps: options.timestamps,
    };
    reader::show(path, options, follow, &mut printer).await.map_err(|err| match err {
        reader::ReadError::Missing { .. } => CtlError::NotFound(err.to_string()),
        reader::ReadError::Io { .. } => CtlError::Runtime(err.to_string()),
    })
}

/// The container's log file and whether it is running (or about to: created).
pub async fn log_path_of(conn: &Connection, rt: &mut RuntimeClient, id: &str) -> Result<(PathBuf, bool), CtlError> {
    let response = rt
        .container_status(ContainerStatusRequest { container_id: id.to_string(), verbose: false })
        .await
        .map_err(|s| conn.error(&format!("status of container {id}"), s))?
        .into_inner();
    let status = response.status.unwrap_or_default();
    if status.log_path.is_empty() {
        return Err(CtlError::NotFound(format!(
            "container {id} has no log file: it was created without a log directory and log path \
             (set log_directory in the pod config and log_path in the container config)"
        )));
    }
    let running = matches!(
        ContainerState::try_from(status.state),
        Ok(ContainerState::ContainerRunning | ContainerState::ContainerCreated)
    );
    Ok((PathBuf::from(status.log_path), running))
}

/// A receiver that turns true once container `id` is no longer running (exited, removed,
/// or berthd stopped answering about it), checked every [`EXIT_POLL_INTERVAL`].
pub fn watch_exit(conn: Connection, mut rt: RuntimeClient, id: String) -> watch::Receiver<bool> {
    let (exited_tx, exited_rx) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let request = ContainerStatusRequest { container_id: id.clone(), verbose: false };
            let running = match rt.container_status(request).await {
                Ok(response) => {
                    let state = response.into_inner().status.map(|s| s.state).unwrap_or_default();
                    matches!(
                        ContainerState::try_from(state),
                        Ok(ContainerState::ContainerRunning | ContainerState::ContainerCreated)
                    )
                }
                Err(status) => {
                    let error = conn.error(&format!("status of container {id}"), status);
                    if !matches!(error, CtlError::NotFound(_)) {
                        eprintln!("berthctl: stopped following: {error}");
                    }
                    false
                }
            };
            if !running {
                let _ = exited_tx.send(true);
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(EXIT_POLL_INTERVAL) => {}
                // Nobody follows any more.
                _ = exited_tx.closed() => return,
            }
        }
    });
    exited_rx
}

/// `--since`: a duration back from `now` (`10s`, `5m`, `1h`) or an RFC 3339 time, as
/// nanoseconds since the epoch.
pub fn parse_since(since: &str, now: SystemTime) -> Result<i128, CtlError> {
    if let Some(time) = record::parse_rfc3339_ns(since.trim()) {
        return Ok(time);
    }
    let ago = crate::cli::parse_duration(since).map_err(|_| {
        CtlError::Usage(format!(
            "--since {since}: expected a duration (10s, 5m, 1h) or an RFC 3339 time (2024-01-02T03:04:05Z)"
        ))
    })?;
    let now_ns = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as i128;
    Ok(now_ns - ago.as_nanos() as i128)
}

/// kubelet names a container's logs `<attempt>.log`: the previous attempt's is `<n-1>.log`.
fn previous_attempt_log(current: &Path) -> Result<PathBuf, CtlError> {
    let attempt = current
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".log"))
        .and_then(|n| n.parse::<u32>().ok());
    match attempt {
        Some(attempt) if attempt > 0 => Ok(current.with_file_name(format!("{}.log", attempt - 1))),
        _ => Err(CtlError::NotFound(format!(
            "{} is the log of the container's first attempt: there is no previous one",
            current.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_duration_or_a_time() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(parse_since("10s", now).unwrap(), 990_000_000_000);
        assert_eq!(parse_since("1m", now).unwrap(), 940_000_000_000);
        assert_eq!(parse_since("1970-01-01T00:00:05Z", now).unwrap(), 5_000_000_000);
        assert!(matches!(parse_since("last tuesday", now), Err(CtlError::Usage(_))));
    }

    #[test]
    fn previous_attempt() {
        assert_eq!(previous_attempt_log(Path::new("/l/c/2.log")).unwrap(), PathBuf::from("/l/c/1.log"));
        assert!(previous_attempt_log(Path::new("/l/c/0.log")).is_err());
    }
}
