//! berthd's pod and container records: [`RuntimeStore`] over its own redb file
//! `<root>/runtime.redb`, and [`Reservations`], the CRI name reservations with the hand-off
//! of in-flight work to retried requests.
//!
//! Two tables, `sandboxes` and `containers`, id -> JSON of the record. JSON keeps records
//! readable with `redb` tooling and lets them grow fields (`serde(default)`). The calls are
//! synchronous and cheap (one small transaction each): async callers may call them directly.
//!
//! A durable commit costs an fdatasync, milliseconds on a busy disk. An RPC that writes
//! several records (a pod teardown writes every container's exit, deletes every container,
//! then the pod) commits the intermediate ones [`Commit::Deferred`] and only its last one
//! durably: redb makes every earlier commit durable with it, so each record is still on disk
//! before the RPC answers, for one fdatasync.

mod records;
pub mod reservations;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use records::{ContainerRecord, ContainerState, SandboxRecord, SandboxState};
pub use reservations::Reservations;

/// When a write must be on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// On disk when the call returns.
    Durable,
    /// Visible at once, on disk with the next durable commit: only for a step of an RPC
    /// that ends with a durable commit ([`RuntimeStore::flush`] when it has nothing else).
    Deferred,
}

const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("runtime database {path} is open in another process (another berthd on the same --root?)")]
    InUse { path: PathBuf },
    #[error("runtime database: {0}")]
    Database(String),
    #[error("{kind} record {id} is unreadable: {reason}")]
    Corrupt { kind: &'static str, id: String, reason: String },
}

fn db_err(err: impl std::fmt::Display) -> StoreError {
    StoreError::Database(err.to_string())
}

/// Pod and container records, durable before any RPC answers.
#[derive(Clone)]
pub struct RuntimeStore {
    db: Arc<Database>,
}

impl std::fmt::Debug for RuntimeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeStore").finish_non_exhaustive()
    }
}

impl RuntimeStore {
    /// Opens (or creates) the database file and its tables.
    pub fn open(path: &Path) -> Result<RuntimeStore, StoreError> {
        let db = Database::create(path).map_err(|err| match err {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: path.to_path_buf() },
            err => StoreError::Database(format!("opening {}: {err}", path.display())),
        })?;
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(SANDBOXES).map_err(db_err)?;
        txn.open_table(CONTAINERS).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(RuntimeStore { db: Arc::new(db) })
    }

    pub fn put_sandbox(&self, record: &SandboxRecord) -> Result<(), StoreError> {
        self.put(SANDBOXES, &record.id, record)
    }

    pub fn sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, StoreError> {
        self.get(SANDBOXES, "sandbox", id)
    }

    pub fn sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        self.all(SANDBOXES, "sandbox")
    }

    /// Deletes the record; true when there was one.
    pub fn delete_sandbox(&self, id: &str) -> Result<bool, StoreError> {
        self.delete(SANDBOXES, id)
    }

    pub fn put_container(&self, record: &ContainerRecord) -> Result<(), StoreError> {
        self.put(CONTAINERS, &record.id, record)
    }

    pub fn put_container_with(&self, record: &ContainerRecord, commit: Commit) -> Result<(), StoreError> {
        self.put_with(CONTAINERS, &record.id, record, commit)
    }

    pub fn container(&self, id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        self.get(CONTAINERS, "container", id)
    }

    pub fn containers(&self) -> Result<Vec<ContainerRecord>, StoreError> {
        self.all(CONTAINERS, "container")
    }

    /// The containers of one pod.
    pub fn containers_of(&self, sandbox_id: &str) -> Result<Vec<ContainerRecord>, StoreError> {
        Ok(self.containers()?.into_iter().filter(|c| c.sandbox_id == sandbox_id).collect())
    }

    /// Deletes the record; true when there was one.
    pub fn delete_container(&self, id: &str) -> Result<bool, StoreError> {
        self.delete(CONTAINERS, id)
    }

    pub fn delete_container_with(&self, id: &str, commit: Commit) -> Result<bool, StoreError> {
        self.delete_with(CONTAINERS, id, commit)
    }

    /// Makes every deferred commit durable (an empty durable commit).
    pub fn flush(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.commit().map_err(db_err)
    }

    fn begin(&self, commit: Commit) -> Result<redb::WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        if commit == Commit::Deferred {
            txn.set_durability(redb::Durability::None).map_err(db_err)?;
        }
        Ok(txn)
    }

    fn put<T: Serialize>(&self, table: TableDefinition<&str, &[u8]>, id: &str, record: &T) -> Result<(), StoreError> {
        self.put_with(table, id, record, Commit::Durable)
    }

    fn put_with<T: Serialize>(&self, table: TableDefinition<&str, &[u8]>, id: &str, record: &T, commit: Commit) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).map_err(db_err)?;
        let txn = self.begin(commit)?;
        {
            let mut table = txn.open_table(table).map_err(db_err)?;
            table.insert(id, bytes.as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    fn get<T: DeserializeOwned>(&self, table: TableDefinition<&str, &[u8]>, kind: &'static str, id: &str) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(table).map_err(db_err)?;
        match table.get(id).map_err(db_err)? {
            Some(value) => Ok(Some(decode(kind, id, value.value())?)),
            None => Ok(None),
        }
    }

    fn all<T: DeserializeOwned>(&self, table: TableDefinition<&str, &[u8]>, kind: &'static str) -> Result<Vec<T>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(table).map_err(db_err)?;
        let mut records = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (key, value) = entry.map_err(db_err)?;
            records.push(decode(kind, key.value(), value.value())?);
        }
        Ok(records)
    }

    fn delete(&self, table: TableDefinition<&str, &[u8]>, id: &str) -> Result<bool, StoreError> {
        self.delete_with(table, id, Commit::Durable)
    }

    fn delete_with(&self, table: TableDefinition<&str, &[u8]>, id: &str, commit: Commit) -> Result<bool, StoreError> {
        let txn = self.begin(commit)?;
        let existed = {
            let mut table = txn.open_table(table).map_err(db_err)?;
            let removed = table.remove(id).map_err(db_err)?;
            removed.is_some()
        };
        txn.commit().map_err(db_err)?;
        Ok(existed)
    }
}

fn decode<T: DeserializeOwned>(kind: &'static str, id: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Corrupt { kind, id: id.to_string(), reason: err.to_string() })
}

/// A new random id: 64 lowercase hex characters, for pods and containers alike.
pub fn new_id() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// Now, in unix nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{ContainerMetadata, PodSandboxMetadata};

    fn sandbox(id: &str) -> SandboxRecord {
        SandboxRecord {
            id: id.into(),
            name: format!("pod_ns_uid-{id}_0"),
            config: PodSandboxConfig {
                metadata: Some(PodSandboxMetadata { name: "pod".into(), uid: format!("uid-{id}"), namespace: "ns".into(), attempt: 0 }),
                hostname: "pod".into(),
                ..Default::default()
            },
            state: SandboxState::Ready,
            created_at_ns: 1,
            runtime_handler: String::new(),
            ns_dir: "/run/berth/pods/x/ns".into(),
            pod_dir: "/var/lib/berth/pods/x".into(),
            cgroup_path: "/berth/pod-x".into(),
            cgroup_created: true,
            host_network: false,
            host_pid: false,
            host_ipc: false,
            pid_holder: None,
            pid_holder_pid: None,
            ips: vec![],
            pinned_namespaces: vec!["net".into(), "uts".into()],
            shm_path: None,
            stopped_at_ns: 0,
        }
    }

    use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};

    fn container(id: &str, sandbox_id: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            sandbox_id: sandbox_id.into(),
            name: format!("c_{id}"),
            config: ContainerConfig { metadata: Some(ContainerMetadata { name: "c".into(), attempt: 1 }), ..Default::default() },
            image_ref: "busybox".into(),
            image_id: "sha256:aa".into(),
            state: ContainerState::Created,
            created_at_ns: 2,
            started_at_ns: 0,
            finished_at_ns: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            log_path: None,
            bundle_dir: "/b".into(),
            rootfs_dir: "/b/rootfs".into(),
            shim_dir: "/s".into(),
            cgroup_path: "/berth/pod-x/c".into(),
            runtime: None,
            pid: 0,
            oom_killed: false,
        }
    }

    #[test]
    fn records_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runtime.redb");
        {
            let store = RuntimeStore::open(&path).unwrap();
            assert!(store.sandbox("a").unwrap().is_none());
            store.put_sandbox(&sandbox("a")).unwrap();
            store.put_sandbox(&sandbox("b")).unwrap();
            store.put_container(&container("c1", "a")).unwrap();
            store.put_container(&container("c2", "b")).unwrap();
            let mut updated = sandbox("a");
            updated.state = SandboxState::NotReady;
            store.put_sandbox(&updated).unwrap();
        }
        let store = RuntimeStore::open(&path).unwrap();
        let a = store.sandbox("a").unwrap().unwrap();
        assert_eq!(a.state, SandboxState::NotReady);
        assert_eq!(a.config.metadata.as_ref().unwrap().uid, "uid-a");
        assert_eq!(a.namespace_path("net"), Some(PathBuf::from("/run/berth/pods/x/ns/net")));
        assert_eq!(a.namespace_path("ipc"), None);
        assert_eq!(store.sandboxes().unwrap().len(), 2);
        assert_eq!(store.container("c1").unwrap().unwrap(), container("c1", "a"));
        assert_eq!(store.containers_of("b").unwrap().iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["c2"]);
        assert!(store.delete_sandbox("a").unwrap());
        assert!(!store.delete_sandbox("a").unwrap());
        assert!(store.delete_container("c1").unwrap());
        assert_eq!(store.containers().unwrap().len(), 1);
        assert!(store.sandbox("a").unwrap().is_none());
    }

    #[test]
    fn deferred_commits_are_visible_at_once_and_durable_with_the_next_durable_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runtime.redb");
        {
            let store = RuntimeStore::open(&path).unwrap();
            store.put_container(&container("c1", "a")).unwrap();
            store.put_container(&container("c2", "a")).unwrap();
            let mut exited = container("c1", "a");
            exited.state = ContainerState::Exited;
            store.put_container_with(&exited, Commit::Deferred).unwrap();
            assert!(store.delete_container_with("c2", Commit::Deferred).unwrap());
            assert_eq!(store.container("c1").unwrap().unwrap().state, ContainerState::Exited);
            assert!(store.container("c2").unwrap().is_none());
            store.flush().unwrap();
        }
        let store = RuntimeStore::open(&path).unwrap();
        assert_eq!(store.container("c1").unwrap().unwrap().state, ContainerState::Exited);
        assert!(store.container("c2").unwrap().is_none());
    }

    #[test]
    fn second_open_of_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runtime.redb");
        let _first = RuntimeStore::open(&path).unwrap();
        assert!(matches!(RuntimeStore::open(&path), Err(StoreError::InUse { .. })));
    }

    #[test]
    fn ids_are_64_hex() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(id, new_id());
    }
}
