//! The dispatch run that `dispatch_throughput` times, on a small scale, checked for
//! correctness: every follow-up is settled as sent exactly once, by exactly one send.

use std::collections::BTreeSet;
use std::time::Duration;

use followup_benches::dispatch::{DispatchRun, prepare};
use followup_core::domain::FollowUpState;

#[actix_rt::test]
async fn every_follow_up_settles_once() -> anyhow::Result<()> {
    let run = DispatchRun {
        tenants: 4,
        follow_ups_per_tenant: 500,
        dispatch_batch_size: 100,
        keep_sent_messages: true,
    };
    let prepared = prepare(run).await?;

    let figures = prepared.dispatch_all(Duration::from_secs(120)).await?;

    assert_eq!(figures.follow_ups, 2_000);
    let store = prepared.running.engine.store();
    let mut message_ids = BTreeSet::new();
    let mut follow_ups = 0;
    for tenant in &prepared.tenants {
        let mut after = None;
        loop {
            let page = store.follow_ups_page(*tenant, after, 500).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for follow_up in &page {
                follow_ups += 1;
                assert_eq!(follow_up.state, FollowUpState::Sent, "{follow_up:?}");
                assert_eq!(follow_up.attempts, 1, "{follow_up:?}");
                let id = follow_up.provider_message_id.clone().expect("a sent follow-up has an id");
                assert!(message_ids.insert(id.clone()), "message id {id} stored twice");
            }
        }
        let attempts = store.attempts_page(*tenant, None, 1_000).await?;
        assert_eq!(attempts.len(), 500, "one attempt per follow-up of tenant {tenant}");
    }
    assert_eq!(follow_ups, 2_000);
    // The null provider numbers its sends from 1, so 2,000 distinct ids from 1 to 2,000 mean
    // that it accepted exactly 2,000 sends: none went out twice.
    let expected: BTreeSet<String> = (1..=2_000).map(|n| format!("null-gmail-{n}")).collect();
    assert_eq!(message_ids, expected);
    prepared.running.stop().await;
    Ok(())
}
