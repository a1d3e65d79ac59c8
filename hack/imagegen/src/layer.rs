//! An in-memory description of one image layer, rendered to a tar stream on demand.
//!
//! Every tar header is written by hand (GNU format, with `L`/`K` long-name records), so
//! names and link targets land in the archive byte for byte as given: hostile-layer tests
//! need `../../etc/evil`, absolute paths and escaping link targets that the `tar` crate's
//! own builder would refuse. Content is generated while the tar is written, so a layer of
//! hundreds of megabytes of random data never sits in memory.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use sha2::{Digest as _, Sha256};

use crate::image::Compression;

/// Where Debian's busybox-static installs its binary.
pub const BUSYBOX_PATH: &str = "/bin/busybox";

/// Modification time written into every header, fixed so that digests are reproducible.
pub const LAYER_MTIME: u64 = 1_704_067_200; // 2024-01-01T00:00:00Z

const BLOCK: usize = 512;

/// The bytes of a regular file entry.
#[derive(Clone, Debug)]
pub enum Content {
    /// Literal bytes.
    Bytes(Arc<[u8]>),
    /// `size` deterministic, incompressible bytes derived from `seed`, generated while writing.
    Random { size: u64, seed: u64 },
    /// The bytes of a file on the host, read while writing (e.g. `/bin/busybox`).
    HostFile(PathBuf),
}

/// What kind of tar entry to write.
#[derive(Clone, Debug)]
pub enum EntryKind {
    File(Content),
    Dir,
    /// Symlink with this target, written verbatim.
    Symlink(Vec<u8>),
    /// Hardlink to this archive path, written verbatim.
    Hardlink(Vec<u8>),
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
    Fifo,
}

/// One tar entry. `name` is written verbatim into the header (no normalisation, no checks).
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

/// A layer builder: a list of entries, rendered in order.
///
/// Paths given to the ordinary methods (`dir`, `file`, `symlink`, ...) may start with `/`;
/// the leading slash is dropped, as `docker build` does, and directories get a trailing
/// `/`. Use [`Layer::raw_path`] or [`Layer::entry`] to write a name exactly as given.
#[derive(Clone, Debug, Default)]
pub struct Layer {
    entries: Vec<Entry>,
    /// When set, the layer's uncompressed stream is exactly these bytes (entries ignored).
    raw_tar: Option<Arc<[u8]>>,
}

/// A layer rendered and compressed into an anonymous temporary file.
#[derive(Debug)]
pub struct BuiltLayer {
    /// The compressed blob, positioned at offset 0.
    pub file: File,
    /// `sha256:<hex>` of the compressed blob (the manifest's layer digest).
    pub digest: String,
    /// `sha256:<hex>` of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: String,
    /// Size in bytes of the compressed blob.
    pub size: u64,
    /// Size in bytes of the uncompressed tar.
    pub uncompressed_size: u64,
}

impl Layer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A layer whose uncompressed tar stream is exactly `tar_bytes`, e.g. a truncated or
    /// otherwise broken archive. It is still compressed as the image spec asks.
    pub fn from_raw_tar(tar_bytes: impl Into<Vec<u8>>) -> Self {
        Self { entries: Vec::new(), raw_tar: Some(Arc::from(tar_bytes.into())) }
    }

    /// The entries added so far.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Adds an arbitrary entry, name written verbatim.
    pub fn entry(mut self, entry: Entry) -> Self {
        self.entries.push(entry);
        self
    }

    /// A directory (owned by 0:0).
    pub fn dir(self, path: &str, mode: u32) -> Self {
        let mut name = normal_name(path);
        if !name.ends_with(b"/") {
            name.push(b'/');
        }
        self.entry(Entry { name, kind: EntryKind::Dir, mode, uid: 0, gid: 0 })
    }

    /// A regular file owned by 0:0.
    pub fn file(self, path: &str, bytes: impl AsRef<[u8]>, mode: u32) -> Self {
        self.file_owned(path, bytes, mode, 0, 0)
    }

    /// A regular file with the given owner.
    pub fn file_owned(self, path: &str, bytes: impl AsRef<[u8]>, mode: u32, uid: u64, gid: u64) -> Self {
        let content = Content::Bytes(Arc::from(bytes.as_ref()));
        self.entry(Entry { name: normal_name(path), kind: EntryKind::File(content), mode, uid, gid })
    }

    /// A regular file of `size` deterministic incompressible bytes (same seed, same bytes),
    /// generated while the layer is written.
    pub fn random_file(self, path: &str, size: u64, seed: u64) -> Self {
        let content = Content::Random { size, seed };
        self.entry(Entry { name: normal_name(path), kind: EntryKind::File(content), mode: 0o644, uid: 0, gid: 0 })
    }

    /// A regular file whose bytes are read from `host_path` when the layer is written.
    pub fn host_file(self, path: &str, host_path: impl Into<PathBuf>, mode: u32) -> Self {
        let content = Content::HostFile(host_path.into());
        self.entry(Entry { name: normal_name(path), kind: EntryKind::File(content), mode, uid: 0, gid: 0 })
    }

    /// A symlink; `target` is written verbatim (may be absolute or contain `..`).
    pub fn symlink(self, path: &str, target: &str) -> Self {
        let kind = EntryKind::Symlink(target.as_bytes().to_vec());
        self.entry(Entry { name: normal_name(path), kind, mode: 0o777, uid: 0, gid: 0 })
    }

    /// A hardlink to `target`, an archive path written verbatim (may contain `..`).
    pub fn hardlink(self, path: &str, target: &str) -> Self {
        let kind = EntryKind::Hardlink(target.as_bytes().to_vec());
        self.entry(Entry { name: normal_name(path), kind, mode: 0o644, uid: 0, gid: 0 })
    }

    /// An OCI whiteout deleting `path` from lower layers: an empty file `dir/.wh.<name>`.
    pub fn whiteout(self, path: &str) -> Self {
        let name = normal_name(path);
        let name = String::from_utf8_lossy(&name).trim_end_matches('/').to_string();
        let (parent, base) = match name.rsplit_once('/') {
            Some((parent, base)) => (format!("{parent}/"), base.to_string()),
            None => (String::new(), name),
        };
        let entry_name = format!("{parent}.wh.{base}").into_bytes();
        let kind = EntryKind::File(Content::Bytes(Arc::from(&b""[..])));
        self.entry(Entry { name: entry_name, kind, mode: 0o644, uid: 0, gid: 0 })
    }

    /// An OCI opaque-directory marker: `dir/.wh..wh..opq` hides everything lower layers
    /// put in `dir`.
    pub fn opaque(self, dir: &str) -> Self {
        let dir = normal_name(dir);
        let dir = String::from_utf8_lossy(&dir).trim_end_matches('/').to_string();
        let entry_name = if dir.is_empty() { ".wh..wh..opq".to_string() } else { format!("{dir}/.wh..wh..opq") };
        let kind = EntryKind::File(Content::Bytes(Arc::from(&b""[..])));
        self.entry(Entry { name: entry_name.into_bytes(), kind, mode: 0o644, uid: 0, gid: 0 })
    }

    /// A character device node.
    pub fn char_device(self, path: &str, major: u32, minor: u32) -> Self {
        let kind = EntryKind::CharDevice { major, minor };
        self.entry(Entry { name: normal_name(path), kind, mode: 0o666, uid: 0, gid: 0 })
    }

    /// A block device node.
    pub fn block_device(self, path: &str, major: u32, minor: u32) -> Self {
        let kind = EntryKind::BlockDevice { major, minor };
        self.entry(Entry { name: normal_name(path), kind, mode: 0o660, uid: 0, gid: 0 })
    }

    /// A named pipe.
    pub fn fifo(self, path: &str, mode: u32) -> Self {
        self.entry(Entry { name: normal_name(path), kind: EntryKind::Fifo, mode, uid: 0, gid: 0 })
    }

    /// A regular file whose header name is exactly `name`, e.g. `../../etc/evil` or
    /// `/abs/path`: no leading-slash stripping, no `..` checks.
    pub fn raw_path(self, name: impl AsRef<[u8]>, bytes: impl AsRef<[u8]>, mode: u32) -> Self {
        let content = Content::Bytes(Arc::from(bytes.as_ref()));
        self.entry(Entry { name: name.as_ref().to_vec(), kind: EntryKind::File(content), mode, uid: 0, gid: 0 })
    }

    /// Busybox from Debian's busybox-static as `/bin/busybox`, plus `/bin/<applet>` symlinks
    /// for every applet it lists (`sh`, `ls`, `cat`, `httpd`, `wget`, `id`, `sleep`, ...).
    ///
    /// Panics when busybox-static is not installed (run `hack/install-deps`).
    pub fn busybox(self) -> Self {
        let mut layer = self.dir("bin", 0o755).host_file("bin/busybox", BUSYBOX_PATH, 0o755);
        for applet in busybox_applets() {
            layer = layer.symlink(&format!("bin/{applet}"), "busybox");
        }
        layer
    }

    /// The usual top-level directories of a Linux root filesystem plus `/etc/passwd` and
    /// `/etc/group` naming root and nobody.
    pub fn rootfs_skeleton(self) -> Self {
        let mut layer = self;
        for dir in ["dev", "etc", "home", "proc", "root", "sys", "usr", "var", "var/www"] {
            layer = layer.dir(dir, 0o755);
        }
        layer
            .dir("tmp", 0o1777)
            .file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n", 0o644)
            .file("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644)
    }

    /// Writes the uncompressed tar stream, end-of-archive marker included.
    pub fn write_tar<W: Write>(&self, out: &mut W) -> io::Result<()> {
        if let Some(raw) = &self.raw_tar {
            return out.write_all(raw);
        }
        for entry in &self.entries {
            write_entry(out, entry)?;
        }
        out.write_all(&[0u8; BLOCK * 2])
    }

    /// The uncompressed tar stream in memory (for small layers and unit tests).
    pub fn to_tar(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_tar(&mut out)?;
        Ok(out)
    }

    /// Renders and compresses the layer into an anonymous temp file, hashing both streams
    /// on the way, so that memory use does not depend on the layer's size.
    pub fn build(&self, compression: Compression) -> io::Result<BuiltLayer> {
        let mut file = tempfile::tempfile()?;
        let blob_sink = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, &mut file));
        let encoder = Encoder::new(blob_sink, compression)?;
        let mut tar_sink = HashingWriter::new(encoder);
        self.write_tar(&mut tar_sink)?;
        let (diff_id, uncompressed_size, encoder) = tar_sink.finish();
        let blob_sink = encoder.finish()?;
        let (digest, size, buffered) = blob_sink.finish();
        buffered.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        Ok(BuiltLayer { file, digest, diff_id, size, uncompressed_size })
    }
}

/// Applet names reported by `busybox --list`, without `busybox` itself.
pub fn busybox_applets() -> &'static [String] {
    static APPLETS: OnceLock<Vec<String>> = OnceLock::new();
    APPLETS.get_or_init(|| {
        let output = std::process::Command::new(BUSYBOX_PATH)
            .arg("--list")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {BUSYBOX_PATH} --list ({e}): install busybox-static (hack/install-deps)"));
        assert!(output.status.success(), "{BUSYBOX_PATH} --list failed: {}", output.status);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::trim)
            .filter(|name| !name.is_empty() && *name != "busybox" && !name.contains('/'))
            .map(str::to_string)
            .collect()
    })
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn normal_name(path: &str) -> Vec<u8> {
    path.trim_start_matches('/').as_bytes().to_vec()
}

fn write_entry<W: Write>(out: &mut W, entry: &Entry) -> io::Result<()> {
    let (entry_type, size, link): (tar::EntryType, u64, &[u8]) = match &entry.kind {
        EntryKind::File(content) => (tar::EntryType::Regular, content_size(content)?, b""),
        EntryKind::Dir => (tar::EntryType::Directory, 0, b""),
        EntryKind::Symlink(target) => (tar::EntryType::Symlink, 0, target),
        EntryKind::Hardlink(target) => (tar::EntryType::Link, 0, target),
        EntryKind::CharDevice { .. } => (tar::EntryType::Char, 0, b""),
        EntryKind::BlockDevice { .. } => (tar::EntryType::Block, 0, b""),
        EntryKind::Fifo => (tar::EntryType::Fifo, 0, b""),
    };
    if entry.name.len() > 100 {
        write_long_record(out, tar::EntryType::GNULongName, &entry.name)?;
    }
    if link.len() > 100 {
        write_long_record(out, tar::EntryType::GNULongLink, link)?;
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(entry.mode);
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_size(size);
    header.set_mtime(LAYER_MTIME);
    match entry.kind {
        EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
            header.set_device_major(major)?;
            header.set_device_minor(minor)?;
        }
        _ => {}
    }
    copy_truncated(&mut header.as_old_mut().name, &entry.name);
    copy_truncated(&mut header.as_old_mut().linkname, link);
    header.set_cksum();
    out.write_all(header.as_bytes())?;
    if let EntryKind::File(content) = &entry.kind {
        let written = write_content(out, content)?;
        if written != size {
            return Err(io::Error::other(format!(
                "content of {} changed while writing: {written} bytes instead of {size}",
                String::from_utf8_lossy(&entry.name)
            )));
        }
        pad(out, size)?;
    }
    Ok(())
}

/// A GNU `././@LongLink` record carrying a name or link target longer than 100 bytes.
fn write_long_record<W: Write>(out: &mut W, kind: tar::EntryType, value: &[u8]) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(value.len() as u64 + 1);
    header.set_mtime(0);
    copy_truncated(&mut header.as_old_mut().name, b"././@LongLink");
    header.set_cksum();
    out.write_all(header.as_bytes())?;
    out.write_all(value)?;
    out.write_all(&[0])?;
    pad(out, value.len() as u64 + 1)
}

fn copy_truncated(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    let len = value.len().min(field.len());
    field[..len].copy_from_slice(&value[..len]);
}

fn pad<W: Write>(out: &mut W, size: u64) -> io::Result<()> {
    let rem = (size % BLOCK as u64) as usize;
    if rem != 0 {
        out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

fn content_size(content: &Content) -> io::Result<u64> {
    match content {
        Content::Bytes(bytes) => Ok(bytes.len() as u64),
        Content::Random { size, .. } => Ok(*size),
        Content::HostFile(path) => std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

fn write_content<W: Write>(out: &mut W, content: &Content) -> io::Result<u64> {
    match content {
        Content::Bytes(bytes) => {
            out.write_all(bytes)?;
            Ok(bytes.len() as u64)
        }
        Content::Random { size, seed } => {
            let mut rng = SplitMix64::new(*seed);
            let mut buf = vec![0u8; 64 * 1024];
            let mut left = *size;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                rng.fill(&mut buf[..n]);
                out.write_all(&buf[..n])?;
                left -= n as u64;
            }
            Ok(*size)
        }
        Content::HostFile(path) => {
            let file = File::open(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            io::copy(&mut io::BufReader::new(file), out)
        }
    }
}

/// splitmix64: fast, deterministic, and its output does not compress, which is all the
/// benchmark layers need (this is not a cryptographic generator).
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x6a09_e667_f3bc_c908)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let bytes = self.next().to_le_bytes();
            let len = rest.len();
            rest.copy_from_slice(&bytes[..len]);
        }
    }
}

/// Counts and hashes everything written through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self { inner, hasher: Sha256::new(), count: 0 }
    }

    /// (`sha256:<hex>`, byte count, inner writer)
    pub(crate) fn finish(self) -> (String, u64, W) {
        (format!("sha256:{}", hex::encode(self.hasher.finalize())), self.count, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The compressor stage of [`Layer::build`].
enum Encoder<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    fn new(inner: W, compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Encoder::None(inner),
            // The default level, as `docker push` and most registries' images use. Level 1
            // made zlib-rs emit fixed-Huffman blocks for random data, so the benchmark image
            // (and its digests) depended on which flate2 backend the build happened to use.
            Compression::Gzip => Encoder::Gzip(flate2::GzBuilder::new().mtime(0).write(inner, flate2::Compression::default())),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(inner, 3)?),
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// Reads a whole [`BuiltLayer`] back (for tests on small layers).
pub fn read_built(layer: &mut BuiltLayer) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    layer.file.seek(SeekFrom::Start(0))?;
    layer.file.read_to_end(&mut out)?;
    layer.file.seek(SeekFrom::Start(0))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_and_links(tar_bytes: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>, tar::EntryType)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .expect("entries")
            .map(|entry| {
                let entry = entry.expect("entry");
                let link = entry.link_name_bytes().map(|l| l.into_owned());
                (entry.path_bytes().into_owned(), link, entry.header().entry_type())
            })
            .collect()
    }

    #[test]
    fn raw_paths_survive_verbatim() {
        let long = format!("{}/evil", "../".repeat(60));
        let layer = Layer::new()
            .raw_path("../../etc/evil", b"x", 0o644)
            .raw_path("/abs/path", b"y", 0o644)
            .raw_path(&long, b"z", 0o644)
            .symlink("escape", "../../../../etc")
            .symlink("abs-escape", "/etc/passwd")
            .hardlink("hard-escape", "../../etc/shadow");
        let entries = names_and_links(&layer.to_tar().unwrap());
        let names: Vec<&[u8]> = entries.iter().map(|(n, _, _)| n.as_slice()).collect();
        assert_eq!(names, vec![&b"../../etc/evil"[..], b"/abs/path", long.as_bytes(), b"escape", b"abs-escape", b"hard-escape"]);
        assert_eq!(entries[3].1.as_deref(), Some(&b"../../../../etc"[..]));
        assert_eq!(entries[4].1.as_deref(), Some(&b"/etc/passwd"[..]));
        assert_eq!(entries[5].1.as_deref(), Some(&b"../../etc/shadow"[..]));
        assert_eq!(entries[5].2, tar::EntryType::Link);
    }

    #[test]
    fn long_link_targets_use_gnu_records() {
        let target = "a/".repeat(80) + "target";
        let layer = Layer::new().symlink("link", &target);
        let entries = names_and_links(&layer.to_tar().unwrap());
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].1.as_deref(), Some(target.as_bytes()));
    }

    #[test]
    fn whiteouts_and_opaque_markers_are_named_as_oci_says() {
        let layer = Layer::new().whiteout("/etc/foo").whiteout("top").whiteout("a/b/c/").opaque("/var/lib/").opaque("/");
        let entries = names_and_links(&layer.to_tar().unwrap());
        let names: Vec<String> = entries.iter().map(|(n, _, _)| String::from_utf8(n.clone()).unwrap()).collect();
        assert_eq!(names, vec!["etc/.wh.foo", ".wh.top", "a/b/.wh.c", "var/lib/.wh..wh..opq", ".wh..wh..opq"]);
        assert!(entries.iter().all(|(_, _, t)| *t == tar::EntryType::Regular));
    }

    #[test]
    fn ordinary_paths_are_relative_and_dirs_end_in_slash() {
        let layer = Layer::new().dir("/etc", 0o755).file("/etc/hosts", "h", 0o644).file_owned("home/x", "x", 0o600, 1000, 1001);
        let tar_bytes = layer.to_tar().unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let entries: Vec<_> = archive.entries().unwrap().map(|e| e.unwrap().header().clone()).collect();
        assert_eq!(&*entries[0].path_bytes(), b"etc/");
        assert_eq!(entries[0].entry_type(), tar::EntryType::Directory);
        assert_eq!(&*entries[1].path_bytes(), b"etc/hosts");
        assert_eq!(entries[2].uid().unwrap(), 1000);
        assert_eq!(entries[2].gid().unwrap(), 1001);
        assert_eq!(entries[2].mode().unwrap(), 0o600);
    }

    #[test]
    fn device_nodes_carry_major_and_minor() {
        let layer = Layer::new().char_device("dev/evil-mem", 1, 1).block_device("dev/sda", 8, 0).fifo("p", 0o600);
        let tar_bytes = layer.to_tar().unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let headers: Vec<_> = archive.entries().unwrap().map(|e| e.unwrap().header().clone()).collect();
        assert_eq!(headers[0].entry_type(), tar::EntryType::Char);
        assert_eq!(headers[0].device_major().unwrap(), Some(1));
        assert_eq!(headers[0].device_minor().unwrap(), Some(1));
        assert_eq!(headers[1].entry_type(), tar::EntryType::Block);
        assert_eq!(headers[1].device_major().unwrap(), Some(8));
        assert_eq!(headers[2].entry_type(), tar::EntryType::Fifo);
    }

    #[test]
    fn file_contents_round_trip() {
        let layer = Layer::new().file("a", "hello", 0o644).random_file("r", 10_000, 7).file("b", vec![0u8; 512], 0o644);
        let tar_bytes = layer.to_tar().unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut contents = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            contents.push(data);
        }
        assert_eq!(contents[0], b"hello");
        assert_eq!(contents[1].len(), 10_000);
        assert_eq!(contents[2], vec![0u8; 512]);
    }

    #[test]
    fn digests_are_deterministic_and_match_the_streams() {
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let make = || Layer::new().dir("d", 0o755).file("d/f", "content", 0o644).random_file("d/r", 100_000, 42);
            let mut first = make().build(compression).unwrap();
            let second = make().build(compression).unwrap();
            assert_eq!(first.digest, second.digest, "{compression:?}");
            assert_eq!(first.diff_id, second.diff_id);
            let tar_bytes = make().to_tar().unwrap();
            assert_eq!(first.diff_id, sha256_digest(&tar_bytes));
            assert_eq!(first.uncompressed_size, tar_bytes.len() as u64);
            let blob = read_built(&mut first).unwrap();
            assert_eq!(first.digest, sha256_digest(&blob));
            assert_eq!(first.size, blob.len() as u64);
            let decompressed = match compression {
                Compression::None => blob,
                Compression::Gzip => {
                    let mut out = Vec::new();
                    flate2::read::GzDecoder::new(&blob[..]).read_to_end(&mut out).unwrap();
                    out
                }
                Compression::Zstd => zstd::decode_all(&blob[..]).unwrap(),
            };
            assert_eq!(decompressed, tar_bytes);
        }
    }

    #[test]
    fn random_files_depend_on_seed_and_do_not_compress() {
        let a = Layer::new().random_file("r", 1 << 20, 1).build(Compression::Gzip).unwrap();
        let b = Layer::new().random_file("r", 1 << 20, 2).build(Compression::Gzip).unwrap();
        assert_ne!(a.diff_id, b.diff_id);
        assert!(a.size > 1 << 20, "random data compressed to {} bytes", a.size);
    }

    #[test]
    fn raw_tar_layers_are_passed_through() {
        let mut tar_bytes = Layer::new().file("f", vec![1u8; 4096], 0o644).to_tar().unwrap();
        tar_bytes.truncate(1000);
        let layer = Layer::from_raw_tar(tar_bytes.clone());
        assert_eq!(layer.to_tar().unwrap(), tar_bytes);
    }

    #[test]
    fn busybox_layer_has_the_binary_and_applet_links() {
        let layer = Layer::new().busybox();
        let entries = names_and_links(&layer.to_tar().unwrap());
        let find = |name: &[u8]| entries.iter().find(|(n, _, _)| n == name).cloned();
        let (_, _, kind) = find(b"bin/busybox").expect("bin/busybox");
        assert_eq!(kind, tar::EntryType::Regular);
        for applet in ["sh", "ls", "cat", "echo", "httpd", "wget", "id", "sleep"] {
            let (_, link, kind) = find(format!("bin/{applet}").as_bytes()).unwrap_or_else(|| panic!("bin/{applet}"));
            assert_eq!(kind, tar::EntryType::Symlink);
            assert_eq!(link.as_deref(), Some(&b"busybox"[..]));
        }
        assert!(find(b"bin/busybox").is_some());
    }
}
