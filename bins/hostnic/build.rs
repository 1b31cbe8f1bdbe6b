//! Sets `HOSTNIC_COMMIT` (see scripts/build_info.rs).
include!("../../scripts/build_info.rs");
