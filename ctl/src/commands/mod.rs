//! One module per berthctl command (being written).
