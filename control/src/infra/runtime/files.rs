//! Files in and out of a desktop: the types the file routes get from a runtime, and
//! where the folders are (part of the desktop image contract, see the module above).

use bytes::Bytes;
use futures_util::stream::BoxStream;

use super::RuntimeError;

/// Folder name of uploads under the desktop user's home.
pub const UPLOAD_FOLDER: &str = "Uploads";
/// Folder name of downloads under the desktop user's home.
pub const DOWNLOAD_FOLDER: &str = "Downloads";
/// `HOME` when the container's environment has none (a root desktop).
pub const DEFAULT_HOME: &str = "/root";

/// A file in a desktop's download folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesktopFile {
    pub name: String,
    pub size: u64,
    /// Unix seconds.
    pub modified: u64,
}

/// A file on its way out of a desktop: its size (known before the first byte) and
/// its bytes, as the engine sends them.
pub struct FileOut {
    pub size: u64,
    pub body: BoxStream<'static, Result<Bytes, RuntimeError>>,
}

/// The bytes of an upload, as the browser sends them.
pub type FileIn = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// The upload and download folders of a desktop whose `HOME` is `home`.
pub fn folders(home: Option<&str>) -> (String, String) {
    let home = home
        .filter(|h| h.starts_with('/'))
        .unwrap_or(DEFAULT_HOME)
        .trim_end_matches('/');
    (
        format!("{home}/{UPLOAD_FOLDER}"),
        format!("{home}/{DOWNLOAD_FOLDER}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_follow_home() {
        assert_eq!(
            folders(Some("/home/desktop/")),
            (
                "/home/desktop/Uploads".to_owned(),
                "/home/desktop/Downloads".to_owned()
            )
        );
        assert_eq!(folders(None).0, "/root/Uploads");
        assert_eq!(folders(Some("relative")).1, "/root/Downloads");
    }
}
