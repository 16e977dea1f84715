//! `omni-daemon`: the Linux host of omni-core.
//!
//! The binary is a small CLI that dispatches to a mode. The first is
//! `wg`, a drop-in userspace WireGuard following the contract wireguard-go
//! and boringtun-cli follow (`omni-daemon IFNAME` creates the TUN interface
//! and serves the UAPI socket `/var/run/wireguard/IFNAME.sock`, so `wg`,
//! `wg-quick` and friends work unchanged). `--mode nucleus` runs the Nucleus
//! (signaling server, [`nucleus_server`]) and `--nucleus HOST:PORT --cluster
//! NAME --vip IP` an edge of a cluster ([`edge`]); their flags and TOML file
//! are in [`config`], `omni-daemon status` asks an edge over [`status`]. The
//! modes share the same modules:
//!
//! - [`tun`]: the TUN device (creation, name, current network namespace);
//! - [`netlink`]: link MTU queries and link-change notifications;
//! - [`udp`]: the WireGuard UDP sockets (IPv4 + IPv6, fwmark, UDP GSO/GRO);
//! - [`offload`]: TUN segmentation offloads (cutting and merging super-packets);
//! - [`device`]: the node and its sockets, configuration as UAPI sees it;
//! - [`uapi`]: the cross-platform UAPI protocol and its unix-socket server;
//! - [`event_loop`]: the data plane (a thread per direction, `ppoll` until the node's next deadline).

mod batch;
mod clock;
mod config;
mod daemon;
mod device;
mod edge;
mod event_loop;
mod identity;
mod ifconfig;
mod netlink;
mod nucleus_server;
mod offload;
mod status;
mod tun;
mod uapi;
mod udp;
mod wg;

use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Userspace WireGuard interface driven by `wg` over the UAPI socket.
    Wg,
    /// The Nucleus: signaling server for clusters of edges (no interface).
    Nucleus,
    /// An edge of a cluster (implied by --nucleus HOST:PORT).
    Edge,
}

#[derive(Debug, Parser)]
#[command(
    name = "omni-daemon",
    version,
    about = "Userspace WireGuard (omni-core) for Linux",
    after_help = "Show a running edge's peers: omni-daemon status [-i IFNAME]"
)]
struct Cli {
    /// Interface to create (`wg` mode), e.g. wg0.
    interface: Option<String>,

    /// Stay in the foreground instead of detaching (also: WG_PROCESS_FOREGROUND=1).
    #[arg(short, long)]
    foreground: bool,

    /// What to run [default: wg; edge when --nucleus is given].
    #[arg(long, value_enum)]
    mode: Option<Mode>,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive
    /// list (overrides RUST_LOG; default info).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,

    #[command(flatten)]
    mesh: config::MeshArgs,
}

/// `omni-daemon status [-i IFNAME]`: what an edge reports.
#[derive(Debug, Parser)]
#[command(name = "omni-daemon status", about = "Show the peers of a running edge")]
struct StatusCli {
    /// The edge's interface.
    #[arg(short, long, default_value = config::DEFAULT_INTERFACE)]
    interface: String,
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "status") {
        let cli = StatusCli::parse_from(std::env::args_os().skip(1));
        return match status::query(&cli.interface) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("omni-daemon: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut cli = Cli::parse();
    let mode = cli.mode.map(|m| match m {
        Mode::Wg => config::ModeKind::Wg,
        Mode::Nucleus => config::ModeKind::Nucleus,
        Mode::Edge => config::ModeKind::Edge,
    });
    let plan = match config::resolve(mode, std::mem::take(&mut cli.mesh), cli.interface.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("omni-daemon: {e}");
            return ExitCode::from(2);
        }
    };
    let explicit_log = cli.log_level.is_some() || std::env::var_os("RUST_LOG").is_some();
    let filter = match &cli.log_level {
        Some(level) => EnvFilter::try_new(level),
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info")),
    };
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("omni-daemon: bad log level: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let result = match plan {
        config::Plan::Nucleus(opts) => nucleus_server::run(opts),
        config::Plan::Edge(opts) => edge::run(*opts),
        config::Plan::Wg => {
            let Some(interface) = cli.interface else {
                eprintln!("omni-daemon: usage: omni-daemon [-f/--foreground] INTERFACE-NAME");
                return ExitCode::from(2);
            };
            let foreground = cli.foreground || std::env::var("WG_PROCESS_FOREGROUND").is_ok_and(|v| v == "1");
            wg::run(wg::Options { interface, foreground, keep_stderr: explicit_log })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
