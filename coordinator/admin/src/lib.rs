//! The coordinator's admin operations, shared by the CLI and the token-protected local HTTP API
