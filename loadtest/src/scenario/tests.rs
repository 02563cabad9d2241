use std::path::PathBuf;

use super::*;

fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

#[test]
fn shipped_scenarios_parse() {
    let mut parsed = 0;
    for entry in std::fs::read_dir(scenarios_dir()).expect("scenarios directory") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|extension| extension == "yaml") {
            let scenario = Scenario::from_file(&path);
            assert!(scenario.is_ok(), "{}: {:?}", path.display(), scenario.err());
            parsed += 1;
        }
    }
    assert!(parsed >= 2, "expected at least two scenario files, found {parsed}");
}

#[test]
fn smoke_scenario_fields() {
    let scenario = Scenario::from_file(&scenarios_dir().join("smoke.yaml")).expect("smoke.yaml");
    assert_eq!(scenario.name, "smoke");
    assert_eq!(scenario.tenants, 2);
    assert_eq!(scenario.contacts_per_tenant, 500);
    assert_eq!(scenario.connections.gmail.per_minute, Some(6_000));
    assert_eq!(scenario.sequence.steps.len(), 2);
    assert_eq!(scenario.sequence.steps[0].channel, Channel::Email);
    assert_eq!(scenario.sequence.steps[1].channel, Channel::Sms);
}

#[test]
fn ingest_heavy_scenario_size() {
    let path = scenarios_dir().join("ingest-heavy.yaml");
    let scenario = Scenario::from_file(&path).expect("ingest-heavy.yaml");
    assert_eq!(scenario.tenants, 4);
    assert_eq!(scenario.contacts_per_tenant, 50_000);
}

#[test]
fn missing_fields_take_defaults() {
    let scenario = Scenario::from_yaml("name: tiny\ntenants: 3\n").expect("valid scenario");
    let defaults = Scenario::default();
    assert_eq!(scenario.tenants, 3);
    assert_eq!(scenario.contacts_per_tenant, defaults.contacts_per_tenant);
    assert_eq!(scenario.connections, defaults.connections);
    assert_eq!(scenario.sequence, defaults.sequence);
}

#[test]
fn default_scenario_is_valid() {
    assert!(Scenario::default().validate().is_ok());
}

#[test]
fn unknown_field_rejected() {
    let error = Scenario::from_yaml("name: x\ntennants: 3\n").expect_err("typo must fail");
    assert!(format!("{error:#}").contains("tennants"), "{error:#}");
}

#[test]
fn unknown_limit_field_rejected() {
    let yaml = "connections:\n  gmail:\n    per_minte: 5\n";
    assert!(Scenario::from_yaml(yaml).is_err());
}

#[test]
fn delay_forms_parse() {
    let yaml = "sequence:\n  name: s\n  steps:\n    - channel: sms\n      delay: 90\n      \
                body: a\n    - channel: call\n      delay: 2d\n      body: b\n    - channel: sms\n      \
                body: c\n";
    let scenario = Scenario::from_yaml(yaml).expect("valid scenario");
    let delays: Vec<&Delay> = scenario.sequence.steps.iter().map(|step| &step.delay).collect();
    assert_eq!(delays, [&Delay::Seconds(90), &Delay::Text("2d".into()), &Delay::Text("0s".into())]);
}

#[test]
fn sequence_serializes_as_api_body() {
    let body = serde_json::to_value(SequenceSpec::default()).expect("serializable");
    assert_eq!(body["steps"][0]["channel"], "email");
    assert_eq!(body["steps"][0]["delay"], "0s");
    assert!(body["steps"][1].get("subject").is_none(), "{body}");
    assert!(body.get("window").is_none(), "{body}");
}

#[test]
fn window_parses() {
    let yaml = "sequence:\n  name: s\n  steps:\n    - channel: sms\n      body: a\n  window:\n    \
                weekdays: [mon, fri]\n    start: \"09:00\"\n    end: \"17:00\"\n";
    let scenario = Scenario::from_yaml(yaml).expect("valid scenario");
    let window = scenario.sequence.window.expect("window");
    assert_eq!(window.weekdays, ["mon", "fri"]);
    assert_eq!(window.start, "09:00");
}

#[test]
fn out_of_range_values_rejected() {
    for (yaml, field) in [
        ("tenants: 0", "tenants"),
        ("tenants: 1001", "tenants"),
        ("contacts_per_tenant: 5000001", "contacts_per_tenant"),
        ("rows_per_upload: 0", "rows_per_upload"),
        ("concurrency: 0", "concurrency"),
        ("concurrency: 257", "concurrency"),
        ("timeout_seconds: 0", "timeout_seconds"),
        ("invalid_fraction: 1.5", "invalid_fraction"),
        ("invalid_fraction: -0.1", "invalid_fraction"),
        ("poll_interval_ms: 10", "poll_interval_ms"),
        ("name: \"  \"", "name"),
        ("plan: \"\"", "plan"),
    ] {
        let error = Scenario::from_yaml(yaml).expect_err(yaml);
        assert!(format!("{error:#}").contains(field), "{yaml}: {error:#}");
    }
}

#[test]
fn empty_steps_rejected() {
    let error = Scenario::from_yaml("sequence:\n  name: s\n  steps: []\n").expect_err("no steps");
    assert!(format!("{error:#}").contains("steps"), "{error:#}");
}

#[test]
fn email_step_needs_subject() {
    let yaml = "sequence:\n  name: s\n  steps:\n    - channel: email\n      body: hi\n";
    let error = Scenario::from_yaml(yaml).expect_err("no subject");
    assert!(format!("{error:#}").contains("subject"), "{error:#}");
}

#[test]
fn limits_convert_to_overrides() {
    let limits = Limits { per_minute: Some(10), per_day: None };
    let overrides = LimitOverrides::from(limits);
    assert_eq!(overrides.per_minute, Some(10));
    assert_eq!(overrides.per_day, None);
}

#[test]
fn start_and_fakes_read_from_yaml() {
    let yaml = "start:\n  after_seconds: 30\nfakes:\n  latency_ms: 20\n  faults: flaky\n";
    let scenario = Scenario::from_yaml(yaml).expect("valid scenario");
    assert_eq!(scenario.start, Some(StartSpec { after_seconds: 30, spread_seconds: 0 }));
    assert_eq!(scenario.fakes, FakeBehaviour { latency_ms: 20, faults: "flaky".to_owned() });
    let started = DateTime::from_timestamp(1_800_000_000, 250_000_000).expect("valid instant");
    let starts = scenario.start_instants(started).expect("the scenario sets a start");
    assert_eq!(starts.first.timestamp(), 1_800_000_031, "rounded up to a whole second");
    assert_eq!(starts.first.timestamp_subsec_nanos(), 0);
}

#[test]
fn step_delays_read_as_the_engine_reads_them() {
    let yaml =
        "sequence:\n  name: s\n  steps:\n    - channel: sms\n      delay: 15m\n      body: hi\n";
    let scenario = Scenario::from_yaml(yaml).expect("valid scenario");
    assert_eq!(scenario.sequence.steps[0].delay.seconds(), Ok(900));
    let bad = yaml.replace("15m", "soon");
    let error = Scenario::from_yaml(&bad).expect_err("bad delay");
    assert!(format!("{error:#}").contains("sequence.steps[0].delay"), "{error:#}");
}

#[test]
fn background_becomes_a_scenario_of_its_own() {
    let yaml = "name: big\nseed: 3\nbackground:\n  pending: 1000\n  tenants: 4\n";
    let scenario = Scenario::from_yaml(yaml).expect("valid scenario");
    let backlog = scenario.background_scenario().expect("the scenario has a backlog");
    assert_eq!(backlog.name, "big-background");
    assert_eq!(backlog.tenants, 4);
    assert_eq!(backlog.contacts_per_tenant, 250);
    assert_eq!(backlog.rows_per_upload, 10_000);
    assert_eq!(backlog.invalid_fraction, 0.0);
    assert_ne!(backlog.seed, scenario.seed);
    assert_eq!(backlog.sequence.steps.len(), 1);
    assert_eq!(backlog.sequence.steps[0].delay.seconds(), Ok(30 * 86_400));
    assert!(backlog.background.is_none());
    assert!(Scenario::default().background_scenario().is_none());

    let error =
        Scenario::from_yaml("background:\n  pending: 10\n  tenants: 0\n").expect_err("no tenants");
    assert!(format!("{error:#}").contains("background.tenants"), "{error:#}");

    let error = Scenario::from_yaml("background:\n  pending: 10\n  tenants: 20\n")
        .expect_err("more tenants than follow-ups");
    assert!(format!("{error:#}").contains("multiple of background.tenants"), "{error:#}");
    let error = Scenario::from_yaml("embedded_cache_mib: 18446744073709551615\n")
        .expect_err("a cache the engine's configuration cannot hold");
    assert!(format!("{error:#}").contains("embedded_cache_mib is"), "{error:#}");
}

#[test]
fn gmail_project_limits_parse_and_zero_is_refused() {
    let scenario = Scenario::from_file(&scenarios_dir().join("scaling.yaml")).expect("scaling");
    assert_eq!(scenario.gmail_project.per_minute, Some(6_000_000));
    assert_eq!(Scenario::default().gmail_project, Limits::default());

    let error = Scenario::from_yaml("name: x\ngmail_project:\n  per_minute: 0\n")
        .expect_err("a limit of 0 must fail");
    assert!(format!("{error:#}").contains("gmail_project"), "{error:#}");
}

#[test]
fn time_defaults_to_real() {
    let scenario = Scenario::from_yaml("name: x\n").expect("valid scenario");
    assert_eq!(scenario.time, TimeMode::Real);
    let scenario = Scenario::from_yaml("time: virtual\n").expect("valid scenario");
    assert_eq!(scenario.time, TimeMode::Virtual);
}

#[test]
fn unknown_time_mode_rejected() {
    let error = Scenario::from_yaml("time: simulated\n").expect_err("unknown mode");
    let message = format!("{error:#}");
    assert!(message.contains("simulated"), "{message}");
    assert!(message.contains("virtual"), "the expected values are listed: {message}");
}

#[test]
fn virtual_time_rejects_background() {
    let yaml = "time: virtual\nbackground:\n  pending: 10\n";
    let error = Scenario::from_yaml(yaml).expect_err("backlog under virtual time");
    let message = format!("{error:#}");
    assert!(message.contains("background"), "{message}");
    assert!(message.contains("time: virtual"), "{message}");
    assert!(Scenario::from_yaml("background:\n  pending: 10\n").is_ok(), "fine on real time");
}

#[test]
fn virtual_time_rejects_fake_latency() {
    let yaml = "time: virtual\nfakes:\n  latency_ms: 20\n";
    let error = Scenario::from_yaml(yaml).expect_err("latency under virtual time");
    assert!(format!("{error:#}").contains("fakes.latency_ms is 20"), "{error:#}");
}

#[test]
fn virtual_span_adds_start_and_delays() {
    let yaml = "time: virtual\nstart:\n  after_seconds: 60\n  spread_seconds: 40\nsequence:\n  \
                name: s\n  steps:\n    - channel: sms\n      body: a\n    - channel: sms\n      \
                delay: 2d\n      body: b\n    - channel: sms\n      delay: 5d\n      body: c\n";
    let scenario = Scenario::from_yaml(yaml).expect("valid scenario");
    assert_eq!(scenario.virtual_span_seconds().expect("delays parse"), 100 + 7 * 86_400);
}

#[test]
fn virtual_span_over_a_year_rejected() {
    let yaml = "time: virtual\nsequence:\n  name: s\n  steps:\n    - channel: sms\n      \
                body: a\n    - channel: sms\n      delay: 300d\n      body: b\n    - channel: sms\n      \
                delay: 100d\n      body: c\n";
    let error = Scenario::from_yaml(yaml).expect_err("span too long");
    assert!(format!("{error:#}").contains("34560000 s of virtual time"), "{error:#}");
    let real = yaml.replace("time: virtual\n", "");
    assert!(Scenario::from_yaml(&real).is_ok(), "real time has no span limit");
}

#[test]
fn virtual_week_scenario_fields() {
    let path = scenarios_dir().join("virtual-week.yaml");
    let scenario = Scenario::from_file(&path).expect("virtual-week.yaml");
    assert_eq!(scenario.time, TimeMode::Virtual);
    assert_eq!(scenario.virtual_span_seconds().expect("delays parse"), 7 * 86_400);
}
