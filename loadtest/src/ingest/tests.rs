use followup_core::ingest::RowError;
use reqwest::StatusCode;

use super::*;

fn report(rows: u64, rejected: u64) -> UploadReport {
    UploadReport {
        rows,
        accepted: rows - rejected,
        created: rows - rejected,
        duplicates: 0,
        rejected,
        errors: Vec::new(),
    }
}

#[test]
fn plan_covers_every_row_once() {
    let jobs = plan_uploads(3, 1_050, 250);
    assert_eq!(jobs.len(), 15);
    for tenant in 0..3 {
        let mut rows: Vec<u64> = Vec::new();
        for job in jobs.iter().filter(|job| job.tenant == tenant) {
            rows.extend(job.rows.clone());
        }
        assert_eq!(rows, (0..1_050).collect::<Vec<_>>(), "tenant {tenant}");
    }
}

#[test]
fn plan_takes_tenants_in_turn() {
    let jobs = plan_uploads(2, 20, 10);
    let order: Vec<(usize, u64)> = jobs.iter().map(|job| (job.tenant, job.rows.start)).collect();
    assert_eq!(order, [(0, 0), (1, 0), (0, 10), (1, 10)]);
}

/// An upload of tenant `tenant`'s first 100 rows, acknowledged now.
fn upload_of(tenant: u32) -> CompletedUpload {
    CompletedUpload { tenant, rows: 0..100, acknowledged_at: chrono::Utc::now() }
}

#[test]
fn plan_without_contacts_is_empty() {
    assert!(plan_uploads(4, 0, 100).is_empty());
}

#[test]
fn totals_sum_completed_uploads() {
    let mut totals = IngestTotals::default();
    totals.add(upload_of(0), 2, Ok(UploadOutcome::Completed(report(100, 2))));
    totals.add(upload_of(1), 3, Ok(UploadOutcome::Completed(report(50, 3))));
    assert_eq!(totals.uploads, 2);
    assert_eq!(totals.failed_uploads, 0);
    assert_eq!(totals.rows, 150);
    assert_eq!(totals.accepted, 145);
    assert_eq!(totals.rejected, 5);
    assert_eq!(totals.expected_rejected, 5);
    assert!(totals.problems.is_empty());
    let tenants: Vec<u32> = totals.completed.iter().map(|upload| upload.tenant).collect();
    assert_eq!(tenants, [0, 1], "completed uploads are kept for dating follow-ups");
}

#[test]
fn totals_count_stopped_and_failed_uploads() {
    let mut totals = IngestTotals::default();
    let stopped = UploadOutcome::Stopped {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "store unavailable".to_owned(),
        report: report(40, 0),
    };
    totals.add(upload_of(0), 1, Ok(stopped));
    totals.add(upload_of(1), 1, Err(anyhow::anyhow!("connection refused")));
    assert_eq!(totals.uploads, 2);
    assert_eq!(totals.failed_uploads, 2);
    assert_eq!(totals.rows, 40, "rows stored before the stop still count");
    assert_eq!(totals.expected_rejected, 0, "only completed uploads expect rejects");
    assert!(totals.completed.is_empty(), "only completed uploads create follow-ups");
    assert_eq!(totals.problems.len(), 2);
    assert!(totals.problems[0].contains("503"), "{}", totals.problems[0]);
    assert!(totals.problems[1].contains("connection refused"), "{}", totals.problems[1]);
}

#[test]
fn problems_are_capped() {
    let mut totals = IngestTotals::default();
    for tenant in 0..30 {
        totals.add(upload_of(tenant), 0, Err(anyhow::anyhow!("failed")));
    }
    assert_eq!(totals.failed_uploads, 30);
    assert_eq!(totals.problems.len(), MAX_SAMPLE_PROBLEMS);
}

#[test]
fn unexpected_rejects_noted() {
    let mut upload = report(100, 3);
    upload.errors = vec![RowError {
        line: 7,
        field: Some("phone".to_owned()),
        reason: "invalid phone number".to_owned(),
    }];
    let mut totals = IngestTotals::default();
    totals.add(upload_of(2), 2, Ok(UploadOutcome::Completed(upload)));
    assert_eq!(totals.failed_uploads, 0);
    assert_eq!(totals.problems.len(), 1);
    assert!(totals.problems[0].contains("3 rows rejected where 2"), "{}", totals.problems[0]);
    assert!(totals.problems[0].contains("line 7, field phone"), "{}", totals.problems[0]);
}
