//! berthctl's command line: crictl's everyday commands plus docker-like `run`.
//!
//! `--timeout` comes before the command, as crictl's global options do
//! (`berthctl --timeout 5s ps`), which lets `stop --timeout` and `exec --timeout` mean
//! what they mean in crictl; `-r` may stand anywhere.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// berthd's socket when neither a flag nor an environment variable names another.
pub const DEFAULT_ENDPOINT: &str = "unix:///run/berth/berth.sock";

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  berthd answered with an error, or the step was refused (rm of a running container without -f)
  2  usage error (bad flag, bad argument, unreadable config file)
  3  berthd is not reachable on its socket
  4  the pod, container or image was not found
  exec, and run in the foreground: the exit code of the command in the container";

#[derive(Debug, Parser)]
#[command(
    name = "berthctl",
    version,
    about = "berthctl: talk to berthd over CRI, as crictl does, with docker-like conveniences",
    after_help = EXIT_CODES,
    propagate_version = true
)]
pub struct Cli {
    /// CRI endpoint of berthd (`unix:///path` or a plain socket path). Also read from
    /// BERTH_ENDPOINT, then CONTAINER_RUNTIME_ENDPOINT; default unix:///run/berth/berth.sock.
    #[arg(short = 'r', long = "runtime-endpoint", env = "BERTH_ENDPOINT", value_name = "ENDPOINT", global = true)]
    pub runtime_endpoint: Option<String>,

    /// Timeout for connecting to berthd and for each request (e.g. `10s`, `500ms`, `2m`, `30`).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The endpoint to dial: the flag or BERTH_ENDPOINT, then CONTAINER_RUNTIME_ENDPOINT
    /// (crictl's variable), then berthd's default socket.
    pub fn endpoint(&self) -> String {
        if let Some(endpoint) = self.runtime_endpoint.as_ref().filter(|e| !e.is_empty()) {
            return endpoint.clone();
        }
        match std::env::var("CONTAINER_RUNTIME_ENDPOINT") {
            Ok(endpoint) if !endpoint.is_empty() => endpoint,
            _ => DEFAULT_ENDPOINT.to_string(),
        }
    }
}

/// How a command prints what berthd answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

/// Output of the inspect-like commands: there is no table for a whole status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DocFormat {
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the runtime's name and version
    #[command(after_help = "Example:\n  berthctl version")]
    Version,

    /// Show berthd's status: runtime and network conditions, handlers, config
    #[command(after_help = "Example:\n  berthctl info\n  berthctl info -o yaml")]
    Info(InfoArgs),

    /// Pull an image from a registry
    #[command(
        after_help = "Example:\n  berthctl pull busybox\n  berthctl pull --creds user:secret 127.0.0.1:5000/private/app:1.0"
    )]
    Pull(PullArgs),

    /// List images
    #[command(
        visible_alias = "img",
        after_help = "Example:\n  berthctl images\n  berthctl images busybox\n  berthctl images -q"
    )]
    Images(ImagesArgs),

    /// Show the status of one or more images
    #[command(after_help = "Example:\n  berthctl inspecti busybox\n  berthctl inspecti -o yaml busybox")]
    Inspecti(InspectiArgs),

    /// Remove one or more images
    #[command(
        after_help = "Example:\n  berthctl rmi busybox\n  berthctl rmi --prune     # images no container uses\n  berthctl rmi --all"
    )]
    Rmi(RmiArgs),

    /// Show the filesystems images and containers use
    #[command(after_help = "Example:\n  berthctl imagefsinfo\n  berthctl imagefsinfo -o table")]
    Imagefsinfo(ImagefsinfoArgs),

    /// Run a pod sandbox from a config file (JSON or YAML, crictl's format)
    #[command(
        after_help = "Example:\n  berthctl runp pod-config.json\n  berthctl runp --runtime runc pod-config.yaml\n\n\
pod-config.json:\n  {\"metadata\": {\"name\": \"web\", \"namespace\": \"default\", \"uid\": \"web-1\"},\n   \"log_directory\": \"/tmp/web\", \"linux\": {}}"
    )]
    Runp(RunpArgs),

    /// List pods
    #[command(
        after_help = "Example:\n  berthctl pods\n  berthctl pods --name web --state ready\n  berthctl pods --label app=web -q"
    )]
    Pods(PodsArgs),

    /// Show the status of one or more pods
    #[command(after_help = "Example:\n  berthctl inspectp 1f73f2d81bf98")]
    Inspectp(InspectArgs),

    /// Stop one or more pods
    #[command(after_help = "Example:\n  berthctl stopp 1f73f2d81bf98")]
    Stopp(IdsArgs),

    /// Remove one or more pods
    #[command(
        after_help = "Example:\n  berthctl rmp 1f73f2d81bf98\n  berthctl rmp -f 1f73f2d81bf98   # stop it first\n  berthctl rmp --all"
    )]
    Rmp(RmpArgs),

    /// Create a container in a pod from a container and a pod config file
    #[command(after_help = "Example:\n  berthctl create 1f73f2d81bf98 container-config.json pod-config.json\n\n\
container-config.json:\n  {\"metadata\": {\"name\": \"box\"}, \"image\": {\"image\": \"busybox\"},\n   \"command\": [\"sleep\", \"3600\"], \"log_path\": \"box.log\", \"linux\": {}}")]
    Create(CreateArgs),

    /// Start one or more created containers
    #[command(after_help = "Example:\n  berthctl start 87d3992f84f74")]
    Start(IdsArgs),

    /// List containers
    #[command(
        after_help = "Example:\n  berthctl ps\n  berthctl ps -a\n  berthctl ps --pod 1f73f2d81bf98 --state exited -q"
    )]
    Ps(PsArgs),

    /// Show the status of one or more containers
    #[command(after_help = "Example:\n  berthctl inspect 87d3992f84f74\n  berthctl inspect -o yaml web")]
    Inspect(InspectArgs),

    /// Stop one or more running containers
    #[command(
        after_help = "Example:\n  berthctl stop 87d3992f84f74\n  berthctl stop --timeout 0 web   # kill right away"
    )]
    Stop(StopArgs),

    /// Remove one or more containers
    #[command(
        after_help = "Example:\n  berthctl rm 87d3992f84f74\n  berthctl rm -f web     # stop it first\n  berthctl rm --all"
    )]
    Rm(RmArgs),

    /// Run a command in a running container and print its output
    #[command(
        after_help = "Example:\n  berthctl exec web cat /etc/hostname\n  berthctl exec --timeout 5 87d3992f84f74 sh -c 'echo $HOSTNAME'\n\n\
The command's exit code becomes berthctl's."
    )]
    Exec(ExecArgs),

    /// Print a container's logs
    #[command(
        after_help = "Example:\n  berthctl logs web\n  berthctl logs -f --tail 10 web\n  berthctl logs --since 5m --timestamps 87d3992f84f74"
    )]
    Logs(LogsArgs),

    /// Pull if missing, make a pod and a container, start it (docker-like)
    #[command(
        after_help = "Example:\n  berthctl run busybox echo hello\n  berthctl run -d --name web -p 8080:80 httpd\n  berthctl run --rm -e GREETING=hi -v /tmp:/data:ro -w /data busybox ls"
    )]
    Run(RunArgs),

    /// Print a shell completion script
    #[command(
        after_help = "Example:\n  berthctl completion bash > /etc/bash_completion.d/berthctl\n  berthctl completion zsh > \"${fpath[1]}/_berthctl\""
    )]
    Completion(CompletionArgs),
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Output format
    #[arg(short, long, value_enum, default_value = "json")]
    pub output: DocFormat,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image to pull, e.g. busybox or 127.0.0.1:5000/app:1.0
    pub image: String,
    /// Registry credentials as USERNAME[:PASSWORD]
    #[arg(long, value_name = "USER[:PASSWORD]")]
    pub creds: Option<String>,
    /// Base64 `user:password` auth for the registry (as in ~/.docker/config.json)
    #[arg(long, value_name = "AUTH")]
    pub auth: Option<String>,
    /// Pod config to pass along with the pull (JSON or YAML)
    #[arg(short, long = "pod-config", value_name = "FILE")]
    pub pod_config: Option<PathBuf>,
    /// Print only the image id when done
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only images whose name matches (e.g. busybox, busybox:latest)
    pub image: Option<String>,
    /// Print only image ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Show full ids
    #[arg(long)]
    pub no_trunc: bool,
    /// Output format
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct InspectiArgs {
    /// Image names or ids
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Output format
    #[arg(short, long, value_enum, default_value = "json")]
    pub output: DocFormat,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Image names or ids
    pub images: Vec<String>,
    /// Remove every image no container uses
    #[arg(short, long, conflicts_with_all = ["images", "all"])]
    pub prune: bool,
    /// Remove every image
    #[arg(short, long, conflicts_with = "images")]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct ImagefsinfoArgs {
    /// Output format
    #[arg(short, long, value_enum, default_value = "json")]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct RunpArgs {
    /// Pod config file (JSON or YAML)
    pub config: PathBuf,
    /// Runtime handler (RuntimeClass) to run the pod with
    #[arg(long, value_name = "HANDLER", default_value = "")]
    pub runtime: String,
}

#[derive(Debug, Args)]
pub struct PodsArgs {
    /// Only the pod with this id (or id prefix)
    #[arg(long)]
    pub id: Option<String>,
    /// Only pods whose name contains this
    #[arg(long)]
    pub name: Option<String>,
    /// Only pods whose namespace contains this
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only pods in this state: ready or notready
    #[arg(short, long)]
    pub state: Option<String>,
    /// Only pods with this label (KEY=VALUE; repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Print only pod ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Only the most recently created pod
    #[arg(short, long)]
    pub latest: bool,
    /// Only the N most recently created pods
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
    /// Show full ids
    #[arg(long)]
    pub no_trunc: bool,
    /// Output format
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Ids (or unique id prefixes, or names)
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Output format
    #[arg(short, long, value_enum, default_value = "json")]
    pub output: DocFormat,
}

#[derive(Debug, Args)]
pub struct IdsArgs {
    /// Ids (or unique id prefixes, or names)
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmpArgs {
    /// Pod ids (or unique id prefixes, or names)
    pub ids: Vec<String>,
    /// Stop the pods first if they run
    #[arg(short, long)]
    pub force: bool,
    /// Remove every pod (ready ones only with -f)
    #[arg(short, long, conflicts_with = "ids")]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Id of the pod to create the container in
    pub pod: String,
    /// Container config file (JSON or YAML)
    pub container_config: PathBuf,
    /// Config file of the pod (the one it was started with)
    pub pod_config: PathBuf,
    /// Pull the image first if berthd does not have it
    #[arg(long)]
    pub pull: bool,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers, also exited and created ones
    #[arg(short, long)]
    pub all: bool,
    /// Only the container with this id (or id prefix)
    #[arg(long)]
    pub id: Option<String>,
    /// Only containers of this pod (id or id prefix)
    #[arg(short, long)]
    pub pod: Option<String>,
    /// Only containers in this state: created, running, exited or unknown
    #[arg(short, long)]
    pub state: Option<String>,
    /// Only containers whose name contains this
    #[arg(long)]
    pub name: Option<String>,
    /// Only containers with this label (KEY=VALUE; repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Only containers whose image contains this
    #[arg(long)]
    pub image: Option<String>,
    /// Print only container ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Only the most recently created container
    #[arg(short, long)]
    pub latest: bool,
    /// Only the N most recently created containers
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
    /// Show full ids
    #[arg(long)]
    pub no_trunc: bool,
    /// Output format
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Container ids (or unique id prefixes, or names)
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Seconds to wait after SIGTERM before the container is killed
    #[arg(short, long, default_value_t = 10)]
    pub timeout: i64,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Container ids (or unique id prefixes, or names)
    pub ids: Vec<String>,
    /// Stop the containers first if they run
    #[arg(short, long)]
    pub force: bool,
    /// Remove every container (running ones only with -f)
    #[arg(short, long, conflicts_with = "ids")]
    pub all: bool,
}

#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// Run the command synchronously (the only mode until streaming lands; accepted for crictl's sake)
    #[arg(short, long)]
    pub sync: bool,
    /// Keep stdin open (needs streaming, not there yet)
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal (needs streaming, not there yet)
    #[arg(short, long)]
    pub tty: bool,
    /// Seconds the command may run (0: no limit)
    #[arg(long, default_value_t = 0)]
    pub timeout: i64,
    /// Container id (or unique id prefix, or name)
    pub container: String,
    /// The command and its arguments
    #[arg(required = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Container id (or unique id prefix, or name)
    pub container: String,
    /// Keep printing new lines as they are written
    #[arg(short, long)]
    pub follow: bool,
    /// Print only the last N lines
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Print only lines newer than this: a duration (5m, 1h) or an RFC 3339 time
    #[arg(long, value_name = "SINCE")]
    pub since: Option<String>,
    /// Prefix each line with its timestamp
    #[arg(short, long)]
    pub timestamps: bool,
    /// Print the log of the previous instance (attempt) of the container
    #[arg(short, long)]
    pub previous: bool,
}

#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    /// Name of the container (and its pod); generated when not given
    #[arg(long)]
    pub name: Option<String>,
    /// Run in the background and print the container id
    #[arg(short, long)]
    pub detach: bool,
    /// Remove the container and its pod when it exits
    #[arg(long)]
    pub rm: bool,
    /// Publish a port: HOST:CONTAINER[/udp] or HOST_IP:HOST:CONTAINER[/udp] (repeatable)
    #[arg(short, long = "publish", value_name = "HOST:CONTAINER[/udp]")]
    pub publish: Vec<String>,
    /// Set an environment variable: KEY=VALUE (repeatable)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Bind-mount a host path: HOST:CONTAINER[:ro] (repeatable)
    #[arg(short, long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    pub volume: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User to run as: UID[:GID] or a name from the image
    #[arg(short, long, value_name = "USER")]
    pub user: Option<String>,
    /// Runtime handler (RuntimeClass) for the pod
    #[arg(long, value_name = "HANDLER", default_value = "")]
    pub runtime: String,
    /// Image to run
    pub image: String,
    /// Command and arguments (default: the image's)
    #[arg(allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// Shell to print the completion script for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// A duration as `500ms`, `10s`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("`{text}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_an_example() {
        for command in Cli::command().get_subcommands() {
            let help = command.get_after_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(help.contains("Example"), "`{}` has no example in its help", command.get_name());
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
