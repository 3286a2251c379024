//! `SCHEDULE_<NAME>` (a cron expression, or `off`) and `SCHEDULE_<NAME>_TZ` (an IANA zone):
//! how an operator retimes or switches off a schedule without a release.
use super::{Schedule, ScheduleError, parse_cron, parse_zone};

/// Applies `SCHEDULE_<NAME>` (a cron expression, or `off`) and `SCHEDULE_<NAME>_TZ` (an IANA
/// zone) from `vars` to `schedules`. A `SCHEDULE_*` variable that names no schedule is an
/// error, so a typo does not silently leave the default running; one that names a `retired`
/// schedule is accepted and has nothing left to change, so that deployments that set it
/// keep starting.
pub fn with_overrides(
    mut schedules: Vec<Schedule>,
    retired: &[&str],
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Schedule>, ScheduleError> {
    let vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with("SCHEDULE_"))
        .collect();
    let names = |name: &str, var: &str| {
        let upper = name.to_uppercase();
        var == format!("SCHEDULE_{upper}") || var == format!("SCHEDULE_{upper}_TZ")
    };
    for (var, value) in &vars {
        let known = schedules.iter().any(|s| names(&s.name, var))
            || retired.iter().any(|name| names(name, var));
        if !known {
            return Err(ScheduleError::UnknownOverride {
                var: var.clone(),
                value: value.clone(),
            });
        }
    }
    let get = |key: &str| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    for schedule in &mut schedules {
        let upper = schedule.name.to_uppercase();
        if let Some(zone) = get(&format!("SCHEDULE_{upper}_TZ")) {
            schedule.tz = parse_zone(&schedule.name, zone)?;
        }
        match get(&format!("SCHEDULE_{upper}")) {
            Some(v) if v.trim().eq_ignore_ascii_case("off") => schedule.enabled = false,
            Some(expr) => {
                schedule.cron = parse_cron(&schedule.name, expr)?;
                schedule.expr = expr.trim().to_string();
            }
            None => {}
        }
    }
    Ok(schedules)
}
