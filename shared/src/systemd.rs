//! systemd integration both daemons share: readiness, status and watchdog
//! notifications (`sd_notify(3)`), and listening sockets handed over by socket
//! activation (`sd_listen_fds(3)`).
//!
//! Outside systemd (no `NOTIFY_SOCKET`, no `LISTEN_FDS` for this process) every call
//! here does nothing, so the binaries call them unconditionally.

use std::future::Future;
use std::net::TcpListener;
use std::time::Duration;

use sd_notify::NotifyState;

/// How often a ready daemon refreshes its `STATUS=` line (sent only when it changed),
/// unless the watchdog pings more often: then it goes along with every ping.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// How often readiness is checked until `READY=1` has gone out, so it goes out
/// promptly once Redis answers.
pub const READY_POLL: Duration = Duration::from_millis(100);

/// A passed socket's name when `LISTEN_FDNAMES` is not set (as `sd_listen_fds_with_names(3)`
/// reports it). systemd itself always names them: `FileDescriptorName=`, by default
/// the socket unit's name.
pub const UNNAMED: &str = "unknown";

/// Notifications to the service manager. Cheap to clone; a no-op without
/// `NOTIFY_SOCKET`.
#[derive(Clone, Debug)]
pub struct Notifier {
    /// `NOTIFY_SOCKET` is set: systemd (or a test) listens.
    enabled: bool,
    /// `WATCHDOG_USEC`, when it is meant for this process (`WATCHDOG_PID`).
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// `READY=1`: start-up is complete.
    pub fn ready(&self) {
        self.send(&[NotifyState::Ready]);
    }

    /// `STATUS=`: one line for `systemctl status` (line breaks become spaces).
    pub fn status(&self, line: &str) {
        let line = one_line(line);
        self.send(&[NotifyState::Status(&line)]);
    }

    /// `RELOADING=1` with the monotonic time: a reload (SIGHUP) has begun; `ready`
    /// ends it.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// `WATCHDOG=1`: still alive.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// How often to ping the watchdog, if it is on: half of `WATCHDOG_USEC`, as
    /// `sd_watchdog_enabled(3)` advises, so one late ping is not yet fatal.
    pub fn watchdog_ping_interval(&self) -> Option<Duration> {
        ping_interval(self.watchdog)
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            // The manager went away or the socket is wrong: nothing to do but say so.
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

fn ping_interval(watchdog: Option<Duration>) -> Option<Duration> {
    watchdog
        .filter(|d| !d.is_zero())
        .map(|d| (d / 2).max(Duration::from_millis(1)))
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Pings the watchdog at half its interval, from a task on the caller's runtime, for
/// as long as the runtime runs. If the runtime wedges (every worker blocked), the
/// pings stop and systemd restarts the service. `None` when the watchdog is off.
pub fn spawn_watchdog(notifier: &Notifier) -> Option<tokio::task::JoinHandle<()>> {
    if !notifier.is_enabled() {
        return None;
    }
    let every = notifier.watchdog_ping_interval()?;
    let notifier = notifier.clone();
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        // After a stall, ping once and carry on from now rather than in a burst.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            notifier.watchdog();
        }
    }))
}

/// What a daemon says of itself for systemd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Takes work: listeners bound, keys loaded, Redis answered, not draining.
    pub ready: bool,
    /// The `STATUS=` line.
    pub status: String,
}

/// Sends `READY=1` the first time `probe` says ready, and `STATUS=` whenever the
/// status line changes (after `READY=1` when both go out at once). Probes every
/// [`READY_POLL`] until ready, then every [`STATUS_INTERVAL`] (or the watchdog ping
/// interval, if shorter). Runs until the task is dropped; returns at once when there
/// is no service manager to tell.
pub async fn report<F, Fut>(notifier: Notifier, probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Health>,
{
    if !notifier.is_enabled() {
        return;
    }
    let settled = notifier
        .watchdog_ping_interval()
        .map_or(STATUS_INTERVAL, |w| w.min(STATUS_INTERVAL));
    report_loop(settled, probe, |note| match note {
        Note::Ready => notifier.ready(),
        Note::Status(line) => notifier.status(&line),
    })
    .await
}

/// One notification [`report_loop`] sends.
#[derive(Debug, PartialEq, Eq)]
enum Note {
    Ready,
    Status(String),
}

async fn report_loop<F, Fut>(settled: Duration, mut probe: F, mut send: impl FnMut(Note))
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Health>,
{
    let mut sent_ready = false;
    let mut last_status = None;
    loop {
        let health = probe().await;
        if health.ready && !sent_ready {
            send(Note::Ready);
            sent_ready = true;
        }
        if last_status.as_ref() != Some(&health.status) {
            send(Note::Status(health.status.clone()));
            last_status = Some(health.status);
        }
        tokio::time::sleep(if sent_ready { settled } else { READY_POLL }).await;
    }
}

/// Why the sockets passed by the service manager can't be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("invalid {var}={value:?}")]
    Invalid { var: &'static str, value: String },
    #[error("LISTEN_FDNAMES names {names} sockets but LISTEN_FDS is {fds}")]
    NameCount { names: usize, fds: usize },
    #[error("passed socket {index} ({name}): {source}")]
    Socket {
        index: usize,
        name: String,
        source: std::io::Error,
    },
    #[error("{count} sockets would be the public listener ({names}); name the admin one \"admin\"")]
    TooManyPublic { count: usize, names: String },
    #[error("two sockets are named {0:?}")]
    Duplicate(String),
}

/// Listening TCP sockets the service manager passed to this process (socket
/// activation), each with its `FileDescriptorName=`.
#[derive(Debug, Default)]
pub struct ListenFds {
    sockets: Vec<(String, TcpListener)>,
}

impl ListenFds {
    /// Takes the sockets passed to this process: `LISTEN_FDS` descriptors from fd 3,
    /// named by `LISTEN_FDNAMES`. Like `sd_listen_fds(3)`, only if `LISTEN_PID` is this
    /// process: variables inherited from a parent that was activated are ignored.
    ///
    /// Call it once, before any other thread starts: it unsets `LISTEN_PID` and
    /// `LISTEN_FDS`, so a child process won't take the sockets for its own.
    pub fn take_from_env() -> Result<ListenFds, ActivationError> {
        let var = |name| std::env::var(name).ok();
        let names = passed_names(
            var("LISTEN_PID").as_deref(),
            var("LISTEN_FDS").as_deref(),
            var("LISTEN_FDNAMES").as_deref(),
            std::process::id(),
        )?;
        if names.is_empty() {
            return Ok(ListenFds::default());
        }
        // listenfd checks LISTEN_PID again, validates each descriptor as a TCP
        // listener, sets FD_CLOEXEC and unsets the variables.
        let mut passed = listenfd::ListenFd::from_env();
        let mut sockets = Vec::with_capacity(names.len());
        for (index, name) in names.into_iter().enumerate() {
            let socket_error = |source| ActivationError::Socket {
                index,
                name: name.clone(),
                source,
            };
            let listener = passed
                .take_tcp_listener(index)
                .map_err(socket_error)?
                .ok_or_else(|| socket_error(std::io::ErrorKind::NotFound.into()))?;
            sockets.push((name, listener));
        }
        Ok(ListenFds { sockets })
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Splits the sockets into the public listener and the one named `second`
    /// (`admin`): the socket named `second` is that one, and the one other socket,
    /// whatever its name, is the public one. Either may be absent (the daemon binds it).
    pub fn split(
        self,
        second: &str,
    ) -> Result<(Option<TcpListener>, Option<TcpListener>), ActivationError> {
        let names: Vec<&str> = self.sockets.iter().map(|(n, _)| n.as_str()).collect();
        let (public_at, second_at) = assign(&names, second)?;
        let mut public = None;
        let mut other = None;
        for (i, (_, listener)) in self.sockets.into_iter().enumerate() {
            if Some(i) == public_at {
                public = Some(listener);
            } else if Some(i) == second_at {
                other = Some(listener);
            }
        }
        Ok((public, other))
    }
}

/// The names of the sockets passed to process `pid`, by the rules of
/// `sd_listen_fds_with_names(3)`: none unless `LISTEN_PID` is `pid` and `LISTEN_FDS`
/// is set; `unknown` for each when `LISTEN_FDNAMES` is not set.
fn passed_names(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    fd_names: Option<&str>,
    pid: u32,
) -> Result<Vec<String>, ActivationError> {
    let invalid = |var, value: &str| ActivationError::Invalid {
        var,
        value: value.to_owned(),
    };
    let Some(listen_pid) = listen_pid else {
        return Ok(Vec::new());
    };
    let for_pid: u32 = listen_pid
        .trim()
        .parse()
        .map_err(|_| invalid("LISTEN_PID", listen_pid))?;
    if for_pid != pid {
        return Ok(Vec::new());
    }
    let Some(listen_fds) = listen_fds else {
        return Ok(Vec::new());
    };
    let count: usize = listen_fds
        .trim()
        .parse()
        .map_err(|_| invalid("LISTEN_FDS", listen_fds))?;
    match fd_names {
        None => Ok(vec![UNNAMED.to_owned(); count]),
        Some(_) if count == 0 => Ok(Vec::new()),
        Some(names) => {
            let names: Vec<String> = names.split(':').map(str::to_owned).collect();
            if names.len() != count {
                return Err(ActivationError::NameCount {
                    names: names.len(),
                    fds: count,
                });
            }
            Ok(names)
        }
    }
}

/// Which of the named sockets is public and which is `second`.
fn assign(names: &[&str], second: &str) -> Result<(Option<usize>, Option<usize>), ActivationError> {
    let mut second_at = None;
    let mut public = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if *name == second {
            if second_at.replace(i).is_some() {
                return Err(ActivationError::Duplicate(second.to_owned()));
            }
        } else {
            public.push(i);
        }
    }
    match public.as_slice() {
        [] => Ok((None, second_at)),
        [one] => Ok((Some(*one), second_at)),
        many => Err(ActivationError::TooManyPublic {
            count: many.len(),
            names: many
                .iter()
                .map(|&i| names[i])
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    const PID: u32 = 4242;

    #[test]
    fn sockets_are_for_this_process_only() {
        let names = |pid, fds, fdnames| passed_names(pid, fds, fdnames, PID).unwrap();
        assert_eq!(names(Some("4242"), Some("1"), None), vec!["unknown"]);
        assert_eq!(
            names(Some("4242"), Some("2"), Some("public:admin")),
            vec!["public", "admin"]
        );
        // Inherited from an activated parent, or set by hand without a pid: not ours.
        assert!(names(Some("1"), Some("1"), None).is_empty());
        assert!(names(None, Some("1"), None).is_empty());
        assert!(names(Some("4242"), None, None).is_empty());
        assert!(names(Some("4242"), Some("0"), Some("")).is_empty());
    }

    #[test]
    fn malformed_variables_are_errors() {
        let err = |pid, fds, fdnames| passed_names(pid, fds, fdnames, PID).unwrap_err();
        assert!(matches!(
            err(Some("x"), Some("1"), None),
            ActivationError::Invalid {
                var: "LISTEN_PID",
                ..
            }
        ));
        assert!(matches!(
            err(Some("4242"), Some("-1"), None),
            ActivationError::Invalid {
                var: "LISTEN_FDS",
                ..
            }
        ));
        assert!(matches!(
            err(Some("4242"), Some("2"), Some("public")),
            ActivationError::NameCount { names: 1, fds: 2 }
        ));
    }

    #[test]
    fn admin_by_name_and_the_other_is_public_whatever_its_name() {
        assert_eq!(
            assign(&["public", "admin"], "admin").unwrap(),
            (Some(0), Some(1))
        );
        assert_eq!(
            assign(&["admin", "public"], "admin").unwrap(),
            (Some(1), Some(0))
        );
        // systemd's default name is the socket unit's.
        assert_eq!(
            assign(&["vnc-relay.socket"], "admin").unwrap(),
            (Some(0), None)
        );
        assert_eq!(assign(&["admin"], "admin").unwrap(), (None, Some(0)));
        assert_eq!(assign(&[], "admin").unwrap(), (None, None));
        assert!(matches!(
            assign(&["a", "b"], "admin"),
            Err(ActivationError::TooManyPublic { count: 2, .. })
        ));
        assert!(matches!(
            assign(&["admin", "admin"], "admin"),
            Err(ActivationError::Duplicate(_))
        ));
    }

    #[test]
    fn watchdog_pings_at_half_the_interval() {
        assert_eq!(
            ping_interval(Some(Duration::from_secs(30))),
            Some(Duration::from_secs(15))
        );
        assert_eq!(ping_interval(Some(Duration::ZERO)), None);
        assert_eq!(ping_interval(None), None);
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
    }

    /// [`report_loop`] against a scripted probe, in paused time.
    #[tokio::test(start_paused = true)]
    async fn report_sends_ready_once_and_status_on_change() {
        let settled = Duration::from_secs(2);
        let script = Arc::new(Mutex::new(vec![
            (false, "starting"),
            (false, "starting"),
            (true, "serving 0"),
            (true, "serving 0"),
            (false, "not ready: redis unreachable"),
            (true, "serving 1"),
        ]));
        let probed_at = Arc::new(Mutex::new(Vec::new()));
        let probe = {
            let (script, probed_at) = (script.clone(), probed_at.clone());
            move || {
                probed_at.lock().unwrap().push(tokio::time::Instant::now());
                let next = {
                    let mut s = script.lock().unwrap();
                    (!s.is_empty()).then(|| s.remove(0))
                };
                async move {
                    match next {
                        Some((ready, status)) => Health {
                            ready,
                            status: status.to_owned(),
                        },
                        // Script done: never answer again.
                        None => std::future::pending().await,
                    }
                }
            }
        };
        let mut sent = Vec::new();
        let run = report_loop(settled, probe, |note| sent.push(note));
        // Paused time jumps ahead whenever the loop waits; the probe parks at the end.
        let _ = tokio::time::timeout(Duration::from_secs(3600), run).await;
        let status = |s: &str| Note::Status(s.to_owned());
        assert_eq!(
            sent,
            vec![
                status("starting"),
                Note::Ready,
                status("serving 0"),
                status("not ready: redis unreachable"),
                status("serving 1"),
            ]
        );
        // Quick polls until ready, then the settled interval.
        let at = probed_at.lock().unwrap();
        let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(
            gaps,
            vec![READY_POLL, READY_POLL, settled, settled, settled, settled]
        );
    }
}
