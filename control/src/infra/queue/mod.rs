//! Durable job queue on Redis Streams (to be written).
