//! [`container_spec`] end to end: a kubelet-like request against a temp rootfs.

use std::path::{Path, PathBuf};

use berth_images::ImageConfig;
use k8s_cri::v1::{
    Capability as CriCapability, ContainerConfig, ContainerMetadata, Int64Value, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, SecurityProfile,
};
use oci_spec::runtime::{Capability, LinuxNamespaceType, Spec};

use super::*;

fn rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\nwww:x:33:33::/var/www:/bin/sh\n").unwrap();
    std::fs::write(dir.path().join("etc/group"), "root:x:0:\nwww:x:33:\nstaff:x:50:www\n").unwrap();
    dir
}

fn sandbox(privileged: bool, host_network: bool) -> PodSandboxConfig {
    let net = if host_network { NamespaceMode::Node } else { NamespaceMode::Pod } as i32;
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata { name: "web".into(), uid: "uid-1".into(), namespace: "default".into(), attempt: 0 }),
        hostname: "web-pod".into(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/pod1".into(),
            security_context: Some(LinuxSandboxSecurityContext {
                privileged,
                namespace_options: Some(NamespaceOption { network: net, pid: NamespaceMode::Container as i32, ipc: NamespaceMode::Pod as i32, ..Default::default() }),
                ..Default::default()
            }),
            sysctls: [("net.core.somaxconn".to_string(), "1024".to_string())].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn input(root: &Path, sc: LinuxContainerSecurityContext) -> ContainerSpecInput {
    ContainerSpecInput {
        container_id: "c".repeat(64),
        sandbox_id: "s".repeat(64),
        config: ContainerConfig {
            metadata: Some(ContainerMetadata { name: "nginx".into(), attempt: 1 }),
            args: vec!["-g".into(), "daemon off;".into()],
            envs: vec![KeyValue { key: "MODE".into(), value: "prod".into() }],
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources { memory_limit_in_bytes: 128 << 20, cpu_shares: 256, oom_score_adj: -997, ..Default::default() }),
                security_context: Some(sc),
            }),
            ..Default::default()
        },
        sandbox_config: sandbox(false, false),
        image: ImageConfig {
            entrypoint: vec!["nginx".into()],
            cmd: vec!["-c".into(), "/etc/nginx.conf".into()],
            env: vec!["PATH=/usr/sbin:/usr/bin".into(), "MODE=dev".into()],
            user: Some("www".into()),
            working_dir: Some("/srv".into()),
            ..Default::default()
        },
        image_name: "docker.io/library/nginx:latest".into(),
        rootfs: root.to_path_buf(),
        namespaces: SandboxNamespaces {
            net: Some("/run/berth/pods/s/ns/net".into()),
            ipc: Some("/run/berth/pods/s/ns/ipc".into()),
            uts: Some("/run/berth/pods/s/ns/uts".into()),
            pid: None,
        },
        pod_files: PodFiles {
            hostname: Some("/var/lib/berth/pods/s/hostname".into()),
            hosts: Some("/var/lib/berth/pods/s/hosts".into()),
            resolv_conf: Some("/var/lib/berth/pods/s/resolv.conf".into()),
            shm: None,
        },
        cgroups_path: "/kubepods/pod1/cccc".into(),
        host_min_oom_score_adj: 0,
        options: SpecOptions::default(),
    }
}

#[test]
fn a_typical_container() {
    let root = rootfs();
    let sc = LinuxContainerSecurityContext {
        seccomp: Some(SecurityProfile { profile_type: 0, localhost_ref: String::new() }),
        no_new_privs: true,
        readonly_rootfs: true,
        capabilities: Some(CriCapability { add_capabilities: vec!["NET_ADMIN".into()], drop_capabilities: vec!["MKNOD".into()], add_ambient_capabilities: vec![] }),
        ..Default::default()
    };
    let spec = container_spec(&input(root.path(), sc)).unwrap();

    assert_eq!(spec.version(), OCI_VERSION);
    let r = spec.root().as_ref().unwrap();
    assert_eq!((r.path(), r.readonly()), (&root.path().to_path_buf(), Some(true)));
    assert_eq!(spec.hostname().as_deref(), Some("web-pod"));

    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.args().as_ref().unwrap(), &vec!["nginx", "-g", "daemon off;"]);
    assert_eq!(p.cwd(), &PathBuf::from("/srv"));
    assert_eq!(p.env().as_ref().unwrap(), &vec!["PATH=/usr/sbin:/usr/bin", "HOSTNAME=web-pod", "MODE=prod"]);
    assert_eq!((p.user().uid(), p.user().gid()), (33, 33));
    assert_eq!(p.user().additional_gids().as_ref().unwrap(), &vec![33, 50]);
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!(p.oom_score_adj(), Some(0), "clamped to the host minimum");
    assert_eq!(p.terminal(), Some(false));
    let bounding = p.capabilities().as_ref().unwrap().bounding().as_ref().unwrap();
    assert!(bounding.contains(&Capability::NetAdmin) && !bounding.contains(&Capability::Mknod) && bounding.contains(&Capability::Chown));

    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(linux.cgroups_path().as_deref(), Some(Path::new("/kubepods/pod1/cccc")));
    let ns: Vec<LinuxNamespaceType> = linux.namespaces().as_ref().unwrap().iter().map(|n| n.typ()).collect();
    assert_eq!(ns, vec![LinuxNamespaceType::Pid, LinuxNamespaceType::Network, LinuxNamespaceType::Uts, LinuxNamespaceType::Ipc, LinuxNamespaceType::Mount]);
    assert_eq!(linux.sysctl().as_ref().unwrap()["net.core.somaxconn"], "1024");
    let res = linux.resources().as_ref().unwrap();
    assert_eq!(res.memory().unwrap().limit(), Some(128 << 20));
    assert_eq!(res.cpu().as_ref().unwrap().shares(), Some(256));
    assert!(!res.devices().as_ref().unwrap()[0].allow(), "device rules start with deny-all");
    assert!(linux.seccomp().is_some());
    assert!(linux.masked_paths().as_ref().unwrap().contains(&"/proc/kcore".to_string()));
    assert!(linux.readonly_paths().as_ref().unwrap().contains(&"/proc/sys".to_string()));
    assert!(linux.devices().as_ref().unwrap().iter().any(|d| d.path() == Path::new("/dev/null")));

    let mounts: Vec<&Path> = spec.mounts().as_ref().unwrap().iter().map(|m| m.destination().as_path()).collect();
    for want in ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname"] {
        assert!(mounts.contains(&Path::new(want)), "{want} missing: {mounts:?}");
    }
    let ann = spec.annotations().as_ref().unwrap();
    assert_eq!(ann[annotations::CONTAINER_NAME], "nginx");
    assert_eq!(ann[annotations::SANDBOX_ID], "s".repeat(64));

    // What runc and berth-shim read back is what was built.
    let dir = tempfile::tempdir().unwrap();
    let path = write_bundle(dir.path(), &spec).unwrap();
    let back = Spec::load(&path).unwrap();
    assert_eq!(back, spec);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(json["process"]["user"]["additionalGids"], serde_json::json!([33, 50]));
    assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
}

#[test]
fn privileged_container() {
    let root = rootfs();
    let sc = LinuxContainerSecurityContext {
        privileged: true,
        seccomp: Some(SecurityProfile { profile_type: 0, localhost_ref: String::new() }),
        masked_paths: vec!["/proc/kcore".into()],
        ..Default::default()
    };
    let mut inp = input(root.path(), sc.clone());
    // Not allowed in an unprivileged pod.
    let err = container_spec(&inp).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.to_string().contains("privileged"), "{err}");

    inp.sandbox_config = sandbox(true, false);
    inp.options.privileged_without_host_devices = true;
    let spec = container_spec(&inp).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.seccomp().is_none());
    assert!(linux.masked_paths().as_ref().unwrap().is_empty());
    assert!(linux.readonly_paths().as_ref().unwrap().is_empty());
    let rules = linux.resources().as_ref().unwrap().devices().as_ref().unwrap();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].allow());
    let caps = spec.process().as_ref().unwrap().capabilities().as_ref().unwrap();
    assert!(caps.bounding().as_ref().unwrap().contains(&Capability::SysAdmin));
}

#[test]
fn host_network_pod() {
    let root = rootfs();
    let mut inp = input(root.path(), LinuxContainerSecurityContext::default());
    inp.sandbox_config = sandbox(false, true);
    // net.* sysctls are refused with the host network.
    let err = container_spec(&inp).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.to_string().contains("net.core.somaxconn"), "{err}");

    inp.sandbox_config.linux.as_mut().unwrap().sysctls.clear();
    let spec = container_spec(&inp).unwrap();
    assert_eq!(spec.hostname(), &None);
    let ns: Vec<LinuxNamespaceType> = spec.linux().as_ref().unwrap().namespaces().as_ref().unwrap().iter().map(|n| n.typ()).collect();
    assert!(!ns.contains(&LinuxNamespaceType::Network) && !ns.contains(&LinuxNamespaceType::Uts));
    let env = spec.process().as_ref().unwrap().env().clone().unwrap();
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(env.contains(&format!("HOSTNAME={}", node.trim())), "{env:?}");
}

#[test]
fn errors_carry_their_codes() {
    let root = rootfs();
    // Unknown user from the CRI.
    let sc = LinuxContainerSecurityContext { run_as_username: "nobody-here".into(), ..Default::default() };
    let err = container_spec(&input(root.path(), sc)).unwrap_err();
    assert_eq!((err.code(), err.kind()), (tonic::Code::NotFound, SpecErrorKind::NotFound));
    assert!(err.to_string().contains("nobody-here"));

    // Run as a uid the image does not know.
    let sc = LinuxContainerSecurityContext { run_as_user: Some(Int64Value { value: 4321 }), ..Default::default() };
    let spec = container_spec(&input(root.path(), sc)).unwrap();
    assert_eq!((spec.process().as_ref().unwrap().user().uid(), spec.process().as_ref().unwrap().user().gid()), (4321, 0));

    // Nothing to run.
    let mut inp = input(root.path(), Default::default());
    inp.config.args.clear();
    inp.image.entrypoint.clear();
    inp.image.cmd.clear();
    let err = container_spec(&inp).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.to_string().contains("no command specified") && err.to_string().contains("nginx"), "{err}");

    // Missing Localhost seccomp profile.
    let sc = LinuxContainerSecurityContext {
        seccomp: Some(SecurityProfile { profile_type: 2, localhost_ref: "/nonexistent/berth/profile.json".into() }),
        ..Default::default()
    };
    let err = container_spec(&input(root.path(), sc)).unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.to_string().contains("/nonexistent/berth/profile.json"), "{err}");

    // Missing mount source.
    let mut inp = input(root.path(), Default::default());
    inp.config.mounts.push(k8s_cri::v1::Mount { container_path: "/data".into(), host_path: "/nonexistent/berth/data".into(), ..Default::default() });
    let err = container_spec(&inp).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.to_string().contains("/nonexistent/berth/data") && err.to_string().contains("does not exist"), "{err}");

    // CDI devices are refused, not ignored.
    let mut inp = input(root.path(), Default::default());
    inp.config.cdi_devices.push(k8s_cri::v1::CdiDevice { name: "vendor.com/gpu=0".into() });
    let err = container_spec(&inp).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.to_string().contains("vendor.com/gpu=0"), "{err}");

    // A relative rootfs is berthd's bug.
    let mut inp = input(root.path(), Default::default());
    inp.rootfs = "relative/rootfs".into();
    assert_eq!(container_spec(&inp).unwrap_err().code(), tonic::Code::Internal);
}

#[test]
fn tty_and_options() {
    let root = rootfs();
    let mut inp = input(root.path(), Default::default());
    inp.config.tty = true;
    inp.options.pids_limit = Some(512);
    inp.options.cgroup_namespace = true;
    inp.options.rlimits = vec![serde_json::from_value(serde_json::json!({"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024})).unwrap()];
    let spec = container_spec(&inp).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.terminal(), Some(true));
    assert!(p.env().as_ref().unwrap().contains(&"TERM=xterm".to_string()));
    assert_eq!(p.rlimits().as_ref().unwrap()[0].hard(), 4096);
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(linux.resources().as_ref().unwrap().pids().unwrap().limit(), 512);
    assert!(linux.namespaces().as_ref().unwrap().iter().any(|n| n.typ() == LinuxNamespaceType::Cgroup));
    // No rlimits configured: none in the spec (the kernel's defaults apply).
    let spec = container_spec(&input(root.path(), Default::default())).unwrap();
    assert!(spec.process().as_ref().unwrap().rlimits().is_none());
}

/// The bundle runs under runc (the RuntimeClass path): a busybox container with the
/// RuntimeDefault seccomp profile, default caps, a non-root user, read-only rootfs and
/// masked paths, reporting what it sees. Needs root, runc and a static busybox; run with
/// `cargo test -p berth-cri --lib runtime::spec::tests::runs_under_runc -- --ignored`.
#[test]
#[ignore = "needs root, runc and a static /usr/bin/busybox"]
fn runs_under_runc() {
    let bundle = tempfile::tempdir().unwrap();
    let root = bundle.path().join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/usr/bin/busybox", root.join("bin/busybox")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/:/bin/sh\nweb:x:1234:1234::/:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nweb:x:1234:\nextra:x:2000:web\n").unwrap();
    let pod_dir = bundle.path().join("pod");
    std::fs::create_dir(&pod_dir).unwrap();
    std::fs::write(pod_dir.join("hosts"), "127.0.0.1 localhost\n").unwrap();

    let id = format!("berth-spec-test-{}", std::process::id());
    let script = "id; grep -E '^(CapEff|Seccomp|NoNewPrivs)' /proc/self/status; cat /proc/kcore | wc -c; \
                  touch /x 2>/dev/null && echo rootfs-rw || echo rootfs-ro; cat /etc/hosts; hostname";
    let mut inp = ContainerSpecInput {
        container_id: id.clone(),
        sandbox_id: "sb".into(),
        config: ContainerConfig {
            command: vec!["/bin/busybox".into(), "sh".into(), "-c".into(), script.into()],
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources { memory_limit_in_bytes: 64 << 20, ..Default::default() }),
                security_context: Some(LinuxContainerSecurityContext {
                    seccomp: Some(SecurityProfile { profile_type: 0, localhost_ref: String::new() }),
                    run_as_username: "web".into(),
                    readonly_rootfs: true,
                    no_new_privs: true,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        },
        sandbox_config: PodSandboxConfig { hostname: "specpod".into(), ..Default::default() },
        image: ImageConfig { env: vec!["PATH=/bin".into()], ..Default::default() },
        image_name: "test".into(),
        rootfs: root.clone(),
        pod_files: PodFiles { hosts: Some(pod_dir.join("hosts")), ..Default::default() },
        cgroups_path: format!("/{id}"),
        host_min_oom_score_adj: resources::current_oom_score_adj(),
        ..Default::default()
    };
    inp.options.privileged_without_host_devices = true;
    let spec = container_spec(&inp).unwrap();
    write_bundle(bundle.path(), &spec).unwrap();

    let out = std::process::Command::new("runc")
        .args(["--root", bundle.path().join("runc-state").to_str().unwrap(), "run", "--bundle"])
        .arg(bundle.path())
        .arg(&id)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let _ = std::process::Command::new("runc")
        .args(["--root", bundle.path().join("runc-state").to_str().unwrap(), "delete", "-f", &id])
        .output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("container output:\n{stdout}");
    assert!(out.status.success(), "runc failed: {stdout}\n{stderr}");
    assert!(stdout.contains("uid=1234") && stdout.contains("gid=1234") && stdout.contains("2000"), "{stdout}");
    assert!(stdout.contains("Seccomp:\t2"), "{stdout}");
    assert!(stdout.contains("NoNewPrivs:\t1"), "{stdout}");
    assert!(stdout.contains("rootfs-ro"), "{stdout}");
    assert!(stdout.contains("127.0.0.1 localhost") && stdout.contains("specpod"), "{stdout}");
    // /proc/kcore is masked (empty).
    assert!(stdout.lines().any(|l| l.trim() == "0"), "{stdout}");
}
