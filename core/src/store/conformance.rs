//! Store conformance suite: placeholder until it lands.
