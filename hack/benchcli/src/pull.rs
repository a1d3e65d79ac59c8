//! The measured pull loop: remove, wait for GC, pull while sampling the daemon.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cri::CriImages;
use crate::daemon_stats::{self, RssSampler};
use crate::gc_wait;
use crate::records::PullRun;

pub struct PullBenchOptions {
    pub endpoint: PathBuf,
    pub image: String,
    pub runs: u32,
    pub runtime: String,
    pub daemon_pid: Option<u32>,
    pub wait_empty_dirs: Vec<PathBuf>,
    pub gc_timeout: Duration,
    pub sample_interval: Duration,
    pub pull_timeout: Duration,
    pub first_run_index: u32,
    pub sync_before_pull: bool,
}

pub async fn run(options: PullBenchOptions) -> anyhow::Result<()> {
    let mut images = CriImages::connect(&options.endpoint).await?;
    let mut seconds = Vec::new();
    for index in 0..options.runs {
        let record = one_run(&mut images, &options, options.first_run_index + index + 1).await?;
        seconds.push(record.seconds);
        println!("{}", serde_json::to_string(&record)?);
    }
    eprintln!(
        "{}: median pull {:.3} s over {} run(s)",
        options.runtime,
        median(&mut seconds),
        options.runs
    );
    Ok(())
}

async fn remove_and_wait_for_gc(images: &mut CriImages, options: &PullBenchOptions) -> anyhow::Result<Duration> {
    if images.status(&options.image).await?.is_some() {
        images.remove(&options.image).await?;
    }
    if images.status(&options.image).await?.is_some() {
        anyhow::bail!("{} still listed after RemoveImage", options.image);
    }
    gc_wait::wait_until_empty(&options.wait_empty_dirs, options.gc_timeout).await
}

async fn one_run(images: &mut CriImages, options: &PullBenchOptions, run: u32) -> anyhow::Result<PullRun> {
    let gc_wait = remove_and_wait_for_gc(images, options).await?;
    if options.sync_before_pull {
        let status = std::process::Command::new("sync").status().context("running sync")?;
        anyhow::ensure!(status.success(), "sync failed: {status}");
    }

    let pid = options.daemon_pid;
    let rss_before = match pid {
        Some(pid) => {
            daemon_stats::reset_peak(pid);
            Some(daemon_stats::read_memory(pid)?.rss_kib)
        }
        None => None,
    };
    let cpu_before = pid.map(daemon_stats::read_cpu_seconds).transpose()?;
    let sampler = pid.map(|pid| RssSampler::start(pid, options.sample_interval));

    let started = Instant::now();
    let pulled = tokio::time::timeout(options.pull_timeout, images.pull(&options.image)).await;
    let elapsed = started.elapsed();

    let peak_rss = sampler.map(RssSampler::finish);
    let image_ref = pulled
        .map_err(|_| anyhow::anyhow!("PullImage {} did not finish within {:?}", options.image, options.pull_timeout))??;
    let hwm = pid.map(daemon_stats::read_memory).transpose()?.map(|m| m.hwm_kib);
    let cpu_after = pid.map(daemon_stats::read_cpu_seconds).transpose()?;

    gc_wait::ensure_filled(&options.wait_empty_dirs)?;
    let status = images
        .status(&options.image)
        .await?
        .with_context(|| format!("{} pulled but ImageStatus does not know it", options.image))?;

    Ok(PullRun {
        runtime: options.runtime.clone(),
        run,
        image: options.image.clone(),
        image_ref,
        seconds: elapsed.as_secs_f64(),
        gc_wait_seconds: gc_wait.as_secs_f64(),
        reported_size: status.size,
        peak_rss_kib: peak_rss,
        hwm_kib: hwm,
        rss_before_kib: rss_before,
        daemon_cpu_seconds: cpu_before.zip(cpu_after).map(|(before, after)| after - before),
    })
}

pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}
