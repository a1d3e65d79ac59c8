//! Capability sets from the spec as bit masks, and applying them: the bounding set is cut
//! while the process is still root; the other sets are set after the user switch (kept across
//! setuid with PR_SET_KEEPCAPS); ambient ones last.

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use super::error::{ContainerError, StepExt};
use super::syscall::Syscall;

/// The five sets, one bit per capability number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

impl CapSets {
    pub fn from_spec(caps: &LinuxCapabilities, last_cap: u32) -> CapSets {
        let mask = |set: &Option<Capabilities>| {
            set.as_ref().map_or(0, |set| {
                set.iter().map(|c| 1u64 << number(*c)).fold(0, |a, b| a | b)
            }) & known(last_cap)
        };
        CapSets {
            bounding: mask(caps.bounding()),
            effective: mask(caps.effective()),
            permitted: mask(caps.permitted()),
            inheritable: mask(caps.inheritable()),
            ambient: mask(caps.ambient()),
        }
    }
}

/// Capabilities this kernel knows (a spec may name newer ones: they are ignored, as runc does).
fn known(last_cap: u32) -> u64 {
    if last_cap >= 63 {
        u64::MAX
    } else {
        (1u64 << (last_cap + 1)) - 1
    }
}

/// The kernel's highest capability number.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Before the user switch, while CAP_SETPCAP is still there.
pub fn drop_bounding(
    sys: &dyn Syscall,
    sets: &CapSets,
    last_cap: u32,
) -> Result<(), ContainerError> {
    for cap in 0..=last_cap.min(63) {
        if sets.bounding & (1 << cap) == 0 {
            sys.drop_bounding_cap(cap)
                .step(|| format!("dropping capability {cap} from the bounding set"))?;
        }
    }
    Ok(())
}

/// After the user switch: the final effective, permitted, inheritable and ambient sets.
pub fn apply(sys: &dyn Syscall, sets: &CapSets, last_cap: u32) -> Result<(), ContainerError> {
    sys.capset(sets.effective, sets.permitted, sets.inheritable)
        .step(|| "setting capabilities (capset)".into())?;
    sys.clear_ambient_caps()
        .step(|| "clearing ambient capabilities".into())?;
    for cap in 0..=last_cap.min(63) {
        if sets.ambient & (1 << cap) != 0 {
            // Only a capability that is permitted and inheritable can be ambient; runc warns
            // and goes on, so a spec listing more than it can have still runs.
            if let Err(errno) = sys.raise_ambient_cap(cap) {
                tracing::debug!("raising ambient capability {cap}: {errno}");
            }
        }
    }
    Ok(())
}

/// The kernel's number of a capability (linux/capability.h).
pub fn number(cap: Capability) -> u32 {
    use Capability::*;
    match cap {
        Chown => 0,
        DacOverride => 1,
        DacReadSearch => 2,
        Fowner => 3,
        Fsetid => 4,
        Kill => 5,
        Setgid => 6,
        Setuid => 7,
        Setpcap => 8,
        LinuxImmutable => 9,
        NetBindService => 10,
        NetBroadcast => 11,
        NetAdmin => 12,
        NetRaw => 13,
        IpcLock => 14,
        IpcOwner => 15,
        SysModule => 16,
        SysRawio => 17,
        SysChroot => 18,
        SysPtrace => 19,
        SysPacct => 20,
        SysAdmin => 21,
        SysBoot => 22,
        SysNice => 23,
        SysResource => 24,
        SysTime => 25,
        SysTtyConfig => 26,
        Mknod => 27,
        Lease => 28,
        AuditWrite => 29,
        AuditControl => 30,
        Setfcap => 31,
        MacOverride => 32,
        MacAdmin => 33,
        Syslog => 34,
        WakeAlarm => 35,
        BlockSuspend => 36,
        AuditRead => 37,
        Perfmon => 38,
        Bpf => 39,
        CheckpointRestore => 40,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::syscall::RecordingSyscall;

    #[test]
    fn default_spec_caps_become_masks_and_the_rest_is_dropped_from_bounding() {
        let sets = CapSets::from_spec(&LinuxCapabilities::default(), 40);
        let want = (1 << 29) | (1 << 5) | (1 << 10);
        assert_eq!(
            sets,
            CapSets {
                bounding: want,
                effective: want,
                permitted: want,
                inheritable: want,
                ambient: want
            }
        );
        let sys = RecordingSyscall::default();
        drop_bounding(&sys, &sets, 40).unwrap();
        let calls = sys.calls();
        assert_eq!(calls.len(), 41 - 3);
        assert!(!calls.contains(&"capbset_drop 5".to_string()));
        apply(&sys, &sets, 40).unwrap();
        let calls = sys.calls();
        assert_eq!(calls[38], format!("capset {want:x} {want:x} {want:x}"));
        assert_eq!(
            calls[39..],
            [
                "ambient_clear",
                "ambient_raise 5",
                "ambient_raise 10",
                "ambient_raise 29"
            ]
        );
    }

    #[test]
    fn capabilities_beyond_the_kernel_are_ignored() {
        let mut caps = LinuxCapabilities::default();
        caps.set_bounding(Some(
            [Capability::CheckpointRestore, Capability::Chown]
                .into_iter()
                .collect(),
        ));
        assert_eq!(CapSets::from_spec(&caps, 39).bounding, 1);
    }
}
