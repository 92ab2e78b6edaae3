//! The data plane on real kernel WireGuard: Debian's kernel booted in the VM lab.

use meshgate_e2e::scenarios;
use meshgate_vm_lab::vm_test;
use meshgate_wg::BackendChoice::Kernel;

#[test]
fn kernel_tunnel_ping_and_changes() {
    vm_test!("kernel_tunnel_ping_and_changes", || {
        scenarios::tunnel_ping_and_changes(Kernel)
    });
}

#[test]
fn kernel_bulk_read_back() {
    vm_test!("kernel_bulk_read_back", || scenarios::bulk_read_back(
        Kernel
    ));
}

#[test]
fn kernel_bad_input_changes_nothing() {
    vm_test!("kernel_bad_input_changes_nothing", || {
        scenarios::bad_input_changes_nothing(Kernel)
    });
}

#[test]
fn kernel_restart_keeps_flows() {
    vm_test!("kernel_restart_keeps_flows", || {
        scenarios::restart_keeps_flows(Kernel)
    });
}

#[test]
fn kernel_talks_to_independent_peer() {
    vm_test!("kernel_talks_to_independent_peer", || {
        scenarios::talks_to_independent_peer(Kernel)
    });
}

#[test]
fn kernel_routes_and_rules() {
    vm_test!("kernel_routes_and_rules", || scenarios::routes_and_rules(
        Kernel
    ));
}

#[test]
fn kernel_daemon_mends_drift_and_reloads() {
    vm_test!("kernel_daemon_mends_drift_and_reloads", || {
        scenarios::daemon_mends_drift_and_reloads(Kernel)
    });
}

#[test]
fn kernel_three_agents_join_and_ping() {
    vm_test!("kernel_three_agents_join_and_ping", || {
        meshgate_e2e::control_lab::three_agents_join_and_ping(Kernel)
    });
}

#[test]
fn kernel_udp_blocked_pair_talks_through_relay() {
    vm_test!("kernel_udp_blocked_pair_talks_through_relay", || {
        meshgate_e2e::relay_lab::udp_blocked_pair_talks_through_relay(Kernel)
    });
}

#[test]
fn kernel_open_pair_goes_direct() {
    vm_test!("kernel_open_pair_goes_direct", || {
        meshgate_e2e::relay_lab::open_pair_goes_direct(Kernel)
    });
}

#[test]
fn kernel_policy_matrix_bpf() {
    vm_test!("kernel_policy_matrix_bpf", || {
        meshgate_e2e::acl_lab::policy_matrix(Kernel, "auto", "bpf")
    });
}

#[test]
fn kernel_office_subnet_router() {
    vm_test!("kernel_office_subnet_router", || {
        meshgate_e2e::router_lab::office_subnet_router(Kernel, false)
    });
}

#[test]
fn kernel_subnet_router_failover() {
    vm_test!("kernel_subnet_router_failover", || {
        meshgate_e2e::router_lab::subnet_router_failover(Kernel)
    });
}

#[test]
fn kernel_magic_dns() {
    vm_test!("kernel_magic_dns", || meshgate_e2e::dns_lab::magic_dns(
        Kernel
    ));
}

#[test]
fn kernel_exit_node() {
    vm_test!("kernel_exit_node", || meshgate_e2e::exit_lab::exit_node(
        Kernel
    ));
}
