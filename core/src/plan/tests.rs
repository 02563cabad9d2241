use chrono::Weekday::{self, Fri, Mon, Sat, Sun, Thu, Tue, Wed};
use chrono_tz::{America, Asia, Australia, Europe, Pacific};
use proptest::prelude::*;

use super::*;
use crate::domain::Channel;

const NEW_YORK: Tz = America::New_York;
const WORKDAYS: [Weekday; 5] = [Mon, Tue, Wed, Thu, Fri];
const DAY: u64 = 86_400;

fn utc(year: i32, month: u32, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, hour, minute, 0).single().expect("valid UTC instant")
}

fn naive(year: i32, month: u32, day: u32, hour: u32, minute: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(year, month, day)
        .and_then(|date| date.and_hms_opt(hour, minute, 0))
        .expect("valid local date and time")
}

fn time(hour: u32, minute: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(hour, minute, 0).expect("valid time of day")
}

fn window(weekdays: &[Weekday], start: NaiveTime, end: NaiveTime) -> SendWindow {
    SendWindow { weekdays: weekdays.to_vec(), start, end }
}

fn office_hours() -> SendWindow {
    window(&WORKDAYS, time(9, 0), time(17, 0))
}

fn every_day(start: NaiveTime, end: NaiveTime) -> SendWindow {
    SendWindow { start, end, ..SendWindow::always() }
}

fn step(channel: Channel, delay_seconds: u64) -> Step {
    Step {
        channel,
        delay_seconds,
        subject: None,
        body: "Hi {{first_name|there}}".to_owned(),
        html_body: None,
        max_lateness_seconds: None,
    }
}

#[test]
fn gap_time_moves_to_end_of_gap() {
    // Clocks in New York went from 02:00 EST to 03:00 EDT (07:00 UTC) on 2026-03-08.
    let end_of_gap = utc(2026, 3, 8, 7, 0);
    assert_eq!(resolve_local(NEW_YORK, naive(2026, 3, 8, 2, 30)), Some(end_of_gap));
    assert_eq!(resolve_local(NEW_YORK, naive(2026, 3, 8, 2, 0)), Some(end_of_gap));
    assert_eq!(resolve_local(NEW_YORK, naive(2026, 3, 8, 3, 0)), Some(end_of_gap));
    assert_eq!(resolve_local(NEW_YORK, naive(2026, 3, 8, 1, 59)), Some(utc(2026, 3, 8, 6, 59)));
}

#[test]
fn overlap_time_takes_first_occurrence() {
    // 01:30 occurred at 05:30 UTC (EDT) and again at 06:30 UTC (EST) on 2026-11-01.
    let first = utc(2026, 11, 1, 5, 30);
    assert_eq!(resolve_local(NEW_YORK, naive(2026, 11, 1, 1, 30)), Some(first));
}

#[test]
fn window_start_in_gap_opens_after_gap() {
    let window = every_day(time(2, 30), time(5, 0));

    let midnight = utc(2026, 3, 8, 5, 0);
    assert_eq!(next_window_instant(midnight, NEW_YORK, &window), utc(2026, 3, 8, 7, 0));

    // The next day the window opens at 02:30 EDT again.
    let evening = utc(2026, 3, 9, 0, 0);
    assert_eq!(next_window_instant(evening, NEW_YORK, &window), utc(2026, 3, 9, 6, 30));
}

#[test]
fn window_inside_gap_skips_day() {
    let window = window(&[Sun], time(2, 0), time(2, 45));
    let midnight = utc(2026, 3, 8, 5, 0);
    let next_sunday = utc(2026, 3, 15, 6, 0);
    assert_eq!(next_window_instant(midnight, NEW_YORK, &window), next_sunday);
}

#[test]
fn day_delay_keeps_local_time_across_gap() {
    let start = utc(2026, 3, 7, 15, 0); // Saturday 10:00 EST
    let always = SendWindow::always();

    let two_days = plan_steps(start, NEW_YORK, &[step(Channel::Sms, 2 * DAY)], &always);
    assert_eq!(two_days, [utc(2026, 3, 9, 14, 0)]); // Monday 10:00 EDT

    let with_hour = plan_steps(start, NEW_YORK, &[step(Channel::Sms, 2 * DAY + 3600)], &always);
    assert_eq!(with_hour, [utc(2026, 3, 9, 15, 0)]);
}

#[test]
fn second_delay_stays_elapsed_time() {
    let start = utc(2026, 3, 8, 6, 30); // 01:30 EST, half an hour before the gap
    let due = add_step_delay(start, NEW_YORK, 3600);
    assert_eq!(due, utc(2026, 3, 8, 7, 30)); // 03:30 EDT
}

#[test]
fn day_delay_into_gap_moves_to_end_of_gap() {
    let start = utc(2026, 3, 7, 7, 30); // Saturday 02:30 EST
    assert_eq!(add_step_delay(start, NEW_YORK, DAY), utc(2026, 3, 8, 7, 0));
}

#[test]
fn day_delay_into_overlap_takes_first() {
    let start = utc(2026, 10, 31, 5, 30); // Saturday 01:30 EDT
    assert_eq!(add_step_delay(start, NEW_YORK, DAY), utc(2026, 11, 1, 5, 30));
}

#[test]
fn hourly_steps_across_overlap_are_distinct() {
    let start = utc(2026, 11, 1, 4, 30); // 00:30 EDT
    let steps = [step(Channel::Email, 3600), step(Channel::Sms, 3600), step(Channel::Call, 3600)];
    let due = plan_steps(start, NEW_YORK, &steps, &SendWindow::always());

    // 01:30 EDT, then 01:30 EST, then 02:30 EST: each an hour after the previous one.
    let expected = [utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 7, 30)];
    assert_eq!(due, expected);
}

#[test]
fn window_in_repeated_hour_opens_once() {
    let window = every_day(time(1, 30), time(1, 45));

    let before = utc(2026, 11, 1, 5, 0); // 01:00 EDT
    assert_eq!(next_window_instant(before, NEW_YORK, &window), utc(2026, 11, 1, 5, 30));

    // 01:31 EST, the second pass: that day's window has already opened and closed.
    let second_pass = utc(2026, 11, 1, 6, 31);
    assert!(!window_contains(second_pass, NEW_YORK, &window));
    let next_day = utc(2026, 11, 2, 6, 30); // 01:30 EST
    assert_eq!(next_window_instant(second_pass, NEW_YORK, &window), next_day);
}

#[test]
fn window_stays_open_through_repeated_hour() {
    let window = every_day(time(1, 0), time(2, 0));
    // Opens at 01:00 EDT and closes at 02:00 EST, two hours later.
    assert!(window_contains(utc(2026, 11, 1, 5, 0), NEW_YORK, &window));
    assert!(window_contains(utc(2026, 11, 1, 6, 45), NEW_YORK, &window));
    assert!(!window_contains(utc(2026, 11, 1, 7, 0), NEW_YORK, &window));
}

#[test]
fn friday_evening_moves_to_monday() {
    let friday_evening = utc(2026, 6, 5, 21, 30); // Friday 17:30 EDT
    let monday_morning = utc(2026, 6, 8, 13, 0); // Monday 09:00 EDT
    assert_eq!(next_window_instant(friday_evening, NEW_YORK, &office_hours()), monday_morning);

    let saturday_noon = utc(2026, 6, 6, 16, 0);
    assert_eq!(next_window_instant(saturday_noon, NEW_YORK, &office_hours()), monday_morning);
}

#[test]
fn window_start_is_inclusive() {
    let opening = utc(2026, 6, 8, 13, 0); // Monday 09:00 EDT
    assert_eq!(next_window_instant(opening, NEW_YORK, &office_hours()), opening);
    assert!(window_contains(opening, NEW_YORK, &office_hours()));

    let just_before = opening - TimeDelta::seconds(1);
    assert!(!window_contains(just_before, NEW_YORK, &office_hours()));
    assert_eq!(next_window_instant(just_before, NEW_YORK, &office_hours()), opening);
}

#[test]
fn window_end_is_exclusive() {
    let closing = utc(2026, 6, 8, 21, 0); // Monday 17:00 EDT
    let tuesday_opening = utc(2026, 6, 9, 13, 0);
    assert!(!window_contains(closing, NEW_YORK, &office_hours()));
    assert_eq!(next_window_instant(closing, NEW_YORK, &office_hours()), tuesday_opening);

    let just_before = closing - TimeDelta::seconds(1);
    assert!(window_contains(just_before, NEW_YORK, &office_hours()));
    assert_eq!(next_window_instant(just_before, NEW_YORK, &office_hours()), just_before);
}

#[test]
fn kolkata_half_hour_offset() {
    let zone = Asia::Kolkata; // +05:30
    let monday_early = utc(2026, 6, 8, 3, 0); // 08:30 IST
    assert_eq!(next_window_instant(monday_early, zone, &office_hours()), utc(2026, 6, 8, 3, 30));

    let monday_closing = utc(2026, 6, 8, 11, 30); // 17:00 IST
    let tuesday_opening = utc(2026, 6, 9, 3, 30);
    assert_eq!(next_window_instant(monday_closing, zone, &office_hours()), tuesday_opening);
}

#[test]
fn chatham_quarter_hour_offset() {
    let zone = Pacific::Chatham; // +12:45 in June, +13:45 in January
    let sunday_utc = utc(2026, 6, 7, 12, 0); // Monday 00:45 local
    let monday_opening = utc(2026, 6, 7, 20, 15); // Monday 09:00 local
    assert_eq!(next_window_instant(sunday_utc, zone, &office_hours()), monday_opening);

    let january = utc(2026, 1, 11, 12, 0); // Monday 01:45 local
    let january_opening = utc(2026, 1, 11, 19, 15);
    assert_eq!(next_window_instant(january, zone, &office_hours()), january_opening);
}

#[test]
fn kiritimati_day_ahead_of_utc() {
    let zone = Pacific::Kiritimati; // +14
    let sunday_utc = utc(2026, 6, 7, 18, 0); // Monday 08:00 local
    let monday_opening = utc(2026, 6, 7, 19, 0); // Monday 09:00 local, still Sunday in UTC
    assert_eq!(next_window_instant(sunday_utc, zone, &office_hours()), monday_opening);

    let friday_closing = utc(2026, 6, 12, 3, 0); // Friday 17:00 local
    let next_monday = utc(2026, 6, 14, 19, 0);
    assert_eq!(next_window_instant(friday_closing, zone, &office_hours()), next_monday);
}

#[test]
fn apia_skipped_day_moves_to_next_week() {
    // Samoa moved from UTC-10 to UTC+14 after 2011-12-29, so Friday 2011-12-30 never
    // happened there.
    let zone = Pacific::Apia;
    let fridays = window(&[Fri], time(9, 0), time(17, 0));
    let following_friday = utc(2012, 1, 5, 19, 0); // 2012-01-06 09:00 at +14

    let thursday = utc(2011, 12, 29, 22, 0); // Thursday 12:00 at -10
    assert_eq!(next_window_instant(thursday, zone, &fridays), following_friday);

    let friday_before_closing = utc(2011, 12, 24, 4, 0); // Friday 2011-12-23 18:00 at -10
    assert_eq!(next_window_instant(friday_before_closing, zone, &fridays), following_friday);

    let end_of_gap = utc(2011, 12, 30, 10, 0); // 2011-12-31 00:00 at +14
    assert_eq!(resolve_local(zone, naive(2011, 12, 30, 12, 0)), Some(end_of_gap));
}

#[test]
fn demo_sequence_from_saturday() {
    let zone = Europe::Paris;
    let start = utc(2026, 6, 6, 8, 0); // Saturday 10:00 CEST
    assert_eq!(start.with_timezone(&zone).weekday(), Sat);
    let steps =
        [step(Channel::Email, 0), step(Channel::Sms, 2 * DAY), step(Channel::Call, 5 * DAY)];

    let due = plan_steps(start, zone, &steps, &office_hours());

    // Email on Monday 09:00, SMS two days later on Wednesday, call five days after that on
    // the next Monday, all at 09:00 CEST.
    let expected = [utc(2026, 6, 8, 7, 0), utc(2026, 6, 10, 7, 0), utc(2026, 6, 15, 7, 0)];
    assert_eq!(due, expected);
}

#[test]
fn demo_sequence_across_dst() {
    let start = utc(2026, 3, 7, 15, 0); // Saturday 10:00 EST, the day before the gap
    let steps =
        [step(Channel::Email, 0), step(Channel::Sms, 2 * DAY), step(Channel::Call, 5 * DAY)];

    let due = plan_steps(start, NEW_YORK, &steps, &office_hours());

    // Every step lands at 09:00 EDT, 13:00 UTC.
    let expected = [utc(2026, 3, 9, 13, 0), utc(2026, 3, 11, 13, 0), utc(2026, 3, 16, 13, 0)];
    assert_eq!(due, expected);
}

#[test]
fn plan_steps_empty_sequence() {
    let due = plan_steps(utc(2026, 6, 6, 8, 0), NEW_YORK, &[], &office_hours());
    assert!(due.is_empty());
}

#[test]
fn overnight_window_belongs_to_start_day() {
    let friday_night = window(&[Fri], time(22, 0), time(6, 0));
    let opening = utc(2026, 6, 6, 2, 0); // Friday 22:00 EDT

    let friday_evening = utc(2026, 6, 6, 0, 0); // Friday 20:00 EDT
    assert_eq!(next_window_instant(friday_evening, NEW_YORK, &friday_night), opening);

    let saturday_early = utc(2026, 6, 6, 7, 0); // Saturday 03:00 EDT
    assert!(window_contains(saturday_early, NEW_YORK, &friday_night));

    let saturday_closing = utc(2026, 6, 6, 10, 0); // Saturday 06:00 EDT
    let next_friday = utc(2026, 6, 13, 2, 0);
    assert_eq!(next_window_instant(saturday_closing, NEW_YORK, &friday_night), next_friday);

    let thursday_night = utc(2026, 6, 5, 3, 0); // Thursday 23:00 EDT
    assert_eq!(next_window_instant(thursday_night, NEW_YORK, &friday_night), opening);
}

#[test]
fn all_day_window_keeps_instant() {
    let always = SendWindow::always();
    let instants = [
        utc(2026, 3, 8, 7, 0),
        utc(2026, 11, 1, 6, 30),
        utc(2026, 6, 6, 0, 0) + TimeDelta::nanoseconds(1),
    ];
    for instant in instants {
        assert_eq!(next_window_instant(instant, NEW_YORK, &always), instant, "{instant}");
    }
}

#[test]
fn empty_weekdays_keeps_instant() {
    let never = window(&[], time(9, 0), time(17, 0));
    let instant = utc(2026, 6, 6, 8, 0);
    assert_eq!(next_window_instant(instant, NEW_YORK, &never), instant);
    assert!(!window_contains(instant, NEW_YORK, &never));
}

#[test]
fn validate_window_accepts_usable() {
    assert_eq!(validate_window(&SendWindow::always()), Ok(()));
    assert_eq!(validate_window(&office_hours()), Ok(()));
    assert_eq!(validate_window(&window(&[Fri], time(22, 0), time(6, 0))), Ok(()));
    assert_eq!(validate_window(&window(&[Sat], time(0, 0), time(0, 0))), Ok(()));
}

#[test]
fn validate_window_rejects_no_weekday() {
    let error = validate_window(&window(&[], time(9, 0), time(17, 0))).expect_err("no weekday");
    assert!(error.contains("no weekday"), "{error}");
}

#[test]
fn validate_window_rejects_equal_bounds() {
    let error =
        validate_window(&window(&WORKDAYS, time(9, 0), time(9, 0))).expect_err("equal bounds");
    assert!(error.contains("09:00:00"), "{error}");
    assert!(error.contains("00:00 to 00:00"), "{error}");
}

#[test]
fn extreme_instants_do_not_panic() {
    let zones = [Pacific::Kiritimati, Pacific::Niue, NEW_YORK, Tz::UTC];
    let extremes = [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC];
    for zone in zones {
        for instant in extremes {
            let next = next_window_instant(instant, zone, &office_hours());
            assert!(next >= instant, "{zone} {instant}");
        }
    }
}

#[test]
fn huge_delay_saturates() {
    let start = utc(2026, 6, 6, 8, 0);
    let due = plan_steps(start, NEW_YORK, &[step(Channel::Call, u64::MAX)], &office_hours());
    assert_eq!(due, [DateTime::<Utc>::MAX_UTC]);
    assert_eq!(add_step_delay(start, NEW_YORK, u64::MAX), DateTime::<Utc>::MAX_UTC);
}

/// Zones with DST at 02:00 (New York), at 01:00 UTC (London), at midnight (Havana, Santiago),
/// by 30 minutes (Lord Howe), with quarter-hour offsets (Chatham) and far from UTC.
const ZONES: [Tz; 9] = [
    Tz::UTC,
    NEW_YORK,
    Europe::London,
    America::Havana,
    America::Santiago,
    Asia::Kolkata,
    Australia::Lord_Howe,
    Pacific::Chatham,
    Pacific::Kiritimati,
];

const WEEK: [Weekday; 7] = [Mon, Tue, Wed, Thu, Fri, Sat, Sun];

fn arbitrary_window() -> impl Strategy<Value = SendWindow> {
    (1u8..128, time_of_day(), time_of_day()).prop_map(|(mask, start, end)| {
        let weekdays = WEEK.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0);
        SendWindow { weekdays: weekdays.map(|(_, day)| *day).collect(), start, end }
    })
}

/// Any second of the day, or a quarter hour, which makes bounds that coincide with DST
/// transitions and with each other likely.
fn time_of_day() -> impl Strategy<Value = NaiveTime> {
    prop_oneof![0u32..86_400, (0u32..96).prop_map(|quarter| quarter * 900)].prop_map(|seconds| {
        NaiveTime::from_num_seconds_from_midnight_opt(seconds, 0).expect("seconds within a day")
    })
}

/// A zone of [`ZONES`] and an instant: any instant from 2000 to 2036, a range where the
/// timezone data has every transition, or one within two days of a transition of that zone.
fn zone_and_instant() -> impl Strategy<Value = (Tz, DateTime<Utc>)> {
    (0..ZONES.len()).prop_flat_map(|index| {
        let tz = ZONES[index];
        let uniform = (946_684_800i64..2_082_758_400)
            .prop_map(|seconds| DateTime::from_timestamp(seconds, 0).expect("in range"));
        let near_transition = (2000i32..2037, any::<usize>(), -172_800i64..172_800)
            .prop_map(move |(year, pick, shift)| near_transition(tz, year, pick, shift));
        (Just(tz), prop_oneof![uniform, near_transition])
    })
}

/// The instant `shift` seconds from one of the offset changes of `tz` in `year`, or from the
/// middle of the year when the zone has none.
fn near_transition(tz: Tz, year: i32, pick: usize, shift: i64) -> DateTime<Utc> {
    let changes = offset_changes(tz, year);
    let base =
        if changes.is_empty() { utc(year, 7, 1, 0, 0) } else { changes[pick % changes.len()] };
    base + TimeDelta::seconds(shift)
}

/// The instants at which the UTC offset of `tz` changes during `year`, to the second.
fn offset_changes(tz: Tz, year: i32) -> Vec<DateTime<Utc>> {
    let offset = |seconds: i64| {
        let instant = DateTime::from_timestamp(seconds, 0).expect("in range");
        offset_at(tz, instant.naive_utc())
    };
    let new_year = utc(year, 1, 1, 0, 0).timestamp();
    let mut changes = Vec::new();
    for day in 0..366 {
        let mut before = new_year + day * 86_400;
        let mut after = before + 86_400;
        if offset(before) == offset(after) {
            continue;
        }
        while after - before > 1 {
            let middle = before + (after - before) / 2;
            if offset(middle) == offset(before) {
                before = middle;
            } else {
                after = middle;
            }
        }
        changes.push(DateTime::from_timestamp(after, 0).expect("in range"));
    }
    changes
}

#[test]
fn offset_changes_finds_new_york_dst() {
    let changes = offset_changes(NEW_YORK, 2026);
    assert_eq!(changes, [utc(2026, 3, 8, 7, 0), utc(2026, 11, 1, 6, 0)]);
    assert!(offset_changes(Asia::Kolkata, 2026).is_empty());
}

/// Whether a local date and time is inside `window` by wall-clock reading alone, which is
/// right wherever the offset does not change near it.
fn inside_by_wall_clock(local: NaiveDateTime, window: &SendWindow) -> bool {
    let length = (window.end - window.start).num_seconds().rem_euclid(86_400);
    let length = TimeDelta::seconds(if length == 0 { 86_400 } else { length });
    let days = [Some(local.date()), local.date().pred_opt()];
    days.into_iter().flatten().any(|day| {
        let open = day.and_time(window.start);
        window.weekdays.contains(&day.weekday()) && open <= local && local < open + length
    })
}

fn is_repeated_local_time(local: NaiveDateTime, tz: Tz) -> bool {
    matches!(tz.from_local_datetime(&local), chrono::MappedLocalTime::Ambiguous(..))
}

fn offset_changes_at(instant: DateTime<Utc>, tz: Tz) -> bool {
    let just_before = instant - TimeDelta::seconds(1);
    offset_at(tz, just_before.naive_utc()) != offset_at(tz, instant.naive_utc())
}

proptest! {
    // Cases near transitions are a minority, so run more than the default 256.
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn next_window_instant_properties(
        (tz, earliest) in zone_and_instant(),
        window in arbitrary_window(),
    ) {
        let next = next_window_instant(earliest, tz, &window);

        prop_assert!(next >= earliest);
        prop_assert!(window_contains(next, tz, &window));
        prop_assert_eq!(next_window_instant(next, tz, &window), next);

        // During a repeated hour the window follows its opening instant, not the wall clock;
        // everywhere else the wall clock agrees.
        let local = next.with_timezone(&tz).naive_local();
        if !is_repeated_local_time(local, tz) {
            prop_assert!(inside_by_wall_clock(local, &window), "local {}", local);
        }

        if next > earliest {
            // Nothing between `earliest` and `next` was inside the window.
            prop_assert!(!window_contains(next - TimeDelta::seconds(1), tz, &window));

            // `next` is an opening: the first occurrence of the start time, or the end of the
            // gap that skipped it.
            if local.time() == window.start {
                let first = tz.from_local_datetime(&local).earliest().map(|t| t.to_utc());
                prop_assert_eq!(first, Some(next));
            } else {
                prop_assert!(offset_changes_at(next, tz), "local {}", local);
            }
        }
    }

    #[test]
    fn plan_steps_inside_window_in_order(
        (tz, start) in zone_and_instant(),
        window in arbitrary_window(),
        delays in prop::collection::vec(0u64..10 * DAY, 0..5),
    ) {
        let steps: Vec<Step> = delays.iter().map(|delay| step(Channel::Sms, *delay)).collect();
        let due = plan_steps(start, tz, &steps, &window);

        prop_assert_eq!(due.len(), steps.len());
        let mut previous = start;
        for (instant, step) in due.iter().zip(&steps) {
            prop_assert!(*instant >= add_step_delay(previous, tz, step.delay_seconds));
            prop_assert!(*instant >= previous);
            prop_assert!(window_contains(*instant, tz, &window));
            previous = *instant;
        }
    }
}

#[test]
fn replan_moves_first_step_into_window() {
    // Monday 2026-12-07 20:00 in New York is after office hours: the late step moves to
    // Tuesday 09:00, and the step a day after it to Wednesday 09:00.
    let tz = America::New_York;
    let steps = [step(Channel::Email, 0), step(Channel::Email, 86_400)];
    let now = utc(2026, 12, 8, 1, 0);
    let planned = replan_steps(now, tz, &steps, &office_hours());
    assert_eq!(planned, vec![utc(2026, 12, 8, 14, 0), utc(2026, 12, 9, 14, 0)]);
    // Inside the window the first step goes at once, whatever its own delay.
    let inside = utc(2026, 12, 8, 15, 30);
    let planned = replan_steps(inside, tz, &steps[1..], &office_hours());
    assert_eq!(planned, vec![inside]);
    assert!(replan_steps(now, tz, &[], &office_hours()).is_empty());
}
