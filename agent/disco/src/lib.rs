//! Tailscale's disco protocol: sealed Ping, Pong and CallMeMaybe messages (sans-I/O)
