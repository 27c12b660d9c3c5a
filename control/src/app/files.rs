//! File transfer: who may move which file in or out of which desktop, the bounds, the
//! metrics, and the call to the runtime that streams the bytes.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use futures_util::stream::BoxStream;
use tokio::sync::OwnedSemaphorePermit;
use vnc_shared::schema::ContainerState;

use crate::domain::Container;
use crate::domain::files::{Direction, FileCaller, file_name_problem};
use crate::infra::runtime::files::{DesktopFile, FileIn};
use crate::infra::runtime::{Runtime, RuntimeError};
use crate::metrics::{FILE_BYTES, FILE_TRANSFERS};

use super::{App, AppError};

/// File transfers one replica runs at once (uploads and downloads; a listing is
/// not one): each holds an engine connection, and past this a caller gets 429 and
/// retries rather than queueing behind the others.
pub const MAX_TRANSFERS: usize = 16;

/// Files one listing shows at most (the rest are counted as `more`).
pub const MAX_LISTED: usize = 1000;

/// A file on its way out, counted when its stream ends (or is dropped).
pub struct Download {
    pub size: u64,
    pub body: BoxStream<'static, Result<Bytes, RuntimeError>>,
}

/// A listing of the download folder.
pub struct Listing {
    pub files: Vec<DesktopFile>,
    /// More files than [`MAX_LISTED`] were there.
    pub more: bool,
}

impl App {
    /// The running container `cid` that `who` may move a file `dir` in: 404 if it
    /// can't see it, 409 with the static runtime or unless it runs, 403 when its token
    /// (or its role's) doesn't allow the direction, or its token was revoked.
    async fn file_target(
        &self,
        who: &FileCaller,
        cid: &str,
        dir: Direction,
    ) -> Result<Container, AppError> {
        let c = match self.store.get(cid).await? {
            Some(c) if who.sees(&c) => c,
            _ => return Err(AppError::NotFound("container")),
        };
        if !self.engines.all()[0].runtime.moves_files() {
            return Err(AppError::Conflict(
                "the static runtime has no file transfer: its desktops are hosts control \
                 reaches only through their VNC port"
                    .into(),
            ));
        }
        if c.state != ContainerState::Running {
            return Err(AppError::Conflict(format!(
                "container is not running (state: {})",
                c.state.as_str()
            )));
        }
        if let Some(why) = who.refusal(&c, dir) {
            return Err(AppError::Forbidden(why));
        }
        if let FileCaller::Token(claims) = who {
            // A revoked token, or a revoked share's, moves nothing either.
            if self.tokens.is_revoked(&claims.jti).await? {
                return Err(AppError::Forbidden("the VNC token is revoked".into()));
            }
            if let Some(share) = &claims.share
                && self.shares.get(share).await?.is_none()
            {
                return Err(AppError::Forbidden("the share link is revoked".into()));
            }
        }
        Ok(c)
    }

    /// The runtime of the engine the container runs on.
    fn runtime_of(&self, c: &Container) -> Result<&dyn Runtime, AppError> {
        self.engines
            .of(c.engine.as_deref())
            .map(|e| e.runtime.as_ref())
            .map_err(AppError::Desktop)
    }

    /// A transfer slot, or 429.
    fn transfer_slot(&self, dir: Direction) -> Result<OwnedSemaphorePermit, AppError> {
        self.transfers.clone().try_acquire_owned().map_err(|_| {
            count(dir, "busy", 0);
            AppError::OverQuota(format!(
                "{MAX_TRANSFERS} file transfers are running on this replica: try again shortly"
            ))
        })
    }

    /// Streams an upload of `size` bytes into the desktop's upload folder as `name`.
    pub async fn upload(
        &self,
        who: &FileCaller,
        cid: &str,
        name: &str,
        size: u64,
        body: FileIn,
    ) -> Result<(), AppError> {
        let dir = Direction::Upload;
        let checked = async {
            if let Some(why) = file_name_problem(name) {
                return Err(AppError::Invalid(vec![why]));
            }
            let c = self.file_target(who, cid, dir).await?;
            let max = self.tunables.get().files_max_bytes;
            if size > max {
                return Err(AppError::TooLarge(format!(
                    "the file is {size} bytes, the largest allowed is {max}"
                )));
            }
            Ok(c)
        };
        let c = checked.await.inspect_err(|_| count(dir, "refused", 0))?;
        let _slot = self.transfer_slot(dir)?;
        match self.runtime_of(&c)?.upload(&c.id, name, size, body).await {
            Ok(()) => {
                count(dir, "ok", size);
                tracing::info!(container.id = %c.id, caller.sub = %who.sub(), file.size = size, "file uploaded");
                Ok(())
            }
            Err(e) => {
                count(dir, "failed", 0);
                tracing::info!(container.id = %c.id, caller.sub = %who.sub(), error = %e, "upload failed");
                Err(runtime_error(e))
            }
        }
    }

    /// The files of the desktop's download folder.
    pub async fn list_files(&self, who: &FileCaller, cid: &str) -> Result<Listing, AppError> {
        let c = self.file_target(who, cid, Direction::Download).await?;
        let (files, more) = self
            .runtime_of(&c)?
            .list_files(&c.id, MAX_LISTED)
            .await
            .map_err(runtime_error)?;
        Ok(Listing { files, more })
    }

    /// File `name` of the desktop's download folder, streamed; counted when it ends.
    pub async fn download(
        &self,
        who: &FileCaller,
        cid: &str,
        name: &str,
    ) -> Result<Download, AppError> {
        let dir = Direction::Download;
        let refused = |e: AppError| {
            count(dir, "refused", 0);
            e
        };
        if let Some(why) = file_name_problem(name) {
            return Err(refused(AppError::Invalid(vec![why])));
        }
        let c = self.file_target(who, cid, dir).await.map_err(refused)?;
        let slot = self.transfer_slot(dir)?;
        let out = self
            .runtime_of(&c)
            .map_err(refused)?
            .download(&c.id, name)
            .await
            .map_err(|e| refused(runtime_error(e)))?;
        let max = self.tunables.get().files_max_bytes;
        if out.size > max {
            return Err(refused(AppError::TooLarge(format!(
                "the file is {} bytes, the largest served is {max}",
                out.size
            ))));
        }
        Ok(Download {
            size: out.size,
            body: Box::pin(Counted {
                inner: out.body,
                size: out.size,
                sent: 0,
                outcome: None,
                _slot: slot,
            }),
        })
    }
}

/// What a runtime's refusal means to the caller.
fn runtime_error(e: RuntimeError) -> AppError {
    match e {
        RuntimeError::NotFound => AppError::NotFound("container"),
        RuntimeError::NoSuchFile => AppError::NotFound("file"),
        RuntimeError::Unsupported(why) => AppError::Conflict(why.to_owned()),
        e @ RuntimeError::MissingFolder(_) => AppError::Conflict(e.to_string()),
        e => AppError::Desktop(e),
    }
}

fn count(dir: Direction, outcome: &'static str, bytes: u64) {
    let d = dir.as_str();
    metrics::counter!(FILE_TRANSFERS, "direction" => d, "outcome" => outcome).increment(1);
    if bytes > 0 {
        metrics::counter!(FILE_BYTES, "direction" => d, "outcome" => outcome).increment(bytes);
    }
}

/// A download's bytes, counted: `ok` when all went out, `failed` when the engine
/// failed, `aborted` when the browser left first (the stream was dropped).
struct Counted {
    inner: BoxStream<'static, Result<Bytes, RuntimeError>>,
    size: u64,
    sent: u64,
    outcome: Option<&'static str>,
    /// The transfer slot, held until the stream ends.
    _slot: OwnedSemaphorePermit,
}

impl Stream for Counted {
    type Item = Result<Bytes, RuntimeError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.inner.as_mut().poll_next(cx);
        match &next {
            Poll::Ready(Some(Ok(chunk))) => {
                self.sent += chunk.len() as u64;
                // HTTP/1.1 may stop asking once `Content-Length` bytes went out.
                if self.sent == self.size && self.outcome.is_none() {
                    self.outcome = Some("ok");
                }
            }
            Poll::Ready(Some(Err(_))) => self.outcome = Some("failed"),
            Poll::Ready(None) if self.outcome.is_none() => {
                self.outcome = Some(if self.sent == self.size {
                    "ok"
                } else {
                    "failed"
                });
            }
            _ => {}
        }
        next
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        count(
            Direction::Download,
            self.outcome.unwrap_or("aborted"),
            self.sent,
        );
    }
}
