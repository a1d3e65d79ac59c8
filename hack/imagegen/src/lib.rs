//! berth-imagegen: builds berth's test images from busybox-static, pushes them to an OCI
//! registry over plain HTTP, and runs a throwaway local registry for tests.
//!
//! ```no_run
//! use berth_imagegen::{push_image, push_standard, Compression, ImageSpec, Layer, LocalRegistry, RegistryOptions};
//!
//! let registry = LocalRegistry::start(RegistryOptions::default())?;
//! push_standard(&registry.addr(), "busybox")?; // busybox:latest and library/busybox:latest
//! let evil = Layer::new().raw_path("../../etc/evil", b"owned", 0o644);
//! let spec = ImageSpec { layers: vec![(evil, Compression::Gzip)], ..Default::default() };
//! let pushed = push_image(&registry.addr(), "hostile/traversal", "latest", &spec, None)?;
//! println!("{}", pushed.manifest_digest);
//! # anyhow::Ok(())
//! ```

pub mod image;
pub mod layer;
pub mod pause;
pub mod push;
pub mod registry;
pub mod standard;

pub use image::{media_types, Compression, Descriptor, Format, ImageConfig, ImageSpec, DEFAULT_PATH_ENV};
pub use layer::{busybox_applets, sha256_digest, BuiltLayer, Content, Entry, EntryKind, Layer, BUSYBOX_PATH};
pub use push::{push_image, push_image_to, push_index, push_index_to, Client, Pushed, PushedIndex};
pub use registry::{LocalRegistry, RegistryOptions};
pub use standard::{push_standard, push_standard_with, standard_image, standard_images, Build, NamedImage, PushedStandard};
