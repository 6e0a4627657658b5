//! Fuzz tests.
