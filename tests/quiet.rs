//! Tests that measure time or saturate the CPU. They live in their own test binary, which cargo
//! runs after the main suite has finished, so that the machine is quiet while they measure; within
//! it, `exclusive_cpu` keeps them from overlapping.

mod common;

/// One module per feature, in `tests/quiet/`.
mod quiet {
    mod load_shedding;
    mod memory;
    mod propagation;
    mod timing;
}
