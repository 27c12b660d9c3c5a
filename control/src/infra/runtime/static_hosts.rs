//! The static runtime: VNC servers that already run somewhere, declared in config as
//! cid → endpoint. It reports them as running and manages no lifecycle.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt as _};
use futures_util::stream::{BoxStream, StreamExt as _};

use super::files::{DesktopFile, FileIn, FileOut};
use super::{ContainerSpec, Endpoint, Inspected, Runtime, RuntimeError, RuntimeState};

/// Why `start` and `stop` refuse.
const NOT_MANAGED: &str =
    "containers are declared in config; the static runtime does not manage their lifecycle";

/// Why the file calls refuse.
const NO_FILES: &str = "the static runtime has no file transfer: its desktops are hosts \
     control reaches only through their VNC port";

/// Endpoints declared in config.
#[derive(Clone, Debug)]
pub struct StaticRuntime {
    endpoints: BTreeMap<String, Endpoint>,
}

impl StaticRuntime {
    pub fn new(endpoints: BTreeMap<String, Endpoint>) -> Self {
        StaticRuntime { endpoints }
    }

    /// The declared endpoint of `cid`, if any.
    pub fn endpoint(&self, cid: &str) -> Option<&Endpoint> {
        self.endpoints.get(cid)
    }
}

impl Runtime for StaticRuntime {
    fn start<'a>(
        &'a self,
        _spec: &'a ContainerSpec,
    ) -> BoxFuture<'a, Result<Endpoint, RuntimeError>> {
        async { Err(RuntimeError::Unsupported(NOT_MANAGED)) }.boxed()
    }

    fn stop<'a>(
        &'a self,
        _cid: &'a str,
        _grace: Duration,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        async { Err(RuntimeError::Unsupported(NOT_MANAGED)) }.boxed()
    }

    fn state<'a>(&'a self, cid: &'a str) -> BoxFuture<'a, Result<RuntimeState, RuntimeError>> {
        let state = if self.endpoints.contains_key(cid) {
            RuntimeState::Running
        } else {
            RuntimeState::Missing
        };
        async move { Ok(state) }.boxed()
    }

    fn inspect<'a>(
        &'a self,
        _cid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Inspected>, RuntimeError>> {
        // Declared in config and registered at start-up: nothing to adopt.
        async { Ok(None) }.boxed()
    }

    fn list_managed(&self) -> BoxFuture<'_, Result<Vec<(String, RuntimeState)>, RuntimeError>> {
        let all = self
            .endpoints
            .keys()
            .map(|cid| (cid.clone(), RuntimeState::Running))
            .collect();
        async move { Ok(all) }.boxed()
    }

    fn events(&self) -> BoxStream<'static, (String, RuntimeState)> {
        // Nothing ever changes; an empty stream lets reconcile loops end their select arm.
        futures_util::stream::empty().boxed()
    }

    fn moves_files(&self) -> bool {
        false
    }

    fn upload<'a>(
        &'a self,
        _cid: &'a str,
        _name: &'a str,
        _size: u64,
        _body: FileIn,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        async { Err(RuntimeError::Unsupported(NO_FILES)) }.boxed()
    }

    fn list_files<'a>(
        &'a self,
        _cid: &'a str,
        _max: usize,
    ) -> BoxFuture<'a, Result<(Vec<DesktopFile>, bool), RuntimeError>> {
        async { Err(RuntimeError::Unsupported(NO_FILES)) }.boxed()
    }

    fn download<'a>(
        &'a self,
        _cid: &'a str,
        _name: &'a str,
    ) -> BoxFuture<'a, Result<FileOut, RuntimeError>> {
        async { Err(RuntimeError::Unsupported(NO_FILES)) }.boxed()
    }
}
