//! cairn's benchmarks live in `benches/` (`./localstack/bench [store|caching|all]`).
//! They are a crate of their own so that the raw clients they measure cairn against
//! are compiled only for them.
