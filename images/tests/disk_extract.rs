//! apply_layer on a real filesystem: metadata, whiteouts + overlay, hostile layers,
//! compression, corrupt input. Runs as root (chown, mknod, trusted xattrs, mount).

mod disk_support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use berth_images::digest::Digest;
use berth_images::snapshot::{mount_overlay, prepare_layout};
use berth_images::unpack::{apply_layer, Compression};
use berth_images::Error;
use disk_support::*;

fn layer_id() -> Digest {
    Digest::of(b"test layer")
}

fn apply(dir: &Path, tar: &[u8]) -> Result<Digest, Error> {
    apply_layer(dir, tar, Compression::None, &layer_id())
}

#[test]
fn regular_entries_keep_their_metadata() {
    let sb = Sandbox::new();
    let cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let tar = Layer::new()
        .dir("./", 0o755)
        .dir("./usr/", 0o755)
        .dir("./usr/bin/", 0o711)
        .file_owned("./usr/bin/su", b"#!su", 0o4755, 0, 0, 1_500_000_000)
        .file_owned("./usr/bin/tool", b"tool", 0o750, 1234, 5678, 1_400_000_000)
        .pax(&[
            ("SCHILY.xattr.security.capability", cap),
            ("SCHILY.xattr.user.note", b"hi"),
            ("mtime", b"1300000000.25"),
        ])
        .file("./usr/bin/ping", b"ping", 0o755)
        .symlink("./usr/bin/sh", "/bin/busybox")
        .hardlink("./usr/bin/tool2", "./usr/bin/tool")
        .fifo("./usr/fifo")
        .file("implicit/parent/file", b"x", 0o600)
        .finish();
    let diff_id = apply(&sb.snap(), &tar).unwrap();
    assert_eq!(diff_id, sha(&tar));

    let root = sb.snap();
    let su = fs::metadata(root.join("usr/bin/su")).unwrap();
    assert_eq!(
        su.permissions().mode() & 0o7777,
        0o4755,
        "setuid kept, no umask"
    );
    assert_eq!(su.mtime(), 1_500_000_000);
    let tool = fs::metadata(root.join("usr/bin/tool")).unwrap();
    assert_eq!(
        (tool.uid(), tool.gid(), tool.mode() & 0o7777),
        (1234, 5678, 0o750)
    );
    assert_eq!(tool.mtime(), 1_400_000_000);
    let tool2 = fs::metadata(root.join("usr/bin/tool2")).unwrap();
    assert_eq!(tool2.ino(), tool.ino(), "hardlink shares the inode");
    assert_eq!(
        fs::read_link(root.join("usr/bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(
        fs::metadata(root.join("usr/bin")).unwrap().mode() & 0o7777,
        0o711
    );
    assert_eq!(
        fs::metadata(root.join("usr/bin")).unwrap().mtime(),
        1_600_000_000,
        "dir mtime applied last"
    );
    assert!(fs::symlink_metadata(root.join("usr/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(fs::read(root.join("implicit/parent/file")).unwrap(), b"x");
    assert_eq!(
        fs::metadata(root.join("implicit/parent")).unwrap().mode() & 0o7777,
        0o755
    );

    let ping = root.join("usr/bin/ping");
    assert_eq!(
        getxattr(&ping, "security.capability").as_deref(),
        Some(&cap[..])
    );
    assert_eq!(getxattr(&ping, "user.note").as_deref(), Some(&b"hi"[..]));
    let m = fs::metadata(&ping).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_300_000_000, 250_000_000));
}

#[test]
fn overlay_xattrs_from_the_layer_are_dropped() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .pax(&[("SCHILY.xattr.trusted.overlay.redirect", b"/etc")])
        .dir("d/", 0o755)
        .finish();
    apply(&sb.snap(), &tar).unwrap();
    assert_eq!(
        getxattr(&sb.snap().join("d"), "trusted.overlay.redirect"),
        None
    );
}

#[test]
fn entries_replace_entries_of_another_type() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .file("x", b"file", 0o644)
        .dir("x/", 0o755)
        .file("x/y", b"inside", 0o644)
        .dir("d/", 0o755)
        .file("d/child", b"c", 0o644)
        .file("d", b"now a file", 0o644)
        .symlink("s", "target")
        .dir("s/", 0o700)
        .dir("keep/", 0o755)
        .file("keep/a", b"a", 0o644)
        .dir("keep/", 0o750)
        .file("f", b"old", 0o644)
        .file("f", b"new", 0o644)
        .finish();
    apply(&sb.snap(), &tar).unwrap();
    let root = sb.snap();
    assert_eq!(fs::read(root.join("x/y")).unwrap(), b"inside");
    assert_eq!(fs::read(root.join("d")).unwrap(), b"now a file");
    assert!(fs::symlink_metadata(root.join("s")).unwrap().is_dir());
    assert_eq!(
        fs::read(root.join("keep/a")).unwrap(),
        b"a",
        "a repeated dir keeps its content"
    );
    assert_eq!(
        fs::metadata(root.join("keep")).unwrap().mode() & 0o777,
        0o750
    );
    assert_eq!(fs::read(root.join("f")).unwrap(), b"new");
}

#[test]
fn whiteouts_become_overlay_whiteouts_and_the_overlay_hides_them() {
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    let upper_layer = tmp.path().join("layer2");
    fs::create_dir(&lower).unwrap();
    fs::create_dir(&upper_layer).unwrap();

    let l1 = Layer::new()
        .dir("a/", 0o755)
        .file("a/keep", b"keep", 0o644)
        .file("a/gone", b"gone", 0o644)
        .dir("d/", 0o755)
        .file("d/old", b"old", 0o644)
        .dir("d/sub/", 0o755)
        .file("d/sub/x", b"x", 0o644)
        .file("top-gone", b"t", 0o644)
        .finish();
    let l2 = Layer::new()
        .dir("a/", 0o755)
        .file("a/.wh.gone", b"", 0o644)
        .dir("d/", 0o755)
        .file("d/.wh..wh..opq", b"", 0o644)
        .file("d/new", b"new", 0o644)
        .file(".wh.top-gone", b"", 0o644)
        .file("e/.wh..wh..opq", b"", 0o644)
        .finish();
    apply(&lower, &l1).unwrap();
    apply(&upper_layer, &l2).unwrap();

    let wh = fs::symlink_metadata(upper_layer.join("a/gone")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(!upper_layer.join("a/.wh.gone").exists());
    assert!(!upper_layer.join("d/.wh..wh..opq").exists());
    assert_eq!(
        getxattr(&upper_layer.join("d"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        getxattr(&upper_layer.join("e"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(fs::symlink_metadata(upper_layer.join("top-gone"))
        .unwrap()
        .file_type()
        .is_char_device());

    let container = tmp.path().join("container");
    let layout = prepare_layout(&[lower.clone(), upper_layer.clone()], &container).unwrap();
    let merged = tmp.path().join("merged");
    fs::create_dir(&merged).unwrap();
    mount_overlay(&layout, &merged).unwrap();
    let _guard = MountGuard(merged.clone());

    assert_eq!(names(&merged.join("a")), vec!["keep"]);
    assert_eq!(
        names(&merged.join("d")),
        vec!["new"],
        "opaque dir hides the lower content"
    );
    assert!(!merged.join("top-gone").exists());
    assert_eq!(fs::read(merged.join("a/keep")).unwrap(), b"keep");
    // The container writes into upper, never into the layers.
    fs::write(merged.join("a/written"), b"w").unwrap();
    assert!(layout.upper_dir.join("a/written").exists());
    assert!(!lower.join("a/written").exists());
}

fn expect_hostile(result: Result<Digest, Error>, what: &str) {
    match result {
        Err(Error::HostileLayer { reason, .. }) => eprintln!("{what}: refused: {reason}"),
        other => panic!("{what}: expected HostileLayer, got {other:?}"),
    }
}

#[test]
fn traversal_and_absolute_paths_are_refused() {
    let sb = Sandbox::new();
    expect_hostile(
        apply(
            &sb.snap(),
            &Layer::new().file("../outside/x", b"pwn", 0o644).finish(),
        ),
        "../outside/x",
    );
    expect_hostile(
        apply(
            &sb.snap(),
            &Layer::new()
                .file("a/../../outside/y", b"pwn", 0o644)
                .finish(),
        ),
        "a/../..",
    );
    let abs = format!("{}/abs", sb.outside().display());
    expect_hostile(
        apply(&sb.snap(), &Layer::new().file(&abs, b"pwn", 0o644).finish()),
        "absolute",
    );
    expect_hostile(
        apply(&sb.snap(), &Layer::new().dir("/etc/", 0o755).finish()),
        "absolute dir",
    );
    assert!(sb.outside_is_empty());
}

#[test]
fn writing_through_a_symlink_stays_inside() {
    let sb = Sandbox::new();
    let outside = sb.outside();
    // Absolute symlink to the real outside dir, then a file below it.
    let tar = Layer::new()
        .symlink("evil", outside.to_str().unwrap())
        .file("evil/pwned", b"pwn", 0o644)
        .finish();
    let r = apply(&sb.snap(), &tar);
    assert!(matches!(r, Err(Error::HostileLayer { .. })), "{r:?}");
    assert!(sb.outside_is_empty());

    // Relative escape.
    let sb = Sandbox::new();
    let tar = Layer::new()
        .symlink("up", "../../../../../../outside")
        .file("up/pwned", b"pwn", 0o644)
        .finish();
    assert!(apply(&sb.snap(), &tar).is_err());
    assert!(sb.outside_is_empty());

    // A file whose own name is a symlink pointing out: replaced, not written through.
    let sb = Sandbox::new();
    let canary = sb.outside().join("canary");
    fs::write(&canary, b"original").unwrap();
    let tar = Layer::new()
        .symlink("f", canary.to_str().unwrap())
        .file("f", b"pwn", 0o644)
        .finish();
    apply(&sb.snap(), &tar).unwrap();
    assert_eq!(fs::read(&canary).unwrap(), b"original");
    assert_eq!(fs::read(sb.snap().join("f")).unwrap(), b"pwn");
    assert!(fs::symlink_metadata(sb.snap().join("f")).unwrap().is_file());

    // A symlink that resolves inside the root (as "/" is the root) is followed, contained.
    let sb = Sandbox::new();
    let tar = Layer::new()
        .dir("usr/", 0o755)
        .dir("usr/lib/", 0o755)
        .symlink("lib", "/usr/lib")
        .file("lib/libc.so", b"elf", 0o644)
        .symlink("rootlink", "/")
        .file("rootlink/rootfile", b"r", 0o644)
        .finish();
    apply(&sb.snap(), &tar).unwrap();
    assert_eq!(fs::read(sb.snap().join("usr/lib/libc.so")).unwrap(), b"elf");
    assert_eq!(fs::read(sb.snap().join("rootfile")).unwrap(), b"r");
    assert!(sb.outside_is_empty());
}

#[test]
fn hardlink_escapes_are_refused() {
    let sb = Sandbox::new();
    let canary = sb.outside().join("passwd");
    fs::write(&canary, b"root:x:0:0").unwrap();
    expect_hostile(
        apply(
            &sb.snap(),
            &Layer::new().hardlink("h", "../../etc/passwd").finish(),
        ),
        "hardlink ..",
    );
    expect_hostile(
        apply(
            &sb.snap(),
            &Layer::new().hardlink("h", "../outside/passwd").finish(),
        ),
        "hardlink ../outside",
    );
    expect_hostile(
        apply(
            &sb.snap(),
            &Layer::new()
                .hardlink("h", canary.to_str().unwrap())
                .finish(),
        ),
        "hardlink abs",
    );
    // Through a symlinked directory: resolved inside the root, where there is no such file.
    let tar = Layer::new()
        .symlink("s", sb.outside().to_str().unwrap())
        .hardlink("h", "s/passwd")
        .finish();
    assert!(apply(&sb.snap(), &tar).is_err());
    assert!(!sb.snap().join("h").exists());
    assert_eq!(
        fs::metadata(&canary).unwrap().nlink(),
        1,
        "nothing links to the outside file"
    );
}

#[test]
fn device_nodes_are_refused() {
    let sb = Sandbox::new();
    expect_hostile(
        apply(
            &sb.snap(),
            &Layer::new()
                .device("dev/null", tar::EntryType::Char, 1, 3)
                .finish(),
        ),
        "char device",
    );
    expect_hostile(
        apply(
            &sb.snap(),
            &Layer::new()
                .device("dev/sda", tar::EntryType::Block, 8, 0)
                .finish(),
        ),
        "block device",
    );
    // Even 0/0, which only whiteouts (from .wh. entries) may create.
    expect_hostile(
        apply(
            &sb.snap(),
            &Layer::new()
                .device("x", tar::EntryType::Char, 0, 0)
                .finish(),
        ),
        "char 0/0",
    );
    assert!(!sb.snap().join("dev/null").exists());
}

#[test]
fn gzip_and_zstd_layers() {
    let tar = Layer::new()
        .dir("etc/", 0o755)
        .file("etc/os-release", b"ID=berth\n", 0o644)
        .finish();
    for (compression, blob) in [
        (Compression::Gzip, gzip(&tar)),
        (Compression::Zstd, zstd(&tar)),
        (Compression::None, tar.clone()),
    ] {
        let sb = Sandbox::new();
        let diff_id = apply_layer(&sb.snap(), &blob[..], compression, &sha(&blob)).unwrap();
        assert_eq!(diff_id, sha(&tar), "{compression:?}");
        assert_eq!(
            fs::read(sb.snap().join("etc/os-release")).unwrap(),
            b"ID=berth\n"
        );
    }
}

#[test]
fn corrupt_layers_fail_cleanly() {
    let big = vec![7u8; 300_000];
    let tar = Layer::new()
        .file("big", &big, 0o644)
        .file("after", b"a", 0o644)
        .finish();
    let gz = gzip(&tar);
    let zs = zstd(&tar);
    let cases: Vec<(&str, Compression, Vec<u8>)> = vec![
        (
            "truncated gzip",
            Compression::Gzip,
            gz[..gz.len() / 2].to_vec(),
        ),
        (
            "gzip without trailer",
            Compression::Gzip,
            gz[..gz.len() - 4].to_vec(),
        ),
        (
            "truncated zstd",
            Compression::Zstd,
            zs[..zs.len() / 2].to_vec(),
        ),
        ("truncated tar", Compression::None, tar[..100_000].to_vec()),
        ("not gzip", Compression::Gzip, tar.clone()),
        ("garbage", Compression::None, vec![0xAB; 4096]),
    ];
    for (what, compression, blob) in cases {
        let sb = Sandbox::new();
        match apply_layer(&sb.snap(), &blob[..], compression, &sha(&blob)) {
            Err(Error::CorruptLayer { reason, .. }) => eprintln!("{what}: {reason}"),
            other => panic!("{what}: expected CorruptLayer, got {other:?}"),
        }
    }
}
