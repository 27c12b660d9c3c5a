//! [`RecvCount`], what one counting read of a connection got. Its own file because every
//! reader returns it (the connection in `client.rs`, the lean WebSocket reader and the
//! socket.io client), and those readers sit below the connection.

/// What one `recv_count` got: bytes and ws messages (TCP: reads).
pub struct RecvCount {
    pub bytes: usize,
    pub messages: usize,
}
