//! The route about where desktops run: the Docker engines of the pool, each with its
//! state and load; and its JSON shape. Its `#[utoipa::path]` is its entry in the
//! OpenAPI description.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::responses::{BadBearer, RedisFailed};
use crate::app::engines::EngineView;
use crate::domain::Caller;

type St = State<Arc<AppState>>;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(engines))
}

/// CPUs and memory: an engine's capacity, or what its desktops take.
#[derive(Serialize, ToSchema)]
struct Room {
    /// CPU cores.
    cpus: f64,
    /// Memory in MiB.
    memory_mb: u64,
}

/// One engine of the pool.
#[derive(Serialize, ToSchema)]
#[schema(as = Engine)]
struct EngineJson {
    /// Its name, as container records carry it.
    name: String,
    /// `up` when it answered a ping just now, else `down`.
    state: EngineState,
    /// What its desktops may take in all; `null` when unbounded (the engine of
    /// `docker_host`, the static runtime).
    capacity: Option<Room>,
    /// What the desktops control placed on it and has not removed take (their
    /// requested limits).
    used: Room,
    /// Those desktops (`unavailable` ones included).
    desktops: usize,
}

/// Whether an engine answers.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum EngineState {
    Up,
    Down,
}

impl From<EngineView> for EngineJson {
    fn from(e: EngineView) -> Self {
        EngineJson {
            name: e.name,
            state: if e.up {
                EngineState::Up
            } else {
                EngineState::Down
            },
            capacity: e.capacity.map(|c| Room {
                cpus: c.cpus,
                memory_mb: c.memory_mb,
            }),
            used: Room {
                cpus: e.load.cpus,
                memory_mb: e.load.memory_mb,
            },
            desktops: e.load.desktops,
        }
    }
}

/// The engines, in the configured order.
#[derive(Serialize, ToSchema)]
struct EngineList {
    engines: Vec<EngineJson>,
}

/// Every engine of the pool with its state and load; admins only (engines serve all
/// tenants). Each engine is pinged (at most 5 s each, all at once).
#[utoipa::path(
    get,
    path = "/v1/engines",
    operation_id = "listEngines",
    tag = "engines",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The engines", body = EngineList),
        (status = 403, description = "Not an admin", body = ErrorBody),
        BadBearer, RedisFailed,
    ),
)]
async fn engines(State(s): St, caller: Caller) -> Result<Json<EngineList>, ApiError> {
    let engines = s
        .app
        .engines(&caller)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(EngineList { engines }))
}
