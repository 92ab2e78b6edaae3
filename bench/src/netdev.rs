//! Interface counters from `/proc/net/dev` text, which shows the network namespace of the
//! reading thread (sysfs paths show the mount's namespace instead).

/// Received packets of `iface` in `/proc/net/dev`-format `text`, if it is listed.
pub fn rx_packets(text: &str, iface: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, counters) = line.split_once(':')?;
        if name.trim() != iface {
            return None;
        }
        // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit.
        counters.split_whitespace().nth(1)?.parse().ok()
    })
}

/// Reads the received-packet count of `iface` in the calling thread's network namespace.
pub fn read_rx_packets(iface: &str) -> std::io::Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev")?;
    rx_packets(&text, iface).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{iface} not in /proc/thread-self/net/dev"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1234      12    0    0    0     0          0         0     1234      12    0    0    0     0       0          0
  eth1: 987654321 7654321    0    5    0     0          0         0      420       6    0    0    0     0       0          0
";

    #[test]
    fn finds_the_packet_column_of_the_named_interface() {
        assert_eq!(rx_packets(SAMPLE, "eth1"), Some(7_654_321));
        assert_eq!(rx_packets(SAMPLE, "lo"), Some(12));
        assert_eq!(rx_packets(SAMPLE, "eth"), None);
        assert_eq!(rx_packets("garbage", "eth1"), None);
    }

    #[test]
    fn reads_loopback_of_this_namespace() {
        assert!(read_rx_packets("lo").is_ok());
        assert!(read_rx_packets("no-such-if0").is_err());
    }
}
