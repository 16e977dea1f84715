//! The demo (see `demo.rs`) built with omni-core's `short-timers-for-tests`
//! feature: Rekey-After-Time 8 s, Reject-After-Time 12 s, Keepalive 2 s, ...
//! (omni-core/src/constants.rs). NEVER FOR PRODUCTION: it exists so the HIL
//! tests see the device rekey in seconds. hil-tests/run.sh builds it alone,
//! into `firmware/target/short-timers-for-tests/`, so the feature never
//! reaches the `demo` binary:
//!
//! ```text
//! cargo build --release --features short-timers-for-tests \
//!     --bin demo-short-timers-for-tests --target-dir ../target/short-timers-for-tests
//! ```
#![no_std]
#![no_main]

#[cfg(not(feature = "short-timers-for-tests"))]
compile_error!("demo-short-timers-for-tests needs the `short-timers-for-tests` feature");

include!("../demo_app.rs");
