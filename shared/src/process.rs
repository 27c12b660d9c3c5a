//! Process plumbing both daemons' `main` shares: the runtime they serve on and the
//! two-stage stop on SIGTERM/SIGINT (the first drains, the second stops at once). A
//! start-up error ends the process through `main`'s `anyhow::Result`: its chain of
//! causes on stderr, exit code 1.

use std::future::Future;

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::systemd::Notifier;

/// Runs `future` to completion on a multi-threaded runtime with every driver on: what
/// each daemon serves on.
pub fn block_on<F: Future>(future: F) -> std::io::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(future))
}

/// SIGTERM and SIGINT, the signals that stop a daemon. Once installed, neither kills
/// the process any more: what they do is up to the holder.
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Installs the handlers; needs a running Tokio runtime.
    pub fn install() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
    }

    /// The two-stage stop, in a task of its own: at the first signal, tells the service
    /// manager (`STOPPING=1`) and runs `drain` (finish what is in flight, take nothing
    /// new); at the second, runs `now` (stop without waiting).
    pub fn spawn_two_stage(
        mut self,
        notifier: Notifier,
        drain: impl FnOnce() + Send + 'static,
        now: impl FnOnce() + Send + 'static,
    ) {
        tokio::spawn(async move {
            self.recv().await;
            notifier.stopping();
            drain();
            self.recv().await;
            now();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_signal_drains_and_the_second_stops() {
        let (drained_tx, drained) = tokio::sync::oneshot::channel();
        let (stopped_tx, stopped) = tokio::sync::oneshot::channel();
        StopSignals::install().expect("handlers").spawn_two_stage(
            Notifier::from_env(),
            move || drained_tx.send(()).expect("drain once"),
            move || stopped_tx.send(()).expect("stop once"),
        );
        let raise = |sig| {
            let pid = std::process::id().to_string();
            let ok = std::process::Command::new("kill")
                .args([sig, pid.as_str()])
                .status()
                .expect("kill")
                .success();
            assert!(ok, "kill {sig}");
        };
        let wait = std::time::Duration::from_secs(5);
        raise("-TERM");
        tokio::time::timeout(wait, drained)
            .await
            .expect("drain in time")
            .expect("drain ran");
        raise("-INT");
        tokio::time::timeout(wait, stopped)
            .await
            .expect("stop in time")
            .expect("stop ran");
    }
}
