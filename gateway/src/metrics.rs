//! Prometheus text exposition of the gateway's counters.

use std::fmt::Write;

use tunnel::DropReason;

use crate::dataplane::Snapshot;

/// Renders the metrics in the Prometheus text format (version 0.0.4) into `out`.
/// `snapshot` is `None` when the data plane did not answer; its metrics are then left out.
pub fn render(snapshot: Option<&Snapshot>, connected: bool, synced: bool, out: &mut String) {
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    metric(
        "postern_gateway_controller_connected",
        "gauge",
        "Whether the control link to the controller is up (1) or not (0).",
        u64::from(connected),
    );
    metric(
        "postern_gateway_synced",
        "gauge",
        "Whether the last full sync from the controller on this connection was applied.",
        u64::from(synced),
    );
    let Some(s) = snapshot else {
        return;
    };
    let st = &s.stats;
    metric(
        "postern_gateway_peers",
        "gauge",
        "Current grants, each one WireGuard peer.",
        s.grants as u64,
    );
    metric(
        "postern_gateway_controller_grace_expired",
        "gauge",
        "Whether the controller grace of the current outage ran out (1): every grant was dropped and no full sync has come since.",
        u64::from(s.grace_expired),
    );
    let counters: [(&str, &str, u64); 8] = [
        (
            "postern_gateway_grants_dropped_offline_total",
            "Grants dropped because the controller grace ran out without contact with the controller.",
            s.dropped_offline,
        ),
        (
            "postern_gateway_handshakes_total",
            "WireGuard handshakes answered.",
            st.handshakes,
        ),
        (
            "postern_gateway_cookies_sent_total",
            "Cookie replies sent because of handshake load.",
            st.cookies_sent,
        ),
        (
            "postern_gateway_icmp_sent_total",
            "ICMP administratively-prohibited replies sent into tunnels.",
            st.icmp_sent,
        ),
        (
            "postern_gateway_rx_packets_total",
            "Packets received from clients, decrypted, admitted and written to the TUN device.",
            st.rx_packets,
        ),
        (
            "postern_gateway_rx_bytes_total",
            "Bytes of the IP packets counted in postern_gateway_rx_packets_total.",
            st.rx_bytes,
        ),
        (
            "postern_gateway_tx_packets_total",
            "Packets read from the TUN device and encrypted to a client.",
            st.tx_packets,
        ),
        (
            "postern_gateway_tx_bytes_total",
            "Bytes of the IP packets counted in postern_gateway_tx_packets_total.",
            st.tx_bytes,
        ),
    ];
    for (name, help, value) in counters {
        metric(name, "counter", help, value);
    }
    let name = "postern_gateway_dropped_total";
    let _ = writeln!(
        out,
        "# HELP {name} Datagrams and packets dropped, by reason."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for &reason in DropReason::ALL {
        let _ = writeln!(
            out,
            "{name}{{reason=\"{}\"}} {}",
            reason.as_str(),
            st.drops.get(reason)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tunnel::Stats;

    fn value(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn renders_every_counter() {
        let mut stats = Stats {
            handshakes: 3,
            rx_bytes: 1500,
            tx_packets: 2,
            ..Stats::default()
        };
        stats.drops.spoofed_source = 4;
        let snapshot = Snapshot {
            stats,
            grants: 5,
            dropped_offline: 7,
            grace_expired: true,
        };
        let mut out = String::new();
        render(Some(&snapshot), true, false, &mut out);
        assert_eq!(value(&out, "postern_gateway_controller_connected"), Some(1));
        assert_eq!(value(&out, "postern_gateway_synced"), Some(0));
        assert_eq!(value(&out, "postern_gateway_peers"), Some(5));
        assert_eq!(
            value(&out, "postern_gateway_grants_dropped_offline_total"),
            Some(7)
        );
        assert_eq!(
            value(&out, "postern_gateway_controller_grace_expired"),
            Some(1)
        );
        assert_eq!(value(&out, "postern_gateway_handshakes_total"), Some(3));
        assert_eq!(value(&out, "postern_gateway_rx_bytes_total"), Some(1500));
        assert_eq!(value(&out, "postern_gateway_tx_packets_total"), Some(2));
        assert_eq!(
            value(
                &out,
                "postern_gateway_dropped_total{reason=\"spoofed_source\"}"
            ),
            Some(4)
        );
        for reason in DropReason::ALL {
            let series = format!(
                "postern_gateway_dropped_total{{reason=\"{}\"}}",
                reason.as_str()
            );
            assert!(value(&out, &series).is_some(), "{series} missing");
        }
        // Every sample has HELP and TYPE lines before it.
        let types = out.lines().filter(|l| l.starts_with("# TYPE")).count();
        let helps = out.lines().filter(|l| l.starts_with("# HELP")).count();
        assert_eq!(types, helps);
        assert_eq!(types, 2 + 2 + 8 + 1);
        assert!(out.ends_with('\n'));
    }

    #[test]
    fn without_a_data_plane_only_the_link_is_reported() {
        let mut out = String::new();
        render(None, false, false, &mut out);
        assert_eq!(value(&out, "postern_gateway_controller_connected"), Some(0));
        assert!(!out.contains("postern_gateway_peers"));
    }
}
