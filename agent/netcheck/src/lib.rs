//! Netcheck: STUN probes of the DERP regions, the report, and the sticky home region
