//! berth-cri
