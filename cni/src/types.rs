//! CNI spec types (being written).
