//! Shared store test suite (filled in below).
