//! Turns `pods` JSON lines into the side-by-side table with the target ratios.

use std::io::BufRead;

use anyhow::Context;

use crate::pod_records::PodBenchResult;
use crate::stats::{median, percentile};

/// One row: how to read the value from a result, and the target ratio if it is judged.
struct Metric {
    name: &'static str,
    value: fn(&PodBenchResult) -> Option<f64>,
    target: Option<f64>,
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

const METRICS: &[Metric] = &[
    Metric { name: "pod start median (ms)", value: |r| Some(median(&r.start_ms())), target: Some(0.25) },
    Metric { name: "pod start p90 (ms)", value: |r| Some(percentile(&r.start_ms(), 90.0)), target: None },
    Metric {
        name: "  RunPodSandbox median (ms)",
        value: |r| Some(median(&r.start_phase_ms(|p| p.run_sandbox_ms))),
        target: None,
    },
    Metric {
        name: "  CreateContainer median (ms)",
        value: |r| Some(median(&r.start_phase_ms(|p| p.create_container_ms))),
        target: None,
    },
    Metric {
        name: "  StartContainer median (ms)",
        value: |r| Some(median(&r.start_phase_ms(|p| p.start_container_ms))),
        target: None,
    },
    Metric { name: "pod teardown median (ms)", value: |r| Some(median(&r.teardown_ms())), target: Some(0.25) },
    Metric { name: "pod teardown p90 (ms)", value: |r| Some(percentile(&r.teardown_ms(), 90.0)), target: None },
    Metric {
        name: "  StopPodSandbox median (ms)",
        value: |r| Some(median(&r.teardown_phase_ms(|p| p.stop_sandbox_ms))),
        target: None,
    },
    Metric {
        name: "  RemovePodSandbox median (ms)",
        value: |r| Some(median(&r.teardown_phase_ms(|p| p.remove_sandbox_ms))),
        target: None,
    },
    Metric { name: "ExecSync `true` median (ms)", value: |r| Some(median(&r.exec_ms)), target: Some(0.2) },
    Metric { name: "ExecSync `true` p90 (ms)", value: |r| Some(percentile(&r.exec_ms, 90.0)), target: None },
    Metric { name: "shim PSS per pod (MiB)", value: |r| Some(mib(r.shim_pss_per_pod_kib())), target: Some(0.1) },
    Metric { name: "shim RSS per pod (MiB)", value: |r| Some(mib(r.shim_rss_per_pod_kib())), target: None },
    Metric { name: "shim processes", value: |r| Some(r.shims.len() as f64), target: None },
    Metric {
        name: "container processes PSS per pod (MiB)",
        value: |r| Some(mib(r.container_processes_pss_per_pod_kib())),
        target: None,
    },
    Metric { name: "daemon RSS (MiB)", value: |r| r.daemon_rss_kib.map(|k| mib(k as f64)), target: Some(0.25) },
];

fn format_value(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => {
            if v >= 100.0 || v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        }
        _ => "-".into(),
    }
}

/// Prints the table; returns whether every judged metric met its target (false when the
/// candidate was not measured).
pub fn run(input: impl BufRead, baseline: &str, candidate: &str) -> anyhow::Result<bool> {
    let mut results = Vec::new();
    for (number, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let result: PodBenchResult = serde_json::from_str(&line)
            .with_context(|| format!("line {} is not a pods result: {line}", number + 1))?;
        results.push(result);
    }
    let find = |name: &str| results.iter().rev().find(|r| r.runtime == name);
    let base = find(baseline).with_context(|| format!("no pods result for {baseline:?}"))?;
    let cand = find(candidate);

    println!(
        "pods: hostNetwork on BOTH sides (no CNI: pod networking is a later issue and is not measured); \
         one busybox container `sleep 3600` per pod; {} pods started one after another (start and teardown \
         stats over them); memory read with {} pods running; ExecSync `true` x{} in one container",
        base.count,
        base.pods_running_for_memory,
        base.exec_ms.len()
    );
    println!(
        "pod start = RunPodSandbox + CreateContainer + StartContainer + ContainerStatus until RUNNING; \
         teardown = StopPodSandbox + RemovePodSandbox; shim PSS per pod = sum of shim PSS (smaps_rollup) / pods \
         (containerd: one containerd-shim-runc-v2 per pod, holding pause + busybox; berth: berth-shim per container)"
    );
    for result in [Some(base), cand].into_iter().flatten() {
        if let Some(load) = result.load_average {
            println!("{}: load average {load:.2} during the run", result.runtime);
        }
    }
    println!();
    println!("| metric | {baseline} | {candidate} | {candidate}/{baseline} | target | |");
    println!("|---|---|---|---|---|---|");
    let mut all_met = cand.is_some();
    for metric in METRICS {
        let base_value = (metric.value)(base);
        let cand_value = cand.and_then(|c| (metric.value)(c));
        let ratio = base_value
            .zip(cand_value)
            .filter(|(b, _)| *b > 0.0)
            .map(|(b, c)| c / b);
        let (target, verdict) = match metric.target {
            Some(target) => {
                let verdict = match ratio {
                    Some(r) if r.is_finite() && r <= target => "MET",
                    Some(r) if r.is_finite() => {
                        all_met = false;
                        "NOT MET"
                    }
                    _ => {
                        all_met = false;
                        "not measured"
                    }
                };
                (format!("<= {target:.2}"), verdict)
            }
            None => (String::new(), ""),
        };
        println!(
            "| {} | {} | {} | {} | {target} | {verdict} |",
            metric.name,
            format_value(base_value),
            if cand.is_some() { format_value(cand_value) } else { "not measured".into() },
            ratio.map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into()),
        );
    }
    Ok(all_met)
}
