//! STUN binding requests and responses as Tailscale sends and checks them, and a small STUN server
