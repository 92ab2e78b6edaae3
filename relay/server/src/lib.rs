//! The DERP relay server (meshgate derp): HTTP upgrade, frame routing, queues, STUN
