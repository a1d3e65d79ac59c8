//! Per-container bookkeeping berthd keeps in memory: one operation lock per container
//! (start, stop, remove and the exit watcher never interleave on one container) and the
//! set of containers whose exit is being watched.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OwnedMutexGuard;

/// Lives in the `RuntimeContext`; cheap to share.
#[derive(Debug, Default)]
pub struct ContainerService {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    watched: Mutex<HashSet<String>>,
}

fn guard<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under these locks is a single insert or remove: still consistent
    // after a panic elsewhere.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ContainerService {
    pub fn new() -> Self {
        Self::default()
    }

    /// The operation lock of container `id`; held across a whole start, stop or remove.
    pub async fn lock(&self, id: &str) -> OwnedMutexGuard<()> {
        let lock = guard(&self.locks).entry(id.to_string()).or_default().clone();
        lock.lock_owned().await
    }

    /// The lock if no operation holds it now (status queries never wait for a stop).
    pub fn try_lock(&self, id: &str) -> Option<OwnedMutexGuard<()>> {
        let lock = guard(&self.locks).entry(id.to_string()).or_default().clone();
        lock.try_lock_owned().ok()
    }

    /// Drops the in-memory state of a removed container.
    pub fn forget(&self, id: &str) {
        guard(&self.locks).remove(id);
        guard(&self.watched).remove(id);
    }

    /// Marks `id` as watched; false when a watcher already runs for it.
    pub fn begin_watch(&self, id: &str) -> bool {
        guard(&self.watched).insert(id.to_string())
    }

    pub fn end_watch(&self, id: &str) {
        guard(&self.watched).remove(id);
    }
}

/// The container service of `ctx`.
pub fn service(ctx: &crate::runtime::context::RuntimeContext) -> &ContainerService {
    &ctx.containers
}
