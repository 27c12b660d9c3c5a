//! Adapters to the outside world: Redis (container records, the job queue, the
//! relays' session registry, issued and revoked tokens, share links, the move of old
//! key names), the container runtimes
//! (Docker through bollard, or static hosts from config) and an OpenID Connect
//! issuer's keys.

pub mod migrate;
pub mod oidc;
pub mod passwords;
pub mod queue;
pub mod redis;
pub mod runtime;
pub mod sessions;
pub mod shares;
pub mod store;
pub mod tokens;
