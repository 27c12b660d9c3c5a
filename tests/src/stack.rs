//! The usual test stack: Redis, a key pair, the RFB fixture registered as running
//! container `c1` of tenant `t1`, and one relay.

use crate::fixture::Fixture;
use crate::keys::TestKeys;
use crate::redis::RedisServer;
use crate::relay::RelayProcess;

pub struct Stack {
    pub redis: RedisServer,
    pub keys: TestKeys,
    pub fixture: Fixture,
    pub relay: RelayProcess,
}

impl Stack {
    /// Starts the stack; `fixture_args` and `relay_args` are extra flags.
    pub async fn start(fixture_args: &[&str], relay_args: &[&str]) -> anyhow::Result<Stack> {
        Stack::start_on(RedisServer::start().await?, fixture_args, relay_args).await
    }

    /// The stack on a Redis of the caller's (one server or a cluster).
    pub async fn start_on(
        redis: RedisServer,
        fixture_args: &[&str],
        relay_args: &[&str],
    ) -> anyhow::Result<Stack> {
        let keys = TestKeys::new();
        let fixture = Fixture::start(fixture_args).await?;
        redis
            .put_container("c1", "t1", "running", fixture.port())
            .await;
        let relay = RelayProcess::start(&redis.url(), &keys.public, relay_args).await?;
        Ok(Stack {
            redis,
            keys,
            fixture,
            relay,
        })
    }

    /// A `ws://` URL with a fresh control token for `c1`.
    pub fn url(&self) -> String {
        self.relay
            .ws_url(&self.keys.token("c1", vnc_shared::token::Scope::Control))
    }
}
