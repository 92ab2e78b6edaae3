//! The largest policy the model accepts goes into the maps whole and enforces; swapping it for
//! a small one leaves nothing of it behind. Needs root (BPF, bpffs).

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use common::*;
use meshgate_ebpf::{PROG_INGRESS_ETH, load};

#[test]
fn a_policy_of_the_largest_size_swaps_in_and_out() {
    let pin = PinDir::new("large");
    let mut l = load(&pin.0).unwrap_or_else(|e| panic!("load (needs root): {e}"));
    let source = |i: u32| Ipv4Addr::from(0x6440_0000 + i).to_string();
    let port = |i: u32| 1 + (i % 60_000) as u16;
    let rules: Vec<_> = (0..99_990u32)
        .map(|i| {
            rule(
                &[&source(i)],
                &[("100.127.255.254", port(i), port(i))],
                &[6],
            )
        })
        .collect();
    let started = Instant::now();
    let big = policy(&rules);
    let compiled = Instant::now();
    let report = l.maps.set_policy(&big).unwrap();
    println!(
        "{} entries: model {:?}, maps {:?}: {report:?}",
        big.entries().len(),
        compiled - started,
        compiled.elapsed()
    );
    let dst: IpAddr = "100.127.255.254".parse().unwrap();
    for i in [0, 4_321, 99_989] {
        let src: IpAddr = source(i).parse().unwrap();
        let allowed = frame(src, dst, TCP, 40000, port(i));
        assert_eq!(run(&mut l, PROG_INGRESS_ETH, &allowed), TC_ACT_OK, "{src}");
        let other_port = frame(src, dst, TCP, 40000, port(i) + 1);
        assert_eq!(
            run(&mut l, PROG_INGRESS_ETH, &other_port),
            TC_ACT_SHOT,
            "{src}"
        );
    }

    let small = policy(&[rule(&["100.64.0.1"], &[("100.127.255.254", 22, 22)], &[6])]);
    let started = Instant::now();
    let report = l.maps.set_policy(&small).unwrap();
    println!("back to one entry in {:?}: {report:?}", started.elapsed());
    assert!(report.removed_keys >= 99_990 * 3, "{report:?}");
    let src: IpAddr = source(0).parse().unwrap();
    assert_eq!(
        run(
            &mut l,
            PROG_INGRESS_ETH,
            &frame(src, dst, TCP, 40001, port(0))
        ),
        TC_ACT_SHOT
    );
    let kept: IpAddr = "100.64.0.1".parse().unwrap();
    assert_eq!(
        run(&mut l, PROG_INGRESS_ETH, &frame(kept, dst, TCP, 40001, 22)),
        TC_ACT_OK
    );
}
