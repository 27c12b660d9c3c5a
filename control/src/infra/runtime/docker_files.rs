//! Files in and out of a Docker desktop through the engine's archive API: an upload
//! is streamed in as a one-file tar (header, the browser's bytes as they come, end),
//! owned by the owner of the upload folder; a download is streamed out of the tar the
//! engine sends, untarred on the fly; a listing reads the download folder's tar
//! headers and drops its data. Nothing holds a whole file.

use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, DownloadFromContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};

use super::docker_engine::{API_TIMEOUT, Engine, raw};
use super::docker_model::{map_error, pick_existing, status, summary_is_running};
use super::files::{DesktopFile, FileIn, FileOut, folders};
use super::tar::{self, Event, Kind, TarReader};
use super::{RuntimeError, valid_cid};

/// Go's `os.FileMode` type bits (directory, symlink, device, pipe, socket, ...): a
/// regular file has none.
const GO_MODE_TYPE: u32 =
    (1 << 31) | (1 << 27) | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19);

/// A running desktop's Docker id and its upload and download folders.
struct Desktop {
    id: String,
    uploads: String,
    downloads: String,
}

impl Engine {
    /// The running container of `cid` and its folders (from its `HOME`).
    async fn desktop(&self, cid: &str) -> Result<Desktop, RuntimeError> {
        if !valid_cid(cid) {
            return Err(RuntimeError::NotFound);
        }
        let existing = self.list(Some(cid)).await?;
        let Some(summary) = pick_existing(&existing) else {
            return Err(RuntimeError::NotFound);
        };
        let (Some(id), Some(true)) = (&summary.id, summary.state.map(summary_is_running)) else {
            return Err(RuntimeError::Failed("the desktop is not running".into()));
        };
        let found = self.inspect(id).await?.ok_or(RuntimeError::NotFound)?;
        let home = found
            .config
            .and_then(|c| c.env)
            .unwrap_or_default()
            .into_iter()
            .find_map(|kv| kv.strip_prefix("HOME=").map(str::to_owned));
        let (uploads, downloads) = folders(home.as_deref());
        Ok(Desktop {
            id: id.clone(),
            uploads,
            downloads,
        })
    }

    /// The first entry of the archive of `path` (its owner, for a folder), reading no
    /// further than that entry's header.
    async fn first_entry(&self, id: &str, path: &str) -> Result<tar::Entry, RuntimeError> {
        let docker = self.client().await?;
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let mut body = docker.download_from_container(id, Some(options));
        let mut reader = TarReader::default();
        let read = async {
            loop {
                match reader.next_event().map_err(RuntimeError::Failed)? {
                    Some(Event::Entry(e)) => return Ok(e),
                    Some(Event::End) => {
                        return Err(RuntimeError::Failed(format!("{path}: an empty archive")));
                    }
                    Some(Event::Data(_)) => {}
                    None => match body.next().await {
                        Some(Ok(chunk)) => reader.push(chunk),
                        Some(Err(e)) => return Err(folder_error(path, e)),
                        None => {
                            return Err(RuntimeError::Failed(format!("{path}: archive ended")));
                        }
                    },
                }
            }
        };
        tokio::time::timeout(API_TIMEOUT, read)
            .await
            .map_err(|_| RuntimeError::Unavailable("the engine did not answer in time".into()))?
    }

    /// Streams `size` bytes of `body` into the desktop's upload folder as file `name`,
    /// owned by the folder's owner. The engine writes as the bytes come: a body that
    /// fails or ends early fails the call (and may leave a partial file).
    pub(super) async fn upload(
        &self,
        cid: &str,
        name: &str,
        size: u64,
        body: FileIn,
    ) -> Result<(), RuntimeError> {
        let desktop = self.desktop(cid).await?;
        let folder = self.first_entry(&desktop.id, &desktop.uploads).await?;
        if folder.kind != Kind::Directory {
            return Err(RuntimeError::MissingFolder(desktop.uploads));
        }
        let head = tar::file_header(name, size, folder.uid, folder.gid, unix_now());
        let tail = Bytes::from(
            [
                vec![0u8; tar::padding(size)],
                tar::end_of_archive().to_vec(),
            ]
            .concat(),
        );
        let archive = stream::once(async move { Ok(Bytes::from(head)) })
            .chain(exactly(body, size))
            .chain(stream::once(async move { Ok(tail) }));
        let docker = self.client().await?;
        let options = UploadToContainerOptionsBuilder::new()
            .path(&desktop.uploads)
            .build();
        // Not under API_TIMEOUT: the browser sets the pace; the API bounds its idle time.
        match docker
            .upload_to_container(
                &desktop.id,
                Some(options),
                bollard::body_try_stream(archive),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Err(RuntimeError::MissingFolder(desktop.uploads)),
            Err(e) => Err(map_error(e)),
        }
    }

    /// The regular files directly in the desktop's download folder, at most `max`
    /// (the second value: whether there were more).
    pub(super) async fn list_files(
        &self,
        cid: &str,
        max: usize,
    ) -> Result<(Vec<DesktopFile>, bool), RuntimeError> {
        let desktop = self.desktop(cid).await?;
        let docker = self.client().await?;
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(&desktop.downloads)
            .build();
        let mut body = docker.download_from_container(&desktop.id, Some(options));
        let mut reader = TarReader::default();
        let mut files = Vec::new();
        let mut top: Option<String> = None;
        let read = async {
            loop {
                match reader.next_event().map_err(RuntimeError::Failed)? {
                    Some(Event::Entry(e)) => {
                        // The first entry is the folder itself (`Downloads/`).
                        let Some(prefix) = &top else {
                            if e.kind != Kind::Directory {
                                return Err(RuntimeError::MissingFolder(desktop.downloads.clone()));
                            }
                            top = Some(e.path.clone());
                            continue;
                        };
                        let Some(name) = e.path.strip_prefix(prefix.as_str()) else {
                            continue;
                        };
                        if e.kind == Kind::File && !name.is_empty() && !name.contains('/') {
                            if files.len() == max {
                                return Ok(true);
                            }
                            files.push(DesktopFile {
                                name: name.to_owned(),
                                size: e.size,
                                modified: e.mtime,
                            });
                        }
                    }
                    Some(Event::Data(_)) => {}
                    Some(Event::End) => return Ok(false),
                    None => match body.next().await {
                        Some(Ok(chunk)) => reader.push(chunk),
                        Some(Err(e)) => return Err(folder_error(&desktop.downloads, e)),
                        None => return Ok(false),
                    },
                }
            }
        };
        let more = tokio::time::timeout(API_TIMEOUT, read)
            .await
            .map_err(|_| RuntimeError::Unavailable("the engine did not answer in time".into()))??;
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((files, more))
    }

    /// File `name` of the desktop's download folder: its size from the engine's stat,
    /// then its bytes out of the engine's archive as they come. Anything but a regular
    /// file (a folder, a link) is "not found".
    pub(super) async fn download(&self, cid: &str, name: &str) -> Result<FileOut, RuntimeError> {
        let desktop = self.desktop(cid).await?;
        let path = format!("{}/{name}", desktop.downloads);
        let docker = self.client().await?;
        let options = ContainerArchiveInfoOptionsBuilder::new()
            .path(&path)
            .build();
        let stat = match raw(
            API_TIMEOUT,
            docker.get_container_archive_info(&desktop.id, Some(options)),
        )
        .await?
        {
            Ok(stat) => stat,
            Err(e) if status(&e) == Some(404) => return Err(RuntimeError::NoSuchFile),
            Err(e) => return Err(map_error(e)),
        };
        if stat.file_mode & GO_MODE_TYPE != 0 || stat.size < 0 {
            return Err(RuntimeError::NoSuchFile);
        }
        let size = stat.size as u64;
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(&path)
            .build();
        let archive = docker.download_from_container(&desktop.id, Some(options));
        Ok(FileOut {
            size,
            body: untar_one(archive.map_err(map_error).boxed(), size),
        })
    }
}

/// The data of the single regular file of `archive`, exactly `size` bytes of it (the
/// size the stat said: a file that grew or shrank in between fails the stream rather
/// than breaking the response's length).
fn untar_one(
    archive: futures_util::stream::BoxStream<'static, Result<Bytes, RuntimeError>>,
    size: u64,
) -> futures_util::stream::BoxStream<'static, Result<Bytes, RuntimeError>> {
    struct St {
        archive: futures_util::stream::BoxStream<'static, Result<Bytes, RuntimeError>>,
        reader: TarReader,
        started: bool,
        left: u64,
        done: bool,
    }
    let st = St {
        archive,
        reader: TarReader::default(),
        started: false,
        left: size,
        done: false,
    };
    stream::unfold(st, move |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            match st.reader.next_event() {
                Err(why) => {
                    st.done = true;
                    return Some((Err(RuntimeError::Failed(why)), st));
                }
                Ok(Some(Event::Entry(e))) => {
                    if st.started || e.kind != Kind::File || e.size != size {
                        st.done = true;
                        return Some((
                            Err(RuntimeError::Failed(
                                "the file changed while it was read".into(),
                            )),
                            st,
                        ));
                    }
                    st.started = true;
                }
                Ok(Some(Event::Data(d))) => {
                    st.left = st.left.saturating_sub(d.len() as u64);
                    if st.left == 0 {
                        st.done = true;
                    }
                    return Some((Ok(d), st));
                }
                Ok(Some(Event::End)) => {
                    st.done = true;
                    if st.left > 0 || !st.started {
                        return Some((
                            Err(RuntimeError::Failed("the archive ended early".into())),
                            st,
                        ));
                    }
                    return None;
                }
                Ok(None) => match st.archive.next().await {
                    Some(Ok(chunk)) => st.reader.push(chunk),
                    Some(Err(e)) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                    None => {
                        st.done = true;
                        if st.left > 0 {
                            return Some((
                                Err(RuntimeError::Failed("the archive ended early".into())),
                                st,
                            ));
                        }
                        return None;
                    }
                },
            }
        }
    })
    .boxed()
}

/// `body`, failing when it brings more or fewer than `size` bytes: the tar header
/// announced `size`, and a short body must fail the upload, not end the file early.
fn exactly(body: FileIn, size: u64) -> FileIn {
    stream::unfold(
        (body, 0u64, false),
        move |(mut body, sent, done)| async move {
            if done {
                return None;
            }
            match body.next().await {
                Some(Ok(chunk)) => {
                    let sent = sent + chunk.len() as u64;
                    if sent > size {
                        let e = std::io::Error::other("the body is longer than announced");
                        return Some((Err(e), (body, sent, true)));
                    }
                    Some((Ok(chunk), (body, sent, false)))
                }
                Some(Err(e)) => Some((Err(e), (body, sent, true))),
                None if sent < size => {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("the body ended after {sent} of {size} bytes"),
                    );
                    Some((Err(e), (body, sent, true)))
                }
                None => None,
            }
        },
    )
    .boxed()
}

/// An engine error reading a folder's archive: 404 is the folder missing.
fn folder_error(path: &str, e: bollard::errors::Error) -> RuntimeError {
    if status(&e) == Some(404) {
        RuntimeError::MissingFolder(path.to_owned())
    } else {
        map_error(e)
    }
}

fn unix_now() -> u64 {
    vnc_shared::token::unix_now()
}
