//! berth-bench: one CRI client for hack/bench, so berthd and containerd are measured
//! through exactly the same client code (equal client overhead on both sides).
//!
//! Subcommands:
//! - `pull`: time PullImage end to end over a CRI socket, with the image and its layers
//!   removed before every run, while sampling the daemon's memory; prints JSON lines.
//! - `report`: reads those JSON lines and prints the side-by-side table.
//! - `manifest-bytes`: sums config + layer sizes of an image manifest read on stdin.
//! - `pods`: pod start/teardown latency, ExecSync latency, shim and daemon memory with many
//!   pods running; prints one JSON line.
//! - `pods-report`: reads those JSON lines and prints the side-by-side table with targets.
//! - `network`: CNI setup + teardown per pod, berth's in-process plugins vs the reference
//!   plugins exec'd with the same conflist, in a private network namespace; prints the table.

mod cri;
mod cri_runtime;
mod daemon_stats;
mod gc_wait;
mod manifest;
mod network;
mod pod_records;
mod pod_report;
mod pods;
mod proc_memory;
mod pull;
mod records;
mod report;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "berth-bench", about = "CRI benchmark client: image pulls, pod lifecycle, memory")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Remove the image, wait until its content is really gone, then time PullImage.
    Pull {
        /// CRI unix socket of the runtime under test.
        #[arg(long)]
        endpoint: PathBuf,
        /// Image reference to pull.
        #[arg(long)]
        image: String,
        /// Number of measured pulls.
        #[arg(long, default_value_t = 1)]
        runs: u32,
        /// Name of the runtime, copied into every output line.
        #[arg(long, default_value = "runtime")]
        runtime: String,
        /// PID of the daemon whose memory and CPU time are sampled during each pull.
        #[arg(long)]
        pid: Option<u32>,
        /// The runtime's blob or snapshot dir: it must be empty (or absent) before a pull may
        /// start, so a pull never finds layers left from the last run, and must hold entries
        /// after the pull, which proves the path really is where the runtime stores layers.
        #[arg(long = "wait-empty")]
        wait_empty: Vec<PathBuf>,
        /// How long to wait for the runtime's garbage collector to empty those dirs.
        #[arg(long, default_value_t = 120)]
        gc_timeout_secs: u64,
        /// Memory sampling interval in milliseconds.
        #[arg(long, default_value_t = 5)]
        sample_ms: u64,
        /// Give up on one PullImage after this many seconds.
        #[arg(long, default_value_t = 600)]
        pull_timeout_secs: u64,
        /// Flush dirty pages (sync) before each timed pull, so writeback left over from the
        /// previous run (of either runtime) is not charged to this one.
        #[arg(long)]
        sync: bool,
        /// Number added to the run index in the output (lets the script interleave runtimes).
        #[arg(long, default_value_t = 0)]
        first_run_index: u32,
    },
    /// Read `pull` JSON lines on stdin and print the comparison table.
    Report {
        /// Runtime the candidate is compared against.
        #[arg(long, default_value = "containerd")]
        baseline: String,
        /// Runtime being judged.
        #[arg(long, default_value = "berth")]
        candidate: String,
        /// Compressed image size in bytes (config + layers) for the MB/s column.
        #[arg(long)]
        bytes: Option<u64>,
        /// Target ratio candidate/baseline of median pull time.
        #[arg(long, default_value_t = 0.5)]
        target: f64,
        /// Exit with status 3 when the target is missed.
        #[arg(long)]
        strict: bool,
    },
    /// Print the sum of config and layer sizes of the manifest JSON read on stdin.
    ManifestBytes,
    /// Pod start/teardown, ExecSync and memory benchmark against one runtime (JSON line out).
    Pods {
        /// CRI unix socket of the runtime under test.
        #[arg(long)]
        endpoint: PathBuf,
        /// Workload image (busybox); the container runs `sleep 3600`.
        #[arg(long)]
        image: String,
        /// Images to pull before timing anything (e.g. containerd's sandbox image); repeatable.
        #[arg(long = "pre-pull")]
        pre_pull: Vec<String>,
        /// Name of the runtime, copied into the output.
        #[arg(long, default_value = "runtime")]
        runtime: String,
        /// Pods whose start and teardown are measured.
        #[arg(long, default_value_t = 20)]
        count: usize,
        /// Pods running while shim and daemon memory are read.
        #[arg(long, default_value_t = 30)]
        memory_pods: usize,
        /// ExecSync `true` calls measured.
        #[arg(long, default_value_t = 20)]
        exec_count: usize,
        /// PID of the daemon whose VmRSS is read.
        #[arg(long)]
        pid: Option<u32>,
        /// Shim executable: a full path or a file name (containerd-shim-runc-v2, berth-shim).
        #[arg(long)]
        shim_exe: String,
        /// Only shims whose command line holds this string (the daemon's socket or state dir).
        #[arg(long)]
        shim_cmdline: Option<String>,
        /// Label value that marks this run's pods (so a failed run can find and remove them).
        #[arg(long)]
        run_id: String,
        /// Directory for the pods' log directories.
        #[arg(long)]
        log_root: PathBuf,
        /// Pod cgroups are <prefix>/pod<N> (cgroupfs path, like kubelet's cgroup_parent).
        #[arg(long)]
        cgroup_parent_prefix: String,
        /// Milliseconds to wait after the last pod started before reading memory.
        #[arg(long, default_value_t = 2000)]
        settle_ms: u64,
        /// Seconds a container may take to be reported RUNNING.
        #[arg(long, default_value_t = 30)]
        running_timeout_secs: u64,
    },
    /// CNI ADD + DEL per pod: berth's built-in plugins in-process vs the reference plugins
    /// exec'd, same conflist, inside private network and mount namespaces (needs root).
    Network {
        /// Pods measured per plugin set.
        #[arg(long, default_value_t = 30)]
        pods: usize,
        /// Bin dir of the reference plugins.
        #[arg(long, default_value = "/usr/lib/cni")]
        reference_bin_dir: PathBuf,
        /// Existing scratch dir (conflists, IPAM data, caches, namespace pins).
        #[arg(long)]
        work_dir: PathBuf,
        /// hostPorts per pod.
        #[arg(long, default_value_t = 1)]
        host_ports: usize,
        /// Dual-stack pods (an IPv6 range too).
        #[arg(long)]
        ipv6: bool,
        /// Target ratio built-in/reference of the median setup + teardown time.
        #[arg(long, default_value_t = 0.25)]
        target: f64,
        /// Exit with status 3 when the target is missed.
        #[arg(long)]
        strict: bool,
    },
    /// Read `pods` JSON lines on stdin and print the side-by-side table.
    PodsReport {
        #[arg(long, default_value = "containerd")]
        baseline: String,
        #[arg(long, default_value = "berth")]
        candidate: String,
        /// Exit with status 3 when a target is missed or the candidate was not measured.
        #[arg(long)]
        strict: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // RUST_LOG=berth_cni=debug shows every CNI plugin call's time (network mode).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    match cli.command {
        Command::Pull {
            endpoint,
            image,
            runs,
            runtime,
            pid,
            wait_empty,
            gc_timeout_secs,
            sample_ms,
            pull_timeout_secs,
            first_run_index,
            sync,
        } => {
            let options = pull::PullBenchOptions {
                endpoint,
                image,
                runs,
                runtime,
                daemon_pid: pid,
                wait_empty_dirs: wait_empty,
                gc_timeout: Duration::from_secs(gc_timeout_secs),
                sample_interval: Duration::from_millis(sample_ms.max(1)),
                pull_timeout: Duration::from_secs(pull_timeout_secs),
                first_run_index,
                sync_before_pull: sync,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(pull::run(options))
        }
        Command::Report { baseline, candidate, bytes, target, strict } => {
            let met = report::run(std::io::stdin().lock(), &baseline, &candidate, bytes, target)?;
            if strict && !met {
                std::process::exit(3);
            }
            Ok(())
        }
        Command::Pods {
            endpoint,
            image,
            pre_pull,
            runtime,
            count,
            memory_pods,
            exec_count,
            pid,
            shim_exe,
            shim_cmdline,
            run_id,
            log_root,
            cgroup_parent_prefix,
            settle_ms,
            running_timeout_secs,
        } => {
            let options = pods::PodBenchOptions {
                runtime,
                endpoint,
                image,
                pre_pull,
                count,
                memory_pods,
                exec_count,
                daemon_pid: pid,
                shim: proc_memory::ShimSelector { exe: shim_exe, cmdline_contains: shim_cmdline },
                run_id,
                log_root,
                cgroup_parent_prefix,
                settle: Duration::from_millis(settle_ms),
                running_timeout: Duration::from_secs(running_timeout_secs),
            };
            anyhow::ensure!(options.count > 0, "--count must be at least 1");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(pods::run(options))
        }
        Command::Network { pods, reference_bin_dir, work_dir, host_ports, ipv6, target, strict } => {
            // Synchronous and single-threaded on purpose: it unshares namespaces first.
            let options = network::NetworkBenchOptions { pods, reference_bin_dir, work_dir, host_ports, ipv6, target };
            let met = network::run(options)?;
            if strict && !met {
                std::process::exit(3);
            }
            Ok(())
        }
        Command::PodsReport { baseline, candidate, strict } => {
            let met = pod_report::run(std::io::stdin().lock(), &baseline, &candidate)?;
            if strict && !met {
                std::process::exit(3);
            }
            Ok(())
        }
        Command::ManifestBytes => {
            let bytes = manifest::total_bytes(std::io::stdin().lock())?;
            println!("{bytes}");
            Ok(())
        }
    }
}
