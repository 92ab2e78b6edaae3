//! The control plane through the binary, on wireguard-go in the namespace lab: one coordinator,
//! three agents that join it and ping each other by tailnet IP; a policy edit reaches them all.

use meshgate_e2e::control_lab;
use meshgate_wg::BackendChoice::Userspace;

#[test]
fn userspace_three_agents_join_and_ping() {
    control_lab::three_agents_join_and_ping(Userspace);
}

#[test]
fn userspace_config_mode_status() {
    control_lab::config_mode_status(Userspace);
}

#[test]
fn userspace_policy_edit_reaches_every_agent() {
    meshgate_e2e::policy_lab::policy_edit_reaches_every_agent(Userspace);
}

#[test]
fn userspace_udp_blocked_pair_talks_through_relay() {
    meshgate_e2e::relay_lab::udp_blocked_pair_talks_through_relay(Userspace);
}

#[test]
fn userspace_open_pair_goes_direct() {
    meshgate_e2e::relay_lab::open_pair_goes_direct(Userspace);
}

#[test]
fn userspace_direct_path_dies_and_returns() {
    meshgate_e2e::relay_lab::direct_path_dies_and_returns(Userspace);
}

#[test]
fn userspace_wg_port_firewalled_on_one_host_ends_relayed() {
    meshgate_e2e::relay_lab::wg_port_firewalled_on_one_host_ends_relayed(Userspace);
}

#[test]
fn userspace_policy_matrix_bpf() {
    meshgate_e2e::acl_lab::policy_matrix(Userspace, "auto", "bpf");
}

#[test]
fn userspace_policy_matrix_nftables() {
    meshgate_e2e::acl_lab::policy_matrix(Userspace, "nft", "nftables");
}

#[test]
fn userspace_office_subnet_router() {
    meshgate_e2e::router_lab::office_subnet_router(Userspace, true);
}

#[test]
fn userspace_magic_dns() {
    meshgate_e2e::dns_lab::magic_dns(Userspace);
}

#[test]
fn userspace_subnet_router_failover() {
    meshgate_e2e::router_lab::subnet_router_failover(Userspace);
}

#[test]
fn userspace_exit_node() {
    meshgate_e2e::exit_lab::exit_node(Userspace);
}
