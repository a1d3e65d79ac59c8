//! The user switch: supplementary groups, gid, uid; capabilities are kept across it when the
//! spec lists any (PR_SET_KEEPCAPS, then the final sets).

use super::capabilities::{self, CapSets};
use super::error::{ContainerError, StepExt};
use super::syscall::Syscall;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserPlan {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Switch to `user` and set the capability sets (`caps` None: the spec says nothing about
/// capabilities, the process keeps what root-to-user switching leaves).
pub fn switch_user(
    sys: &dyn Syscall,
    user: &UserPlan,
    caps: Option<&CapSets>,
    last_cap: u32,
) -> Result<(), ContainerError> {
    if let Some(sets) = caps {
        capabilities::drop_bounding(sys, sets, last_cap)?;
        sys.set_keepcaps(true)
            .step(|| "prctl(PR_SET_KEEPCAPS)".into())?;
    }
    // Always set the groups: the caller's supplementary groups must not leak in.
    sys.setgroups(&user.additional_gids)
        .step(|| format!("setgroups {:?}", user.additional_gids))?;
    sys.setresgid(user.gid)
        .step(|| format!("setresgid {}", user.gid))?;
    sys.setresuid(user.uid)
        .step(|| format!("setresuid {}", user.uid))?;
    if let Some(sets) = caps {
        sys.set_keepcaps(false)
            .step(|| "prctl(PR_SET_KEEPCAPS, 0)".into())?;
        capabilities::apply(sys, sets, last_cap)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::syscall::RecordingSyscall;

    #[test]
    fn groups_then_gid_then_uid_with_caps_kept_across() {
        let sys = RecordingSyscall::default();
        let sets = CapSets {
            bounding: u64::MAX >> 23,
            effective: 1,
            permitted: 1,
            inheritable: 0,
            ambient: 0,
        };
        switch_user(
            &sys,
            &UserPlan {
                uid: 1000,
                gid: 100,
                additional_gids: vec![5, 6],
            },
            Some(&sets),
            40,
        )
        .unwrap();
        let calls = sys.calls();
        let tail: Vec<&str> = calls.iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "keepcaps true",
                "setgroups [5, 6]",
                "setresgid 100",
                "setresuid 1000",
                "keepcaps false",
                "capset 1 1 0",
                "ambient_clear"
            ]
        );
    }
}
