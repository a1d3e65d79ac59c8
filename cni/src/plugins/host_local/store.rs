//! host-local's allocations on disk, in the reference plugin's layout so either plugin
//! can take over a data dir: `<dataDir>/<network>/<ip>` holds `<container id>\r\n<ifname>`,
//! `last_reserved_ip.<range set index>` the last address handed out (allocation goes on
//! round-robin from there, so a released address is not reused at once), and the
//! directory itself is the lock (flock), held for the whole ADD or DEL.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const LINE_BREAK: &str = "\r\n";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The allocation directory of one network, locked while this value lives.
pub struct Store {
    dir: PathBuf,
    // Holds the flock; closing the fd releases it.
    _lock: File,
}

impl Store {
    /// Creates `<data_dir>/<network>` if needed and takes its lock (blocking).
    pub fn open(data_dir: &Path, network: &str) -> Result<Store, StoreError> {
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let lock = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&dir)
            .map_err(io_err("open", &dir))?;
        loop {
            // SAFETY: flock on a file descriptor we own.
            let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                break;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(io_err("lock", &dir)(err));
            }
        }
        Ok(Store { dir, _lock: lock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reserves `ip` for the container; `Ok(false)` when it is taken.
    pub fn reserve(
        &self,
        ip: IpAddr,
        container_id: &str,
        ifname: &str,
        range_set: usize,
    ) -> Result<bool, StoreError> {
        let path = self.dir.join(ip.to_string());
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_err("create", &path)(e)),
        };
        let content = format!("{}{LINE_BREAK}{}", container_id.trim(), ifname);
        if let Err(e) = file.write_all(content.as_bytes()) {
            let _ = fs::remove_file(&path);
            return Err(io_err("write", &path)(e));
        }
        let last = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}"));
        fs::write(&last, ip.to_string()).map_err(io_err("write", &last))?;
        Ok(true)
    }

    /// The address handed out last in a range set.
    pub fn last_reserved(&self, range_set: usize) -> Option<IpAddr> {
        fs::read_to_string(self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Who holds `ip`: (container id, ifname); ifname is empty in old single-line files.
    pub fn owner(&self, ip: IpAddr) -> Option<(String, String)> {
        let content = fs::read_to_string(self.dir.join(ip.to_string())).ok()?;
        Some(parse_owner(&content))
    }

    /// Every allocation: (ip, container id, ifname).
    pub fn allocations(&self) -> Result<Vec<(IpAddr, String, String)>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("read", &self.dir))? {
            let entry = entry.map_err(io_err("read", &self.dir))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
            else {
                continue;
            };
            if let Ok(content) = fs::read_to_string(entry.path()) {
                let (id, ifname) = parse_owner(&content);
                out.push((ip, id, ifname));
            }
        }
        Ok(out)
    }

    /// The addresses held by the container on `ifname` (or by the container in an old
    /// single-line file).
    pub fn find(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
        Ok(self
            .allocations()?
            .into_iter()
            .filter(|(_, id, ifn)| id == container_id.trim() && (ifn == ifname || ifn.is_empty()))
            .map(|(ip, _, _)| ip)
            .collect())
    }

    /// Releases every address of the container on `ifname`; returns them.
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
        let ips = self.find(container_id, ifname)?;
        for ip in &ips {
            let path = self.dir.join(ip.to_string());
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &path)(e)),
            }
        }
        Ok(ips)
    }

    /// Releases one address (rollback of a half-done ADD).
    pub fn release_ip(&self, ip: IpAddr) {
        let _ = fs::remove_file(self.dir.join(ip.to_string()));
    }
}

fn parse_owner(content: &str) -> (String, String) {
    let mut lines = content.split(LINE_BREAK);
    let id = lines.next().unwrap_or_default().trim().to_string();
    let ifname = lines.next().unwrap_or_default().trim().to_string();
    (id, ifname)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_find_release() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), "net").unwrap();
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        let b: IpAddr = "fd00::2".parse().unwrap();
        assert!(store.reserve(a, "c1", "eth0", 0).unwrap());
        assert!(!store.reserve(a, "c2", "eth0", 0).unwrap());
        assert!(store.reserve(b, "c1", "eth0", 1).unwrap());
        assert_eq!(store.last_reserved(0), Some(a));
        assert_eq!(store.last_reserved(1), Some(b));
        assert_eq!(
            fs::read_to_string(tmp.path().join("net/10.0.0.2")).unwrap(),
            "c1\r\neth0"
        );
        assert_eq!(store.owner(a), Some(("c1".into(), "eth0".into())));
        let mut found = store.find("c1", "eth0").unwrap();
        found.sort();
        assert_eq!(found, vec![a, b]);
        assert!(store.find("c1", "eth1").unwrap().is_empty());
        assert_eq!(store.release("c1", "eth0").unwrap().len(), 2);
        assert!(store.allocations().unwrap().is_empty());
        // The round-robin marker stays.
        assert_eq!(store.last_reserved(0), Some(a));
    }
}
