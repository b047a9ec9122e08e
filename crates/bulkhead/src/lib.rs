//! What the `bulkhead` and `bulkhead-supervisor` binaries share: the driver registry.

pub mod drivers;
