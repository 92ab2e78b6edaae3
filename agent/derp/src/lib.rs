//! DERP relay protocol: frames, handshake and the tokio client
