//! Time limits that stretch under emulation.
//!
//! In the qemu guest of `hack/vm-test` (TCG, no KVM) process creation is 40-80 times
//! slower than on the host, so every wait of the harness and the suites goes through
//! [`scaled`]. `hack/vm-test` sets `BERTH_TEST_TIME_SCALE`; on the host it is 1.

use std::sync::OnceLock;
use std::time::Duration;

/// `BERTH_TEST_TIME_SCALE` (a positive number, default 1).
pub fn scale() -> f64 {
    static SCALE: OnceLock<f64> = OnceLock::new();
    *SCALE.get_or_init(|| {
        std::env::var("BERTH_TEST_TIME_SCALE")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| *v >= 1.0)
            .unwrap_or(1.0)
    })
}

/// `duration` times [`scale`].
pub fn scaled(duration: Duration) -> Duration {
    duration.mul_f64(scale())
}

/// `secs` seconds times [`scale`].
pub fn secs(secs: u64) -> Duration {
    scaled(Duration::from_secs(secs))
}
