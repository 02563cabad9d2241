//! Bulk ingest parsing: placeholder until the ingest module lands.
