//! Container runtimes (to be written).
