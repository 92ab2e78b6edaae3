//! `meshgate bench --tx-iface/--rx-iface` against a router under test (root): a namespace
//! `bench` with two links to a namespace `dut` that forwards `--dst` back to `bench`'s second
//! link, as a board cabled between two NICs would. A short run reports every size, counted at
//! the rx interface; refused: a local --dst, a route that does not leave by --tx-iface, a
//! device that does not forward, and lab-only flags.

use std::net::IpAddr;

use meshgate_bench::{BenchArgs, Error, Stop};
use meshgate_netns_lab::{Host, Lab, Segment};
use serde_json::Value;

/// Nothing in the lab owns this address: the device under test routes it to `bench`'s rx link.
const DST: &str = "10.73.9.9";

fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
    BenchArgs::try_parse_args(args)
}

struct Rig {
    bench: Host,
    dut: Host,
    tx: String,
    rx: String,
    tx_link: Segment,
    rx_link: Segment,
    _lab: Lab,
}

impl Rig {
    fn new(name: &str) -> Rig {
        let lab = Lab::new(name).unwrap();
        let bench = lab.add_host("bench").unwrap();
        let dut = lab.add_host("dut").unwrap();
        let tx_link = lab
            .connect_with(&bench, &dut, &["10.73.1.0/24".parse().unwrap()])
            .unwrap();
        let rx_link = lab
            .connect_with(&bench, &dut, &["10.73.2.0/24".parse().unwrap()])
            .unwrap();
        let tx = bench.iface_on(&tx_link).unwrap().name;
        let rx = bench.iface_on(&rx_link).unwrap().name;
        let rig = Rig {
            bench,
            dut,
            tx,
            rx,
            tx_link,
            rx_link,
            _lab: lab,
        };
        let via = rig.dut.addr_on(&rig.tx_link).unwrap();
        rig.bench.add_route(host_net(DST), via).unwrap();
        let back = rig.bench.addr_on(&rig.rx_link).unwrap();
        rig.dut.add_route(host_net(DST), back).unwrap();
        rig.forwarding(true);
        rig
    }

    fn forwarding(&self, on: bool) {
        let value = format!("net.ipv4.ip_forward={}", u8::from(on));
        self.dut.exec_ok(["sysctl", "-qw", value.as_str()]).unwrap();
    }

    fn args<'a>(&'a self, dst: &'a str) -> Vec<&'a str> {
        vec![
            "--short",
            "--no-pin",
            "--tx-iface",
            self.tx.as_str(),
            "--rx-iface",
            self.rx.as_str(),
            "--dst",
            dst,
            "--label",
            "a namespace that forwards",
        ]
    }

    /// Runs the bench as `meshgate bench` would, in `bench`'s namespace.
    fn run(&self, args: &[&str]) -> Result<meshgate_bench::DeviceReport, Error> {
        let settings = parse(args).unwrap().settings()?;
        let interfaces = settings.interfaces.clone().expect("--tx-iface mode");
        self.bench
            .run(move || meshgate_bench::bench_device(&settings, &interfaces, &Stop::default()))
            .unwrap()
    }
}

fn host_net(addr: &str) -> ipnet::IpNet {
    format!("{addr}/32").parse().unwrap()
}

fn rx_packets(host: &Host, iface: &str) -> u64 {
    let iface = iface.to_owned();
    host.run(move || meshgate_bench::netdev::read_rx_packets(&iface))
        .unwrap()
        .unwrap()
}

#[test]
fn a_forwarding_device_is_measured_at_every_size() {
    let rig = Rig::new("bif-run");
    let before = rx_packets(&rig.bench, &rig.rx);
    let mut args = rig.args(DST);
    args.extend(["--sizes", "64,512,1420", "--json"]);
    let report = rig.run(&args).unwrap_or_else(|e| panic!("{e}"));
    let json: Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["mode"], "interfaces");
    assert_eq!(json["interfaces"]["tx_iface"], rig.tx.as_str());
    assert_eq!(json["interfaces"]["rx_iface"], rig.rx.as_str());
    assert_eq!(json["interfaces"]["dst"], DST);
    assert_eq!(json["interfaces"]["label"], "a namespace that forwards");
    let rows = json["results"].as_array().unwrap();
    let sizes: Vec<u64> = rows.iter().map(|r| r["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [64, 512, 1420]);
    for row in rows {
        for key in [
            "median_pps",
            "min_pps",
            "max_pps",
            "mbit_s",
            "line_rate_pps",
            "of_line_rate",
            "delivered_of_offered",
        ] {
            assert!(row[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {row}");
        }
    }
    let counted = rx_packets(&rig.bench, &rig.rx) - before;
    assert!(
        counted > 1000,
        "only {counted} packets reached {} through the device",
        rig.rx
    );
    let table = meshgate_bench::device_table(&report);
    println!("{table}");
    assert!(
        table.contains("device under test") && table.contains("of line"),
        "{table}"
    );
}

#[test]
fn what_cannot_be_measured_is_refused() {
    let rig = Rig::new("bif-bad");
    let refused = |args: &[&str], says: &str| match rig.run(args) {
        Err(e @ Error::Invalid(_)) => {
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(says), "{e} (expected {says:?})");
        }
        other => panic!("{args:?} not refused: {other:?}"),
    };

    let local = match rig.bench.addr_on(&rig.tx_link).unwrap() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(_) => unreachable!("IPv4 links"),
    };
    refused(&rig.args(&local), "is an address of this machine");

    // A destination routed out of the rx interface instead.
    let elsewhere = "10.73.8.8";
    let via = rig.dut.addr_on(&rig.rx_link).unwrap();
    rig.bench.add_route(host_net(elsewhere), via).unwrap();
    refused(&rig.args(elsewhere), "would leave by");

    rig.forwarding(false);
    refused(&rig.args(DST), "does not forward");
    rig.forwarding(true);

    let mut lab_only = rig.args(DST);
    lab_only.extend(["--rules", "10"]);
    refused(&lab_only, "--rules is for the namespace lab");
    let mut missing = vec!["--short", "--tx-iface", rig.tx.as_str(), "--dst", DST];
    assert!(parse(&missing).is_err(), "--tx-iface without --rx-iface");
    missing.extend(["--rx-iface", rig.tx.as_str()]);
    assert!(
        parse(&missing).unwrap().settings().is_err(),
        "the same interface twice"
    );
}
