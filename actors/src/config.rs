//! Every configuration key Ember reads, in one table: its type, default and
//! meaning. Values come from the defaults, then `EMBER_*` environment
//! variables, then `--conf key=value`. Keys under `datafusion.` are handed to
//! DataFusion as they are.

use std::collections::BTreeMap;

/// The kind of value a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    PositiveInt,
}

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub struct ConfigKey {
    pub name: &'static str,
    pub kind: ValueKind,
    /// The default as text; empty when it depends on the master.
    pub default: &'static str,
    pub doc: &'static str,
}

pub const TASK_MAX_FAILURES: &str = "ember.task.maxFailures";
pub const SHUFFLE_PARTITIONS: &str = "ember.sql.shuffle.partitions";
pub const MAX_FRAME_BYTES: &str = "ember.transport.maxFrameBytes";

/// The table of keys.
pub const KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: TASK_MAX_FAILURES,
        kind: ValueKind::PositiveInt,
        default: "4",
        doc: "Attempts a task gets before its job fails. local and local[N] use 1, local[N,F] uses F, as Spark does.",
    },
    ConfigKey {
        name: SHUFFLE_PARTITIONS,
        kind: ValueKind::PositiveInt,
        default: "",
        doc: "Partitions of a shuffle (and of file scans). Defaults to the number of task slots.",
    },
    ConfigKey {
        name: MAX_FRAME_BYTES,
        kind: ValueKind::PositiveInt,
        default: "4194304",
        doc: "Largest message (bytes) one node accepts from another; larger frames close the stream. Cluster modes only.",
    },
];

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("'{0}' is not of the form key=value")]
    NotKeyValue(String),
    #[error("unknown configuration key '{key}'{hint}; `ember config --list` shows every key")]
    UnknownKey { key: String, hint: String },
    #[error("{key} must be a whole number of at least 1, not '{value}'")]
    NotPositiveInt { key: String, value: String },
}

/// A resolved configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmberConf {
    values: BTreeMap<String, String>,
}

impl EmberConf {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `EMBER_*` variables: `EMBER_TASK_MAXFAILURES` sets
    /// `ember.task.maxFailures` (upper case, dots as underscores).
    pub fn with_env(
        mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        for (var, value) in vars {
            if let Some(key) = KEYS.iter().find(|k| env_name(k.name) == var) {
                self.set(key.name, &value)?;
            }
        }
        Ok(self)
    }

    /// Applies one `key=value` pair.
    pub fn set_pair(&mut self, pair: &str) -> Result<(), ConfigError> {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| ConfigError::NotKeyValue(pair.to_string()))?;
        self.set(key.trim(), value.trim())
    }

    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        if key.starts_with("datafusion.") {
            self.values.insert(key.to_string(), value.to_string());
            return Ok(());
        }
        let Some(known) = KEYS.iter().find(|k| k.name == key) else {
            let hint = KEYS
                .iter()
                .find(|k| k.name.eq_ignore_ascii_case(key))
                .map(|k| format!(" (did you mean '{}'?)", k.name))
                .unwrap_or_default();
            return Err(ConfigError::UnknownKey {
                key: key.to_string(),
                hint,
            });
        };
        match known.kind {
            ValueKind::PositiveInt => {
                if !matches!(value.parse::<u64>(), Ok(n) if n >= 1) {
                    return Err(ConfigError::NotPositiveInt {
                        key: key.to_string(),
                        value: value.to_string(),
                    });
                }
            }
        }
        self.values.insert(key.to_string(), value.to_string());
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// A positive integer key, if set (values were checked when set).
    pub fn get_usize(&self, key: &str) -> Option<usize> {
        self.get(key).and_then(|v| v.parse().ok())
    }

    /// The `datafusion.*` keys, for DataFusion's own configuration.
    pub fn datafusion_options(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values
            .iter()
            .filter(|(k, _)| k.starts_with("datafusion."))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// The environment variable that sets `key`.
pub fn env_name(key: &str) -> String {
    key.replace('.', "_").to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_env_and_errors() {
        let mut conf = EmberConf::new()
            .with_env([("EMBER_TASK_MAXFAILURES".to_string(), "3".to_string())])
            .unwrap();
        assert_eq!(conf.get_usize(TASK_MAX_FAILURES), Some(3));
        conf.set_pair("ember.task.maxFailures = 5").unwrap();
        assert_eq!(conf.get_usize(TASK_MAX_FAILURES), Some(5));
        conf.set_pair("datafusion.execution.batch_size=4096")
            .unwrap();
        assert_eq!(
            conf.datafusion_options().collect::<Vec<_>>(),
            vec![("datafusion.execution.batch_size", "4096")]
        );
        assert!(matches!(
            conf.set_pair("nonsense"),
            Err(ConfigError::NotKeyValue(_))
        ));
        let err = conf.set_pair("ember.task.maxfailures=2").unwrap_err();
        assert!(
            err.to_string()
                .contains("did you mean 'ember.task.maxFailures'"),
            "{err}"
        );
        assert!(matches!(
            conf.set_pair("ember.task.maxFailures=0"),
            Err(ConfigError::NotPositiveInt { .. })
        ));
    }
}
