//! The OmniNervous demo device on QEMU mps2-an385: brings the tunnel up to
//! the configured peer(s) and answers on its VIP: ICMP echo (smoltcp), UDP
//! echo on port 7, and a control port (9) for the HIL tests:
//! `stats` → counters, `reboot` → system reset (SYSRESETREQ), `exit` → the
//! device checks its own counters and ends QEMU with a semihosting exit code
//! (0 if it completed a handshake and echoed at least one datagram).
//!
//! Configuration: the semihosting command line (QEMU `-append`), see
//! `omni_firmware::config`, plus `ip=10.0.2.15/24 gw=10.0.2.2` for the outer
//! network, `state=/path` for the persisted wall-clock ceiling and
//! `config=/path` for more of the configuration in a host file (secrets).
//! With `nucleus= nucleus_key= cluster= secret=` the device joins a cluster
//! through a Nucleus (members become peers; its wall clock follows the
//! Nucleus's); `stats` then reports the registration and the members' paths,
//! and `send ADDR:PORT TEXT` makes the device send TEXT from its VIP and
//! answer with the reply it got (to show it reaches other members).
#![no_std]
#![no_main]

include!("../demo_app.rs");
