//! The pod benchmark for one runtime: start pods one after another (timed), ExecSync in a
//! running container (timed), memory of the shims and the daemon with all pods running,
//! then tear every pod down (timed). Every pod is removed before returning, also on failure.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cri::{connect_channel, CriImages};
use crate::cri_runtime::{prepare_log_directory, CriRuntime, PodIds, PodTemplate};
use crate::daemon_stats;
use crate::pod_records::{PodBenchResult, PodSample};
use crate::proc_memory::{shim_memory, ShimSelector};

pub struct PodBenchOptions {
    pub runtime: String,
    pub endpoint: PathBuf,
    pub image: String,
    /// Images pulled before anything is timed (containerd's sandbox image).
    pub pre_pull: Vec<String>,
    /// Pods whose start and teardown are the reported samples.
    pub count: usize,
    /// Pods running while memory is measured (started after the timed ones, not reported).
    pub memory_pods: usize,
    pub exec_count: usize,
    pub daemon_pid: Option<u32>,
    pub shim: ShimSelector,
    pub run_id: String,
    pub log_root: PathBuf,
    pub cgroup_parent_prefix: String,
    /// Pause between the last start and the memory reading, so start-up allocations settle.
    pub settle: Duration,
    pub running_timeout: Duration,
}

pub async fn run(options: PodBenchOptions) -> anyhow::Result<()> {
    let channel = connect_channel(&options.endpoint).await?;
    let mut images = CriImages::with_channel(channel.clone());
    let mut runtime = CriRuntime::with_channel(channel);

    for image in &options.pre_pull {
        images.pull(image).await.with_context(|| format!("pre-pulling {image}"))?;
    }
    let image_ref = images.pull(&options.image).await.with_context(|| format!("pulling {}", options.image))?;

    let template = PodTemplate {
        run_id: options.run_id.clone(),
        log_root: options.log_root.clone(),
        cgroup_parent_prefix: options.cgroup_parent_prefix.clone(),
        image: image_ref,
        command: vec!["sleep".into(), "3600".into()],
    };

    let mut pods: Vec<PodIds> = Vec::new();
    let outcome = measure(&mut runtime, &template, &options, &mut pods).await;
    // Whatever happened, no pod of this run may stay behind.
    let leftovers = remove_everything(&mut runtime, &options.run_id, &pods).await;
    let result = outcome?;
    leftovers?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

async fn measure(
    runtime: &mut CriRuntime,
    template: &PodTemplate,
    options: &PodBenchOptions,
    pods: &mut Vec<PodIds>,
) -> anyhow::Result<PodBenchResult> {
    let total = options.count.max(options.memory_pods);
    let mut samples = Vec::with_capacity(total);
    for index in 0..total {
        prepare_log_directory(template, index)?;
        let started = Instant::now();
        match runtime.start_pod(template, index, options.running_timeout).await {
            Ok((ids, phases)) => {
                let start_ms = ms(started.elapsed());
                samples.push(PodSample { index, start_ms, teardown_ms: None, start_phases: Some(phases), teardown_phases: None });
                pods.push(ids);
            }
            Err((error, sandbox)) => {
                if let Some(sandbox_id) = sandbox {
                    pods.push(PodIds { sandbox_id, container_id: String::new() });
                }
                return Err(error.context(format!("{}: starting pod {index}", options.runtime)));
            }
        }
    }

    tokio::time::sleep(options.settle).await;
    let shims = shim_memory(&options.shim);
    let daemon_rss_kib = options.daemon_pid.map(daemon_stats::read_memory).transpose()?.map(|m| m.rss_kib);
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()));

    let exec_target = &pods.first().context("no pod started")?.container_id;
    let cmd = vec!["true".to_string()];
    let mut exec_ms = Vec::with_capacity(options.exec_count);
    for _ in 0..options.exec_count {
        let started = Instant::now();
        runtime.exec_sync(exec_target, &cmd, 10).await?;
        exec_ms.push(ms(started.elapsed()));
    }

    // Pods leave `pods` as they are removed, so a failure leaves only live ones for clean-up.
    let running = std::mem::take(pods);
    for (position, (sample, pod)) in samples.iter_mut().zip(running.iter()).enumerate() {
        let started = Instant::now();
        match runtime.stop_and_remove_pod(&pod.sandbox_id).await {
            Ok(phases) => sample.teardown_phases = Some(phases),
            Err(error) => {
                pods.extend(running[position..].iter().cloned());
                return Err(error.context(format!("{}: tearing down pod {}", options.runtime, sample.index)));
            }
        }
        sample.teardown_ms = Some(ms(started.elapsed()));
    }

    Ok(PodBenchResult {
        runtime: options.runtime.clone(),
        host_network: true,
        count: options.count,
        pods_running_for_memory: total,
        samples,
        exec_ms,
        shims,
        daemon_rss_kib,
        load_average,
    })
}

/// Stops and removes the given pods and any other pod labelled with this run.
async fn remove_everything(runtime: &mut CriRuntime, run_id: &str, pods: &[PodIds]) -> anyhow::Result<()> {
    let mut ids: Vec<String> = pods.iter().map(|pod| pod.sandbox_id.clone()).collect();
    match runtime.pods_of_run(run_id).await {
        Ok(listed) => ids.extend(listed),
        Err(error) => eprintln!("warning: listing this run's pods for clean-up: {error:#}"),
    }
    ids.sort();
    ids.dedup();
    let mut failures = Vec::new();
    for id in &ids {
        if let Err(error) = runtime.stop_and_remove_pod(id).await {
            // Already gone is what clean-up wants.
            if !is_not_found(&error) {
                failures.push(format!("{error:#}"));
            }
        }
    }
    anyhow::ensure!(failures.is_empty(), "could not remove every pod: {}", failures.join("; "));
    Ok(())
}

fn is_not_found(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<tonic::Status>())
        .any(|status| status.code() == tonic::Code::NotFound)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
