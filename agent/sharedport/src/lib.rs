//! STUN and disco on kernel WireGuard's UDP port: raw-socket receive with a classic-BPF filter, raw send from the port
