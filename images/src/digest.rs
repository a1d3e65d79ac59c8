//! `sha256:<hex>` digests as a type, and a hasher that verifies while bytes stream.
//! (owned by the disk-side work: content/unpack/snapshot)
