//! Harness for berth's integration tests: a real `berthd` in a throwaway root, CRI clients
//! over its unix socket, and checks that nothing leaked when it is gone.
//!
//! The suite runs against the binaries in the workspace's target dir; cargo does not build
//! other packages' binaries for tests, so `hack/test` runs `cargo build --workspace --bins`
//! first. `BERTHD_BIN` points the harness at another binary.
//!
//! Every test starts its own [`Berthd`] (and its own registry, from `berth-imagegen`) so
//! tests are independent and can run in parallel. Dropping a [`Berthd`] stops it, unmounts
//! anything left under its root and removes its directories, also when the test failed; a
//! failing test prints berthd's log.

pub mod berthd;
pub mod cri;
pub mod cri_log;
pub mod fixtures;
pub mod leaks;
pub mod network;
pub mod paths;
pub mod proxy;
pub mod runtime;
pub mod store;
pub mod timing;
pub mod token_proxy;

pub use berthd::Berthd;
pub use cri::{ImageClient, RuntimeClient};
pub use runtime::{Pod, RuntimeEnv};
