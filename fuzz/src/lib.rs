//! The fuzz targets' checks. They live in `tests/fuzzing/` (shared with the stable test suite,
//! which replays the corpus through them); this library is that module.

#[path = "../../tests/fuzzing/mod.rs"]
mod checks;

pub use checks::*;
