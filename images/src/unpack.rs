//! Layer pipeline and safe tar extraction.
//!
//! Planned API (disk side):
//! - `Compression::{None, Gzip, Zstd}` from a layer media type.
//! - `apply_layer(snapshot_dir: &Path, reader: impl Read, compression, layer_digest) -> Result<Digest /*diff id*/>`
//! - `async fn fetch_layer(content: &ContentStore, snapshots: &SnapshotStore, layer: &LayerSpec,
//!        body: impl Stream<Item = Result<Bytes, E>> + Unpin, progress: impl Fn(u64)) -> Result<()>`
//!   streams `body` to a temp blob (hashing it) and, at the same time, through the
//!   decompressor into a temp snapshot dir (hashing the tar for the diff id); verifies both
//!   digests; then renames blob and snapshot into place. On any error removes both.
//!   `LayerSpec { digest, size, media_type, diff_id, chain_id }`.
