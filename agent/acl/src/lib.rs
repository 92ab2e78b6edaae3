//! The tailnet's packet filter as one rule model, compiled to nftables (and, later, to the tc BPF maps).
