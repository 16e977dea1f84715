//! Diagnostics that compile to nothing unless `log` or `defmt` is enabled.
//! Never pass secrets (keys, chaining keys, plaintext) to these macros.

#[cfg(feature = "log")]
macro_rules! trace { ($($t:tt)*) => { log::trace!($($t)*) } }
#[cfg(feature = "log")]
#[allow(unused_macros)]
macro_rules! debug { ($($t:tt)*) => { log::debug!($($t)*) } }

#[cfg(feature = "defmt")]
macro_rules! trace { ($($t:tt)*) => { defmt::trace!($($t)*) } }
#[cfg(feature = "defmt")]
#[allow(unused_macros)]
macro_rules! debug { ($($t:tt)*) => { defmt::debug!($($t)*) } }

#[cfg(not(any(feature = "log", feature = "defmt")))]
macro_rules! trace { ($($t:tt)*) => {{ if false { let _ = ($($t)*); } }} }
#[cfg(not(any(feature = "log", feature = "defmt")))]
#[allow(unused_macros)]
macro_rules! debug { ($($t:tt)*) => {{ if false { let _ = ($($t)*); } }} }
