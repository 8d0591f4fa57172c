//! Periodic and parameterized jobs: their configuration, the cron schedule
//! a periodic job launches on, and the shapes of the dispatch and force
//! endpoints.
//!
//! Cron specs are read as Nomad's `cronexpr` reads them: five fields are
//! minute to day of week (`0 3 * * *` launches at 03:00), six add a trailing
//! year (`*/15 * * * * *` launches every fifteen minutes), seven add a
//! leading second as well (`*/5 * * * * * *` launches every five seconds);
//! `@daily` and the other predefined expressions work too. `croner` parses
//! them; they are evaluated in the job's IANA time zone
//! (`chrono-tz`), so a daily launch stays at the same wall-clock time across
//! daylight-saving changes.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::{Deserialize, Serialize};

use super::de::{null_default, null_default_map, null_default_vec};

/// The only spec type Atoll accepts (Nomad's `cron`).
pub const PERIODIC_SPEC_CRON: &str = "cron";
/// Default time zone of a periodic job.
pub const PERIODIC_DEFAULT_TIME_ZONE: &str = "UTC";
/// Infix of a periodic child's ID: `<parent>/periodic-<unix seconds>`.
pub const PERIODIC_LAUNCH_SUFFIX: &str = "/periodic-";
/// Infix of a dispatched child's ID: `<parent>/dispatch-<unix>-<8 hex>`.
pub const DISPATCH_LAUNCH_SUFFIX: &str = "/dispatch-";
/// The payload may be given or not.
pub const DISPATCH_PAYLOAD_OPTIONAL: &str = "optional";
/// The payload must be given.
pub const DISPATCH_PAYLOAD_REQUIRED: &str = "required";
/// The payload must not be given.
pub const DISPATCH_PAYLOAD_FORBIDDEN: &str = "forbidden";
/// Largest dispatch payload, decoded (Nomad: 16 KiB).
pub const DISPATCH_PAYLOAD_SIZE_LIMIT: usize = 16 * 1024;

/// `Job.Periodic`: launch a child of the job on a cron schedule.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PeriodicConfig {
    /// Whether the schedule is active.
    #[serde(deserialize_with = "null_default")]
    pub enabled: bool,
    /// The cron spec.
    #[serde(deserialize_with = "null_default")]
    pub spec: String,
    /// `cron` (the default).
    #[serde(deserialize_with = "null_default")]
    pub spec_type: String,
    /// Skip a launch while an earlier child is still pending or running.
    #[serde(deserialize_with = "null_default")]
    pub prohibit_overlap: bool,
    /// IANA time zone the spec is read in (default `UTC`).
    #[serde(deserialize_with = "null_default")]
    pub time_zone: String,
}

/// `Job.ParameterizedJob`: the job is a template for dispatched children.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ParameterizedJobConfig {
    /// `optional` (default), `required` or `forbidden`.
    #[serde(deserialize_with = "null_default")]
    pub payload: String,
    /// Meta keys every dispatch must give.
    #[serde(deserialize_with = "null_default_vec")]
    pub meta_required: Vec<String>,
    /// Meta keys a dispatch may give.
    #[serde(deserialize_with = "null_default_vec")]
    pub meta_optional: Vec<String>,
}

/// `Task.DispatchPayload`: where a dispatched child's payload is written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DispatchPayloadConfig {
    /// File name, relative to the task's `local/` directory.
    #[serde(deserialize_with = "null_default")]
    pub file: String,
}

/// The last launch of a periodic job (Nomad's `PeriodicLaunch` table), kept
/// in the state so a new leader neither skips nor repeats a launch.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PeriodicLaunch {
    /// The periodic job's ID.
    #[serde(rename = "ID", deserialize_with = "null_default")]
    pub id: String,
    /// Its namespace.
    #[serde(deserialize_with = "null_default")]
    pub namespace: String,
    /// Time of the last launch, Unix nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub launch: i64,
    /// Raft index of the row's creation.
    #[serde(deserialize_with = "null_default")]
    pub create_index: u64,
    /// Raft index of the row's last change.
    #[serde(deserialize_with = "null_default")]
    pub modify_index: u64,
}

/// Body of `PUT /v1/job/:id/dispatch`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JobDispatchRequest {
    /// The parameterized job (the URL's ID wins).
    #[serde(rename = "JobID", deserialize_with = "null_default")]
    pub job_id: String,
    /// The payload, base64.
    #[serde(deserialize_with = "null_default")]
    pub payload: String,
    /// Meta of the dispatch, merged over the job's.
    #[serde(deserialize_with = "null_default_map")]
    pub meta: BTreeMap<String, String>,
    /// A retried dispatch with the same token returns the existing child.
    #[serde(deserialize_with = "null_default")]
    pub idempotency_token: String,
}

/// Answer of `PUT /v1/job/:id/dispatch`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JobDispatchResponse {
    /// The child's ID.
    #[serde(rename = "DispatchedJobID", deserialize_with = "null_default")]
    pub dispatched_job_id: String,
    /// The child's evaluation (empty when an existing child was returned).
    #[serde(rename = "EvalID", deserialize_with = "null_default")]
    pub eval_id: String,
    /// Its create index.
    #[serde(deserialize_with = "null_default")]
    pub eval_create_index: u64,
    /// The child's create index.
    #[serde(deserialize_with = "null_default")]
    pub job_create_index: u64,
    /// Raft index of the answer.
    #[serde(deserialize_with = "null_default")]
    pub index: u64,
}

/// Answer of `PUT /v1/job/:id/periodic/force`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PeriodicForceResponse {
    /// The launched child's evaluation.
    #[serde(rename = "EvalID", deserialize_with = "null_default")]
    pub eval_id: String,
    /// Its create index.
    #[serde(deserialize_with = "null_default")]
    pub eval_create_index: u64,
    /// Raft index of the answer.
    #[serde(deserialize_with = "null_default")]
    pub index: u64,
}

/// A parsed cron spec in its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    tz: Tz,
}

/// Why a periodic configuration cannot be scheduled; `field` names the
/// offending field under `Periodic`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ScheduleError {
    /// `Spec`, `SpecType` or `TimeZone`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl PeriodicConfig {
    /// The schedule the configuration describes.
    pub fn schedule(&self) -> Result<CronSchedule, ScheduleError> {
        if !self.spec_type.is_empty() && self.spec_type != PERIODIC_SPEC_CRON {
            return Err(ScheduleError {
                field: "SpecType",
                message: format!("unknown periodic specification type {:?}", self.spec_type),
            });
        }
        let tz_name = if self.time_zone.is_empty() {
            PERIODIC_DEFAULT_TIME_ZONE
        } else {
            self.time_zone.as_str()
        };
        let tz: Tz = tz_name.parse().map_err(|_| ScheduleError {
            field: "TimeZone",
            message: format!("invalid time zone {tz_name:?}"),
        })?;
        if self.spec.trim().is_empty() {
            return Err(ScheduleError {
                field: "Spec",
                message: "must specify a spec".to_string(),
            });
        }
        // croner reads six fields as second-first; cronexpr (Nomad) reads
        // them as year-last: give croner an explicit zero second.
        let spec = self.spec.trim();
        let spec = if spec.starts_with('@') {
            spec.to_string()
        } else {
            match spec.split_whitespace().count() {
                5 | 7 => spec.to_string(),
                6 => format!("0 {spec}"),
                n => {
                    return Err(ScheduleError {
                        field: "Spec",
                        message: format!(
                            "invalid cron spec {:?}: {n} fields, expected 5 (minute hour \
                             day-of-month month day-of-week), 6 (... year) or 7 (second ... year)",
                            self.spec
                        ),
                    })
                }
            }
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Optional)
            .build()
            .parse(&spec)
            .map_err(|e| ScheduleError {
                field: "Spec",
                message: format!("invalid cron spec {:?}: {e}", self.spec),
            })?;
        Ok(CronSchedule { cron, tz })
    }
}

impl CronSchedule {
    fn at(&self, unix_ns: i64) -> DateTime<Tz> {
        Utc.timestamp_nanos(unix_ns).with_timezone(&self.tz)
    }

    fn ns(t: &DateTime<Tz>) -> Option<i64> {
        t.timestamp_nanos_opt()
    }

    /// The first launch strictly after `unix_ns`, in Unix nanoseconds;
    /// `None` when the spec never matches again.
    pub fn next_after(&self, unix_ns: i64) -> Option<i64> {
        self.cron
            .find_next_occurrence(&self.at(unix_ns), false)
            .ok()
            .and_then(|t| Self::ns(&t))
    }

    /// `unix_ns` as RFC 3339 in the schedule's time zone, as Nomad shows
    /// `NextPeriodicLaunch`.
    pub fn format(&self, unix_ns: i64) -> String {
        self.at(unix_ns).to_rfc3339()
    }

    /// The latest launch at or before `unix_ns`; `None` if there is none.
    pub fn latest_at_or_before(&self, unix_ns: i64) -> Option<i64> {
        self.cron
            .find_previous_occurrence(&self.at(unix_ns), true)
            .ok()
            .and_then(|t| Self::ns(&t))
    }
}

/// The ID of the child a periodic job launches at `launch_ns`.
pub fn periodic_child_id(parent_id: &str, launch_ns: i64) -> String {
    format!(
        "{parent_id}{PERIODIC_LAUNCH_SUFFIX}{}",
        launch_ns.div_euclid(1_000_000_000)
    )
}

/// The launch time (Unix ns) encoded in a periodic child's ID, if `child_id`
/// is a child of `parent_id`.
pub fn periodic_launch_of(parent_id: &str, child_id: &str) -> Option<i64> {
    let rest = child_id
        .strip_prefix(parent_id)?
        .strip_prefix(PERIODIC_LAUNCH_SUFFIX)?;
    rest.parse::<i64>().ok()?.checked_mul(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn cfg(spec: &str, tz: &str) -> PeriodicConfig {
        PeriodicConfig {
            enabled: true,
            spec: spec.into(),
            spec_type: PERIODIC_SPEC_CRON.into(),
            prohibit_overlap: false,
            time_zone: tz.into(),
        }
    }

    #[test]
    fn every_second_and_every_minute() {
        let s = cfg("*/1 * * * * * *", "UTC").schedule().expect("valid");
        assert_eq!(s.next_after(100 * S + 5), Some(101 * S));
        assert_eq!(s.latest_at_or_before(100 * S + 5), Some(100 * S));
        let m = cfg("*/15 * * * *", "").schedule().expect("valid");
        assert_eq!(m.next_after(0), Some(15 * 60 * S));
        assert_eq!(m.latest_at_or_before(16 * 60 * S), Some(15 * 60 * S));
    }

    #[test]
    fn six_fields_end_with_the_year_as_in_nomad() {
        // Nomad's own example: every fifteen minutes, not seconds.
        let m = cfg("*/15 * * * * *", "UTC").schedule().expect("valid");
        assert_eq!(m.next_after(0), Some(15 * 60 * S));
        // A year that has passed never launches again.
        let past = cfg("0 3 * * * 2020", "UTC").schedule().expect("valid");
        assert_eq!(past.next_after(1_704_844_800 * S), None);
        let daily = cfg("@daily", "UTC").schedule().expect("valid");
        assert_eq!(daily.next_after(S), Some(24 * 3600 * S));
        let e = cfg("* * * *", "UTC").schedule().expect_err("four fields");
        assert!(e.message.contains("expected 5"), "{}", e.message);
    }

    #[test]
    fn time_zone_moves_the_launch() {
        // 03:00 in New York on 2024-01-10 is 08:00 UTC (EST, UTC-5).
        let s = cfg("0 3 * * *", "America/New_York")
            .schedule()
            .expect("valid");
        let jan10_utc_midnight = 1_704_844_800 * S;
        assert_eq!(
            s.next_after(jan10_utc_midnight),
            Some(jan10_utc_midnight + 8 * 3600 * S)
        );
    }

    #[test]
    fn bad_specs_name_the_field() {
        let e = cfg("not a spec", "UTC").schedule().expect_err("invalid");
        assert_eq!(e.field, "Spec");
        let e = cfg("* * * * *", "Mars/Olympus").schedule().expect_err("tz");
        assert_eq!(e.field, "TimeZone");
        let mut c = cfg("* * * * *", "UTC");
        c.spec_type = "test".into();
        assert_eq!(c.schedule().expect_err("type").field, "SpecType");
        assert_eq!(cfg("", "UTC").schedule().expect_err("empty").field, "Spec");
    }

    #[test]
    fn child_ids_round_trip() {
        let id = periodic_child_id("backup", 1_700_000_000 * S + 3);
        assert_eq!(id, "backup/periodic-1700000000");
        assert_eq!(periodic_launch_of("backup", &id), Some(1_700_000_000 * S));
        assert_eq!(periodic_launch_of("back", &id), None);
        assert_eq!(periodic_launch_of("backup", "backup/dispatch-1-aa"), None);
    }
}
