use super::*;

#[test]
fn line_shows_rate_and_eta() {
    let line = format_line("ingest", "rows", 500, 2_000, Duration::from_secs(5));
    assert_eq!(line, "ingest: 500/2000 rows (25.0%), 100 rows/s, ETA 15s, 5.0s elapsed");
}

#[test]
fn slow_rate_keeps_two_decimals() {
    let line = format_line("crash", "kills", 3, 50, Duration::from_secs(10));
    assert!(line.contains(", 0.30 kills/s,"), "{line}");
}

#[test]
fn line_without_rate_has_no_eta() {
    let line = format_line("settle", "follow-ups", 0, 10, Duration::ZERO);
    assert!(line.contains("ETA unknown"), "{line}");
}

#[test]
fn line_at_total_says_done() {
    let line = format_line("settle", "follow-ups", 10, 10, Duration::from_secs(1));
    assert!(line.contains(", done,"), "{line}");
}
