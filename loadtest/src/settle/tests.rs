use followup_core::api::TenantSummary;

use super::*;

fn tenant(id: TenantId, backlog: u64, sent: u64, failed: u64) -> TenantSummary {
    TenantSummary {
        id,
        name: id.to_string(),
        plan: "pro".to_owned(),
        backlog,
        sent,
        failed,
        paused_connections: Vec::new(),
        held: 0,
        quota_used_percent: None,
        paused_reason: None,
        dead: 0,
    }
}

fn snapshot(totals: &[(&str, u64)], tenants: Vec<TenantSummary>) -> AdminSnapshot {
    AdminSnapshot {
        now: "2025-01-01T00:00:00Z".to_owned(),
        totals: totals.iter().map(|(state, count)| ((*state).to_owned(), *count)).collect(),
        tenant_count: tenants.len() as u64,
        tenants,
        ..AdminSnapshot::default()
    }
}

#[test]
fn dedicated_engine_counts_exactly() {
    let ours = TenantId::generate();
    let totals = [("sent", 90), ("skipped", 5), ("in_doubt", 1), ("pending", 3), ("sending", 1)];
    let count =
        count(&snapshot(&totals, vec![tenant(ours, 3, 90, 0)]), &HashSet::from([ours]), &[]);
    assert_eq!(count.accounting, Accounting::Exact);
    assert_eq!(count.settled, 96);
    assert_eq!(count.unsettled, 4);
}

#[test]
fn every_state_classified() {
    let ours = TenantId::generate();
    let totals: Vec<(&str, u64)> = FollowUpState::ALL.iter().map(|s| (s.as_str(), 1)).collect();
    let count = count(&snapshot(&totals, vec![tenant(ours, 0, 0, 0)]), &HashSet::from([ours]), &[]);
    let settled = FollowUpState::ALL.iter().filter(|state| state.is_settled()).count() as u64;
    assert_eq!(count.settled, settled);
    assert_eq!(count.unsettled, FollowUpState::ALL.len() as u64 - settled);
}

#[test]
fn unknown_state_is_unsettled() {
    let ours = TenantId::generate();
    let totals = [("sent", 10), ("quarantined", 2)];
    let count =
        count(&snapshot(&totals, vec![tenant(ours, 0, 10, 0)]), &HashSet::from([ours]), &[]);
    assert_eq!(count.settled, 10);
    assert_eq!(count.unsettled, 2);
}

#[test]
fn shared_engine_counts_run_tenants() {
    let ours = TenantId::generate();
    let other = TenantId::generate();
    let totals = [("sent", 1_000), ("pending", 500), ("claimed", 2), ("sending", 1)];
    let tenants = vec![tenant(other, 500, 900, 0), tenant(ours, 0, 95, 5)];
    let page = tenants.clone();
    let count = count(&snapshot(&totals, tenants), &HashSet::from([ours]), &page);
    assert_eq!(count.accounting, Accounting::RunTenants);
    assert_eq!(count.settled, 100);
    assert_eq!(count.unsettled, 3, "claimed and sending count engine-wide");
}

#[test]
fn shared_engine_settles_when_run_is_done() {
    let ours = TenantId::generate();
    let other = TenantId::generate();
    let tenants = vec![tenant(other, 7, 0, 0), tenant(ours, 0, 10, 0)];
    let page = vec![tenant(ours, 0, 10, 0)];
    let count =
        count(&snapshot(&[("sent", 10), ("pending", 7)], tenants), &HashSet::from([ours]), &page);
    assert_eq!(count.unsettled, 0, "another tenant's backlog does not hold the run");
}

#[test]
fn first_page_alone_is_not_exact() {
    // The engine has more tenants than the snapshot lists: its totals are not the run's, and
    // the run's tenants come from the pages, even one missing from the snapshot's first page.
    let ours = TenantId::generate();
    let hidden = TenantId::generate();
    let mut first_page = snapshot(&[("sent", 10), ("pending", 40)], vec![tenant(ours, 0, 5, 0)]);
    first_page.tenant_count = 3;
    let run = HashSet::from([ours, hidden]);
    assert!(!is_exact(&first_page, &run));
    let pages = vec![tenant(ours, 0, 5, 0), tenant(hidden, 4, 1, 0)];
    let count = count(&first_page, &run, &pages);
    assert_eq!(count.accounting, Accounting::RunTenants);
    assert_eq!((count.settled, count.unsettled), (6, 4));
}

fn tenant_counts(states: &[(&str, u64)]) -> TenantFollowUpCounts {
    TenantFollowUpCounts {
        tenant: TenantId::generate(),
        counted_at: "2025-01-01T00:00:00Z".to_owned(),
        states: states.iter().map(|(state, count)| ((*state).to_owned(), *count)).collect(),
    }
}

#[test]
fn per_tenant_counts_add_up_every_state() {
    let counts = [
        tenant_counts(&[("sent", 40), ("skipped", 2), ("in_doubt", 1)]),
        tenant_counts(&[("sent", 50), ("cancelled", 3), ("pending", 4), ("sending", 1)]),
    ];
    let count = count_per_tenant(&counts);
    assert_eq!(count.accounting, Accounting::PerTenant);
    assert_eq!(count.settled, 96);
    assert_eq!(count.unsettled, 5);
    assert_eq!(count.by_state.get("sent"), Some(&90));
}

#[test]
fn empty_tenant_counts_are_settled() {
    let count = count_per_tenant(&[tenant_counts(&[]), tenant_counts(&[])]);
    assert_eq!((count.settled, count.unsettled), (0, 0));
}

#[test]
fn real_time_needs_later_count() {
    let first = "2026-12-05T06:00:00+00:00";
    assert!(!count_may_end_phase(first, first, None), "the first count may predate ingest");
    assert!(count_may_end_phase("2026-12-05T06:00:02+00:00", first, None));
}

#[test]
fn virtual_counts_after_clock_stop() {
    let stopped = DateTime::parse_from_rfc3339("2026-12-08T06:00:00Z").expect("valid").to_utc();
    let at_stop = "2026-12-08T06:00:00+00:00";
    assert!(count_may_end_phase(at_stop, at_stop, Some(stopped)), "first count at the stop");
    let before = "2026-12-05T06:00:00+00:00";
    assert!(!count_may_end_phase(before, before, Some(stopped)), "counted before the clock ran");
    assert!(!count_may_end_phase("not a time", before, Some(stopped)));
}
