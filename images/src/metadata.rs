//! Image records and leases in the shared redb database.
//!
//! Three tables, all owned by the image store:
//! - `images.images`: image id (`sha256:<config hex>`) -> JSON of [`Image`];
//! - `images.names`: normalised tag or digest reference -> image id (the index
//!   `resolve` uses; it always agrees with the `repo_tags`/`repo_digests` of the records,
//!   because both change in the same write transaction);
//! - `images.leases`: holder (a container id) -> JSON of [`Lease`].
//!
//! JSON keeps the records readable and lets [`Image`] grow fields with `serde(default)`.

use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Image;

const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images.images");
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("images.names");
const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("images.leases");

/// What a holder (container) keeps alive: the snapshots of its image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub image_id: String,
    /// Chain ids of the snapshots the holder's rootfs is made of.
    pub chain_ids: Vec<String>,
}

/// What [`Metadata::put_image`] did to other images whose names moved to the new one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// Images that lost their last name and were deleted.
    pub removed: Vec<String>,
}

/// The image store's tables in the shared database.
#[derive(Clone)]
pub struct Metadata {
    db: Arc<Database>,
}

fn db_err(e: impl std::fmt::Display) -> Error {
    Error::Database(e.to_string())
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Database(format!("{what} record {key} is unreadable: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(db_err)
}

impl Metadata {
    /// Creates the tables if they do not exist yet.
    pub fn open(db: Arc<Database>) -> Result<Self> {
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(IMAGES).map_err(db_err)?;
        txn.open_table(NAMES).map_err(db_err)?;
        txn.open_table(LEASES).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(Metadata { db })
    }

    pub fn get_image(&self, id: &str) -> Result<Option<Image>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(IMAGES).map_err(db_err)?;
        match table.get(id).map_err(db_err)? {
            Some(v) => Ok(Some(decode("image", id, v.value())?)),
            None => Ok(None),
        }
    }

    /// The image id a normalised tag or digest reference points at.
    pub fn lookup_name(&self, name: &str) -> Result<Option<String>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(NAMES).map_err(db_err)?;
        Ok(table.get(name).map_err(db_err)?.map(|v| v.value().to_string()))
    }

    pub fn list_images(&self) -> Result<Vec<Image>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(IMAGES).map_err(db_err)?;
        let mut images = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            images.push(decode("image", k.value(), v.value())?);
        }
        Ok(images)
    }

    /// Records `image` (merging names with an existing record of the same id) and points
    /// all its names at it, in one transaction. A name that pointed at another image is
    /// taken from that image; an image left without any name is deleted, as containerd
    /// does when a tag moves. Returns the stored record.
    pub fn put_image(&self, image: &Image) -> Result<(Image, PutOutcome)> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let mut outcome = PutOutcome::default();
        let stored;
        {
            let mut images = txn.open_table(IMAGES).map_err(db_err)?;
            let mut names = txn.open_table(NAMES).map_err(db_err)?;
            let mut merged = image.clone();
            if let Some(old) = images.get(image.id.as_str()).map_err(db_err)? {
                let old: Image = decode("image", &image.id, old.value())?;
                for t in old.repo_tags {
                    if !merged.repo_tags.contains(&t) {
                        merged.repo_tags.push(t);
                    }
                }
                for d in old.repo_digests {
                    if !merged.repo_digests.contains(&d) {
                        merged.repo_digests.push(d);
                    }
                }
                merged.pinned |= old.pinned;
            }
            merged.repo_tags.sort();
            merged.repo_digests.sort();
            for name in merged.repo_tags.iter().chain(merged.repo_digests.iter()) {
                let previous = names.insert(name.as_str(), merged.id.as_str()).map_err(db_err)?.map(|v| v.value().to_string());
                let Some(previous) = previous.filter(|p| *p != merged.id) else { continue };
                // The name moves: take it from the image that had it.
                let loaded = images.get(previous.as_str()).map_err(db_err)?.map(|v| v.value().to_vec());
                let Some(bytes) = loaded else { continue };
                let mut other: Image = decode("image", &previous, &bytes)?;
                other.repo_tags.retain(|t| t != name);
                other.repo_digests.retain(|d| d != name);
                if other.repo_tags.is_empty() && other.repo_digests.is_empty() {
                    images.remove(previous.as_str()).map_err(db_err)?;
                    tracing::info!(image = %previous, moved = %name, "image lost its last name and is removed");
                    outcome.removed.push(previous);
                } else {
                    images.insert(previous.as_str(), encode(&other)?.as_slice()).map_err(db_err)?;
                    tracing::info!(image = %previous, moved = %name, "name moved to a newer image");
                }
            }
            images.insert(merged.id.as_str(), encode(&merged)?.as_slice()).map_err(db_err)?;
            stored = merged;
        }
        txn.commit().map_err(db_err)?;
        Ok((stored, outcome))
    }

    /// Deletes the image record and every name pointing at it. Returns the record.
    pub fn remove_image(&self, id: &str) -> Result<Option<Image>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed;
        {
            let mut images = txn.open_table(IMAGES).map_err(db_err)?;
            let mut names = txn.open_table(NAMES).map_err(db_err)?;
            let loaded = images.remove(id).map_err(db_err)?.map(|v| v.value().to_vec());
            removed = match loaded {
                Some(bytes) => Some(decode::<Image>("image", id, &bytes)?),
                None => None,
            };
            // Sweep the index rather than trusting the record's name lists, so that no
            // dangling name can survive even a record written by an older version.
            names.retain(|_, v| v != id).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }

    pub fn put_lease(&self, holder: &str, lease: &Lease) -> Result<()> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut leases = txn.open_table(LEASES).map_err(db_err)?;
            leases.insert(holder, encode(lease)?.as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// Removes `holder`'s lease; `false` if it had none.
    pub fn remove_lease(&self, holder: &str) -> Result<bool> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let existed;
        {
            let mut leases = txn.open_table(LEASES).map_err(db_err)?;
            existed = leases.remove(holder).map_err(db_err)?.is_some();
        }
        txn.commit().map_err(db_err)?;
        Ok(existed)
    }

    pub fn get_lease(&self, holder: &str) -> Result<Option<Lease>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(LEASES).map_err(db_err)?;
        match table.get(holder).map_err(db_err)? {
            Some(v) => Ok(Some(decode("lease", holder, v.value())?)),
            None => Ok(None),
        }
    }

    pub fn list_leases(&self) -> Result<Vec<(String, Lease)>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(LEASES).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.push((k.value().to_string(), decode("lease", k.value(), v.value())?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ImageConfig;

    pub(crate) fn image(id: &str, tags: &[&str], digests: &[&str]) -> Image {
        Image {
            id: id.to_string(),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            manifest_digest: "sha256:m".into(),
            size: 42,
            chain_ids: vec!["sha256:c1".into()],
            config: ImageConfig { architecture: "amd64".into(), os: "linux".into(), ..Default::default() },
            config_json: "{}".into(),
            pulled_at_ns: 7,
            pinned: false,
        }
    }

    fn open(dir: &tempfile::TempDir) -> Metadata {
        let db = Arc::new(Database::create(dir.path().join("meta.redb")).unwrap());
        Metadata::open(db).unwrap()
    }

    #[test]
    fn round_trip_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let img = image("sha256:aa", &["r/a:1"], &["r/a@sha256:m"]);
        {
            let md = open(&dir);
            md.put_image(&img).unwrap();
            md.put_lease("ctr1", &Lease { image_id: img.id.clone(), chain_ids: img.chain_ids.clone() }).unwrap();
        }
        let md = open(&dir);
        assert_eq!(md.get_image("sha256:aa").unwrap().unwrap(), img);
        assert_eq!(md.lookup_name("r/a:1").unwrap().as_deref(), Some("sha256:aa"));
        assert_eq!(md.lookup_name("r/a@sha256:m").unwrap().as_deref(), Some("sha256:aa"));
        assert_eq!(md.list_images().unwrap(), vec![img.clone()]);
        assert_eq!(md.list_leases().unwrap().len(), 1);
        assert!(md.remove_lease("ctr1").unwrap());
        assert!(!md.remove_lease("ctr1").unwrap());
        assert_eq!(md.remove_image("sha256:aa").unwrap().unwrap().id, "sha256:aa");
        assert_eq!(md.lookup_name("r/a:1").unwrap(), None);
        assert!(md.list_images().unwrap().is_empty());
    }

    #[test]
    fn names_merge_and_tags_move() {
        let dir = tempfile::tempdir().unwrap();
        let md = open(&dir);
        md.put_image(&image("sha256:old", &["r/a:1", "r/a:2"], &[])).unwrap();
        // Same image pulled under another tag: names are merged.
        let (merged, _) = md.put_image(&image("sha256:old", &["r/a:3"], &[])).unwrap();
        assert_eq!(merged.repo_tags, vec!["r/a:1", "r/a:2", "r/a:3"]);
        // r/a:1 moves to a new image; the old one keeps its other tags.
        let (_, out) = md.put_image(&image("sha256:new", &["r/a:1"], &[])).unwrap();
        assert!(out.removed.is_empty());
        assert_eq!(md.get_image("sha256:old").unwrap().unwrap().repo_tags, vec!["r/a:2", "r/a:3"]);
        assert_eq!(md.lookup_name("r/a:1").unwrap().as_deref(), Some("sha256:new"));
        // Moving the remaining tags deletes the old image.
        let (_, out) = md.put_image(&image("sha256:new", &["r/a:2", "r/a:3"], &[])).unwrap();
        assert_eq!(out.removed, vec!["sha256:old"]);
        assert_eq!(md.get_image("sha256:old").unwrap(), None);
    }
}
