//! The followup engine.
