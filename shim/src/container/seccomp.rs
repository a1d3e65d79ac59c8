//! The spec's `linux.seccomp` compiled to BPF with `seccompiler` (pure Rust).
//!
//! seccompiler builds filters with one "match" and one "mismatch" action, while an OCI
//! profile gives every rule its own action. The kernel runs every installed filter and keeps
//! the most restrictive answer (KILL > TRAP > ERRNO > TRACE > LOG > ALLOW), so the profile
//! becomes a stack of filters:
//! - one filter per rule action A (e.g. ERRNO(EPERM)): its syscalls (with their argument
//!   conditions) -> A, anything else -> ALLOW;
//! - one filter for the default action D: every syscall any rule names (with the same
//!   conditions) -> ALLOW, anything else -> D.
//!
//! A call matching a rule gets that rule's action; anything else gets D.
//!
//! Limits: the filters check only the native architecture (a call from another ABI, e.g.
//! 32-bit x86 on x86_64, kills the process), and SCMP_ACT_NOTIFY is refused.

use std::collections::BTreeMap;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::error::ContainerError;
use super::syscall_table::syscall_number;

/// Compiled filters, installed in order.
#[derive(Clone, Debug, Default)]
pub struct SeccompProgram {
    pub filters: Vec<BpfProgram>,
    /// SECCOMP_FILTER_FLAG_* for the seccomp(2) call.
    pub flags: u32,
}

fn native_arch() -> Result<TargetArch, ContainerError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| {
        ContainerError::InvalidSpec(format!(
            "seccomp is not supported on {}",
            std::env::consts::ARCH
        ))
    })
}

fn action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
) -> Result<SeccompAction, ContainerError> {
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => {
            SeccompAction::Errno(errno_ret.unwrap_or(libc::EPERM as u32))
        }
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActTrace => {
            SeccompAction::Trace(errno_ret.unwrap_or(libc::EPERM as u32))
        }
        LinuxSeccompAction::ScmpActNotify => {
            return Err(ContainerError::InvalidSpec(
                "seccomp action SCMP_ACT_NOTIFY is not supported".into(),
            ))
        }
    })
}

/// A sortable key for grouping rules by action.
fn action_key(action: &SeccompAction) -> u32 {
    u32::from(action.clone())
}

fn condition(arg: &LinuxSeccompArg) -> Result<SeccompCondition, ContainerError> {
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        // libseccomp: value is the mask, valueTwo the datum.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            SeccompCmpOp::MaskedEq(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    let index = u8::try_from(arg.index()).map_err(|_| {
        ContainerError::InvalidSpec(format!(
            "seccomp argument index {} out of range",
            arg.index()
        ))
    })?;
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| ContainerError::InvalidSpec(format!("seccomp argument {}: {e}", arg.index())))
}

/// None conditions = the syscall matches whatever its arguments.
type RuleSet = BTreeMap<i64, Option<Vec<SeccompRule>>>;

fn add_rule(set: &mut RuleSet, nr: i64, rule: Option<SeccompRule>) {
    let entry = set.entry(nr).or_insert_with(|| Some(Vec::new()));
    match (entry.as_mut(), rule) {
        (Some(rules), Some(rule)) => rules.push(rule),
        (_, None) => *entry = None,
        (None, Some(_)) => {}
    }
}

fn to_filter(
    set: RuleSet,
    mismatch: SeccompAction,
    on_match: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram, ContainerError> {
    let rules: BTreeMap<i64, Vec<SeccompRule>> = set
        .into_iter()
        .map(|(nr, rules)| (nr, rules.unwrap_or_default()))
        .collect();
    let filter = SeccompFilter::new(rules, mismatch, on_match, arch)
        .map_err(|e| ContainerError::InvalidSpec(format!("seccomp: {e}")))?;
    BpfProgram::try_from(filter).map_err(|e| ContainerError::InvalidSpec(format!("seccomp: {e}")))
}

pub fn compile(profile: &LinuxSeccomp) -> Result<SeccompProgram, ContainerError> {
    let arch = native_arch()?;
    if let Some(arches) = profile.architectures() {
        let native = match arch {
            TargetArch::x86_64 => Arch::ScmpArchX86_64,
            TargetArch::aarch64 => Arch::ScmpArchAarch64,
            TargetArch::riscv64 => Arch::ScmpArchRiscv64,
        };
        if !arches.is_empty()
            && !arches
                .iter()
                .any(|a| *a == native || *a == Arch::ScmpArchNative)
        {
            return Err(ContainerError::InvalidSpec(format!(
                "seccomp profile does not cover this architecture ({})",
                std::env::consts::ARCH
            )));
        }
    }
    let default = action(profile.default_action(), profile.default_errno_ret())?;

    // action key -> (action, rules); plus every rule for the default filter.
    let mut by_action: BTreeMap<u32, (SeccompAction, RuleSet)> = BTreeMap::new();
    let mut named: RuleSet = BTreeMap::new();
    for entry in profile.syscalls().as_deref().unwrap_or(&[]) {
        let act = action(entry.action(), entry.errno_ret())?;
        let conditions = entry
            .args()
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .map(condition)
            .collect::<Result<Vec<_>, _>>()?;
        let rule = if conditions.is_empty() {
            None
        } else {
            Some(
                SeccompRule::new(conditions)
                    .map_err(|e| ContainerError::InvalidSpec(format!("seccomp: {e}")))?,
            )
        };
        for name in entry.names() {
            // Names this kernel/arch does not have are skipped, as runc and libseccomp do.
            let Some(nr) = syscall_number(name) else {
                tracing::debug!("seccomp: no syscall {name} on this architecture");
                continue;
            };
            if act == default {
                // Same as the default: leaving it out of every filter gives it the default.
                continue;
            }
            add_rule(&mut named, nr, rule.clone());
            if act != SeccompAction::Allow {
                let group = by_action
                    .entry(action_key(&act))
                    .or_insert_with(|| (act.clone(), BTreeMap::new()));
                add_rule(&mut group.1, nr, rule.clone());
            }
        }
    }

    let mut filters = Vec::with_capacity(by_action.len() + 1);
    if default != SeccompAction::Allow {
        filters.push(to_filter(
            named,
            default.clone(),
            SeccompAction::Allow,
            arch,
        )?);
    }
    for (_, (act, set)) in by_action {
        filters.push(to_filter(set, SeccompAction::Allow, act, arch)?);
    }
    let mut flags = 0;
    for flag in profile.flags().as_deref().unwrap_or(&[]) {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4,
            // TSYNC is meaningless for a single-threaded process; WAIT_KILLABLE_RECV is for notify.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync
            | LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        };
    }
    Ok(SeccompProgram { filters, flags })
}

/// Install the filters (needs no_new_privs or CAP_SYS_ADMIN).
pub fn load(program: &SeccompProgram) -> Result<(), ContainerError> {
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const seccompiler::sock_filter,
    }
    for filter in &program.filters {
        let len = libc::c_ushort::try_from(filter.len()).map_err(|_| {
            ContainerError::Step(format!(
                "seccomp filter too long ({} instructions)",
                filter.len()
            ))
        })?;
        let prog = SockFprog {
            len,
            filter: filter.as_ptr(),
        };
        // SAFETY: prog points at `filter`, which lives across the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                program.flags,
                &prog as *const SockFprog,
            )
        };
        if rc != 0 {
            return Err(ContainerError::sys(
                "loading the seccomp filter",
                nix::errno::Errno::last(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscallBuilder};

    #[test]
    fn errno_rule_over_allow_default_is_one_filter() {
        let profile = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .architectures(vec![Arch::ScmpArchX86_64, Arch::ScmpArchAarch64])
            .syscalls(vec![LinuxSyscallBuilder::default()
                .names(vec![
                    "mkdir".to_string(),
                    "mkdirat".to_string(),
                    "no_such_call".to_string(),
                ])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(1u32)
                .build()
                .unwrap()])
            .build()
            .unwrap();
        let program = compile(&profile).unwrap();
        assert_eq!(program.filters.len(), 1);
    }

    #[test]
    fn allow_list_with_arguments_and_a_kill_rule() {
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(0u64)
            .op(LinuxSeccompOperator::ScmpCmpEq)
            .build()
            .unwrap();
        let masked = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(0x7e020000u64)
            .value_two(0u64)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()
            .unwrap();
        let profile = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActErrno)
            .default_errno_ret(38u32)
            .syscalls(vec![
                LinuxSyscallBuilder::default()
                    .names(vec!["read".into(), "write".into()])
                    .action(LinuxSeccompAction::ScmpActAllow)
                    .build()
                    .unwrap(),
                LinuxSyscallBuilder::default()
                    .names(vec!["personality".into()])
                    .action(LinuxSeccompAction::ScmpActAllow)
                    .args(vec![arg])
                    .build()
                    .unwrap(),
                LinuxSyscallBuilder::default()
                    .names(vec!["clone".into()])
                    .action(LinuxSeccompAction::ScmpActAllow)
                    .args(vec![masked])
                    .build()
                    .unwrap(),
                LinuxSyscallBuilder::default()
                    .names(vec!["reboot".into()])
                    .action(LinuxSeccompAction::ScmpActKillProcess)
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap();
        let program = compile(&profile).unwrap();
        assert_eq!(program.filters.len(), 2);
        assert!(program.filters.iter().all(|f| !f.is_empty()));
    }

    #[test]
    fn notify_is_refused() {
        let profile = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActNotify)
            .build()
            .unwrap();
        assert!(compile(&profile)
            .unwrap_err()
            .to_string()
            .contains("SCMP_ACT_NOTIFY"));
    }

    #[test]
    fn syscall_table_lookups() {
        assert!(syscall_number("read").is_some());
        assert!(syscall_number("mkdirat").is_some());
        assert!(syscall_number("no_such_call").is_none());
    }
}
