//! The server→client message kinds of RFC 6143 §7.6 and the common extensions, and the
//! encoding numbers of FramebufferUpdate rectangles that [`ServerFramer`] can frame.
//!
//! [`ServerFramer`]: super::ServerFramer

use std::fmt;

/// Server→client message type numbers.
pub mod server_message_type {
    pub const FRAMEBUFFER_UPDATE: u8 = 0;
    pub const SET_COLOUR_MAP_ENTRIES: u8 = 1;
    pub const BELL: u8 = 2;
    pub const SERVER_CUT_TEXT: u8 = 3;
    pub const END_OF_CONTINUOUS_UPDATES: u8 = 150;
    pub const SERVER_FENCE: u8 = 248;
    pub const XVP: u8 = 250;
    pub const GII: u8 = 253;
    pub const QEMU: u8 = 255;
}

/// Encoding numbers (RFC 6143 §7.7 and the registry in rfbproto): the encodings and
/// pseudo-encodings whose payload [`ServerFramer`] knows how to skip.
///
/// [`ServerFramer`]: super::ServerFramer
pub mod encoding {
    pub const RAW: i32 = 0;
    pub const COPY_RECT: i32 = 1;
    pub const RRE: i32 = 2;
    pub const CORRE: i32 = 4;
    pub const HEXTILE: i32 = 5;
    pub const ZLIB: i32 = 6;
    pub const TIGHT: i32 = 7;
    pub const ZRLE: i32 = 16;
    pub const ZYWRLE: i32 = 17;
    pub const JPEG: i32 = 21;
    pub const H264: i32 = 50;
    pub const TIGHT_PNG: i32 = -260;
    pub const DESKTOP_SIZE: i32 = -223;
    pub const LAST_RECT: i32 = -224;
    pub const POINTER_POS: i32 = -232;
    pub const CURSOR: i32 = -239;
    pub const X_CURSOR: i32 = -240;
    pub const QEMU_EXTENDED_KEY_EVENT: i32 = -258;
    pub const QEMU_AUDIO: i32 = -259;
    pub const QEMU_LED_STATE: i32 = -261;
    pub const DESKTOP_NAME: i32 = -307;
    pub const EXTENDED_DESKTOP_SIZE: i32 = -308;
    pub const XVP: i32 = -309;
    pub const FENCE: i32 = -312;
    pub const CONTINUOUS_UPDATES: i32 = -313;
    pub const CURSOR_WITH_ALPHA: i32 = -314;
    pub const EXTENDED_MOUSE_BUTTONS: i32 = -316;
    pub const VMWARE_CURSOR: i32 = 0x574d_5664;
    pub const VMWARE_CURSOR_STATE: i32 = 0x574d_5665;
    pub const VMWARE_CURSOR_POSITION: i32 = 0x574d_5666;
    pub const VMWARE_LED_STATE: i32 = 0x574d_5668;
}

/// What a server→client message is. gii and QEMU messages share a type byte, so their
/// kind is told by the sub-type that follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerMessageKind {
    /// 0: rectangles of pixels or pseudo-encoded state.
    FramebufferUpdate,
    /// 1: colour map entries (colour-map pixel formats only).
    SetColourMapEntries,
    /// 2: ring the bell.
    Bell,
    /// 3: clipboard text, or an Extended Clipboard message (negative length).
    ServerCutText,
    /// 150: continuous updates stopped (or are supported).
    EndOfContinuousUpdates,
    /// 248: a fence for synchronisation.
    ServerFence,
    /// 250: xvp support or a failed xvp action.
    Xvp,
    /// 253 sub-type 1: gii version range.
    GiiVersion,
    /// 253 sub-type 2: the id of a created gii device.
    GiiDeviceCreation,
    /// 255 sub-type 1: audio stream start, end or data.
    QemuAudio,
}

impl ServerMessageKind {
    /// The message-type byte.
    pub fn message_type(self) -> u8 {
        use ServerMessageKind::*;
        use server_message_type::*;
        match self {
            FramebufferUpdate => FRAMEBUFFER_UPDATE,
            SetColourMapEntries => SET_COLOUR_MAP_ENTRIES,
            Bell => BELL,
            ServerCutText => SERVER_CUT_TEXT,
            EndOfContinuousUpdates => END_OF_CONTINUOUS_UPDATES,
            ServerFence => SERVER_FENCE,
            Xvp => XVP,
            GiiVersion | GiiDeviceCreation => GII,
            QemuAudio => QEMU,
        }
    }

    /// A stable snake_case name for log fields and metric labels.
    pub fn as_str(self) -> &'static str {
        use ServerMessageKind::*;
        match self {
            FramebufferUpdate => "framebuffer_update",
            SetColourMapEntries => "set_colour_map_entries",
            Bell => "bell",
            ServerCutText => "server_cut_text",
            EndOfContinuousUpdates => "end_of_continuous_updates",
            ServerFence => "server_fence",
            Xvp => "xvp",
            GiiVersion => "gii_version",
            GiiDeviceCreation => "gii_device_creation",
            QemuAudio => "qemu_audio",
        }
    }
}

impl fmt::Display for ServerMessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
