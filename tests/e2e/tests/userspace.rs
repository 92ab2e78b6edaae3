//! The data plane on this host's kernel, which has no WireGuard module: wireguard-go behind
//! the same engine.

use meshgate_e2e::scenarios;
use meshgate_wg::BackendChoice::Userspace;

#[test]
fn userspace_tunnel_ping_and_changes() {
    scenarios::tunnel_ping_and_changes(Userspace);
}

#[test]
fn userspace_bulk_read_back() {
    scenarios::bulk_read_back(Userspace);
}

#[test]
fn userspace_bad_input_changes_nothing() {
    scenarios::bad_input_changes_nothing(Userspace);
}

#[test]
fn userspace_restart_keeps_flows() {
    scenarios::restart_keeps_flows(Userspace);
}

#[test]
fn userspace_talks_to_independent_peer() {
    scenarios::talks_to_independent_peer(Userspace);
}

#[test]
fn userspace_routes_and_rules() {
    scenarios::routes_and_rules(Userspace);
}

#[test]
fn userspace_daemon_mends_drift_and_reloads() {
    scenarios::daemon_mends_drift_and_reloads(Userspace);
}
