//! cgroup v1 back end: the same relative path in each controller's hierarchy.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

use super::error::CgroupError;
use super::fsutil::{self, FsMode};
use super::{
    convert, devices, CgroupManager, CgroupRoot, CgroupStats, CgroupVersion, DESTROY_TIMEOUT,
};

/// The v1 controllers berth places containers in, each normally its own hierarchy at
/// `<root>/<name>`. `unified` and `systemd` (named hierarchies) are not controllers.
pub(crate) const CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "hugetlb",
];

/// One mounted hierarchy and the controllers reachable through it.
#[derive(Debug)]
struct Hierarchy {
    controllers: Vec<&'static str>,
    /// The hierarchy's root directory (symlinks resolved).
    root: PathBuf,
    /// This manager's cgroup in it.
    dir: PathBuf,
}

/// Hierarchies without controllers that berth never creates in, but that an external OCI
/// runtime (runc, `--runtime`) does create the same path in on a hybrid host; `destroy`
/// removes the path there too so nothing is left.
const CLEANUP_ONLY: &[&str] = &["systemd", "unified"];

#[derive(Debug)]
pub(crate) struct V1Manager {
    cgroups_path: String,
    rel: PathBuf,
    hierarchies: Vec<Hierarchy>,
    /// This cgroup's path in the CLEANUP_ONLY hierarchies that are mounted.
    cleanup_only: Vec<PathBuf>,
    mode: FsMode,
}

impl V1Manager {
    pub(crate) fn new(
        root: &CgroupRoot,
        cgroups_path: &str,
        rel: PathBuf,
    ) -> Result<V1Manager, CgroupError> {
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        for &controller in CONTROLLERS {
            let mount = root.base.join(controller);
            if !mount.is_dir() || (root.mode == FsMode::Real && !is_cgroup_v1(&mount)) {
                continue;
            }
            // `cpu` and `cpuacct` are often symlinks to one `cpu,cpuacct` mount.
            let resolved =
                fs::canonicalize(&mount).map_err(|e| CgroupError::io("resolve", &mount, e))?;
            match hierarchies.iter_mut().find(|h| h.root == resolved) {
                Some(h) => h.controllers.push(controller),
                None => hierarchies.push(Hierarchy {
                    controllers: vec![controller],
                    dir: resolved.join(&rel),
                    root: resolved,
                }),
            }
        }
        if hierarchies.is_empty() {
            return Err(CgroupError::NoCgroupFs {
                path: root.base.clone(),
                reason: "no cgroup v1 controller hierarchy found".into(),
            });
        }
        let cleanup_only = CLEANUP_ONLY
            .iter()
            .map(|name| root.base.join(name))
            .filter(|mount| mount.is_dir() && (root.mode == FsMode::Fake || is_cgroup_fs(mount)))
            .map(|mount| mount.join(&rel))
            .collect();
        Ok(V1Manager {
            cgroups_path: cgroups_path.to_string(),
            rel,
            hierarchies,
            cleanup_only,
            mode: root.mode,
        })
    }

    /// This cgroup's directory in the hierarchy of `controller`, if it is mounted.
    fn dir_of(&self, controller: &str) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|h| h.controllers.contains(&controller))
            .map(|h| h.dir.as_path())
    }

    fn dirs(&self) -> Vec<PathBuf> {
        self.hierarchies.iter().map(|h| h.dir.clone()).collect()
    }

    /// Writes `value` into `file` of the controller's directory. A missing hierarchy is
    /// logged and skipped: the host simply does not offer that controller.
    fn write(&self, controller: &str, file: &str, value: &str) -> Result<(), CgroupError> {
        match self.dir_of(controller) {
            Some(dir) => fsutil::write_file(self.mode, &dir.join(file), value),
            None => {
                tracing::warn!(
                    controller,
                    file,
                    "cgroup v1 controller not mounted; limit skipped"
                );
                Ok(())
            }
        }
    }

    /// Like `write`, but the file itself is optional (kernel config dependent).
    fn write_if_present(
        &self,
        controller: &str,
        file: &str,
        value: &str,
    ) -> Result<bool, CgroupError> {
        let Some(dir) = self.dir_of(controller) else {
            return Ok(false);
        };
        let path = dir.join(file);
        if self.mode == FsMode::Real && !path.exists() {
            tracing::debug!(file, "cgroup v1 file not present; skipped");
            return Ok(false);
        }
        fsutil::write_file(self.mode, &path, value)?;
        Ok(true)
    }

    fn apply_cpu(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let Some(cpu) = r.cpu() else { return Ok(()) };
        if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
            self.write("cpu", "cpu.shares", &shares.to_string())?;
        }
        // The period first: the quota is checked against it.
        if let Some(period) = cpu.period().filter(|p| *p != 0) {
            self.write("cpu", "cpu.cfs_period_us", &period.to_string())?;
        }
        if let Some(quota) = cpu.quota().filter(|q| *q != 0) {
            let quota = if quota < 0 { -1 } else { quota };
            self.write("cpu", "cpu.cfs_quota_us", &quota.to_string())?;
        }
        if let Some(burst) = cpu.burst() {
            self.write_if_present("cpu", "cpu.cfs_burst_us", &burst.to_string())?;
        }
        if let Some(idle) = cpu.idle() {
            self.write_if_present("cpu", "cpu.idle", &idle.to_string())?;
        }
        if let Some(period) = cpu.realtime_period().filter(|p| *p != 0) {
            self.write("cpu", "cpu.rt_period_us", &period.to_string())?;
        }
        if let Some(runtime) = cpu.realtime_runtime().filter(|r| *r != 0) {
            self.write("cpu", "cpu.rt_runtime_us", &runtime.to_string())?;
        }
        if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
            self.write("cpuset", "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
            self.write("cpuset", "cpuset.mems", mems)?;
        }
        Ok(())
    }

    fn apply_memory(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let Some(memory) = r.memory() else {
            return Ok(());
        };
        let limit = memory
            .limit()
            .filter(|l| *l != 0)
            .map(|l| if l < 0 { -1 } else { l });
        let swap = memory
            .swap()
            .filter(|s| *s != 0)
            .map(|s| if s < 0 { -1 } else { s });
        if let (Some(l), Some(s)) = (limit, swap) {
            if l > 0 && s > 0 && s < l {
                return Err(CgroupError::InvalidResource(format!(
                    "memory.swap {s} (memory+swap) is below the memory limit {l}"
                )));
            }
        }
        // memsw must stay >= limit at every moment: raising, memsw goes first; lowering, the
        // limit goes first. Which one is the case depends on the current values, so try the
        // limit first and, if the kernel refuses, swap the order.
        let memsw_present = self.mode == FsMode::Fake
            || self
                .dir_of("memory")
                .is_some_and(|d| d.join("memory.memsw.limit_in_bytes").exists());
        let write_limit = |l: i64| self.write("memory", "memory.limit_in_bytes", &l.to_string());
        let write_memsw =
            |s: i64| self.write("memory", "memory.memsw.limit_in_bytes", &s.to_string());
        match (limit, swap.filter(|_| memsw_present)) {
            (Some(l), Some(s)) => {
                if write_limit(l).is_err() {
                    write_memsw(s)?;
                    write_limit(l)?;
                } else {
                    write_memsw(s)?;
                }
            }
            (Some(l), None) => write_limit(l)?,
            (None, Some(s)) => write_memsw(s)?,
            (None, None) => {}
        }
        if swap.is_some() && !memsw_present {
            tracing::debug!(
                "no memory.memsw.limit_in_bytes (swap accounting off); swap limit skipped"
            );
        }
        if let Some(reservation) = memory.reservation().filter(|r| *r != 0) {
            self.write(
                "memory",
                "memory.soft_limit_in_bytes",
                &reservation.to_string(),
            )?;
        }
        if let Some(swappiness) = memory.swappiness() {
            if swappiness > 100 {
                return Err(CgroupError::InvalidResource(format!(
                    "memory swappiness {swappiness} above 100"
                )));
            }
            self.write("memory", "memory.swappiness", &swappiness.to_string())?;
        }
        if memory.disable_oom_killer() == Some(true) {
            self.write("memory", "memory.oom_control", "1")?;
        }
        Ok(())
    }

    fn apply_blkio(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let Some(io) = r.block_io() else {
            return Ok(());
        };
        if let Some(weight) = io.weight().filter(|w| *w != 0) {
            if !self.write_if_present("blkio", "blkio.weight", &weight.to_string())?
                && !self.write_if_present("blkio", "blkio.bfq.weight", &weight.to_string())?
            {
                tracing::warn!(
                    weight,
                    "no blkio.weight or blkio.bfq.weight; block io weight skipped"
                );
            }
        }
        for dev in io.weight_device().iter().flatten() {
            if let Some(w) = dev.weight() {
                self.write(
                    "blkio",
                    "blkio.weight_device",
                    &format!("{}:{} {w}", dev.major(), dev.minor()),
                )?;
            }
        }
        let throttles = [
            (
                "blkio.throttle.read_bps_device",
                io.throttle_read_bps_device(),
            ),
            (
                "blkio.throttle.write_bps_device",
                io.throttle_write_bps_device(),
            ),
            (
                "blkio.throttle.read_iops_device",
                io.throttle_read_iops_device(),
            ),
            (
                "blkio.throttle.write_iops_device",
                io.throttle_write_iops_device(),
            ),
        ];
        for (file, devices) in throttles {
            for dev in devices.iter().flatten() {
                self.write(
                    "blkio",
                    file,
                    &format!("{}:{} {}", dev.major(), dev.minor(), dev.rate()),
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
        // The kernel applies these in order: "a" resets the default and the exceptions, and
        // each later line adds or removes one exception, which is last-match-wins for the
        // rule lists runtimes produce (a catch-all first, then specific rules).
        for rule in &rules {
            let file = if rule.allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            self.write("devices", file, &rule.v1_line())?;
        }
        Ok(())
    }
}

fn is_cgroup_v1(dir: &Path) -> bool {
    use nix::sys::statfs::{statfs, CGROUP_SUPER_MAGIC};
    statfs(dir).is_ok_and(|st| st.filesystem_type() == CGROUP_SUPER_MAGIC)
}

/// A v1 named hierarchy or the hybrid host's cgroup2 tree.
fn is_cgroup_fs(dir: &Path) -> bool {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC};
    statfs(dir).is_ok_and(|st| {
        st.filesystem_type() == CGROUP_SUPER_MAGIC || st.filesystem_type() == CGROUP2_SUPER_MAGIC
    })
}

impl CgroupManager for V1Manager {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn path(&self) -> &str {
        &self.cgroups_path
    }

    fn create(&self) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            let is_cpuset = h.controllers.contains(&"cpuset");
            for level in fsutil::levels(&self.rel) {
                let dir = h.root.join(&level);
                let created = fsutil::mkdir(&dir)?;
                // A new v1 cpuset starts with no cpus and mems, and a task cannot join it
                // then; copy the parent's into each level we created (only those).
                if created && is_cpuset {
                    let parent = dir.parent().unwrap_or(&h.root);
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        let value = fsutil::read_string(&parent.join(file))?;
                        let value = value.trim();
                        if !value.is_empty() {
                            fsutil::write_file(self.mode, &dir.join(file), value)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
            return Err(CgroupError::InvalidResource(
                "unified (cgroup v2) resources on a cgroup v1 host".into(),
            ));
        }
        self.apply_cpu(r)?;
        self.apply_memory(r)?;
        if let Some(pids) = r.pids() {
            self.write("pids", "pids.max", &convert::pids_max(pids.limit()))?;
        }
        for hp in r.hugepage_limits().iter().flatten() {
            self.write(
                "hugetlb",
                &format!("hugetlb.{}.limit_in_bytes", hp.page_size()),
                &hp.limit().to_string(),
            )?;
        }
        self.apply_blkio(r)?;
        self.apply_devices(r)?;
        tracing::debug!(cgroup = %self.cgroups_path, "cgroup v1 resources applied");
        Ok(())
    }

    fn add_task(&self, pid: Pid) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            fsutil::write_file(self.mode, &h.dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn procs(&self) -> Result<Vec<Pid>, CgroupError> {
        let mut pids = BTreeSet::new();
        for h in &self.hierarchies {
            pids.extend(fsutil::procs_of(&h.dir)?.into_iter().map(Pid::as_raw));
        }
        Ok(pids.into_iter().map(Pid::from_raw).collect())
    }

    fn kill_all(&self, signal: Signal) -> Result<(), CgroupError> {
        // v1 has no cgroup.kill; the union over all hierarchies also catches a process that
        // made it into only some of them.
        let pids = fsutil::subtree_procs(&self.dirs())?;
        fsutil::signal_pids(&pids, signal)
    }

    fn oom_kill_count(&self) -> Result<u64, CgroupError> {
        let Some(dir) = self.dir_of("memory") else {
            return Ok(0);
        };
        let control = fsutil::read_string(&dir.join("memory.oom_control"))?;
        Ok(fsutil::keyed_value(&control, "oom_kill").unwrap_or(0))
    }

    fn destroy(&self) -> Result<(), CgroupError> {
        let dirs: Vec<PathBuf> = self
            .dirs()
            .into_iter()
            .chain(self.cleanup_only.iter().cloned())
            .filter(|d| d.exists())
            .collect();
        if dirs.is_empty() {
            return Ok(());
        }
        fsutil::kill_and_remove(
            self.mode,
            &dirs,
            &|| self.kill_all(Signal::SIGKILL),
            DESTROY_TIMEOUT,
        )?;
        tracing::debug!(cgroup = %self.cgroups_path, "cgroup v1 destroyed");
        Ok(())
    }

    fn exists(&self) -> bool {
        self.hierarchies.iter().any(|h| h.dir.is_dir())
    }

    fn stats(&self) -> Result<CgroupStats, CgroupError> {
        let read_u64 = |controller: &str, file: &str| {
            self.dir_of(controller)
                .and_then(|d| fsutil::read_string(&d.join(file)).ok())
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        let memory_usage_bytes = read_u64("memory", "memory.usage_in_bytes");
        let inactive_file = self
            .dir_of("memory")
            .and_then(|d| fsutil::read_string(&d.join("memory.stat")).ok())
            .and_then(|s| fsutil::keyed_value(&s, "total_inactive_file"));
        Ok(CgroupStats {
            memory_usage_bytes,
            memory_working_set_bytes: memory_usage_bytes
                .map(|u| u.saturating_sub(inactive_file.unwrap_or(0))),
            cpu_usage_ns: read_u64("cpuacct", "cpuacct.usage"),
            pids_current: read_u64("pids", "pids.current"),
        })
    }
}
