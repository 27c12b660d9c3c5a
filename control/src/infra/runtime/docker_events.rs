//! The Docker engine's event feed, narrowed to managed containers and mapped to
//! (cid, state) changes. The feed reconnects with back-off when it ends or fails, and
//! asks the engine to replay from the last event it saw, so a short gap loses nothing
//! (events may then repeat, which reconcile tolerates).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::stream::{BoxStream, StreamExt as _};

use super::docker_engine::Engine;
use super::{LABEL_CID, LABEL_MANAGED, LABEL_PLANE, RuntimeState};

/// Pause before the first reconnect; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Longest pause between reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Container actions that change what reconcile cares about.
const ACTIONS: [&str; 4] = ["start", "die", "stop", "destroy"];

/// Exit code reported when a `die` event carries none.
const UNKNOWN_EXIT_CODE: i64 = -1;

type Events = BoxStream<'static, Result<EventMessage, DockerError>>;

/// The reconnecting feed; `stream` turns it into a never-ending stream.
struct Feed {
    inner: Arc<Engine>,
    /// The engine's stream, if connected.
    events: Option<Events>,
    backoff: Duration,
    /// Time (Unix seconds) of the last event seen; a reconnect replays from there.
    since: Option<i64>,
}

pub(super) fn stream(inner: Arc<Engine>) -> BoxStream<'static, (String, RuntimeState)> {
    let feed = Feed {
        inner,
        events: None,
        backoff: FIRST_BACKOFF,
        since: None,
    };
    futures_util::stream::unfold(feed, |mut feed| async move {
        let change = feed.next_change().await;
        Some((change, feed))
    })
    .boxed()
}

impl Feed {
    async fn next_change(&mut self) -> (String, RuntimeState) {
        loop {
            let events = match &mut self.events {
                Some(events) => events,
                None => match subscribe(&self.inner, self.since).await {
                    Ok(events) => self.events.insert(events),
                    Err(e) => {
                        tracing::warn!(error = %e, "docker events: cannot subscribe; retrying");
                        self.pause().await;
                        continue;
                    }
                },
            };
            match events.next().await {
                Some(Ok(message)) => {
                    self.backoff = FIRST_BACKOFF;
                    if let Some(time) = message.time {
                        self.since = Some(time);
                    }
                    if let Some(change) = change(&self.inner, message).await {
                        return change;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "docker events: stream failed; reconnecting");
                    self.events = None;
                    self.pause().await;
                }
                None => {
                    tracing::debug!("docker events: stream ended; reconnecting");
                    self.events = None;
                    self.pause().await;
                }
            }
        }
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

/// Subscribes to managed containers' events, replaying from `since` if set.
async fn subscribe(inner: &Engine, since: Option<i64>) -> Result<Events, super::RuntimeError> {
    let docker = inner.client().await?;
    let filters = HashMap::from([
        ("type", vec!["container".to_owned()]),
        (
            "label",
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_PLANE}={}", inner.plane),
            ],
        ),
        ("event", ACTIONS.iter().map(|a| (*a).to_owned()).collect()),
    ]);
    let mut options = EventsOptionsBuilder::new().filters(&filters);
    let since = since.map(|s| s.to_string());
    if let Some(since) = &since {
        options = options.since(since);
    }
    Ok(docker.events(Some(options.build())).boxed())
}

/// The state change an event means, if it concerns a managed container.
async fn change(inner: &Engine, message: EventMessage) -> Option<(String, RuntimeState)> {
    let actor = message.actor?;
    let attributes = actor.attributes?;
    let cid = attributes.get(LABEL_CID)?.clone();
    let state = match message.action.as_deref()? {
        "start" => RuntimeState::Running,
        "die" => RuntimeState::Exited {
            code: attributes
                .get("exitCode")
                .and_then(|c| c.parse().ok())
                .unwrap_or(UNKNOWN_EXIT_CODE),
        },
        "destroy" => RuntimeState::Missing,
        // `stop` carries no exit code and follows `die`; report what the engine
        // says now (it may already be gone).
        "stop" => match inner.state_of(actor.id.as_deref()?).await {
            Ok(state) => state,
            Err(e) => {
                tracing::debug!(container.id = %cid, error = %e, "docker events: state after stop");
                return None;
            }
        },
        _ => return None,
    };
    Some((cid, state))
}
