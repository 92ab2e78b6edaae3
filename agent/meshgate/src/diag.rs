//! `meshgate netcheck` and `meshgate ping PEER`: what the daemon knows of the network and of
//! the path to a peer, through its local API.

use std::time::Duration;

use crate::api::{NetcheckAnswer, PingAnswer, exchange};
use crate::cli::{NetcheckArgs, PingArgs};

type BoxError = Box<dyn std::error::Error>;

pub async fn netcheck(args: NetcheckArgs) -> Result<(), BoxError> {
    let value = exchange(&args.socket, "netcheck", Duration::from_secs(10)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let report: NetcheckAnswer = serde_json::from_value(value)?;
    print!("{}", render_netcheck(&report));
    Ok(())
}

fn render_netcheck(r: &NetcheckAnswer) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let _ = writeln!(out, "Report ({} s old):", r.age_secs);
    let _ = writeln!(
        out,
        "  * UDP: {}{}",
        yes_no(r.udp),
        if r.shared_port {
            " (from WireGuard's port)"
        } else {
            " (from a socket of its own: disco is off)"
        }
    );
    let _ = writeln!(
        out,
        "  * IPv4: {}{}",
        yes_no(r.ipv4),
        r.global_v4
            .as_deref()
            .map(|a| format!(", {a}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "  * IPv6: {}{}",
        yes_no(r.ipv6),
        r.global_v6
            .as_deref()
            .map(|a| format!(", {a}"))
            .unwrap_or_default()
    );
    let varies = match r.mapping_varies_by_dest_ip {
        Some(v) => yes_no(v),
        None => "unknown (fewer than two STUN servers answered)",
    };
    let _ = writeln!(out, "  * MappingVariesByDestIP: {varies}");
    let home = match r.preferred_derp {
        0 => "none".to_owned(),
        id => id.to_string(),
    };
    let _ = writeln!(
        out,
        "  * PortMapping: {}",
        r.port_mapping.as_deref().unwrap_or("none")
    );
    let _ = writeln!(out, "  * Nearest DERP: {home}");
    let _ = writeln!(out, "  * DERP latency:");
    for (region, ms) in &r.region_latency_ms {
        let _ = writeln!(out, "    - {region}: {ms:.1}ms");
    }
    out
}

pub async fn ping(args: PingArgs) -> Result<(), BoxError> {
    let request = format!("ping {}", args.peer);
    let mut answered = 0;
    for i in 0..args.count.max(1) {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        match exchange(&args.socket, &request, Duration::from_secs(10)).await {
            Ok(value) => {
                let pong: PingAnswer = serde_json::from_value(value)?;
                println!("{}", render_pong(&pong));
                answered += 1;
            }
            Err(e) if e.contains("timeout") => println!("{e}"),
            Err(e) => return Err(e.into()),
        }
    }
    if answered == 0 {
        return Err(format!("no pong from {}", args.peer).into());
    }
    Ok(())
}

fn render_pong(p: &PingAnswer) -> String {
    let ip = p
        .tailnet_ip
        .as_deref()
        .map(|ip| format!(" ({ip})"))
        .unwrap_or_default();
    let via = match (p.via.as_str(), &p.endpoint, p.region) {
        ("direct", Some(endpoint), _) => endpoint.clone(),
        (_, _, Some(region)) => format!("DERP({region})"),
        _ => p.via.clone(),
    };
    format!(
        "pong from {}{ip} via {via} in {:.1}ms",
        p.peer, p.latency_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pongs_and_reports_read_like_tailscales() {
        let direct = PingAnswer {
            peer: "n1.tailnet.meshgate".into(),
            tailnet_ip: Some("100.64.0.2".into()),
            via: "direct".into(),
            endpoint: Some("203.0.113.3:41641".into()),
            region: None,
            latency_ms: 1.25,
        };
        assert_eq!(
            render_pong(&direct),
            "pong from n1.tailnet.meshgate (100.64.0.2) via 203.0.113.3:41641 in 1.2ms"
        );
        let relayed = PingAnswer {
            via: "derp".into(),
            endpoint: None,
            region: Some(900),
            ..direct
        };
        assert!(render_pong(&relayed).contains("via DERP(900)"));
        let report = NetcheckAnswer {
            udp: true,
            ipv4: true,
            global_v4: Some("203.0.113.2:40000".into()),
            mapping_varies_by_dest_ip: Some(false),
            preferred_derp: 900,
            region_latency_ms: [(900, 3.25)].into(),
            shared_port: true,
            ..NetcheckAnswer::default()
        };
        let text = render_netcheck(&report);
        assert!(text.contains("IPv4: yes, 203.0.113.2:40000"), "{text}");
        assert!(
            text.contains("Nearest DERP: 900") && text.contains("900: 3.2ms"),
            "{text}"
        );
    }
}
