//! Process plumbing both daemons' `main` shares: the runtime they serve on, the
//! two-stage stop on SIGTERM/SIGINT (the first drains, the second stops at once), and
//! how a start-up error ends the process (its chain of causes on stderr, exit code 1).

use std::error::Error;
use std::fmt::Write as _;
use std::future::Future;
use std::process::ExitCode;

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

/// What `main` returns for the outcome of start-up and serving: success, or exit code 1
/// after printing the error on stderr as Rust prints an error returned from `main`
/// (`Error: `, the message, then its causes).
pub fn exit_code<E: Into<Box<dyn Error + Send + Sync>>>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", error_chain(&*e.into()));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes: the message, then `Caused by:` and one indented entry per
/// cause, numbered when there are several (the layout `anyhow` gives).
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut causes = Vec::new();
    let mut next = error.source();
    while let Some(cause) = next {
        causes.push(cause.to_string());
        next = cause.source();
    }
    if causes.is_empty() {
        return out;
    }
    out.push_str("\n\nCaused by:");
    let numbered = causes.len() > 1;
    for (n, cause) in causes.iter().enumerate() {
        let (first, rest) = if numbered {
            (format!("{n: >5}: "), "       ")
        } else {
            ("    ".to_owned(), "    ")
        };
        for (i, line) in cause.lines().enumerate() {
            let prefix = if i == 0 { first.as_str() } else { rest };
            let _ = write!(out, "\n{prefix}{line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{message}")]
    struct Layer {
        message: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn chain(messages: &[&'static str]) -> Layer {
        let mut error = None;
        for message in messages.iter().rev() {
            error = Some(Layer {
                message,
                source: error.map(Box::new),
            });
        }
        error.expect("at least one message")
    }

    #[test]
    fn prints_causes_as_main_does() {
        assert_eq!(error_chain(&chain(&["binding"])), "binding");
        assert_eq!(
            error_chain(&chain(&["binding 127.0.0.1:1", "address in use"])),
            "binding 127.0.0.1:1\n\nCaused by:\n    address in use"
        );
        assert_eq!(
            error_chain(&chain(&[
                "starting",
                "loading the key",
                "no such file\nat /k"
            ])),
            "starting\n\nCaused by:\n    0: loading the key\n    1: no such file\n       at /k"
        );
    }

    #[test]
    fn exit_code_says_failure_for_an_error() {
        assert_eq!(exit_code::<std::io::Error>(Ok(())), ExitCode::SUCCESS);
        assert_eq!(exit_code(Err(chain(&["bad"]))), ExitCode::FAILURE);
    }

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
