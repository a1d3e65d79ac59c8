//! Turns `pull` JSON lines into the side-by-side table.

use std::io::BufRead;

use anyhow::Context;

use crate::pull::median;
use crate::records::PullRun;

struct RuntimeSummary {
    runs: Vec<f64>,
    median_seconds: f64,
    peak_rss_kib: Option<u64>,
    idle_rss_kib: Option<u64>,
    median_cpu_seconds: Option<f64>,
}

fn summarize(records: &[PullRun], runtime: &str) -> anyhow::Result<RuntimeSummary> {
    let mine: Vec<&PullRun> = records.iter().filter(|r| r.runtime == runtime).collect();
    if mine.is_empty() {
        anyhow::bail!("no pull results for runtime {runtime:?}");
    }
    let runs: Vec<f64> = mine.iter().map(|r| r.seconds).collect();
    let mut sorted = runs.clone();
    let median_seconds = median(&mut sorted);
    let peak_rss_kib = mine
        .iter()
        .filter_map(|r| r.peak_rss_kib.max(r.hwm_kib))
        .max();
    let idle_rss_kib = mine.iter().filter_map(|r| r.rss_before_kib).min();
    let mut cpu: Vec<f64> = mine.iter().filter_map(|r| r.daemon_cpu_seconds).collect();
    let median_cpu_seconds = (!cpu.is_empty()).then(|| median(&mut cpu));
    Ok(RuntimeSummary { runs, median_seconds, peak_rss_kib, idle_rss_kib, median_cpu_seconds })
}

fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1}", k as f64 / 1024.0)).unwrap_or_else(|| "-".into())
}

/// Prints the table; returns whether the candidate met the target ratio.
pub fn run(
    input: impl BufRead,
    baseline: &str,
    candidate: &str,
    bytes: Option<u64>,
    target: f64,
) -> anyhow::Result<bool> {
    let mut records = Vec::new();
    for (number, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record: PullRun = serde_json::from_str(&line)
            .with_context(|| format!("line {} is not a pull result: {line}", number + 1))?;
        records.push(record);
    }
    let base = summarize(&records, baseline)?;
    let cand = summarize(&records, candidate)?;
    let ratio = cand.median_seconds / base.median_seconds;

    if let Some(bytes) = bytes {
        println!("image: {} ({:.1} MB compressed)", records[0].image, bytes as f64 / 1e6);
    }
    println!(
        "| runtime | runs (s) | median pull s | MB/s | daemon CPU s | idle RSS MiB | peak RSS MiB | ratio vs {baseline} |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, summary) in [(baseline, &base), (candidate, &cand)] {
        let runs: Vec<String> = summary.runs.iter().map(|s| format!("{s:.3}")).collect();
        let rate = bytes
            .map(|b| format!("{:.0}", b as f64 / 1e6 / summary.median_seconds))
            .unwrap_or_else(|| "-".into());
        let cpu = summary.median_cpu_seconds.map(|c| format!("{c:.2}")).unwrap_or_else(|| "-".into());
        println!(
            "| {name} | {} | {:.3} | {rate} | {cpu} | {} | {} | {:.2} |",
            runs.join(" "),
            summary.median_seconds,
            mib(summary.idle_rss_kib),
            mib(summary.peak_rss_kib),
            summary.median_seconds / base.median_seconds,
        );
    }
    let met = ratio <= target;
    println!(
        "target: {candidate}/{baseline} median pull time <= {target:.2}; measured {ratio:.2}: {}",
        if met { "MET" } else { "NOT MET" }
    );
    Ok(met)
}
