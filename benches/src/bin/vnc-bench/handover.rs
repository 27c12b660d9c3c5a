//! `handover`: how fast control of a desktop moves to another viewer, as every viewer
//! sees it. Opens one socket.io session per target URL (the viewers of one container,
//! on as many relay nodes as the URLs name, each with its own token of the container's
//! owner), makes the first the driver (`vnc:control:take`), then hands control round
//! the viewers: the driver emits `vnc:control:grant {session_id: next}` and the run
//! times from just before that emit (after a pause, `--interval`: the relay allows a
//! socket 8 control requests a second) to the moment the last viewer has read
//! `vnc:control` naming the next driver (and, per viewer, to each one's).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use serde_json::{Value, json};

use crate::client::{Conn, WsClient};
use crate::ping::micros;
use crate::report;
use crate::sio_client::{Event, SioConn};
use crate::stats::Summary;
use crate::target::{TargetArgs, Targets};

/// Read buffer per viewer; only small events arrive after the handshake.
const READ_BUF: usize = 16 * 1024;

#[derive(Args, Debug)]
pub struct HandoverArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Viewers (viewer i uses URL i of the list; each needs its own token).
    #[arg(long, default_value_t = 8)]
    pub viewers: usize,
    /// Hand-overs, one after another.
    #[arg(long, default_value_t = 1000)]
    pub handovers: usize,
    /// Pause before each hand-over: a socket may make 8 control requests a second, and
    /// each viewer grants once every `--viewers` hand-overs.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Bound on one hand-over reaching every viewer; exceeding it fails the run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub async fn run(args: HandoverArgs) -> Result<()> {
    ensure!(args.viewers >= 2, "--viewers must be at least 2");
    let targets = Targets::load(&args.target).await?;
    let mut viewers = Vec::with_capacity(args.viewers);
    for i in 0..args.viewers {
        let conn = targets
            .connect(
                i,
                WsClient::Tungstenite {
                    read_buffer: READ_BUF,
                },
            )
            .await
            .with_context(|| format!("opening viewer {i}"))?;
        let Conn::Sio(mut sio) = conn else {
            bail!("handover needs sio:// (or sios://) targets");
        };
        let me = wait_named(&mut sio, "vnc:self", args.timeout, |_| true).await?;
        let sid = me["session_id"]
            .as_str()
            .context("vnc:self without session_id")?
            .to_owned();
        viewers.push((sid, sio));
    }
    // The first viewer drives (it may already: the owner's first session takes a
    // free lease, and then nobody is told of a change).
    let take = json!({});
    ack(&mut viewers[0].1, "vnc:control:take", &take, args.timeout).await?;

    let mut all = Vec::with_capacity(args.handovers);
    let mut each = Vec::with_capacity(args.handovers * args.viewers);
    for h in 0..args.handovers {
        tokio::time::sleep(args.interval).await;
        let (from, to) = (h % args.viewers, (h + 1) % args.viewers);
        let next = viewers[to].0.clone();
        let sent = Instant::now();
        let grant = json!({ "session_id": next });
        let granter = &mut viewers[from].1;
        granter.emit("vnc:control:grant", &grant).await?;
        let answer = wait_ack(granter, args.timeout).await?;
        ensure!(answer["ok"] == true, "hand-over {h} refused: {answer}");
        for (_, sio) in &mut viewers {
            wait_control(sio, &next, args.timeout)
                .await
                .with_context(|| format!("hand-over {h}"))?;
            each.push(micros(sent.elapsed()));
        }
        all.push(micros(sent.elapsed()));
    }
    for (_, sio) in viewers {
        let _ = tokio::time::timeout(Duration::from_secs(1), sio.close()).await;
    }

    let (all, each) = (Summary::from_samples(all), Summary::from_samples(each));
    let (all_line, each_line) = (all.line(), each.line());
    println!(
        "handover {} viewers={} handovers={}",
        targets.label(),
        args.viewers,
        args.handovers
    );
    println!("  grant to every viewer told: {all_line}");
    println!("  grant to one viewer told:   {each_line}");
    report::result(&json!({
        "mode": "handover",
        "viewers": args.viewers,
        "handovers": args.handovers,
        "all_us": all.to_json(),
        "each_us": each.to_json(),
    }));
    Ok(())
}

/// Emits `name` and waits for its acknowledgement, which must say ok.
async fn ack(sio: &mut SioConn, name: &str, body: &Value, within: Duration) -> Result<()> {
    sio.emit(name, body).await?;
    let answer = wait_ack(sio, within).await?;
    ensure!(answer["ok"] == true, "{name} refused: {answer}");
    Ok(())
}

/// Waits for the next acknowledgement; events read meanwhile are kept for later.
async fn wait_ack(sio: &mut SioConn, within: Duration) -> Result<Value> {
    let mut events = Vec::new();
    let found = tokio::time::timeout(within, async {
        loop {
            match sio.next_event().await? {
                Event::Ack(answer) => return Ok(answer),
                named => events.push(named),
            }
        }
    })
    .await
    .context("no acknowledgement in time")?;
    for event in events.into_iter().rev() {
        sio.hold_first(event);
    }
    found
}

/// Waits for `vnc:control` naming `driver` (other events, acknowledgements among
/// them, stay for later when they are acknowledgements).
async fn wait_control(sio: &mut SioConn, driver: &str, within: Duration) -> Result<()> {
    wait_named(sio, "vnc:control", within, |c| c["driver"] == driver).await?;
    Ok(())
}

/// Waits for event `name` whose body `accept`s; acknowledgements read meanwhile are
/// kept for [`wait_ack`], other events dropped.
async fn wait_named(
    sio: &mut SioConn,
    name: &str,
    within: Duration,
    accept: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let mut acks = Vec::new();
    let found = tokio::time::timeout(within, async {
        loop {
            match sio.next_event().await? {
                Event::Named(n, body) if n == name && accept(&body) => return Ok(body),
                Event::Ack(answer) => acks.push(answer),
                Event::Named(..) => {}
            }
        }
    })
    .await
    .with_context(|| format!("no {name} in time"))?;
    for answer in acks {
        sio.hold(Event::Ack(answer));
    }
    found
}
