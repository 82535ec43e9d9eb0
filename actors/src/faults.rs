//! Faults an application can ask its executors to inject, to test fault
//! handling end to end on real processes: a task that fails, a task that is
//! slow, map output that disappears. Set with `ember.faults.*` keys; empty
//! by default, and then every check here is a no-op.

use std::time::Duration;

use ember_engine::StageId;

use crate::config::{
    ConfigError, EmberConf, FAULT_DELAY_TASK, FAULT_FAIL_TASK, FAULT_IGNORE_DRIVER_LOSS,
    FAULT_LOSE_MAP_OUTPUT, parse_duration,
};
use crate::protocol::TaskId;

/// The faults to inject, read from `ember.faults.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// (stage, partition, attempts): the first `attempts` attempts fail.
    fail: Vec<(StageId, usize, u32)>,
    /// (stage, partition or every one, delay) for first attempts.
    delay: Vec<(StageId, Option<usize>, Duration)>,
    /// (stage, map): the first attempt's blocks are dropped.
    lose: Vec<(StageId, usize)>,
    /// A deliberate bug: executors outlive their driver.
    ignore_driver_loss: bool,
}

impl Faults {
    /// Reads the `ember.faults.*` keys; several faults of one kind are
    /// separated by commas.
    pub fn from_conf(conf: &EmberConf) -> Result<Self, ConfigError> {
        let mut faults = Self::default();
        for item in items(conf, FAULT_FAIL_TASK) {
            let (task, times) = split(FAULT_FAIL_TASK, item, ':')?;
            let (stage, partition) = split(FAULT_FAIL_TASK, task, '.')?;
            faults.fail.push((
                number(FAULT_FAIL_TASK, stage)?,
                number(FAULT_FAIL_TASK, partition)?,
                number(FAULT_FAIL_TASK, times)?,
            ));
        }
        for item in items(conf, FAULT_DELAY_TASK) {
            let (task, delay) = split(FAULT_DELAY_TASK, item, ':')?;
            let (stage, partition) = split(FAULT_DELAY_TASK, task, '.')?;
            let partition = match partition {
                "*" => None,
                p => Some(number(FAULT_DELAY_TASK, p)?),
            };
            let delay = parse_duration(delay).ok_or_else(|| bad(FAULT_DELAY_TASK, item))?;
            faults
                .delay
                .push((number(FAULT_DELAY_TASK, stage)?, partition, delay));
        }
        for item in items(conf, FAULT_LOSE_MAP_OUTPUT) {
            let (stage, map) = split(FAULT_LOSE_MAP_OUTPUT, item, '.')?;
            faults.lose.push((
                number(FAULT_LOSE_MAP_OUTPUT, stage)?,
                number(FAULT_LOSE_MAP_OUTPUT, map)?,
            ));
        }
        faults.ignore_driver_loss = conf.flag(FAULT_IGNORE_DRIVER_LOSS);
        Ok(faults)
    }

    /// Whether executors must ignore their driver's end (a deliberate bug).
    pub fn ignores_driver_loss(&self) -> bool {
        self.ignore_driver_loss
    }

    /// Whether `task` must fail once its work is done.
    pub fn fails(&self, task: &TaskId) -> bool {
        self.fail
            .iter()
            .any(|(s, p, n)| *s == task.stage && *p == task.partition && task.attempt < *n)
    }

    /// How long `task` must wait before it starts.
    pub fn delay(&self, task: &TaskId) -> Option<Duration> {
        if task.attempt > 0 {
            return None;
        }
        self.delay
            .iter()
            .find(|(s, p, _)| *s == task.stage && p.is_none_or(|p| p == task.partition))
            .map(|(_, _, d)| *d)
    }

    /// Whether the blocks `task` wrote must be dropped.
    pub fn loses_output(&self, task: &TaskId) -> bool {
        task.attempt == 0
            && self
                .lose
                .iter()
                .any(|(s, m)| *s == task.stage && *m == task.partition)
    }
}

fn items<'a>(conf: &'a EmberConf, key: &str) -> impl Iterator<Item = &'a str> {
    conf.get(key)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn split<'a>(key: &str, item: &'a str, at: char) -> Result<(&'a str, &'a str), ConfigError> {
    item.split_once(at).ok_or_else(|| bad(key, item))
}

fn number<T: std::str::FromStr>(key: &str, text: &str) -> Result<T, ConfigError> {
    text.trim().parse().map_err(|_| bad(key, text))
}

fn bad(key: &str, item: &str) -> ConfigError {
    let form = match key {
        FAULT_FAIL_TASK => "STAGE.PARTITION:ATTEMPTS, such as 1.0:2",
        FAULT_DELAY_TASK => "STAGE.PARTITION:DURATION, such as 0.*:2s",
        _ => "STAGE.MAP, such as 0.1",
    };
    ConfigError::Inconsistent(format!("{key}: '{item}' is not of the form {form}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(stage: StageId, partition: usize, attempt: u32) -> TaskId {
        TaskId {
            job: 0,
            stage,
            partition,
            attempt,
        }
    }

    #[test]
    fn faults_apply_to_the_attempts_they_name() {
        let mut conf = EmberConf::new();
        conf.set(FAULT_FAIL_TASK, "1.0:2").unwrap();
        conf.set(FAULT_DELAY_TASK, "0.*:2s, 3.1:50ms").unwrap();
        conf.set(FAULT_LOSE_MAP_OUTPUT, "0.1").unwrap();
        let f = Faults::from_conf(&conf).unwrap();
        assert!(f.fails(&task(1, 0, 0)) && f.fails(&task(1, 0, 1)));
        assert!(!f.fails(&task(1, 0, 2)) && !f.fails(&task(1, 1, 0)));
        assert_eq!(f.delay(&task(0, 5, 0)), Some(Duration::from_secs(2)));
        assert_eq!(f.delay(&task(0, 5, 1)), None);
        assert_eq!(f.delay(&task(3, 1, 0)), Some(Duration::from_millis(50)));
        assert_eq!(f.delay(&task(3, 0, 0)), None);
        assert!(f.loses_output(&task(0, 1, 0)));
        assert!(!f.loses_output(&task(0, 1, 1)) && !f.loses_output(&task(0, 0, 0)));
        assert_eq!(
            Faults::from_conf(&EmberConf::new()).unwrap(),
            Faults::default()
        );
    }

    #[test]
    fn a_malformed_fault_says_what_form_it_takes() {
        let mut conf = EmberConf::new();
        conf.set(FAULT_FAIL_TASK, "stage one").unwrap();
        let error = Faults::from_conf(&conf).unwrap_err().to_string();
        assert!(error.contains("STAGE.PARTITION:ATTEMPTS"), "{error}");
    }
}
