//! Plans the firmware's static buffers from the model and noise chosen at build time (the
//! script is shared with the other firmware crate).
include!("../build_common.rs");
