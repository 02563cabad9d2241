//! Shared parts of followup's benchmarks; the criterion benchmarks live in `benches/`.

pub mod dispatch;
