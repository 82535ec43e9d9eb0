//! Every configuration key Ember reads, in one table: its type, default and
//! meaning. Values come from the defaults, then `EMBER_*` environment
//! variables, then `--conf key=value`. Keys under `datafusion.` are handed to
//! DataFusion as they are.

use std::collections::BTreeMap;
use std::time::Duration;

use ember_transport::NodeOptions;

/// The kind of value a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    PositiveInt,
    /// A duration with its unit: `250ms`, `1s`, `2m`.
    Duration,
    /// `true` or `false`.
    Bool,
    /// A number above zero, such as `1.5` or `0.75`.
    PositiveNumber,
    /// Free text, checked where it is used.
    Text,
    /// A size in bytes with its unit: `512m`, `2g`.
    Size,
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
pub const HEARTBEAT_INTERVAL: &str = "ember.transport.heartbeatInterval";
pub const HEARTBEAT_TIMEOUT: &str = "ember.transport.heartbeatTimeout";
pub const IDLE_TIMEOUT: &str = "ember.transport.idleTimeout";
pub const KEEP_ALIVE: &str = "ember.transport.keepAlive";
pub const MAX_QUEUED_BYTES: &str = "ember.transport.maxQueuedBytes";
pub const SPREAD_OUT: &str = "ember.deploy.spreadOut";
pub const RECOVERY_TIMEOUT: &str = "ember.deploy.recoveryTimeout";
pub const EXECUTOR_WAIT: &str = "ember.scheduler.maxRegisteredResourcesWaitingTime";
pub const STAGE_MAX_ATTEMPTS: &str = "ember.stage.maxConsecutiveAttempts";
pub const NO_EXECUTOR_TIMEOUT: &str = "ember.scheduler.noExecutorTimeout";
pub const CLUSTER_LOST_TIMEOUT: &str = "ember.app.clusterLostTimeout";
pub const MAX_EXECUTOR_RETRIES: &str = "ember.deploy.maxExecutorRetries";
pub const MAX_DRIVER_CORE_SHARE: &str = "ember.deploy.maxDriverCoreShare";
pub const MAX_APP_BINARY_BYTES: &str = "ember.deploy.maxAppBinaryBytes";
pub const SPECULATION: &str = "ember.speculation";
pub const SPECULATION_MULTIPLIER: &str = "ember.speculation.multiplier";
pub const SPECULATION_QUANTILE: &str = "ember.speculation.quantile";
pub const SPECULATION_MIN_RUNTIME: &str = "ember.speculation.minTaskRuntime";
pub const FAULT_FAIL_TASK: &str = "ember.faults.failTask";
pub const FAULT_DELAY_TASK: &str = "ember.faults.delayTask";
pub const FAULT_LOSE_MAP_OUTPUT: &str = "ember.faults.loseMapOutput";
pub const FAULT_IGNORE_DRIVER_LOSS: &str = "ember.faults.executorIgnoresDriverLoss";
pub const FAULT_STREAM_STOP_BEFORE_COMMIT: &str = "ember.faults.streamStopBeforeCommit";
pub const WORKER_RETRY_INTERVAL: &str = "ember.worker.registrationRetryInterval";
pub const EXECUTOR_CONNECT_TIMEOUT: &str = "ember.executor.driverConnectTimeout";
pub const LOCAL_EXECUTOR_WAIT: &str = "ember.local.executorRegistrationWait";
pub const DRIVER_MEMORY: &str = "ember.driver.memory";
pub const BROADCAST_THRESHOLD: &str = "ember.sql.autoBroadcastJoinThreshold";
pub const SHUFFLE_COMPRESS: &str = "ember.shuffle.compress";
pub const SHUFFLE_READ_HOST_LOCAL: &str = "ember.shuffle.readHostLocalDisk";
pub const COALESCE_PARTITIONS: &str = "ember.sql.adaptive.coalescePartitions.enabled";
pub const ADVISORY_PARTITION_SIZE: &str = "ember.sql.adaptive.advisoryPartitionSizeInBytes";
pub const MIN_PARTITION_SIZE: &str = "ember.sql.adaptive.coalescePartitions.minPartitionSize";

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
        name: BROADCAST_THRESHOLD,
        kind: ValueKind::Size,
        default: "10m",
        doc: "A join side estimated under this size (from file statistics) is read whole by every task of the other side (Spark's broadcast join) instead of shuffling both; 0 turns it off, so every equi-join is a shuffled hash join. Only sides whose rows are not preserved are ever broadcast.",
    },
    ConfigKey {
        name: COALESCE_PARTITIONS,
        kind: ValueKind::Bool,
        default: "true",
        doc: "Once a shuffle's map tasks have run, join runs of its small reduce partitions into one task each (Spark's adaptive coalescing), so a shuffle of many partitions does not run as many tiny tasks.",
    },
    ConfigKey {
        name: ADVISORY_PARTITION_SIZE,
        kind: ValueKind::Size,
        default: "64m",
        doc: "With coalescing: the most a task reads from joined reduce partitions, measured as Arrow batches in memory. A smaller size is used when that leaves task slots idle.",
    },
    ConfigKey {
        name: MIN_PARTITION_SIZE,
        kind: ValueKind::Size,
        default: "1m",
        doc: "With coalescing: the size a task reads at least, however many task slots there are (unless the whole shuffle is smaller).",
    },
    ConfigKey {
        name: SHUFFLE_COMPRESS,
        kind: ValueKind::Bool,
        default: "true",
        doc: "Compress shuffle files with LZ4 (Spark's spark.shuffle.compress): less disk and page cache for some CPU.",
    },
    ConfigKey {
        name: SHUFFLE_READ_HOST_LOCAL,
        kind: ValueKind::Bool,
        default: "true",
        doc: "An executor reads the shuffle files of another executor on the same host straight from disk instead of having them sent over the network (Spark's spark.shuffle.readHostLocalDisk); blocks held in memory, or files it cannot open, are still sent.",
    },
    ConfigKey {
        name: DRIVER_MEMORY,
        kind: ValueKind::Size,
        default: "",
        doc: "The driver's memory (--driver-memory). In local mode it is the memory budget of all the process's tasks together, which spill to disk beyond it; defaults to half of the machine's memory there. For a cluster-mode driver it is what the worker sets aside (default 1g).",
    },
    ConfigKey {
        name: MAX_FRAME_BYTES,
        kind: ValueKind::PositiveInt,
        default: "4194304",
        doc: "Largest message (bytes) one node accepts from another; larger frames close the stream. Cluster modes only.",
    },
    ConfigKey {
        name: HEARTBEAT_INTERVAL,
        kind: ValueKind::Duration,
        default: "200ms",
        doc: "How often a node tells each peer it is still there.",
    },
    ConfigKey {
        name: HEARTBEAT_TIMEOUT,
        kind: ValueKind::Duration,
        default: "800ms",
        doc: "A peer heard nothing from for this long is declared down and every actor watching one of its actors is told.",
    },
    ConfigKey {
        name: IDLE_TIMEOUT,
        kind: ValueKind::Duration,
        default: "1s",
        doc: "QUIC idle timeout: a connection with no packets for this long is closed.",
    },
    ConfigKey {
        name: KEEP_ALIVE,
        kind: ValueKind::Duration,
        default: "250ms",
        doc: "QUIC keep-alive interval; keep it well under the idle timeout.",
    },
    ConfigKey {
        name: MAX_QUEUED_BYTES,
        kind: ValueKind::PositiveInt,
        default: "67108864",
        doc: "Bytes queued towards one peer before it counts as not reading and its connection is closed.",
    },
    ConfigKey {
        name: SPREAD_OUT,
        kind: ValueKind::Bool,
        default: "true",
        doc: "Cluster manager: spread an application's executors over as many workers as possible (true) or fill one worker before the next (false).",
    },
    ConfigKey {
        name: RECOVERY_TIMEOUT,
        kind: ValueKind::Duration,
        default: "5s",
        doc: "Cluster manager: after a restart, how long workers and drivers get to register again before anything is placed anew.",
    },
    ConfigKey {
        name: EXECUTOR_WAIT,
        kind: ValueKind::Duration,
        default: "30s",
        doc: "Cluster applications: how long the driver waits for the executors it asked for before it starts its first job with fewer.",
    },
    ConfigKey {
        name: STAGE_MAX_ATTEMPTS,
        kind: ValueKind::PositiveInt,
        default: "4",
        doc: "Times in a row a stage may fail to read its parents' shuffle output (each time the lost output is computed again) before its job is aborted.",
    },
    ConfigKey {
        name: NO_EXECUTOR_TIMEOUT,
        kind: ValueKind::Duration,
        default: "60s",
        doc: "How long an application without executors waits for one before it fails: at start (say, when no worker can host the executors asked for) and when every executor is gone mid-job.",
    },
    ConfigKey {
        name: CLUSTER_LOST_TIMEOUT,
        kind: ValueKind::Duration,
        default: "10s",
        doc: "A client-mode driver cut off from both the cluster manager and every executor for this long fails its jobs and ends; its application never comes back as another one.",
    },
    ConfigKey {
        name: MAX_EXECUTOR_RETRIES,
        kind: ValueKind::PositiveInt,
        default: "10",
        doc: "Cluster manager: an exited executor is replaced, but once this many of an application's executors exited in a row and none is left, the application fails.",
    },
    ConfigKey {
        name: MAX_DRIVER_CORE_SHARE,
        kind: ValueKind::PositiveNumber,
        default: "0.5",
        doc: "Cluster manager: the share of the alive workers' cores that cluster-mode drivers may hold together (1 or more: no limit). Submissions beyond it stay QUEUED until a driver ends, so applications always have cores for executors. One driver may always run, so a one-core cluster still runs jobs: there its driver lends its core to its application's executor.",
    },
    ConfigKey {
        name: MAX_APP_BINARY_BYTES,
        kind: ValueKind::PositiveInt,
        default: "1073741824",
        doc: "Cluster manager: the largest application binary (bytes) a client may upload; a larger one is refused before any byte is sent.",
    },
    ConfigKey {
        name: WORKER_RETRY_INTERVAL,
        kind: ValueKind::Duration,
        default: "500ms",
        doc: "Worker: how long it waits between tries to register with a cluster manager it cannot reach (down, restarting or cut off).",
    },
    ConfigKey {
        name: EXECUTOR_CONNECT_TIMEOUT,
        kind: ValueKind::Duration,
        default: "2500ms",
        doc: "Executor: how long a new executor gives its driver to answer its first handshake before it exits; a driver that ended as the executor was launched must not leave it running.",
    },
    ConfigKey {
        name: LOCAL_EXECUTOR_WAIT,
        kind: ValueKind::Duration,
        default: "10s",
        doc: "local-cluster mode: how long the driver waits for the executor processes it started to register before it gives up.",
    },
    ConfigKey {
        name: SPECULATION,
        kind: ValueKind::Bool,
        default: "false",
        doc: "Run a second attempt of tasks that are much slower than their stage's others; the first to finish wins, the other is killed.",
    },
    ConfigKey {
        name: SPECULATION_MULTIPLIER,
        kind: ValueKind::PositiveNumber,
        default: "1.5",
        doc: "With speculation: a task is slow once it has run this many times the median of its stage's finished tasks.",
    },
    ConfigKey {
        name: SPECULATION_QUANTILE,
        kind: ValueKind::PositiveNumber,
        default: "0.75",
        doc: "With speculation: the fraction of a stage's tasks that must have finished before any is speculated.",
    },
    ConfigKey {
        name: SPECULATION_MIN_RUNTIME,
        kind: ValueKind::Duration,
        default: "100ms",
        doc: "With speculation: a task younger than this is never slow.",
    },
    ConfigKey {
        name: FAULT_FAIL_TASK,
        kind: ValueKind::Text,
        default: "",
        doc: "Testing fault handling: STAGE.PARTITION:N makes the first N attempts of that task fail after doing their work, with an injected error. Stage ids are those EXPLAIN shows.",
    },
    ConfigKey {
        name: FAULT_DELAY_TASK,
        kind: ValueKind::Text,
        default: "",
        doc: "Testing fault handling: STAGE.PARTITION:DURATION (PARTITION may be *) makes the first attempt of those tasks wait that long before starting, to have a straggler or time to kill an executor mid-stage.",
    },
    ConfigKey {
        name: FAULT_LOSE_MAP_OUTPUT,
        kind: ValueKind::Text,
        default: "",
        doc: "Testing fault handling: STAGE.MAP drops the shuffle blocks the first attempt of that map task wrote, as if they were deleted, so readers hit a fetch failure.",
    },
    ConfigKey {
        name: FAULT_IGNORE_DRIVER_LOSS,
        kind: ValueKind::Bool,
        default: "false",
        doc: "Testing only: a deliberate bug, executors that keep running when their driver is gone, to show that simulations catch orphan executors. Never set it on a real cluster.",
    },
    ConfigKey {
        name: FAULT_STREAM_STOP_BEFORE_COMMIT,
        kind: ValueKind::Text,
        default: "",
        doc: "Testing streaming recovery: BATCH makes a streaming query stop with an error after that batch's sink committed and before the checkpoint's commit log says so; a restart then runs the batch again.",
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
    #[error("{key} must be a number above zero, such as 1.5, not '{value}'")]
    NotPositiveNumber { key: String, value: String },
    #[error("{key} must be true or false, not '{value}'")]
    NotBool { key: String, value: String },
    #[error("{key} must be a size such as 512m, 2g or 1.5g, not '{value}'")]
    NotSize { key: String, value: String },
    #[error("{key} must be a duration with its unit, such as 250ms, 2s or 1m, not '{value}'")]
    NotDuration { key: String, value: String },
    #[error("{0}")]
    Inconsistent(String),
}

/// Reads `250ms`, `2s` or `1m`.
pub fn parse_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    let split = value.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = value.split_at(split);
    let n: u64 = number.parse().ok()?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n.checked_mul(60)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
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
        if key.starts_with("datafusion.runtime.") {
            // Refused now, not when the first executor starts.
            ember_engine::memory::MemorySettings::default()
                .set(key, value)
                .map_err(|e| ConfigError::Inconsistent(e.to_string()))?;
            self.values.insert(key.to_string(), value.to_string());
            return Ok(());
        }
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
            ValueKind::Bool => {
                if value != "true" && value != "false" {
                    return Err(ConfigError::NotBool {
                        key: key.to_string(),
                        value: value.to_string(),
                    });
                }
            }
            ValueKind::Duration => {
                if parse_duration(value).is_none() {
                    return Err(ConfigError::NotDuration {
                        key: key.to_string(),
                        value: value.to_string(),
                    });
                }
            }
            ValueKind::PositiveNumber => {
                if !matches!(value.parse::<f64>(), Ok(n) if n > 0.0 && n.is_finite()) {
                    return Err(ConfigError::NotPositiveNumber {
                        key: key.to_string(),
                        value: value.to_string(),
                    });
                }
            }
            ValueKind::Size => {
                if ember_engine::memory::parse_size(key, value).is_err() {
                    return Err(ConfigError::NotSize {
                        key: key.to_string(),
                        value: value.to_string(),
                    });
                }
            }
            ValueKind::Text => {}
        }
        self.values.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// Every key set, as `(key, value)`, to hand on to another process.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// A key's value, or its default from the table.
    pub fn get_or_default(&self, key: &str) -> Option<&str> {
        self.get(key)
            .or_else(|| KEYS.iter().find(|k| k.name == key).map(|k| k.default))
            .filter(|v| !v.is_empty())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// A whole-number key: its value, or the table's default. A key
    /// without a default (such as one that depends on the master) reads
    /// as 0; the table test checks every default parses as its kind.
    pub fn whole(&self, key: &str) -> u64 {
        self.get_or_default(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    }

    /// A number key: its value, or the table's default.
    pub fn number(&self, key: &str) -> f64 {
        self.get_or_default(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    }

    /// A duration key: its value, or the table's default.
    pub fn duration(&self, key: &str) -> Duration {
        self.get_or_default(key)
            .and_then(parse_duration)
            .unwrap_or_default()
    }

    /// A true/false key: its value, or the table's default.
    pub fn flag(&self, key: &str) -> bool {
        self.get_or_default(key) == Some("true")
    }

    /// A positive integer key, if set (values were checked when set).
    pub fn get_usize(&self, key: &str) -> Option<usize> {
        self.get(key).and_then(|v| v.parse().ok())
    }

    /// A number key, if set (values were checked when set).
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(|v| v.parse().ok())
    }

    /// A duration key, if set (values were checked when set).
    pub fn get_duration(&self, key: &str) -> Option<Duration> {
        self.get(key).and_then(parse_duration)
    }

    /// Applies every `datafusion.*` key to `config`; a key DataFusion does
    /// not know, or a bad value, is an error that names it.
    pub fn apply_datafusion_options(
        &self,
        config: &mut datafusion::prelude::SessionConfig,
    ) -> datafusion::error::Result<()> {
        for (key, value) in self.datafusion_options() {
            config.options_mut().set(key, value)?;
        }
        Ok(())
    }

    /// How a driver's scheduler handles faults; `max_failures` is the
    /// master's (local masters have their own) when not set here.
    pub fn scheduler(&self, max_failures: u32) -> crate::driver::SchedulerConfig {
        let speculation = self.flag(SPECULATION).then(|| crate::driver::Speculation {
            multiplier: self.number(SPECULATION_MULTIPLIER),
            quantile: self.number(SPECULATION_QUANTILE).min(1.0),
            min_runtime: self.duration(SPECULATION_MIN_RUNTIME),
        });
        crate::driver::SchedulerConfig {
            max_failures,
            max_stage_attempts: u32::try_from(self.whole(STAGE_MAX_ATTEMPTS)).unwrap_or(u32::MAX),
            shuffle_outlives_executors: false,
            no_executor_timeout: self.duration(NO_EXECUTOR_TIMEOUT),
            cluster_lost_timeout: self.duration(CLUSTER_LOST_TIMEOUT),
            speculation,
            coalesce: self
                .flag(COALESCE_PARTITIONS)
                .then(|| ember_engine::adaptive::Coalescing {
                    advisory_bytes: self.size(ADVISORY_PARTITION_SIZE).unwrap_or(64 << 20) as u64,
                    min_bytes: self.size(MIN_PARTITION_SIZE).unwrap_or(1 << 20) as u64,
                }),
        }
    }

    /// `ember.task.maxFailures` as a cluster master uses it.
    pub fn task_max_failures(&self) -> u32 {
        u32::try_from(self.whole(TASK_MAX_FAILURES)).unwrap_or(u32::MAX)
    }

    /// The transport settings, from the table's keys.
    /// Timeouts that could not work together are an error.
    pub fn node_options(&self) -> Result<NodeOptions, ConfigError> {
        let mut options = NodeOptions::default();
        let bytes = |key| usize::try_from(self.whole(key)).unwrap_or(usize::MAX);
        options.max_frame = bytes(MAX_FRAME_BYTES);
        options.max_queued_bytes = bytes(MAX_QUEUED_BYTES);
        options.heartbeat_interval = self.duration(HEARTBEAT_INTERVAL);
        options.heartbeat_timeout = self.duration(HEARTBEAT_TIMEOUT);
        options.quic.idle_timeout = self.duration(IDLE_TIMEOUT);
        options.quic.keep_alive = self.duration(KEEP_ALIVE);
        if options.heartbeat_timeout <= options.heartbeat_interval {
            return Err(ConfigError::Inconsistent(format!(
                "{HEARTBEAT_TIMEOUT} ({:?}) must be longer than {HEARTBEAT_INTERVAL} ({:?}), \
                 or every peer would be declared down between two heartbeats",
                options.heartbeat_timeout, options.heartbeat_interval
            )));
        }
        if options.max_queued_bytes < options.max_frame {
            return Err(ConfigError::Inconsistent(format!(
                "{MAX_QUEUED_BYTES} ({}) must be at least {MAX_FRAME_BYTES} ({}), \
                 or one large message would cut off a healthy peer",
                options.max_queued_bytes, options.max_frame
            )));
        }
        if options.quic.idle_timeout <= options.quic.keep_alive {
            return Err(ConfigError::Inconsistent(format!(
                "{IDLE_TIMEOUT} ({:?}) must be longer than {KEEP_ALIVE} ({:?}), \
                 or quiet connections would time out between keep-alives",
                options.quic.idle_timeout, options.quic.keep_alive
            )));
        }
        Ok(options)
    }

    /// The `datafusion.*` keys, for DataFusion's own configuration.
    /// An executor's memory budget: `limit` bytes (or
    /// `datafusion.runtime.memory_limit`), which `raise` sets, and the
    /// `datafusion.runtime.*` spill settings.
    pub fn memory_settings(
        &self,
        limit: Option<usize>,
        raise: &str,
    ) -> Result<ember_engine::memory::MemorySettings, ConfigError> {
        let mut settings = ember_engine::memory::MemorySettings {
            limit,
            raise: raise.to_string(),
            compress_shuffle: self.flag(SHUFFLE_COMPRESS),
            ..Default::default()
        };
        for (key, value) in self
            .values
            .iter()
            .filter(|(k, _)| k.starts_with("datafusion.runtime."))
        {
            settings
                .set(key, value)
                .map_err(|e| ConfigError::Inconsistent(e.to_string()))?;
        }
        Ok(settings)
    }

    /// A size setting in bytes, if set.
    pub fn size(&self, key: &str) -> Option<usize> {
        self.get_or_default(key)
            .and_then(|v| ember_engine::memory::parse_size(key, v).ok())
    }

    /// The `datafusion.*` settings DataFusion's session options take (the
    /// `datafusion.runtime.*` ones are the executors' memory settings).
    pub fn datafusion_options(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values
            .iter()
            .filter(|(k, _)| k.starts_with("datafusion.") && !k.starts_with("datafusion.runtime."))
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

    /// The table is the one place defaults live: each parses as its kind,
    /// and the defaults other crates keep for their own tests agree.
    #[test]
    fn every_default_comes_from_the_table() {
        for key in KEYS {
            if !key.default.is_empty() {
                EmberConf::new()
                    .set(key.name, key.default)
                    .unwrap_or_else(|e| panic!("{}: default {}: {e}", key.name, key.default));
            }
        }
        let conf = EmberConf::new();
        let options = conf.node_options().unwrap();
        let transport = NodeOptions::default();
        assert_eq!(options.max_frame, transport.max_frame);
        assert_eq!(options.max_queued_bytes, transport.max_queued_bytes);
        assert_eq!(options.heartbeat_interval, transport.heartbeat_interval);
        assert_eq!(options.heartbeat_timeout, transport.heartbeat_timeout);
        assert_eq!(options.quic.idle_timeout, transport.quic.idle_timeout);
        assert_eq!(options.quic.keep_alive, transport.quic.keep_alive);
        let scheduler = conf.scheduler(conf.task_max_failures());
        assert_eq!(scheduler, crate::driver::SchedulerConfig::default());
        assert_eq!(
            conf.number(MAX_DRIVER_CORE_SHARE),
            crate::cluster_manager::state::DEFAULT_MAX_DRIVER_CORE_SHARE
        );
        assert_eq!(
            u32::try_from(conf.whole(MAX_EXECUTOR_RETRIES)).unwrap(),
            crate::cluster_manager::state::MAX_EXECUTOR_FAILURES
        );
        assert!(!conf.flag(SPECULATION) && conf.flag(SPREAD_OUT));
    }

    /// The guides (docs/operations.md, and docs/fault-tolerance.md for
    /// the keys of fault handling) list every key with the table's default.
    #[test]
    fn the_guides_agree_with_the_table() {
        let guide = [
            include_str!("../../docs/operations.md"),
            include_str!("../../docs/fault-tolerance.md"),
        ]
        .concat();
        for key in KEYS {
            let default = if key.default.is_empty() {
                String::new()
            } else {
                format!(" {} ", key.default)
            };
            let row = guide
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", key.name)));
            let Some(row) = row else {
                panic!("no guide has a row for {}", key.name);
            };
            assert!(
                default.is_empty() || row.contains(&format!("|{default}|")),
                "a guide gives {} another default than {}: {row}",
                key.name,
                key.default
            );
        }
    }

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

    #[test]
    fn transport_settings_take_durations_and_must_fit_together() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        for bad in ["", "5", "ms", "0s", "1h", "-1s", "1.5s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }

        let defaults = EmberConf::new().node_options().unwrap();
        assert_eq!(defaults, NodeOptions::default());

        let mut conf = EmberConf::new();
        conf.set_pair("ember.transport.heartbeatTimeout=3s")
            .unwrap();
        conf.set_pair("ember.transport.idleTimeout=5s").unwrap();
        let options = conf.node_options().unwrap();
        assert_eq!(options.heartbeat_timeout, Duration::from_secs(3));
        assert_eq!(options.quic.idle_timeout, Duration::from_secs(5));

        let err = conf
            .set_pair("ember.transport.heartbeatInterval=fast")
            .unwrap_err();
        assert!(err.to_string().contains("250ms"), "{err}");
        conf.set_pair("ember.transport.heartbeatInterval=4s")
            .unwrap();
        let err = conf.node_options().unwrap_err();
        assert!(err.to_string().contains("must be longer"), "{err}");
    }
}
