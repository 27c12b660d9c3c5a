//! How a session reaches its browser: the raw websockify-compatible WebSocket
//! (`websocket/`: frame codec, upgrade, pumps) and socket.io (`socketio/`: the server,
//! its rooms, the session's pumps). Each implements [`crate::session::Transport`].

pub mod socketio;
pub mod websocket;
