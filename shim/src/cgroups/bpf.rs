//! The cgroup v2 device filter: an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE, built
//! from the OCI device rules, loaded with bpf(2) and attached to the container's cgroup.
//!
//! Why our own: cgroup v2 has no devices controller; the kernel asks an attached eBPF program
//! instead, and without one a container that has CAP_MKNOD (or finds a device node in a
//! volume) can open host devices. `cgroups-rs` does not build such programs, and youki's
//! `libcgroups` does it through libbpf (a C library and a much larger shim). The program is a
//! straight list of compares, so we assemble the instructions by hand (as runc's
//! `devicefilter` package does) and need only the raw syscall.
//!
//! Program shape, for `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`
//! (access_type = access << 16 | type):
//! ```text
//!   r2 = ctx->access_type & 0xffff    // BPF_DEVCG_DEV_BLOCK=1 / CHAR=2
//!   r3 = ctx->access_type >> 16       // BPF_DEVCG_ACC_MKNOD=1 / READ=2 / WRITE=4
//!   r4 = ctx->major ; r5 = ctx->minor
//!   for each rule, LAST FIRST (the last matching rule decides):
//!       if type/major/minor/access do not match: jump to the next block
//!       r0 = allow ; exit
//!   r0 = 1 ; exit                     // nothing matched: allowed, like a fresh v1 cgroup
//!                                     // (left out after a catch-all rule: unreachable)
//! ```

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::devices::{DeviceKind, DeviceRule, ACC_ALL};
use super::error::CgroupError;

/// One eBPF instruction, as `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

// Opcodes (class | op | source), from linux/bpf_common.h and linux/bpf.h.
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU64_AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const ALU64_RSH_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_JSET_K: u8 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const JMP_JA: u8 = 0x05; // BPF_JMP | BPF_JA
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (dst & 0x0f) | (src << 4),
            off,
            imm,
        }
    }
    fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(LDX_MEM_W, dst, src, off, 0)
    }
    fn alu(code: u8, dst: u8, imm: i32) -> Insn {
        Insn::new(code, dst, 0, 0, imm)
    }
    fn jump(code: u8, dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(code, dst, 0, off, imm)
    }
    fn exit() -> Insn {
        Insn::new(JMP_EXIT, 0, 0, 0, 0)
    }
}

/// Marks a jump whose offset is "to the end of this rule's block", patched once the block is
/// complete.
const TO_NEXT_BLOCK: i16 = i16::MIN;

fn imm(value: u32) -> Result<i32, CgroupError> {
    i32::try_from(value).map_err(|_| {
        CgroupError::InvalidResource(format!("device number {value} too large for the filter"))
    })
}

/// The instructions of one rule: "if it does not match, skip to the next block; else decide".
fn rule_block(rule: &DeviceRule) -> Result<Vec<Insn>, CgroupError> {
    let mut block = Vec::new();
    match rule.kind {
        DeviceKind::All => {}
        DeviceKind::Block => block.push(Insn::jump(JMP_JNE_K, R2, DEV_BLOCK, TO_NEXT_BLOCK)),
        DeviceKind::Char => block.push(Insn::jump(JMP_JNE_K, R2, DEV_CHAR, TO_NEXT_BLOCK)),
    }
    if let Some(major) = rule.major {
        block.push(Insn::jump(JMP_JNE_K, R4, imm(major)?, TO_NEXT_BLOCK));
    }
    if let Some(minor) = rule.minor {
        block.push(Insn::jump(JMP_JNE_K, R5, imm(minor)?, TO_NEXT_BLOCK));
    }
    if rule.access != ACC_ALL {
        let other_bits = (ACC_ALL & !rule.access) as i32;
        if rule.allow {
            // Allow only when every requested bit is allowed: any other bit -> no match.
            block.push(Insn::jump(JMP_JSET_K, R3, other_bits, TO_NEXT_BLOCK));
        } else {
            // Deny when any requested bit is denied: none of them -> no match.
            block.push(Insn::jump(JMP_JSET_K, R3, rule.access as i32, 1));
            block.push(Insn::jump(JMP_JA, 0, 0, TO_NEXT_BLOCK));
        }
    }
    block.push(Insn::alu(ALU64_MOV_K, R0, i32::from(rule.allow)));
    block.push(Insn::exit());
    let len = block.len();
    for (i, insn) in block.iter_mut().enumerate() {
        if insn.off == TO_NEXT_BLOCK {
            // Offsets count from the instruction after the jump.
            insn.off = (len - i - 1) as i16;
        }
    }
    Ok(block)
}

/// Assembles the filter program for `rules` (in OCI order).
pub fn assemble(rules: &[DeviceRule]) -> Result<Vec<Insn>, CgroupError> {
    let mut prog = vec![
        Insn::ldx_w(R2, R1, 0),
        Insn::alu(ALU64_AND_K, R2, 0xffff),
        Insn::ldx_w(R3, R1, 0),
        Insn::alu(ALU64_RSH_K, R3, 16),
        Insn::ldx_w(R4, R1, 4),
        Insn::ldx_w(R5, R1, 8),
    ];
    // Everything before the last match-everything rule can never decide, and after its
    // (unconditional) block nothing is reachable: the verifier rejects unreachable code.
    let catch_all = rules.iter().rposition(DeviceRule::matches_everything);
    for rule in rules[catch_all.unwrap_or(0)..].iter().rev() {
        prog.extend(rule_block(rule)?);
    }
    if catch_all.is_none() {
        prog.push(Insn::alu(ALU64_MOV_K, R0, 1));
        prog.push(Insn::exit());
    }
    Ok(prog)
}

// bpf(2) commands and constants (linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
    prog_attach_flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// bpf(cmd, attr, sizeof attr).
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr is a live, properly laid out `union bpf_attr` member of the given size;
    // the kernel reads (and for some commands writes) only within that size.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn bpf_err(op: &'static str, source: io::Error) -> CgroupError {
    CgroupError::Bpf {
        op,
        source,
        verifier_log: String::new(),
    }
}

fn load(prog: &[Insn]) -> Result<OwnedFd, CgroupError> {
    // The kernel reads the license as a C string; a static one outlives every load.
    let license = c"Apache";
    let mut name = [0u8; 16];
    name[..12].copy_from_slice(b"berth_devcgr");
    let attr = |log: &mut Vec<u8>, level: u32| ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: level,
        log_size: log.len() as u32,
        log_buf: if log.is_empty() {
            0
        } else {
            log.as_mut_ptr() as u64
        },
        prog_name: name,
        ..Default::default()
    };
    let mut no_log = Vec::new();
    let mut loaded = bpf(BPF_PROG_LOAD, &mut attr(&mut no_log, 0));
    if matches!(&loaded, Err(e) if e.raw_os_error() == Some(libc::EPERM)) && raise_memlock() {
        // Kernels before 5.11 charge programs to RLIMIT_MEMLOCK (often 64 KiB) and answer
        // EPERM when it is used up; newer ones charge the memory cgroup instead.
        loaded = bpf(BPF_PROG_LOAD, &mut attr(&mut no_log, 0));
    }
    match loaded {
        // SAFETY: a successful BPF_PROG_LOAD returns a new file descriptor we now own.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(first) => {
            // Load again with the verifier log on, only to say why.
            let mut log = vec![0u8; 64 * 1024];
            let verifier_log = match bpf(BPF_PROG_LOAD, &mut attr(&mut log, 1)) {
                Ok(fd) => {
                    // SAFETY: as above; close the unexpected success and report the first error.
                    drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
                    String::new()
                }
                Err(_) => {
                    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
                    String::from_utf8_lossy(&log[..end]).into_owned()
                }
            };
            Err(CgroupError::Bpf {
                op: "BPF_PROG_LOAD",
                source: first,
                verifier_log,
            })
        }
    }
}

/// Lifts RLIMIT_MEMLOCK for this process; true when it changed.
fn raise_memlock() -> bool {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) == 0 }
}

/// The ids of the device programs attached directly to the cgroup (not inherited ones).
fn attached_ids(cgroup: &OwnedFd) -> Result<Vec<u32>, CgroupError> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr).map_err(|e| bpf_err("BPF_PROG_QUERY", e))?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

fn detach_id(cgroup: &OwnedFd, id: u32) -> Result<(), CgroupError> {
    let mut get = GetFdByIdAttr {
        prog_id: id,
        ..Default::default()
    };
    let fd = match bpf(BPF_PROG_GET_FD_BY_ID, &mut get) {
        // SAFETY: a successful BPF_PROG_GET_FD_BY_ID returns a new descriptor we own.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd as i32) },
        // Detached and freed meanwhile.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(bpf_err("BPF_PROG_GET_FD_BY_ID", e)),
    };
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    match bpf(BPF_PROG_DETACH, &mut attr) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(bpf_err("BPF_PROG_DETACH", e)),
    }
}

/// Loads the filter for `rules` and makes it the only device program on the cgroup `dir`.
///
/// The new program is attached (BPF_F_ALLOW_MULTI) BEFORE the old ones are detached, so there
/// is no moment without a filter; while both are attached the kernel requires both to allow.
/// Old programs are found with BPF_PROG_QUERY, so a second apply from another process
/// (berthd updating resources) replaces the shim's program too.
pub fn install(dir: &std::path::Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    let prog = assemble(rules)?;
    let cgroup: OwnedFd = std::fs::File::open(dir)
        .map_err(|e| CgroupError::io("open", dir, e))?
        .into();
    let old = attached_ids(&cgroup)?;
    let prog_fd = load(&prog)?;
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| bpf_err("BPF_PROG_ATTACH", e))?;
    for id in old {
        detach_id(&cgroup, id)?;
    }
    tracing::debug!(cgroup = %dir.display(), rules = rules.len(), insns = prog.len(), "device filter attached");
    // The cgroup keeps the program alive; our descriptor can go.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::devices::{evaluate, ACC_MKNOD, ACC_READ, ACC_WRITE};

    /// A tiny interpreter for exactly the instructions `assemble` emits, so the program's
    /// logic is checked without the kernel (the kernel verifier checks it in the v2 guest).
    fn run(prog: &[Insn], kind: u32, major: u32, minor: u32, access: u32) -> u64 {
        let ctx = [(access << 16) | kind, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let insn = prog[pc];
            let dst = (insn.regs & 0x0f) as usize;
            let src = (insn.regs >> 4) as usize;
            pc += 1;
            match insn.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1, "loads come from the context");
                    r[dst] = u64::from(ctx[insn.off as usize / 4]);
                }
                ALU64_AND_K => r[dst] &= insn.imm as i64 as u64,
                ALU64_RSH_K => r[dst] >>= insn.imm,
                ALU64_MOV_K => r[dst] = insn.imm as i64 as u64,
                JMP_JNE_K => {
                    if r[dst] != insn.imm as i64 as u64 {
                        pc = (pc as isize + insn.off as isize) as usize;
                    }
                }
                JMP_JSET_K => {
                    if r[dst] & (insn.imm as i64 as u64) != 0 {
                        pc = (pc as isize + insn.off as isize) as usize;
                    }
                }
                JMP_JA => pc = (pc as isize + insn.off as isize) as usize,
                JMP_EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn rule(
        allow: bool,
        kind: DeviceKind,
        major: Option<u32>,
        minor: Option<u32>,
        access: u32,
    ) -> DeviceRule {
        DeviceRule {
            allow,
            kind,
            major,
            minor,
            access,
        }
    }

    #[test]
    fn program_agrees_with_the_rule_semantics() {
        let rule_sets = vec![
            vec![],
            vec![rule(false, DeviceKind::All, None, None, ACC_ALL)],
            vec![
                rule(false, DeviceKind::All, None, None, ACC_ALL),
                rule(true, DeviceKind::Char, Some(1), Some(3), ACC_ALL),
                rule(
                    true,
                    DeviceKind::Char,
                    Some(136),
                    None,
                    ACC_READ | ACC_WRITE,
                ),
                rule(true, DeviceKind::All, None, None, ACC_MKNOD),
                rule(false, DeviceKind::Char, Some(136), Some(2), ACC_WRITE),
                rule(true, DeviceKind::Block, Some(8), Some(0), ACC_READ),
            ],
            vec![
                rule(true, DeviceKind::Char, Some(1), Some(3), ACC_ALL),
                rule(false, DeviceKind::All, None, None, ACC_ALL),
                rule(true, DeviceKind::Char, Some(1), Some(5), ACC_ALL),
            ],
        ];
        for rules in &rule_sets {
            let prog = assemble(rules).unwrap();
            for (kind, kind_code) in [(DeviceKind::Block, 1), (DeviceKind::Char, 2)] {
                for (major, minor) in [(1, 3), (1, 5), (136, 2), (136, 7), (8, 0), (8, 1)] {
                    for access in 1..=ACC_ALL {
                        let want = evaluate(rules, kind, major, minor, access);
                        let got = run(&prog, kind_code, major, minor, access) == 1;
                        assert_eq!(
                            got, want,
                            "rules {rules:?} kind {kind:?} {major}:{minor} access {access}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn dead_rules_before_a_catch_all_are_dropped() {
        let many = vec![
            rule(true, DeviceKind::Char, Some(1), Some(3), ACC_ALL),
            rule(false, DeviceKind::All, None, None, ACC_ALL),
        ];
        let one = vec![rule(false, DeviceKind::All, None, None, ACC_ALL)];
        assert_eq!(assemble(&many).unwrap(), assemble(&one).unwrap());
    }

    #[test]
    fn instruction_encoding() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        let insn = Insn::ldx_w(R2, R1, 4);
        assert_eq!((insn.code, insn.regs, insn.off), (0x61, 0x12, 4));
    }
}
