//! Size of an image as transferred: config blob plus every layer blob of its manifest.

use std::io::Read;

use anyhow::Context;
use serde::Deserialize;

#[derive(Deserialize)]
struct Descriptor {
    size: u64,
}

#[derive(Deserialize)]
struct Manifest {
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<serde_json::Value>,
}

pub fn total_bytes(reader: impl Read) -> anyhow::Result<u64> {
    let manifest: Manifest = serde_json::from_reader(reader).context("parsing manifest JSON")?;
    if manifest.manifests.is_some() {
        anyhow::bail!("got an image index; give the platform manifest instead");
    }
    let layers = manifest.layers.context("manifest has no layers")?;
    let config = manifest.config.map(|c| c.size).unwrap_or(0);
    Ok(config + layers.iter().map(|layer| layer.size).sum::<u64>())
}
