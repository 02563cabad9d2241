//! Operator console.
