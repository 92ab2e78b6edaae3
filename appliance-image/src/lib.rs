//! Helpers for the appliance image's tests (see README.md).
