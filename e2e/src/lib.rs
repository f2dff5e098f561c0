//! Shared by the benchmarks and cross-process tests of this crate.

pub mod cpu;
pub mod spawn;
