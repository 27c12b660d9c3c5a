//! The client→server message kinds of RFC 6143 §7.5 and the common extensions, their
//! type numbers, and the policy for `view` tokens: which kinds reach the server.

use std::fmt;

/// Client→server message type numbers.
pub mod message_type {
    pub const SET_PIXEL_FORMAT: u8 = 0;
    pub const SET_ENCODINGS: u8 = 2;
    pub const FRAMEBUFFER_UPDATE_REQUEST: u8 = 3;
    pub const KEY_EVENT: u8 = 4;
    pub const POINTER_EVENT: u8 = 5;
    pub const CLIENT_CUT_TEXT: u8 = 6;
    pub const ENABLE_CONTINUOUS_UPDATES: u8 = 150;
    pub const CLIENT_FENCE: u8 = 248;
    pub const XVP: u8 = 250;
    pub const SET_DESKTOP_SIZE: u8 = 251;
    pub const GII: u8 = 253;
    pub const QEMU: u8 = 255;
}

/// What a client→server message is. QEMU and gii messages share a type byte, so their
/// kind is told by the sub-type in the second byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// 0: the pixel format the client wants.
    SetPixelFormat,
    /// 2: encodings and pseudo-encodings the client supports.
    SetEncodings,
    /// 3: asks for a framebuffer update.
    FramebufferUpdateRequest,
    /// 4: a key press or release (keysym).
    KeyEvent,
    /// 5: pointer position and buttons (7 bytes in the ExtendedMouseButtons form).
    PointerEvent,
    /// 6: clipboard text, or an Extended Clipboard message (negative length).
    ClientCutText,
    /// 150: turns continuous updates on or off.
    EnableContinuousUpdates,
    /// 248: a fence for synchronisation.
    ClientFence,
    /// 250: asks the server to shut down, reboot or reset the machine.
    Xvp,
    /// 251: asks the server to resize the desktop.
    SetDesktopSize,
    /// 253 sub-type 0: gii input events.
    GiiEvents,
    /// 253 sub-type 1: gii version.
    GiiVersion,
    /// 253 sub-type 2: creates a gii input device on the server.
    GiiDeviceCreation,
    /// 253 sub-type 3: removes a gii input device.
    GiiDeviceDestruction,
    /// 255 sub-type 0: a key event with the keycode as well as the keysym.
    QemuExtendedKeyEvent,
    /// 255 sub-type 1: audio stream control.
    QemuAudio,
}

impl MessageKind {
    /// The message-type byte.
    pub fn message_type(self) -> u8 {
        use MessageKind::*;
        use message_type::*;
        match self {
            SetPixelFormat => SET_PIXEL_FORMAT,
            SetEncodings => SET_ENCODINGS,
            FramebufferUpdateRequest => FRAMEBUFFER_UPDATE_REQUEST,
            KeyEvent => KEY_EVENT,
            PointerEvent => POINTER_EVENT,
            ClientCutText => CLIENT_CUT_TEXT,
            EnableContinuousUpdates => ENABLE_CONTINUOUS_UPDATES,
            ClientFence => CLIENT_FENCE,
            Xvp => XVP,
            SetDesktopSize => SET_DESKTOP_SIZE,
            GiiEvents | GiiVersion | GiiDeviceCreation | GiiDeviceDestruction => GII,
            QemuExtendedKeyEvent | QemuAudio => QEMU,
        }
    }

    /// Input from the user: keys, pointer, clipboard.
    pub fn is_input(self) -> bool {
        use MessageKind::*;
        matches!(
            self,
            KeyEvent | PointerEvent | ClientCutText | QemuExtendedKeyEvent | GiiEvents
        )
    }

    /// Whether a `view` session may send this to the server. Input and actions that
    /// change the desktop for everyone (xvp power actions, resizing) are dropped. gii
    /// exists only to inject input, and creating a gii device adds an input device on
    /// the server, so all of gii is dropped. Everything that only shapes what this
    /// viewer receives (formats, encodings, update requests, fences, audio) passes.
    pub fn allowed_for_view(self) -> bool {
        use MessageKind::*;
        match self {
            SetPixelFormat
            | SetEncodings
            | FramebufferUpdateRequest
            | EnableContinuousUpdates
            | ClientFence
            | QemuAudio => true,
            KeyEvent | PointerEvent | ClientCutText | Xvp | SetDesktopSize | GiiEvents
            | GiiVersion | GiiDeviceCreation | GiiDeviceDestruction | QemuExtendedKeyEvent => false,
        }
    }

    /// A stable snake_case name for log fields and metric labels.
    pub fn as_str(self) -> &'static str {
        use MessageKind::*;
        match self {
            SetPixelFormat => "set_pixel_format",
            SetEncodings => "set_encodings",
            FramebufferUpdateRequest => "framebuffer_update_request",
            KeyEvent => "key_event",
            PointerEvent => "pointer_event",
            ClientCutText => "client_cut_text",
            EnableContinuousUpdates => "enable_continuous_updates",
            ClientFence => "client_fence",
            Xvp => "xvp",
            SetDesktopSize => "set_desktop_size",
            GiiEvents => "gii_events",
            GiiVersion => "gii_version",
            GiiDeviceCreation => "gii_device_creation",
            GiiDeviceDestruction => "gii_device_destruction",
            QemuExtendedKeyEvent => "qemu_extended_key_event",
            QemuAudio => "qemu_audio",
        }
    }

    /// Every kind, for tests and for pre-registering metric labels.
    pub const ALL: [MessageKind; 16] = {
        use MessageKind::*;
        [
            SetPixelFormat,
            SetEncodings,
            FramebufferUpdateRequest,
            KeyEvent,
            PointerEvent,
            ClientCutText,
            EnableContinuousUpdates,
            ClientFence,
            Xvp,
            SetDesktopSize,
            GiiEvents,
            GiiVersion,
            GiiDeviceCreation,
            GiiDeviceDestruction,
            QemuExtendedKeyEvent,
            QemuAudio,
        ]
    };
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_policy_drops_input_and_desktop_actions() {
        use MessageKind::*;
        let allowed: Vec<_> = MessageKind::ALL
            .into_iter()
            .filter(|k| k.allowed_for_view())
            .collect();
        assert_eq!(
            allowed,
            [
                SetPixelFormat,
                SetEncodings,
                FramebufferUpdateRequest,
                EnableContinuousUpdates,
                ClientFence,
                QemuAudio
            ]
        );
        for kind in MessageKind::ALL {
            // Input is never allowed for view, whatever else changes.
            assert!(!(kind.is_input() && kind.allowed_for_view()), "{kind}");
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = MessageKind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MessageKind::ALL.len());
    }
}
