//! Launch forecast: how a sequence sent to a number of contacts would go out, without sending
//! or storing anything.
//!
//! It runs the same code as real dispatch on a virtual clock of its own: `plan::plan_steps`
//! plans each contact's steps as ingest does, and one [`ConnectionLimiter`] per connection and
//! channel admits sends as the provider actor's does, in rounds of the dispatch batch size,
//! each round taking the earliest due follow-ups. So caps and windows push work later here as
//! they would in dispatch.
//!
//! NOTE: it leaves out what it cannot know in advance or what real dispatch adds on top: the
//! provider's own errors and retries, the engine-wide quota of a Google Cloud project or
//! Entra app shared with other tenants, the plan's monthly quota, sends already made today,
//! and stops or suppressions that arrive during the run.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use followup_core::clock::{Clock, VirtualClock};
use followup_core::domain::{Channel, Connection, Sequence};
use followup_core::limits::ConnectionLimits;
use followup_core::plan::{add_step_delay, plan_steps};
use serde::Serialize;

use crate::limiter::ConnectionLimiter;

/// Contacts of one forecast: how many, in which timezone, starting when.
#[derive(Clone, Debug)]
pub struct ForecastInput {
    pub contacts: u64,
    pub timezone: Tz,
    pub start_at: DateTime<Utc>,
    /// Follow-ups a dispatch round takes per channel.
    pub batch_size: usize,
}

/// The forecast of one sequence.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Forecast {
    pub follow_ups: u64,
    /// Follow-ups whose channel has no connection, which dispatch would skip.
    pub without_connection: u64,
    pub connections: Vec<ConnectionForecast>,
    /// When the last send goes out; `None` when nothing is sent.
    pub last_send_at: Option<DateTime<Utc>>,
}

/// Sends of one connection on one channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectionForecast {
    pub provider: String,
    pub channel: Channel,
    /// Timezone whose calendar days `days` counts in: the connection's.
    pub timezone: String,
    /// Sends per calendar day, in date order.
    pub days: Vec<DaySends>,
    /// Follow-ups the send window moved later than their delay alone would have placed them.
    pub moved_by_window: u64,
    /// Follow-ups sent later than planned because a limit of the connection held them back.
    pub held_by_limits: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DaySends {
    pub date: NaiveDate,
    pub sends: u64,
}

/// A planned send waiting for its limiter.
struct Planned {
    due: DateTime<Utc>,
}

/// One connection's queue on one channel, in due order.
struct Lane {
    forecast: ConnectionForecast,
    timezone: Tz,
    limiter: ConnectionLimiter,
    queue: VecDeque<Planned>,
    per_day: BTreeMap<NaiveDate, u64>,
    /// No admission before this instant, the next free one the limiter returned.
    blocked_until: Option<DateTime<Utc>>,
}

/// Forecasts `sequence` for `input` over the tenant's `connections`.
pub fn forecast(
    sequence: &Sequence,
    connections: &[Connection],
    input: &ForecastInput,
) -> Forecast {
    // Every contact in the same timezone starting at the same instant gets the same plan, as
    // ingest would compute it for each of them.
    let planned = plan_steps(input.start_at, input.timezone, &sequence.steps, &sequence.window);
    let mut previous = input.start_at;
    let mut follow_ups = Vec::new();
    for (step, due) in sequence.steps.iter().zip(&planned) {
        let by_delay = add_step_delay(previous, input.timezone, step.delay_seconds);
        previous = *due;
        let count = usize::try_from(input.contacts).unwrap_or(usize::MAX);
        follow_ups.extend(std::iter::repeat_n((step.channel, *due, *due > by_delay), count));
    }
    forecast_planned(connections, follow_ups, input.start_at, input.batch_size)
}

/// Forecasts the sends of planned follow-ups, each (channel, planned instant, whether the
/// window moved it), from `start` on, over the tenant's `connections`.
pub fn forecast_planned(
    connections: &[Connection],
    follow_ups: Vec<(Channel, DateTime<Utc>, bool)>,
    start: DateTime<Utc>,
    batch_size: usize,
) -> Forecast {
    let clock = Arc::new(VirtualClock::new(start));
    let mut report = Forecast::default();
    let mut lanes: BTreeMap<Channel, Lane> = BTreeMap::new();
    for channel in Channel::ALL {
        let Some(connection) = connections.iter().find(|c| c.provider.carries(channel)) else {
            continue;
        };
        let limits = ConnectionLimits::of(connection, channel);
        let timezone = connection.timezone();
        let forecast = ConnectionForecast {
            provider: connection.provider.to_string(),
            channel,
            timezone: timezone.name().to_owned(),
            days: Vec::new(),
            moved_by_window: 0,
            held_by_limits: 0,
        };
        let limiter = ConnectionLimiter::new(limits, clock.clone());
        let lane = Lane {
            forecast,
            timezone,
            limiter,
            queue: VecDeque::new(),
            per_day: BTreeMap::new(),
            blocked_until: None,
        };
        lanes.insert(channel, lane);
    }

    for (channel, due, moved) in follow_ups {
        report.follow_ups += 1;
        let Some(lane) = lanes.get_mut(&channel) else {
            report.without_connection += 1;
            continue;
        };
        lane.forecast.moved_by_window += u64::from(moved);
        lane.queue.push_back(Planned { due });
    }
    for lane in lanes.values_mut() {
        lane.queue.make_contiguous().sort_by_key(|planned| planned.due);
    }
    run(&clock, &mut lanes, batch_size.max(1), &mut report);
    // A channel no step uses has no lane worth reporting.
    report.connections = lanes
        .into_values()
        .filter(|lane| !lane.per_day.is_empty())
        .map(|mut lane| {
            lane.forecast.days =
                lane.per_day.into_iter().map(|(date, sends)| DaySends { date, sends }).collect();
            lane.forecast
        })
        .collect();
    report
}

/// Dispatches the lanes on the virtual clock: at each instant, every lane takes batches of its
/// due follow-ups until its limiter holds it back, and then the clock moves to the earliest
/// instant at which a lane has work.
fn run(
    clock: &VirtualClock,
    lanes: &mut BTreeMap<Channel, Lane>,
    batch_size: usize,
    report: &mut Forecast,
) {
    loop {
        let now = clock.now();
        let mut next: Option<DateTime<Utc>> = None;
        for lane in lanes.values_mut() {
            if let Some(wake) = lane.dispatch(now, batch_size, report) {
                next = Some(next.map_or(wake, |earliest| earliest.min(wake)));
            }
        }
        match next {
            None => return,
            Some(wake) => clock.advance_to(wake.max(now)),
        }
    }
}

impl Lane {
    /// Sends what the limiter admits at `now` and returns when the lane next has work.
    fn dispatch(
        &mut self,
        now: DateTime<Utc>,
        batch_size: usize,
        report: &mut Forecast,
    ) -> Option<DateTime<Utc>> {
        if self.blocked_until.is_some_and(|until| now < until) {
            return self.blocked_until;
        }
        self.blocked_until = None;
        loop {
            let due = self.queue.iter().take(batch_size).take_while(|p| p.due <= now).count();
            if due == 0 {
                return self.queue.front().map(|planned| planned.due);
            }
            let wanted = u32::try_from(due).unwrap_or(u32::MAX);
            let admission = self.limiter.admit(wanted);
            for planned in self.queue.drain(..admission.granted as usize) {
                if now > planned.due {
                    self.forecast.held_by_limits += 1;
                }
                let date = now.with_timezone(&self.timezone).date_naive();
                *self.per_day.entry(date).or_default() += 1;
                report.last_send_at = Some(report.last_send_at.map_or(now, |last| last.max(now)));
            }
            if let Some(free_at) = admission.next_free_at {
                self.blocked_until = Some(free_at);
                return Some(free_at);
            }
        }
    }
}
