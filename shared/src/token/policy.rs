//! The two policies a VNC token carries besides its scope: which way files may move
//! (`files`) and which way the clipboard may (`clipboard`). Control sets them from the
//! container's policy and narrows them for view and share tokens; control enforces
//! `files` on its file routes, the relay enforces `clipboard` on the RFB stream.
//!
//! A token minted before these claims existed has neither: it gets [`FilePolicy::None`]
//! (file transfer did not exist, so such a token never allowed it) and
//! [`ClipboardPolicy::Both`] (what every session did then), so a deployment that
//! upgrades keeps its sessions' behaviour and gains no file access by accident.

use serde::{Deserialize, Serialize};

/// Which way files may move between the browser and the desktop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FilePolicy {
    /// No file transfer (a token without the claim).
    #[default]
    None,
    /// Browser → desktop only.
    Upload,
    /// Desktop → browser only.
    Download,
    /// Both ways.
    Both,
}

/// Which way the clipboard may move between the browser and the desktop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ClipboardPolicy {
    /// Both ways (a token without the claim).
    #[default]
    Both,
    /// Browser → desktop only (ClientCutText passes, ServerCutText is removed).
    ToDesktop,
    /// Desktop → browser only.
    FromDesktop,
    /// Neither way.
    None,
}

impl FilePolicy {
    pub fn from_parts(upload: bool, download: bool) -> FilePolicy {
        match (upload, download) {
            (true, true) => FilePolicy::Both,
            (true, false) => FilePolicy::Upload,
            (false, true) => FilePolicy::Download,
            (false, false) => FilePolicy::None,
        }
    }

    pub fn upload(self) -> bool {
        matches!(self, FilePolicy::Upload | FilePolicy::Both)
    }

    pub fn download(self) -> bool {
        matches!(self, FilePolicy::Download | FilePolicy::Both)
    }

    /// What both allow.
    pub fn and(self, other: FilePolicy) -> FilePolicy {
        FilePolicy::from_parts(
            self.upload() && other.upload(),
            self.download() && other.download(),
        )
    }

    /// The same without uploads (a view token's).
    pub fn without_upload(self) -> FilePolicy {
        FilePolicy::from_parts(false, self.download())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FilePolicy::None => "none",
            FilePolicy::Upload => "upload",
            FilePolicy::Download => "download",
            FilePolicy::Both => "both",
        }
    }
}

impl std::str::FromStr for FilePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(FilePolicy::None),
            "upload" => Ok(FilePolicy::Upload),
            "download" => Ok(FilePolicy::Download),
            "both" => Ok(FilePolicy::Both),
            other => Err(format!(
                "files must be none, upload, download or both, not {other:?}"
            )),
        }
    }
}

impl ClipboardPolicy {
    pub fn from_parts(to_desktop: bool, from_desktop: bool) -> ClipboardPolicy {
        match (to_desktop, from_desktop) {
            (true, true) => ClipboardPolicy::Both,
            (true, false) => ClipboardPolicy::ToDesktop,
            (false, true) => ClipboardPolicy::FromDesktop,
            (false, false) => ClipboardPolicy::None,
        }
    }

    /// The browser may set the desktop's clipboard (ClientCutText).
    pub fn to_desktop(self) -> bool {
        matches!(self, ClipboardPolicy::Both | ClipboardPolicy::ToDesktop)
    }

    /// The browser may read the desktop's clipboard (ServerCutText).
    pub fn from_desktop(self) -> bool {
        matches!(self, ClipboardPolicy::Both | ClipboardPolicy::FromDesktop)
    }

    /// What both allow.
    pub fn and(self, other: ClipboardPolicy) -> ClipboardPolicy {
        ClipboardPolicy::from_parts(
            self.to_desktop() && other.to_desktop(),
            self.from_desktop() && other.from_desktop(),
        )
    }

    /// The same without browser → desktop (a view token's: a viewer sends no input).
    pub fn without_to_desktop(self) -> ClipboardPolicy {
        ClipboardPolicy::from_parts(false, self.from_desktop())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ClipboardPolicy::Both => "both",
            ClipboardPolicy::ToDesktop => "to_desktop",
            ClipboardPolicy::FromDesktop => "from_desktop",
            ClipboardPolicy::None => "none",
        }
    }
}

impl std::str::FromStr for ClipboardPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "both" => Ok(ClipboardPolicy::Both),
            "to_desktop" => Ok(ClipboardPolicy::ToDesktop),
            "from_desktop" => Ok(ClipboardPolicy::FromDesktop),
            "none" => Ok(ClipboardPolicy::None),
            other => Err(format!(
                "clipboard must be both, to_desktop, from_desktop or none, not {other:?}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: [FilePolicy; 4] = [
        FilePolicy::None,
        FilePolicy::Upload,
        FilePolicy::Download,
        FilePolicy::Both,
    ];
    const CLIPBOARD: [ClipboardPolicy; 4] = [
        ClipboardPolicy::Both,
        ClipboardPolicy::ToDesktop,
        ClipboardPolicy::FromDesktop,
        ClipboardPolicy::None,
    ];

    #[test]
    fn narrowing_never_widens() {
        for a in FILES {
            assert_eq!(a.as_str().parse::<FilePolicy>(), Ok(a));
            assert!(!a.without_upload().upload());
            assert_eq!(a.without_upload().download(), a.download());
            for b in FILES {
                let n = a.and(b);
                assert_eq!(n.upload(), a.upload() && b.upload(), "{a:?} {b:?}");
                assert_eq!(n.download(), a.download() && b.download(), "{a:?} {b:?}");
            }
        }
        for a in CLIPBOARD {
            assert_eq!(a.as_str().parse::<ClipboardPolicy>(), Ok(a));
            assert!(!a.without_to_desktop().to_desktop());
            assert_eq!(a.without_to_desktop().from_desktop(), a.from_desktop());
            for b in CLIPBOARD {
                let n = a.and(b);
                assert_eq!(n.to_desktop(), a.to_desktop() && b.to_desktop());
                assert_eq!(n.from_desktop(), a.from_desktop() && b.from_desktop());
            }
        }
        assert!("all".parse::<FilePolicy>().is_err());
        assert!("to-desktop".parse::<ClipboardPolicy>().is_err());
    }

    #[test]
    fn wire_names() {
        assert_eq!(
            serde_json::to_string(&ClipboardPolicy::FromDesktop).unwrap(),
            "\"from_desktop\""
        );
        assert_eq!(
            serde_json::from_str::<FilePolicy>("\"download\"").unwrap(),
            FilePolicy::Download
        );
    }
}
