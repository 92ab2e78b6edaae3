//! Port mapping for WireGuard's port on the home router: UPnP IGD, NAT-PMP and PCP.
