//! A WireGuard handshake initiation the relay bridge carries over DERP is sent again 1 s and
//! 2 s later. At start the peer may not be on the DERP server yet (a server drops packets for
//! clients it does not know), or our own connection to the region may not be up, and
//! WireGuard retries only after 5 s. A copy of an initiation the peer already took is refused
//! by its replay check (the same TAI64N timestamp), so the copies cost two small packets per
//! handshake and change nothing else.

use std::time::Duration;

/// When the copies go, counted from the original.
pub const AGAIN_AFTER: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(2)];

/// WireGuard message type 1 (reserved bytes zero), which is always 148 bytes long.
pub fn is_handshake_initiation(datagram: &[u8]) -> bool {
    datagram.len() == 148 && datagram[..4] == [1, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_whole_initiation_counts() {
        let mut initiation = [0u8; 148];
        initiation[0] = 1;
        assert!(is_handshake_initiation(&initiation));
        // A response (type 2, 92 bytes), data (type 4), a cut initiation, a bad reserved byte.
        let mut response = [0u8; 92];
        response[0] = 2;
        assert!(!is_handshake_initiation(&response));
        let mut data = [0u8; 148];
        data[0] = 4;
        assert!(!is_handshake_initiation(&data));
        assert!(!is_handshake_initiation(&initiation[..147]));
        initiation[2] = 1;
        assert!(!is_handshake_initiation(&initiation));
    }
}
