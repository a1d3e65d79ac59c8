//! berth.v1.Progress (`proto/berth.proto`): a pull whose progress a client can watch.
//!
//! CRI PullImage answers once, at the end; berthctl wants bytes per layer while it runs.
//! This service pulls through the same store as PullImage (so concurrent pulls of one image
//! still share the work) and turns the store's per-chunk [`PullProgress`] updates into
//! coalesced snapshots of every layer: a few messages per second whatever the chunk size,
//! plus one whenever a layer changes state, so a finished layer is never reported late.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_images::PullProgress;
use k8s_cri::v1::AuthConfig;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::errors::{image_error_status, task_failed_status};
use crate::image::{credentials_from, ImageBackend};

/// The generated messages, server and client of `berth.v1`.
pub mod proto {
    tonic::include_proto!("berth.v1");
}

use proto::progress_server::{Progress, ProgressServer};
use proto::{LayerProgress, LayerState, PullProgressEvent, PullWithProgressRequest};

/// How often a snapshot is sent while bytes arrive and no layer changed state.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(100);

/// Snapshots waiting for a slow client; the forwarder coalesces while the channel is full.
const STREAM_DEPTH: usize = 8;

/// The Progress service over the image store `B`.
pub struct ProgressService<B> {
    store: Arc<B>,
}

impl<B: ImageBackend> ProgressService<B> {
    pub fn new(store: Arc<B>) -> Self {
        Self { store }
    }

    /// The tonic service to add beside CRI's.
    pub fn into_server(self) -> ProgressServer<Self> {
        ProgressServer::new(self)
    }
}

#[tonic::async_trait]
impl<B: ImageBackend> Progress for ProgressService<B> {
    type PullWithProgressStream = ReceiverStream<Result<PullProgressEvent, Status>>;

    async fn pull_with_progress(
        &self,
        request: Request<PullWithProgressRequest>,
    ) -> Result<Response<Self::PullWithProgressStream>, Status> {
        let request = request.into_inner();
        let reference = request.image.trim().to_string();
        if reference.is_empty() {
            return Err(Status::invalid_argument(
                "PullWithProgress: the request names no image: set image to a reference such as docker.io/library/busybox:latest",
            ));
        }
        let credentials = credentials_from(AuthConfig {
            username: request.username,
            password: request.password,
            auth: request.auth,
            server_address: String::new(),
            identity_token: request.identity_token,
            registry_token: request.registry_token,
        });
        tracing::info!(%reference, authenticated = credentials.is_some(), "pulling image with progress");

        let (updates_tx, updates_rx) = mpsc::unbounded_channel::<PullProgress>();
        let (events_tx, events_rx) = mpsc::channel(STREAM_DEPTH);
        // Its own task, as in PullImage: a client that goes away does not cancel the
        // download, which then lands in the store for the next attempt.
        let store = Arc::clone(&self.store);
        let task_reference = reference.clone();
        let pull = tokio::spawn(
            async move { store.pull_with_progress(&task_reference, credentials, updates_tx).await }.in_current_span(),
        );
        tokio::spawn(forward(reference, pull, updates_rx, events_tx).in_current_span());
        Ok(Response::new(ReceiverStream::new(events_rx)))
    }
}

/// Turns the store's updates into snapshots on `events` until the pull ends, then sends the
/// final snapshot with the image ref, or the error PullImage would have answered.
async fn forward(
    reference: String,
    pull: tokio::task::JoinHandle<berth_images::error::Result<berth_images::Image>>,
    mut updates: mpsc::UnboundedReceiver<PullProgress>,
    events: mpsc::Sender<Result<PullProgressEvent, Status>>,
) {
    let started = Instant::now();
    let mut layers = LayerTable::default();
    let mut ticker = tokio::time::interval(SNAPSHOT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unsent = false;
    // The store drops its sender when the pull returns, which ends this loop.
    loop {
        tokio::select! {
            update = updates.recv() => match update {
                Some(update) => {
                    let state_changed = layers.apply(update, started.elapsed().as_nanos() as u64);
                    unsent = true;
                    if state_changed && !send(&events, layers.snapshot(started, String::new())).await {
                        return;
                    }
                    if state_changed {
                        unsent = false;
                    }
                }
                None => break,
            },
            _ = ticker.tick(), if unsent => {
                // A full channel means a slow client: skip this snapshot, the next one
                // carries the same information and more.
                match events.try_send(Ok(layers.snapshot(started, String::new()))) {
                    Ok(()) => unsent = false,
                    Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => return client_left(&reference),
                }
            }
        }
    }
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let last = match pull.await {
        Ok(Ok(image)) => {
            tracing::info!(%reference, id = %image.id, size = image.size, elapsed_ms, "pulled image with progress");
            Ok(layers.snapshot(started, image.id))
        }
        Ok(Err(err)) => {
            tracing::warn!(%reference, error = %err, elapsed_ms, "pull with progress failed");
            Err(image_error_status(&err))
        }
        Err(join_err) => Err(task_failed_status("pulling an image", join_err)),
    };
    if events.send(last).await.is_err() {
        client_left(&reference);
    }
}

async fn send(events: &mpsc::Sender<Result<PullProgressEvent, Status>>, event: PullProgressEvent) -> bool {
    events.send(Ok(event)).await.is_ok()
}

fn client_left(reference: &str) {
    tracing::debug!(%reference, "progress client went away; the pull goes on");
}

/// Every layer seen so far, in first-seen order (a pull has a handful of layers: a Vec).
#[derive(Default)]
struct LayerTable {
    layers: Vec<LayerProgress>,
}

impl LayerTable {
    /// Records `update`, which arrived `now_ns` into the pull; true when the layer is new or
    /// changed state.
    fn apply(&mut self, update: PullProgress, now_ns: u64) -> bool {
        let state_of = |update: &PullProgress, first: bool| match (update.done, first) {
            // The store reports a layer it did not download (snapshot or blob already on
            // the node) as done straight away, without a byte of progress before.
            (true, true) => LayerState::Exists,
            (true, false) => LayerState::Done,
            (false, _) => LayerState::Downloading,
        };
        match self.layers.iter_mut().find(|layer| layer.digest == update.digest) {
            Some(layer) => {
                let state = if layer.state == LayerState::Exists as i32 {
                    LayerState::Exists
                } else {
                    state_of(&update, false)
                };
                let changed = layer.state != state as i32;
                layer.state = state as i32;
                layer.bytes_done = update.downloaded.max(layer.bytes_done);
                layer.bytes_total = update.total;
                changed
            }
            None => {
                let state = state_of(&update, true);
                self.layers.push(LayerProgress {
                    digest: update.digest,
                    bytes_done: update.downloaded,
                    bytes_total: update.total,
                    state: state as i32,
                    started_ns: now_ns,
                });
                true
            }
        }
    }

    fn snapshot(&self, started: Instant, image_ref: String) -> PullProgressEvent {
        PullProgressEvent { layers: self.layers.clone(), image_ref, elapsed_ns: started.elapsed().as_nanos() as u64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::fake::{image, FakeStore};
    use tokio_stream::StreamExt;

    fn update(digest: &str, downloaded: u64, total: u64, done: bool) -> PullProgress {
        PullProgress { digest: digest.into(), downloaded, total, done }
    }

    #[test]
    fn layer_table_tracks_states_in_first_seen_order() {
        let mut table = LayerTable::default();
        assert!(table.apply(update("sha256:b", 10, 100, false), 5), "new layer");
        assert!(!table.apply(update("sha256:b", 50, 100, false), 6), "more bytes is no state change");
        assert!(table.apply(update("sha256:a", 7, 7, true), 7), "cached layer");
        assert!(table.apply(update("sha256:b", 100, 100, true), 8), "finished");
        assert_eq!(table.layers[0].started_ns, 5, "started when first seen");
        let snapshot = table.snapshot(Instant::now(), String::new());
        let summary: Vec<_> = snapshot.layers.iter().map(|l| (l.digest.as_str(), l.bytes_done, l.state)).collect();
        assert_eq!(
            summary,
            vec![("sha256:b", 100, LayerState::Done as i32), ("sha256:a", 7, LayerState::Exists as i32)]
        );
    }

    #[tokio::test]
    async fn fake_store_pull_ends_with_the_image_ref() {
        let id_hex = "a".repeat(64);
        let store = Arc::new(FakeStore::with(vec![image(&id_hex, "r/busybox:1", None)]));
        let service = ProgressService::new(store);
        let request = PullWithProgressRequest { image: "r/busybox:1".into(), ..Default::default() };
        let stream = service.pull_with_progress(Request::new(request)).await.expect("stream").into_inner();
        let events: Vec<_> = stream.collect().await;
        let last = events.last().expect("an event").as_ref().expect("ok");
        assert_eq!(last.image_ref, format!("sha256:{id_hex}"));
    }

    #[tokio::test]
    async fn errors_keep_pull_image_codes() {
        let service = ProgressService::new(Arc::new(FakeStore::with(vec![])));
        let status = service
            .pull_with_progress(Request::new(PullWithProgressRequest { image: " ".into(), ..Default::default() }))
            .await
            .expect_err("empty image");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let request = PullWithProgressRequest { image: "r/missing:1".into(), ..Default::default() };
        let mut stream = service.pull_with_progress(Request::new(request)).await.expect("stream").into_inner();
        let status = stream.next().await.expect("one item").expect_err("unknown image");
        assert_eq!(status.code(), tonic::Code::NotFound);
    }
}
