//! Tests that measure time or memory, or saturate the CPU. They live in their own test binary so
//! that nothing else of the suite runs beside them, whatever order the binaries run in: `cargo
//! test` runs one test binary at a time, and `.config/nextest.toml` gives each of these tests
//! every nextest slot. Within the binary, `exclusive_cpu` keeps them from overlapping.

mod common;

/// One module per feature, in `tests/quiet/`.
mod quiet {
    mod load_shedding;
    mod memory;
    mod propagation;
    mod timing;
}
