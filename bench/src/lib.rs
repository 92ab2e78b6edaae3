//! `meshgate bench` (see README.md).
