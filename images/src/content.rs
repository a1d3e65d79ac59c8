//! The content-addressed blob store under `<root>/content`.
//!
//! Planned API (disk side):
//! - `ContentStore::open(root) -> Result<ContentStore>`
//! - `blob_path(&Digest) -> PathBuf`, `contains(&Digest) -> bool`, `read(&Digest) -> Result<Vec<u8>>`
//! - `write_blob(&Digest, &[u8]) -> Result<()>` (small blobs: manifests, configs; verified)
//! - `delete(&Digest)`, `list() -> Result<Vec<Digest>>`
