//! Criterion benchmarks of followup live in `benches/`; this library is empty.
