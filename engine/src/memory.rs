//! An executor's memory budget and spill space: the DataFusion runtime its
//! tasks run in. Each task slot gets an equal share of the budget (a fair
//! spill pool of its own, as Spark caps a task at 1/N of the execution
//! memory), so one task's sort or join never starves another's merge; tasks
//! spill to files in the executor's spill directory, where shuffle map
//! output is written too, under the same disk quota. In local mode a
//! quarter of the budget may hold shuffle blocks in memory.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    FairSpillPool, GreedyMemoryPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
    TrackConsumersPool, UnboundedMemoryPool,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

/// The `datafusion.runtime.*` keys Ember reads.
pub const MEMORY_LIMIT: &str = "datafusion.runtime.memory_limit";
pub const TEMP_DIRECTORY: &str = "datafusion.runtime.temp_directory";
pub const MAX_TEMP_DIRECTORY_SIZE: &str = "datafusion.runtime.max_temp_directory_size";
pub const RUNTIME_KEYS: [&str; 3] = [MEMORY_LIMIT, TEMP_DIRECTORY, MAX_TEMP_DIRECTORY_SIZE];

/// How many spill files one merge pass of a sort reads at once.
const MERGE_FAN_IN: usize = 4;

/// DataFusion's default for `sort_spill_reservation_bytes`.
const DEFAULT_SORT_SPILL_RESERVATION: usize = 10 << 20;

/// In local mode, shuffle blocks may take 1/SHUFFLE_SHARE of the budget.
const SHUFFLE_SHARE: usize = 4;

/// An executor's memory: a budget shared out between its task slots, and
/// the spill space and caches its tasks share.
#[derive(Debug)]
pub struct ExecutorMemory {
    settings: MemorySettings,
    base: Arc<RuntimeEnv>,
    /// Each task's share of the budget; `None`: no limit.
    per_task: Option<usize>,
    /// Bytes all running tasks hold now.
    held: Arc<AtomicUsize>,
    /// What shuffle blocks kept in memory may take (local mode).
    shuffle: Option<Arc<dyn MemoryPool>>,
}

impl ExecutorMemory {
    /// The runtime one task runs in: its own share of the budget, and the
    /// executor's spill space and caches.
    pub fn task_runtime(&self) -> Result<Arc<RuntimeEnv>> {
        let inner: Arc<dyn MemoryPool> = match self.per_task {
            Some(share) => {
                // The largest consumers are named when memory runs out.
                let top = NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN);
                Arc::new(TrackConsumersPool::new(FairSpillPool::new(share), top))
            }
            None => Arc::new(UnboundedMemoryPool::default()),
        };
        let pool = Arc::new(CountedPool {
            inner,
            held: Arc::clone(&self.held),
        });
        // The executor's own disk manager, caches and object stores: only
        // the pool is the task's.
        Ok(Arc::new(RuntimeEnv {
            memory_pool: pool,
            disk_manager: Arc::clone(&self.base.disk_manager),
            cache_manager: Arc::clone(&self.base.cache_manager),
            object_store_registry: Arc::clone(&self.base.object_store_registry),
        }))
    }

    /// The spill space and caches every task shares.
    pub fn base(&self) -> &Arc<RuntimeEnv> {
        &self.base
    }

    /// The pool shuffle blocks kept in memory take from; `None`: map
    /// output always goes to disk.
    pub fn shuffle_pool(&self) -> Option<Arc<dyn MemoryPool>> {
        self.shuffle.clone()
    }

    /// Whether shuffle files are compressed.
    pub fn compress_shuffle(&self) -> bool {
        self.settings.compress_shuffle
    }

    /// Bytes held now by running tasks and by shuffle blocks in memory.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed) + self.shuffle.as_ref().map_or(0, |p| p.reserved())
    }

    /// Fits DataFusion's settings to each task's share of the budget: a
    /// sort sets aside a quarter of it (instead of a fixed 10 MB) for
    /// merging what it spilled, since the merge needs memory in proportion
    /// to the sorted keys it holds; a setting the user chose is kept.
    pub fn tune(&self, config: &mut datafusion::prelude::SessionConfig) {
        let Some(share) = self.per_task else {
            return;
        };
        let execution = &mut config.options_mut().execution;
        if execution.sort_spill_reservation_bytes == DEFAULT_SORT_SPILL_RESERVATION {
            execution.sort_spill_reservation_bytes = (share / 4).max(1 << 20);
        }
    }

    /// The whole budget, if any.
    pub fn limit(&self) -> Option<usize> {
        self.settings.limit
    }

    /// `error`, saying which setting to raise if memory ran out.
    pub fn explain(&self, error: DataFusionError) -> DataFusionError {
        self.settings.explain(error)
    }
}

/// A task's pool, which also counts what it holds into its executor's total.
#[derive(Debug)]
struct CountedPool {
    inner: Arc<dyn MemoryPool>,
    held: Arc<AtomicUsize>,
}

impl fmt::Display for CountedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl MemoryPool for CountedPool {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
        self.held.fetch_add(additional, Ordering::Relaxed);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
        self.held.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.inner.try_grow(reservation, additional)?;
        self.held.fetch_add(additional, Ordering::Relaxed);
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

/// How much memory and disk an executor's tasks may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemorySettings {
    /// The pool's size in bytes; `None`: no limit.
    pub limit: Option<usize>,
    /// Where spill and shuffle files go (a fresh directory is made inside
    /// it and removed at exit); `None`: the system's temporary directory.
    pub temp_directory: Option<PathBuf>,
    /// The most bytes spill and shuffle files may take together.
    pub max_temp_bytes: Option<u64>,
    /// The setting a user raises when a task runs out of memory, as it
    /// reads on the command line (`--executor-memory`, say).
    pub raise: String,
    /// Whether shuffle files are LZ4-compressed (`ember.shuffle.compress`).
    pub compress_shuffle: bool,
}

impl MemorySettings {
    /// Reads a `datafusion.runtime.*` key; other keys are not for here.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            MEMORY_LIMIT => {
                self.limit = Some(parse_size(key, value)?);
                self.raise = MEMORY_LIMIT.to_string();
            }
            TEMP_DIRECTORY => self.temp_directory = Some(PathBuf::from(value)),
            MAX_TEMP_DIRECTORY_SIZE => self.max_temp_bytes = Some(parse_size(key, value)? as u64),
            _ => {
                return Err(DataFusionError::Configuration(format!(
                    "unknown runtime setting '{key}'; Ember reads {}",
                    RUNTIME_KEYS.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The memory of an executor with `slots` task slots; with
    /// `shuffle_in_memory` (local mode) a quarter of the budget may hold
    /// shuffle blocks, and the tasks share the rest.
    pub fn executor(&self, slots: usize, shuffle_in_memory: bool) -> Result<ExecutorMemory> {
        let slots = slots.max(1);
        // A sort that spilled many runs merges them a few at a time, so
        // the merge itself fits in a small budget.
        let mut disk = DiskManagerBuilder::default().with_max_spill_merge_fan_in(MERGE_FAN_IN);
        if let Some(dir) = &self.temp_directory {
            disk = disk.with_mode(DiskManagerMode::Directories(vec![dir.clone()]));
        }
        if let Some(max) = self.max_temp_bytes {
            disk = disk.with_max_temp_directory_size(max);
        }
        let base = RuntimeEnvBuilder::new()
            .with_disk_manager_builder(disk)
            .build_arc()?;
        let (shuffle, tasks): (Option<Arc<dyn MemoryPool>>, _) =
            match (self.limit, shuffle_in_memory) {
                (_, false) => (None, self.limit),
                (None, true) => (Some(Arc::new(UnboundedMemoryPool::default())), None),
                (Some(limit), true) => (
                    Some(Arc::new(GreedyMemoryPool::new(limit / SHUFFLE_SHARE))),
                    Some(limit - limit / SHUFFLE_SHARE),
                ),
            };
        Ok(ExecutorMemory {
            settings: self.clone(),
            base,
            per_task: tasks.map(|t| (t / slots).max(1)),
            held: Arc::default(),
            shuffle,
        })
    }

    /// The runtime of a lone task with the whole budget (tests, tools).
    pub fn runtime_env(&self) -> Result<Arc<RuntimeEnv>> {
        self.executor(1, false)?.task_runtime()
    }

    /// `error`, with what to do about it when it is memory or disk running
    /// out.
    pub fn explain(&self, error: DataFusionError) -> DataFusionError {
        let root = error.find_root();
        if !matches!(root, DataFusionError::ResourcesExhausted(_)) {
            return error;
        }
        let limit = self
            .limit
            .map(|l| format!(" (now {})", human_size(l as u64)))
            .unwrap_or_default();
        let raise = if self.raise.is_empty() {
            MEMORY_LIMIT
        } else {
            &self.raise
        };
        DataFusionError::ResourcesExhausted(format!(
            "{root}\nThe task ran out of memory even after spilling what it could: raise \
             {raise}{limit}, or give the query more partitions \
             (ember.sql.shuffle.partitions) so each task holds less"
        ))
    }
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            limit: None,
            temp_directory: None,
            max_temp_bytes: None,
            raise: String::new(),
            compress_shuffle: true,
        }
    }
}

/// `512M`, `2G`, `1.5G`, `300K` or a number of bytes.
pub fn parse_size(key: &str, value: &str) -> Result<usize> {
    let value = value.trim();
    if let Ok(bytes) = value.parse::<usize>() {
        return Ok(bytes);
    }
    let upper = value.to_ascii_uppercase();
    let upper = upper.strip_suffix('B').unwrap_or(&upper);
    SessionContext::parse_capacity_limit(key, upper).map_err(|_| {
        DataFusionError::Configuration(format!(
            "{key} must be a size such as 512M, 2G or 1.5G, not '{value}'"
        ))
    })
}

/// Bytes as people read them: `1.5 GB`, `300 MB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 || size >= 100.0 || size.fract() == 0.0 {
        format!("{size:.0} {}", UNITS[unit])
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

/// The machine's memory in bytes, if it can be read.
pub fn physical_memory() -> Option<u64> {
    proc_bytes("/proc/meminfo", "MemTotal")
}

/// A process's peak resident memory (VmHWM) in bytes; `None`: this one.
pub fn peak_rss(pid: Option<u32>) -> Option<u64> {
    process_memory(pid, "VmHWM")
}

/// A memory figure of a process's `/proc/PID/status` (`VmRSS`, `VmHWM`)
/// in bytes; `None`: this process.
pub fn process_memory(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    proc_bytes(&path, field)
}

/// The `FIELD:   N kB` line of a /proc file, in bytes.
fn proc_bytes(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// Bytes spilled by every operator of an executed plan.
pub fn spilled_bytes(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let own = plan
        .metrics()
        .and_then(|m| m.spilled_bytes())
        .unwrap_or_default() as u64;
    own + plan.children().into_iter().map(spilled_bytes).sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("k", "300M").unwrap(), 300 << 20);
        assert_eq!(parse_size("k", "2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("k", "512mb").unwrap(), 512 << 20);
        assert_eq!(parse_size("k", "4096").unwrap(), 4096);
        let err = parse_size("datafusion.runtime.memory_limit", "lots").unwrap_err();
        assert!(err.to_string().contains("such as 512M"), "{err}");
        assert_eq!(human_size(300 << 20), "300 MB");
        assert_eq!(human_size(3 << 29), "1.5 GB");
    }

    #[test]
    fn proc_figures_read_in_bytes() {
        let total = physical_memory().unwrap();
        // Resident now, then the peak, which includes that moment.
        let now = process_memory(Some(std::process::id()), "VmRSS").unwrap();
        let peak = peak_rss(None).unwrap();
        assert!(
            0 < now && now <= peak && peak < total,
            "{now} {peak} {total}"
        );
        // `VmHWM` is not `VmHWMx`, nor a field that is not there.
        assert_eq!(process_memory(None, "VmHW"), None);
        assert_eq!(process_memory(Some(u32::MAX), "VmHWM"), None);
    }

    #[test]
    fn running_out_of_memory_says_what_to_raise() {
        let settings = MemorySettings {
            limit: Some(64 << 20),
            raise: "--executor-memory".into(),
            ..Default::default()
        };
        let err = settings.explain(DataFusionError::ResourcesExhausted(
            "Failed to allocate 10 MB for HashJoinInput".into(),
        ));
        let text = err.to_string();
        assert!(text.contains("HashJoinInput"), "{text}");
        assert!(
            text.contains("raise --executor-memory (now 64 MB)"),
            "{text}"
        );
        let other = settings.explain(DataFusionError::Plan("no such table".into()));
        assert!(!other.to_string().contains("raise"), "{other}");
    }

    #[test]
    fn runtime_keys_are_read_and_others_refused() {
        let mut settings = MemorySettings::default();
        settings.set(MEMORY_LIMIT, "300M").unwrap();
        settings.set(MAX_TEMP_DIRECTORY_SIZE, "1G").unwrap();
        settings.set(TEMP_DIRECTORY, "/tmp/spill").unwrap();
        assert_eq!(settings.limit, Some(300 << 20));
        assert_eq!(settings.max_temp_bytes, Some(1 << 30));
        assert_eq!(settings.raise, MEMORY_LIMIT);
        let err = settings
            .set("datafusion.runtime.list_files_cache_ttl", "1s")
            .unwrap_err();
        assert!(err.to_string().contains("Ember reads"), "{err}");
        let env = settings.runtime_env().unwrap();
        assert!(matches!(
            env.memory_pool.memory_limit(),
            datafusion::execution::memory_pool::MemoryLimit::Finite(limit) if limit == 300 << 20
        ));
    }
}
