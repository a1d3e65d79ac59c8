//! cgroup v2 back end: one directory in the unified hierarchy.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

use super::error::CgroupError;
use super::fsutil::{self, FsMode};
use super::{
    bpf, convert, devices, CgroupManager, CgroupRoot, CgroupStats, CgroupVersion, DESTROY_TIMEOUT,
};

/// The controllers berth writes to; each is enabled in the ancestors' subtree_control when
/// the parent offers it.
const CONTROLLERS: &[&str] = &["cpuset", "cpu", "io", "memory", "hugetlb", "pids"];

#[derive(Debug)]
pub(crate) struct V2Manager {
    cgroups_path: String,
    base: PathBuf,
    rel: PathBuf,
    dir: PathBuf,
    mode: FsMode,
}

impl V2Manager {
    pub(crate) fn new(root: &CgroupRoot, cgroups_path: &str, rel: PathBuf) -> V2Manager {
        V2Manager {
            cgroups_path: cgroups_path.to_string(),
            base: root.base.clone(),
            dir: root.base.join(&rel),
            rel,
            mode: root.mode,
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write(&self, name: &str, value: &str) -> Result<(), CgroupError> {
        fsutil::write_file(self.mode, &self.file(name), value)
    }

    /// Enables the controllers the parent offers (and that are not on yet) in `dir`'s
    /// subtree_control. Failures are logged, not fatal: a later write of a limit whose
    /// controller is missing fails with the file's name, which says more.
    fn enable_controllers(&self, dir: &Path) {
        let offered: HashSet<String> = match fsutil::read_string(&dir.join("cgroup.controllers")) {
            Ok(s) => s.split_whitespace().map(str::to_string).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "no cgroup.controllers; nothing to enable");
                return;
            }
        };
        let enabled: HashSet<String> = fsutil::read_string(&dir.join("cgroup.subtree_control"))
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        for controller in CONTROLLERS {
            if offered.contains(*controller) && !enabled.contains(*controller) {
                let file = dir.join("cgroup.subtree_control");
                // One controller per write, so one refusal does not block the others.
                if let Err(e) = fsutil::write_file(self.mode, &file, &format!("+{controller}")) {
                    tracing::warn!(error = %e, controller, "cannot enable cgroup controller");
                } else {
                    tracing::debug!(dir = %dir.display(), controller, "cgroup controller enabled");
                }
            }
        }
    }

    fn apply_cpu(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let Some(cpu) = r.cpu() else { return Ok(()) };
        if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
            self.write(
                "cpu.weight",
                &convert::cpu_shares_to_weight(shares).to_string(),
            )?;
        }
        if let Some(max) = convert::cpu_max(cpu.quota(), cpu.period()) {
            self.write("cpu.max", &max)?;
        }
        if let Some(burst) = cpu.burst() {
            self.write("cpu.max.burst", &burst.to_string())?;
        }
        if let Some(idle) = cpu.idle() {
            self.write("cpu.idle", &idle.to_string())?;
        }
        if cpu.realtime_runtime().is_some_and(|v| v != 0)
            || cpu.realtime_period().is_some_and(|v| v != 0)
        {
            return Err(CgroupError::InvalidResource(
                "realtime cpu runtime/period is not supported on cgroup v2".into(),
            ));
        }
        if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
            self.write("cpuset.cpus", cpus)?;
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
            self.write("cpuset.mems", mems)?;
        }
        Ok(())
    }

    fn apply_memory(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let Some(memory) = r.memory() else {
            return Ok(());
        };
        // Swap first: memory.swap.max does not depend on memory.max in v2, but validating
        // before any write keeps a bad spec from leaving half of it applied.
        let swap = convert::memory_swap_max(memory.limit(), memory.swap())?;
        if let Some(limit) = memory.limit().filter(|l| *l != 0) {
            self.write("memory.max", &convert::memory_max(limit))?;
        }
        if let Some(swap) = swap {
            let file = self.file("memory.swap.max");
            // Kernels without swap accounting have no memory.swap.max; no swap to limit then.
            if self.mode == FsMode::Fake || file.exists() {
                fsutil::write_file(self.mode, &file, &swap)?;
            } else {
                tracing::debug!("no memory.swap.max; swap limit skipped");
            }
        }
        if let Some(reservation) = memory.reservation().filter(|r| *r != 0) {
            self.write("memory.low", &convert::memory_max(reservation))?;
        }
        Ok(())
    }

    fn apply_io(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let Some(io) = r.block_io() else {
            return Ok(());
        };
        if let Some(weight) = io.weight().filter(|w| *w != 0) {
            let io_weight = convert::blkio_weight_to_io_weight(weight);
            // io.weight needs the BFQ or io.cost machinery; io.bfq.weight takes the blkio scale.
            if self.mode == FsMode::Fake || self.file("io.weight").exists() {
                self.write("io.weight", &format!("default {io_weight}"))?;
            } else if self.file("io.bfq.weight").exists() {
                self.write("io.bfq.weight", &weight.to_string())?;
            } else {
                tracing::warn!(
                    weight,
                    "no io.weight or io.bfq.weight; block io weight skipped"
                );
            }
        }
        if let Some(devices) = io.weight_device() {
            for dev in devices {
                if let Some(w) = dev.weight() {
                    let line = format!(
                        "{}:{} {}",
                        dev.major(),
                        dev.minor(),
                        convert::blkio_weight_to_io_weight(w)
                    );
                    self.write("io.weight", &line)?;
                }
            }
        }
        let throttles = [
            ("rbps", io.throttle_read_bps_device()),
            ("wbps", io.throttle_write_bps_device()),
            ("riops", io.throttle_read_iops_device()),
            ("wiops", io.throttle_write_iops_device()),
        ];
        for (key, devices) in throttles {
            for dev in devices.iter().flatten() {
                let rate = if dev.rate() == 0 {
                    "max".to_string()
                } else {
                    dev.rate().to_string()
                };
                self.write(
                    "io.max",
                    &format!("{}:{} {key}={rate}", dev.major(), dev.minor()),
                )?;
            }
        }
        Ok(())
    }

    fn apply_devices(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let Some(rules) = r.devices() else {
            return Ok(());
        };
        let rules = devices::normalize(rules)?;
        // Assemble even on a fake root, so a bad rule fails the same way in tests.
        bpf::assemble(&rules)?;
        if self.mode == FsMode::Real {
            bpf::install(&self.dir, &rules)?;
        }
        Ok(())
    }
}

impl CgroupManager for V2Manager {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn path(&self) -> &str {
        &self.cgroups_path
    }

    fn create(&self) -> Result<(), CgroupError> {
        // Each level's parent must have the controllers enabled for the level to get them.
        let mut parent = self.base.clone();
        for level in fsutil::levels(&self.rel) {
            self.enable_controllers(&parent);
            let dir = self.base.join(&level);
            fsutil::mkdir(&dir)?;
            parent = dir;
        }
        Ok(())
    }

    fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        self.apply_cpu(r)?;
        self.apply_memory(r)?;
        if let Some(pids) = r.pids() {
            self.write("pids.max", &convert::pids_max(pids.limit()))?;
        }
        for hp in r.hugepage_limits().iter().flatten() {
            self.write(
                &format!("hugetlb.{}.max", hp.page_size()),
                &convert::memory_max(hp.limit()),
            )?;
        }
        self.apply_io(r)?;
        for (key, value) in r.unified().iter().flatten() {
            // The key names a file in this cgroup; never a path.
            if key.contains('/') || key.starts_with('.') || key.is_empty() {
                return Err(CgroupError::InvalidResource(format!(
                    "unified key {key:?} is not a cgroup file name"
                )));
            }
            self.write(key, value)?;
        }
        self.apply_devices(r)?;
        tracing::debug!(cgroup = %self.cgroups_path, "cgroup v2 resources applied");
        Ok(())
    }

    fn add_task(&self, pid: Pid) -> Result<(), CgroupError> {
        self.write("cgroup.procs", &pid.to_string())
    }

    fn procs(&self) -> Result<Vec<Pid>, CgroupError> {
        fsutil::procs_of(&self.dir)
    }

    fn kill_all(&self, signal: Signal) -> Result<(), CgroupError> {
        let kill_file = self.file("cgroup.kill");
        if signal == Signal::SIGKILL && self.mode == FsMode::Real && kill_file.exists() {
            return match fsutil::write_file(self.mode, &kill_file, "1") {
                Err(e) if e.is_not_found() => Ok(()),
                other => other,
            };
        }
        let pids = fsutil::subtree_procs(std::slice::from_ref(&self.dir))?;
        fsutil::signal_pids(&pids, signal)
    }

    fn oom_kill_count(&self) -> Result<u64, CgroupError> {
        let events = fsutil::read_string(&self.file("memory.events"))?;
        Ok(fsutil::keyed_value(&events, "oom_kill").unwrap_or(0))
    }

    fn destroy(&self) -> Result<(), CgroupError> {
        if !self.dir.exists() {
            return Ok(());
        }
        let dirs = [self.dir.clone()];
        fsutil::kill_and_remove(
            self.mode,
            &dirs,
            &|| self.kill_all(Signal::SIGKILL),
            DESTROY_TIMEOUT,
        )?;
        tracing::debug!(cgroup = %self.cgroups_path, "cgroup v2 destroyed");
        Ok(())
    }

    fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    fn stats(&self) -> Result<CgroupStats, CgroupError> {
        let read_u64 = |name: &str| {
            fsutil::read_string(&self.file(name))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        let memory_usage_bytes = read_u64("memory.current");
        let inactive_file = fsutil::read_string(&self.file("memory.stat"))
            .ok()
            .and_then(|s| fsutil::keyed_value(&s, "inactive_file"));
        let cpu_usage_ns = fsutil::read_string(&self.file("cpu.stat"))
            .ok()
            .and_then(|s| fsutil::keyed_value(&s, "usage_usec"))
            .map(|us| us * 1000);
        Ok(CgroupStats {
            memory_usage_bytes,
            memory_working_set_bytes: memory_usage_bytes
                .map(|u| u.saturating_sub(inactive_file.unwrap_or(0))),
            cpu_usage_ns,
            pids_current: read_u64("pids.current"),
        })
    }
}
