//! The NAT matrix (issue 5) on wireguard-go in the namespace lab: each case ends direct when it
//! is traversable without port mapping, relayed otherwise, and keeps working.

use meshgate_e2e::nat_lab::{Topology, traversal};
use meshgate_netns_lab::NatKind::{EndpointDependent, EndpointIndependent, UdpBlocked};
use meshgate_wg::BackendChoice::Userspace;

#[test]
fn both_endpoint_independent_ends_direct() {
    traversal(
        Userspace,
        Topology::Behind(EndpointIndependent, EndpointIndependent),
        true,
    );
}

#[test]
fn independent_and_dependent_ends_direct() {
    traversal(
        Userspace,
        Topology::Behind(EndpointIndependent, EndpointDependent),
        true,
    );
}

#[test]
fn both_endpoint_dependent_ends_relayed() {
    traversal(
        Userspace,
        Topology::Behind(EndpointDependent, EndpointDependent),
        false,
    );
}

#[test]
fn udp_blocked_on_one_side_ends_relayed() {
    traversal(
        Userspace,
        Topology::Behind(UdpBlocked, EndpointIndependent),
        false,
    );
}

#[test]
fn both_behind_the_same_nat_ends_direct() {
    traversal(Userspace, Topology::SameNat, true);
}

#[test]
fn no_nat_ends_direct() {
    traversal(Userspace, Topology::Switch, true);
}

#[test]
fn both_endpoint_dependent_with_port_mapping_ends_direct() {
    meshgate_e2e::nat_lab::traversal_with_port_mapping(Userspace);
}
