//! MagicDNS: the resolver on 100.100.100.100.
