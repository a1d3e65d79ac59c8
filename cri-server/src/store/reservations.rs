//! CRI name reservations with hand-off of in-flight work (CRI-O's "resourcestore").
//!
//! kubelet gives RunPodSandbox and CreateContainer a deadline (4 minutes by default) and
//! retries with the same name when it passes. The work must not be interrupted halfway
//! (that leaks mounts and processes), and the retry must not fail with "name taken" for
//! the very pod it asked for. So:
//!
//! - [`Reservations::run_reserved`] reserves `name` for a new id and runs the work in a
//!   spawned task; a cancelled gRPC call drops only the waiting, never the work.
//! - A request for a name whose work is still running waits for that work and gets its
//!   result (the same id, or the same error).
//! - A success nobody received (every waiter went away) is kept "unclaimed": the next
//!   request for the name takes it. If nobody does within the TTL, the entry is dropped and
//!   the resource cleaned up (the caller's `cleanup`, e.g. stop and remove the pod).
//! - A failure frees the name at once (the work undid itself); a delivered success holds it
//!   until [`Reservations::release`] (RemovePodSandbox / RemoveContainer).
//! - If the work task dies (panic), the name is freed and waiters get an Internal error: a
//!   name is never reserved for ever by work that no longer runs.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::errors::RuntimeError;

/// The result of reserved work: the id of what was created.
pub type Outcome = Result<String, RuntimeError>;

/// Cleans up a created resource (by id) that nobody claimed within the TTL.
pub type Cleanup = Box<dyn FnOnce(String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

#[derive(Debug)]
enum Entry {
    /// Work runs; every waiter (the first caller and any retries) gets its result.
    InFlight { id: String, waiters: Vec<oneshot::Sender<Outcome>> },
    /// The work succeeded but nobody received it. `generation` tells the TTL timer whether
    /// this is still the entry it was started for.
    Unclaimed { id: String, generation: u64 },
    /// The name belongs to a live resource.
    Held { id: String },
}

impl Entry {
    fn id(&self) -> &str {
        match self {
            Entry::InFlight { id, .. } | Entry::Unclaimed { id, .. } | Entry::Held { id } => id,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    names: HashMap<String, Entry>,
    next_generation: u64,
}

/// Name -> id reservations of one kind (pods or containers). Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Reservations {
    kind: &'static str,
    inner: Arc<Mutex<Inner>>,
    unclaimed_ttl: Duration,
}

impl Reservations {
    /// `kind` names the resource in messages ("pod sandbox", "container").
    pub fn new(kind: &'static str, unclaimed_ttl: Duration) -> Self {
        Reservations { kind, inner: Arc::default(), unclaimed_ttl }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves the map consistent (every change is one
        // insert or remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks `name` as held by an existing resource (records loaded at startup).
    pub fn hold(&self, name: &str, id: &str) {
        self.lock().names.insert(name.to_string(), Entry::Held { id: id.to_string() });
    }

    /// Frees `name` if `id` holds it (in any state). Idempotent.
    pub fn release(&self, name: &str, id: &str) {
        let mut inner = self.lock();
        if inner.names.get(name).is_some_and(|entry| entry.id() == id) {
            inner.names.remove(name);
            tracing::debug!(kind = self.kind, name, id, "name released");
        }
    }

    /// The id that holds or is creating `name`.
    pub fn holder(&self, name: &str) -> Option<String> {
        self.lock().names.get(name).map(|entry| entry.id().to_string())
    }

    /// Runs `work` (which creates the resource `new_id` and returns its id) under the
    /// reservation of `name`; see the module doc for what happens to retries, cancelled
    /// callers and failures. `cleanup` removes the resource if it is created but never claimed.
    ///
    /// Returns AlreadyExists naming the holder when `name` belongs to a live resource.
    pub async fn run_reserved<W>(&self, name: &str, new_id: &str, work: W, cleanup: Cleanup) -> Outcome
    where
        W: Future<Output = Outcome> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let start_work = {
            let mut inner = self.lock();
            match inner.names.get_mut(name) {
                None => {
                    inner.names.insert(name.to_string(), Entry::InFlight { id: new_id.to_string(), waiters: vec![tx] });
                    true
                }
                Some(Entry::InFlight { id, waiters }) => {
                    tracing::info!(kind = self.kind, name, id = %id, "request for a name still being created: waiting for that work");
                    waiters.push(tx);
                    false
                }
                Some(entry @ Entry::Unclaimed { .. }) => {
                    let id = entry.id().to_string();
                    tracing::info!(kind = self.kind, name, id = %id, "handing an unclaimed result to the retried request");
                    *entry = Entry::Held { id: id.clone() };
                    return Ok(id);
                }
                Some(Entry::Held { id }) => {
                    return Err(RuntimeError::AlreadyExists(format!(
                        "{} name {name:?} is already reserved by {id}; remove it first",
                        self.kind
                    )));
                }
            }
        };
        if start_work {
            let finisher = Finisher { reservations: self.clone(), name: name.to_string(), cleanup: Some(cleanup) };
            tokio::spawn(async move {
                let outcome = work.await;
                finisher.finish(outcome);
            });
        }
        rx.await.unwrap_or_else(|_| {
            Err(RuntimeError::Internal(format!("the work creating {} {name:?} vanished; see berthd's log", self.kind)))
        })
    }

    /// Delivers `outcome` to the waiters of `name` and decides what the name becomes.
    fn complete(&self, name: &str, outcome: Outcome, cleanup: Cleanup) {
        let mut inner = self.lock();
        let Some(Entry::InFlight { id, waiters }) = inner.names.remove(name) else {
            // Released while in flight (cannot normally happen: release needs the id,
            // which nobody has yet). Nothing to deliver to.
            return;
        };
        // Every waiter gets the outcome (no short-circuit): the first caller and each retry.
        let mut delivered = false;
        for waiter in waiters {
            delivered |= waiter.send(outcome.clone()).is_ok();
        }
        match outcome {
            Err(err) => {
                tracing::debug!(kind = self.kind, name, id = %id, error = %err, "work failed; name freed");
            }
            Ok(_) if delivered => {
                inner.names.insert(name.to_string(), Entry::Held { id });
            }
            Ok(created) => {
                let generation = inner.next_generation;
                inner.next_generation += 1;
                inner.names.insert(name.to_string(), Entry::Unclaimed { id: created.clone(), generation });
                drop(inner);
                tracing::warn!(
                    kind = self.kind, name, id = %created, ttl_secs = self.unclaimed_ttl.as_secs(),
                    "created, but the caller went away: keeping it for a retry"
                );
                let reservations = self.clone();
                let name = name.to_string();
                tokio::spawn(async move {
                    tokio::time::sleep(reservations.unclaimed_ttl).await;
                    let expired = {
                        let mut inner = reservations.lock();
                        let still_unclaimed = matches!(
                            inner.names.get(&name),
                            Some(Entry::Unclaimed { generation: g, .. }) if *g == generation
                        );
                        if still_unclaimed {
                            inner.names.remove(&name);
                        }
                        still_unclaimed
                    };
                    if expired {
                        tracing::warn!(kind = reservations.kind, name = %name, id = %created, "nobody claimed it: cleaning up");
                        cleanup(created).await;
                    }
                });
            }
        }
    }
}

/// Completes the reservation when the work ends, or, if the work task dies without
/// finishing (a panic), frees the name and tells the waiters.
struct Finisher {
    reservations: Reservations,
    name: String,
    cleanup: Option<Cleanup>,
}

impl Finisher {
    fn finish(mut self, outcome: Outcome) {
        if let Some(cleanup) = self.cleanup.take() {
            self.reservations.complete(&self.name, outcome, cleanup);
        }
    }
}

impl Drop for Finisher {
    fn drop(&mut self) {
        if self.cleanup.take().is_some() {
            tracing::error!(kind = self.reservations.kind, name = %self.name, "the work task died without finishing");
            let outcome = Err(RuntimeError::Internal(format!(
                "creating {} {:?} failed unexpectedly; see berthd's log",
                self.reservations.kind, self.name
            )));
            self.reservations.complete(&self.name, outcome, Box::new(|_| Box::pin(async {})));
        }
    }
}

/// A cleanup that does nothing (for tests and for work without side effects).
pub fn no_cleanup() -> Cleanup {
    Box::new(|_| Box::pin(async {}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Notify;

    const TTL: Duration = Duration::from_secs(120);

    fn recording_cleanup(log: Arc<Mutex<Vec<String>>>) -> Cleanup {
        Box::new(move |id| {
            Box::pin(async move {
                log.lock().unwrap().push(id);
            })
        })
    }

    #[tokio::test]
    async fn success_holds_the_name_until_released() {
        let r = Reservations::new("pod sandbox", TTL);
        let id = r.run_reserved("p", "id1", async { Ok("id1".to_string()) }, no_cleanup()).await.unwrap();
        assert_eq!(id, "id1");
        assert_eq!(r.holder("p").as_deref(), Some("id1"));
        let err = r.run_reserved("p", "id2", async { Ok("id2".to_string()) }, no_cleanup()).await.unwrap_err();
        assert!(matches!(&err, RuntimeError::AlreadyExists(m) if m.contains("id1") && m.contains("\"p\"")), "{err:?}");
        r.release("p", "other");
        assert!(r.holder("p").is_some(), "only the holder releases");
        r.release("p", "id1");
        assert_eq!(r.holder("p"), None);
        assert_eq!(r.run_reserved("p", "id3", async { Ok("id3".to_string()) }, no_cleanup()).await.unwrap(), "id3");
    }

    #[tokio::test]
    async fn failure_frees_the_name() {
        let r = Reservations::new("pod sandbox", TTL);
        let err = r
            .run_reserved("p", "id1", async { Err(RuntimeError::InvalidArgument("bad".into())) }, no_cleanup())
            .await
            .unwrap_err();
        assert_eq!(err, RuntimeError::InvalidArgument("bad".into()));
        assert_eq!(r.holder("p"), None);
    }

    #[tokio::test]
    async fn a_retry_waits_for_the_work_in_flight_and_gets_its_result() {
        let r = Reservations::new("pod sandbox", TTL);
        let gate = Arc::new(Notify::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let work = |id: &'static str| {
            let gate = gate.clone();
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                gate.notified().await;
                Ok(id.to_string())
            }
        };
        let first = tokio::spawn({
            let r = r.clone();
            let w = work("id1");
            async move { r.run_reserved("p", "id1", w, no_cleanup()).await }
        });
        tokio::task::yield_now().await;
        while r.holder("p").is_none() {
            tokio::task::yield_now().await;
        }
        let retry = tokio::spawn({
            let r = r.clone();
            let w = work("id2");
            async move { r.run_reserved("p", "id2", w, no_cleanup()).await }
        });
        tokio::task::yield_now().await;
        gate.notify_one();
        assert_eq!(first.await.unwrap().unwrap(), "id1");
        assert_eq!(retry.await.unwrap().unwrap(), "id1");
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the retry must not run the work again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_caller_leaves_the_result_for_the_retry() {
        let r = Reservations::new("pod sandbox", TTL);
        let cleaned = Arc::new(Mutex::new(Vec::new()));
        let work = async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok("id1".to_string())
        };
        // The caller gives up after 1 s (kubelet's deadline); the work goes on.
        let gave_up = tokio::time::timeout(Duration::from_secs(1), r.run_reserved("p", "id1", work, recording_cleanup(cleaned.clone()))).await;
        assert!(gave_up.is_err());
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(r.holder("p").as_deref(), Some("id1"), "kept for the retry");
        let retried = r.run_reserved("p", "id2", async { Ok("id2".to_string()) }, no_cleanup()).await.unwrap();
        assert_eq!(retried, "id1");
        // Claimed: the TTL passing does not clean it up.
        tokio::time::sleep(TTL * 2).await;
        assert!(cleaned.lock().unwrap().is_empty());
        assert_eq!(r.holder("p").as_deref(), Some("id1"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unclaimed_result_is_cleaned_up_after_the_ttl() {
        let r = Reservations::new("pod sandbox", TTL);
        let cleaned = Arc::new(Mutex::new(Vec::new()));
        let work = async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok("id1".to_string())
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), r.run_reserved("p", "id1", work, recording_cleanup(cleaned.clone()))).await;
        tokio::time::sleep(Duration::from_secs(10) + TTL - Duration::from_secs(2)).await;
        assert!(cleaned.lock().unwrap().is_empty(), "not before the TTL");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(*cleaned.lock().unwrap(), ["id1"]);
        assert_eq!(r.holder("p"), None, "the name is free again");
    }

    #[tokio::test(start_paused = true)]
    async fn released_unclaimed_result_is_not_cleaned_up_twice() {
        let r = Reservations::new("pod sandbox", TTL);
        let cleaned = Arc::new(Mutex::new(Vec::new()));
        let work = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok("id1".to_string())
        };
        let _ = tokio::time::timeout(Duration::from_millis(10), r.run_reserved("p", "id1", work, recording_cleanup(cleaned.clone()))).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        // kubelet saw the pod in ListPodSandbox and removed it.
        r.release("p", "id1");
        tokio::time::sleep(TTL * 2).await;
        assert!(cleaned.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_dying_work_task_frees_the_name() {
        let r = Reservations::new("pod sandbox", TTL);
        let work = async {
            if true {
                panic!("bug in the work");
            }
            Ok(String::new())
        };
        let err = r.run_reserved("p", "id1", work, no_cleanup()).await.unwrap_err();
        assert!(matches!(err, RuntimeError::Internal(_)), "{err:?}");
        assert_eq!(r.holder("p"), None);
    }
}
