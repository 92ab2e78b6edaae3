//! meshgate-wg
