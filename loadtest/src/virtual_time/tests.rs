use super::*;

#[test]
fn planned_end_adds_start_and_delays() {
    let scenario = Scenario::from_yaml(
        "time: virtual\nstart:\n  after_seconds: 30\nsequence:\n  name: s\n  steps:\n    - \
         channel: sms\n      body: a\n    - channel: sms\n      delay: 3d\n      body: b\n",
    )
    .expect("valid scenario");
    let started = DateTime::from_timestamp(1_800_000_000, 0).expect("valid instant");
    let end = planned_end(&scenario, started).expect("delays parse");
    assert_eq!(end - started, TimeDelta::seconds(30 + 3 * 86_400));
}

#[test]
fn clock_line_shows_virtual_rate() {
    let line = clock_line(86_400, 259_200, 12, Duration::from_secs(2));
    assert_eq!(
        line,
        "clock: 86400/259200 virtual seconds (33.3%), 43200 virtual seconds/s, 12 dispatch \
         rounds, 2.0s elapsed"
    );
}
