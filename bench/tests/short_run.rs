//! `meshgate bench --short` end to end (root: namespaces, nftables, tc BPF, wireguard-go):
//! the JSON of a real run has every field, and plain forwarding delivered packets. Plus the
//! refusals of impossible settings, which need no root.

use meshgate_bench::{BenchArgs, Error, Stop};
use serde_json::Value;

fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
    BenchArgs::try_parse_args(args)
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key)
        .unwrap_or_else(|| panic!("JSON lacks {key:?}: {v}"))
}

#[test]
fn short_run_reports_every_field_and_plain_delivers() {
    let args = parse(&["--short", "--json"]).unwrap();
    let settings = args.settings().unwrap();
    let report = meshgate_bench::bench(&settings, &Stop::default()).unwrap();
    // The same serialisation `--json` prints.
    let json: Value =
        serde_json::from_str(&serde_json::to_string_pretty(&report).unwrap()).unwrap();

    assert_eq!(field(&json, "mode"), "lab");
    for key in [
        "tool",
        "version",
        "date",
        "elapsed_s",
        "lab",
        "load_average_end",
    ] {
        field(&json, key);
    }
    let machine = field(&json, "machine");
    for key in [
        "kernel",
        "cpus",
        "cpu_model",
        "mem_total_mib",
        "load_average",
    ] {
        field(machine, key);
    }
    let s = field(&json, "settings");
    for key in [
        "short",
        "runs",
        "warmup_ms",
        "window_ms",
        "sizes",
        "rules",
        "link_speed_bps",
        "flows",
        "pin_cpu",
        "wireguard",
        "size_meaning",
    ] {
        field(s, key);
    }
    let wg = field(&json, "wireguard");
    let backend = field(wg, "backend").as_str().unwrap();
    assert!(["kernel", "wireguard-go"].contains(&backend), "{backend}");
    for key in ["topology", "mtu", "skipped_sizes"] {
        field(wg, key);
    }

    let rows = field(&json, "results").as_array().unwrap();
    let kinds: Vec<&str> = rows
        .iter()
        .map(|r| field(r, "variant").as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "plain",
            "wireguard",
            "acl-bpf",
            "nft-sets",
            "nft-linear",
            "wireguard+acl-bpf"
        ]
    );
    for row in rows {
        for key in [
            "rules",
            "size",
            "udp_payload",
            "samples_pps",
            "sent_pps",
            "median_pps",
            "min_pps",
            "max_pps",
            "mbit_s",
            "ratio_to_plain",
            "ratio_min",
            "ratio_max",
            "line_rate_pps",
            "of_line_rate",
        ] {
            field(row, key);
        }
        assert_eq!(field(row, "size"), 64);
        assert_eq!(field(row, "udp_payload"), 18);
        // Plain is measured once before each of the 5 other variants (A/B pairs).
        let windows = if field(row, "variant") == "plain" {
            5
        } else {
            1
        };
        assert_eq!(field(row, "samples_pps").as_array().unwrap().len(), windows);
        assert_eq!(field(row, "sent_pps").as_array().unwrap().len(), windows);
        let line = field(row, "line_rate_pps").as_f64().unwrap();
        assert!((line - 14_880_952.4).abs() < 1.0, "{line}");
        // Every variant passes the allowed flow.
        assert!(field(row, "median_pps").as_f64().unwrap() > 0.0, "{row}");
    }
    let plain = &rows[0];
    assert!(
        field(plain, "median_pps").as_f64().unwrap() > 1000.0,
        "{plain}"
    );
    assert_eq!(field(plain, "ratio_to_plain").as_f64(), Some(1.0));
    assert_eq!(field(&rows[2], "rules"), 10);

    let svg = meshgate_bench::svg(&report);
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg}"
    );
    let table = meshgate_bench::table(&report);
    assert!(
        table.contains("nft-linear 10") && table.contains("14.88M"),
        "{table}"
    );
}

#[test]
fn rule_count_zero_is_refused_with_a_clear_message() {
    let err = parse(&["--rules", "0"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let msg = err.to_string();
    assert!(msg.contains("rule count 0: must be 1..=100000"), "{msg}");
    // Built in code instead of parsed: refused by run() before anything starts.
    let args = BenchArgs {
        rules: Some(vec![0]),
        ..parse(&[]).unwrap()
    };
    let err = meshgate_bench::run(&args).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn packet_size_10_is_refused_with_a_clear_message() {
    let err = parse(&["--sizes", "64,10"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let msg = err.to_string();
    assert!(
        msg.contains("packet size 10: sizes are Ethernet frames with FCS, 64..=1518"),
        "{msg}"
    );
    let args = BenchArgs {
        sizes: Some(vec![10]),
        ..parse(&[]).unwrap()
    };
    let err = meshgate_bench::run(&args).unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    assert!(err.to_string().contains("packet size 10"), "{err}");
}

#[test]
fn fewer_than_three_runs_and_unknown_link_speeds_are_refused() {
    let err = meshgate_bench::run(&parse(&["--runs", "2"]).unwrap()).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("at least 3 runs"), "{err}");
    let err = parse(&["--link-speed", "7G"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("use 1G, 2.5G, 10G"), "{err}");
}
