//! The cubecl kernels, one module per op family. Every kernel is bounds-checked and f32
//! throughout; all but the GEMM run one thread per output element.
pub mod elementwise;
pub mod gemm;
pub mod image;
pub mod layout;
pub mod reduce;
pub mod state;
