//! `vnc-bench`: load generator for vnc-relay. Stand-in servers (`echo`, `source`,
//! `desktop`, and the `proxy` baseline) and client measurements (`throughput`,
//! `latency`, `conns`, `mixed`) against `tcp://`, `ws://` or `sio://` (socket.io) targets, the last two also
//! over TLS (`wss://`, `sios://`). Client modes end by themselves and print a summary,
//! then one `RESULT {json}` line for scripts.
//!
//! The modules, each importing only from those listed after it:
//! - `throughput`, `latency`, `conns`, `mixed`, `kick`, `handover`, `control`: the measurements (`control` over
//!   control's REST API); `server`: the stand-in servers;
//! - `session`: one open session of a `conns` run;
//! - `target`: the flags every client mode shares, the run's targets, and one connect
//!   (RFB handshake included);
//! - `ping`: one timed echo round trip;
//! - `rfb`: the RFB handshake (both sides) and ping framing;
//! - `client`: one connection (TCP, WebSocket or socket.io) and its send/receive calls;
//! - `endpoint`: one target URL, parsed and resolved;
//! - `sio_client`: the lean socket.io client;
//! - `lean_ws`: the lean WebSocket reader (its upgrade is the socket.io client's too);
//! - `sio_wire`, `recv_count`, `stream` (plain TCP or TLS), `stats`, `report`, `procfs`:
//!   small parts that import nothing of the tool.

#![forbid(unsafe_code)]

mod client;
mod conns;
mod control;
mod endpoint;
mod handover;
mod kick;
mod latency;
mod lean_ws;
mod mixed;
mod ping;
mod procfs;
mod recv_count;
mod report;
mod rfb;
mod server;
mod session;
mod sio_client;
mod sio_wire;
mod stats;
mod stream;
mod target;
mod throughput;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "vnc-bench", version, about)]
struct Cli {
    /// Tokio worker threads (default: one per CPU). Fewer leaves more CPU to the relay
    /// under test when both run on one machine.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// TCP echo server: the stand-in container for latency tests.
    Echo(server::EchoArgs),
    /// TCP server writing a constant buffer as fast as each peer reads.
    Source(server::SourceArgs),
    /// TCP server streaming FramebufferUpdates on a timer and echoing key releases.
    Desktop(server::DesktopArgs),
    /// Baseline TCP-to-TCP proxy (copy_bidirectional, 256 KiB buffers).
    Proxy(server::ProxyArgs),
    /// Baseline WebSocket-to-TCP relay (tokio-tungstenite, 256 KiB reads, no RFB; wss://
    /// with a certificate).
    WsProxy(server::WsProxyArgs),
    /// Baseline socket.io-to-TCP relay (socketioxide defaults, `vnc:data` events).
    SioProxy(server::ProxyArgs),
    /// Read everything the target sends; report bytes per second.
    Throughput(throughput::ThroughputArgs),
    /// Sequential ping-pong on one connection; report RTT percentiles.
    Latency(latency::LatencyArgs),
    /// Many concurrent sessions: connect results, RTT under load, relay RSS per session.
    Conns(conns::ConnsArgs),
    /// Many sessions, each streaming updates and timing its key strokes' echoes.
    Mixed(mixed::MixedArgs),
    /// Kick to session end: publish kicks on the control channel, time each.
    Kick(kick::KickArgs),
    /// Hand-over of control: grant to the next viewer, time until every viewer is told.
    Handover(handover::HandoverArgs),
    /// VNC tokens minted per second through control's API.
    ControlTokens(control::TokensArgs),
    /// Control's job queue overhead: enqueue to job finished, with an immediate runtime.
    ControlQueue(control::QueueArgs),
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the cause chain on one line, without a backtrace.
            eprintln!("vnc-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = cli.threads {
        anyhow::ensure!(n > 0, "--threads must be at least 1");
        builder.worker_threads(n);
    }
    let runtime = builder.build()?;
    runtime.block_on(async move {
        match cli.mode {
            Mode::Echo(a) => server::echo(a).await,
            Mode::Source(a) => server::source(a).await,
            Mode::Desktop(a) => server::desktop(a).await,
            Mode::Proxy(a) => server::proxy(a).await,
            Mode::WsProxy(a) => server::ws_proxy(a).await,
            Mode::SioProxy(a) => server::sio_proxy(a).await,
            Mode::Throughput(a) => throughput::run(a).await,
            Mode::Latency(a) => latency::run(a).await,
            Mode::Conns(a) => conns::run(a).await,
            Mode::Mixed(a) => mixed::run(a).await,
            Mode::Kick(a) => kick::run(a).await,
            Mode::Handover(a) => handover::run(a).await,
            Mode::ControlTokens(a) => control::tokens(a).await,
            Mode::ControlQueue(a) => control::queue(a).await,
        }
    })?;
    // Don't wait for blocking-pool threads (e.g. a stuck resolver) on the way out.
    runtime.shutdown_background();
    Ok(())
}
