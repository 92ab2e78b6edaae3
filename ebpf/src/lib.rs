//! The tc BPF access-control program and its loader.
