#!/usr/bin/env python3
"""Apache Spark Structured Streaming baseline for Ember's streaming benchmarks.

Runs one workload on PySpark (`local[2]`) and prints ONE JSON object as the
last line of stdout; everything else (Spark/JVM logging, progress notes) goes
to stderr.

Usage:
    python3 -m venv VENV && VENV/bin/pip install pyspark     # needs Java 17+
    VENV/bin/python benches/spark_streaming.py WORKLOAD \
        --seconds S --rows-per-second R --out DIR [--warmup W]

Workloads:
  stateless  rate source -> filter `value % 3 <> 0` + projection -> Parquet
             (DIR/parquet, checkpoint DIR/ckpt), default trigger.
  window     rate source -> watermark 10 s -> count per (1-minute tumbling
             window, value % 100) -> append mode -> Parquet.
  latency    the stateless pipeline at a fixed rate; the interesting output is
             the batch-duration distribution (p50 / p99 / max).

After the first batch completes the query runs W warm-up seconds (excluded),
then S measured seconds. Measured batches are the real micro-batches that start
after the warm-up and finish before the query is stopped. Reported fields:
  batches, input_rows      count / sum over measured batches
  batch_seconds            sum of their triggerExecution durations
  wall_seconds (=seconds)  first measured batch start -> last measured batch end
  rows_per_second          input_rows / wall_seconds (sustained throughput)
  batch_ms_p50/p99/max     triggerExecution durations (nearest-rank)
  startup_seconds          script start -> first batch completed

Sources (--source, default `auto`):
  rate              Spark's `rate` source, rowsPerSecond=R, rampUpTime=0. Its
                    offsets are whole seconds, so below saturation it yields
                    one batch of R rows per second. Above saturation each batch
                    holds all rows generated while the previous one ran: batch
                    sizes grow by R / throughput per batch (at R=20M the third
                    batch outlasts a 20 s window). Right for `latency` only.
  rate-micro-batch  Spark's `rate-micro-batch` source: fixed batches of
                    --batch-rows rows, run back to back (default trigger), with
                    event time advancing batch_rows/R seconds per batch, i.e.
                    timestamps look like a stream at R rows/s. Spark is the
                    bottleneck and rows_per_second is its sustained throughput.
  auto              rate-micro-batch for stateless/window, rate for latency.
"""
import argparse
import json
import os
import shutil
import sys
import time
from datetime import datetime

SCRIPT_START = time.time()

# Keep stdout clean for the JSON result: point fd 1 at stderr (the JVM child
# inherits it too) and keep a private handle on the real stdout.
_RESULT_OUT = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr

# Bind everything to loopback and use this interpreter for Python workers.
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


def log(msg):
    print(f"[spark_streaming {time.time() - SCRIPT_START:7.1f}s] {msg}", file=sys.stderr, flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", choices=["stateless", "window", "latency"])
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds (after warm-up)")
    p.add_argument("--rows-per-second", type=int, default=1_000_000, help="rate source rowsPerSecond")
    p.add_argument("--out", required=True, help="directory for Parquet output and checkpoint")
    p.add_argument("--source", choices=["auto", "rate", "rate-micro-batch"], default="auto")
    p.add_argument("--batch-rows", type=int, default=2_000_000, help="rows per batch (rate-micro-batch)")
    p.add_argument("--warmup", type=float, default=10.0, help="warm-up seconds excluded from the figures")
    return p.parse_args()


def build_session():
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("ember-baseline")
        .config("spark.driver.memory", "2g")  # applied: the JVM is launched by this builder
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        # 2 cores: the default 200 shuffle partitions (= 200 state stores)
        # would dominate the window workload with per-task overhead.
        .config("spark.sql.shuffle.partitions", "2")
        # Keep every progress report of the run, not just the last 100.
        .config("spark.sql.streaming.numRecentProgressUpdates", "100000")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    return spark


def start_query(spark, args, source, out):
    from pyspark.sql import functions as F

    reader = spark.readStream.format(source).option("numPartitions", 2)
    if source == "rate":
        reader = reader.option("rowsPerSecond", args.rows_per_second).option("rampUpTime", "0s")
    else:
        advance_ms = max(1, round(args.batch_rows * 1000 / args.rows_per_second))
        reader = reader.option("rowsPerBatch", args.batch_rows).option("advanceMillisPerBatch", advance_ms)
    ticks = reader.load()
    if args.workload in ("stateless", "latency"):
        ticks.createOrReplaceTempView("ticks")
        df = spark.sql("SELECT value, timestamp, value * 2 AS doubled FROM ticks WHERE value % 3 <> 0")
    else:
        # Append mode emits a window once the watermark passes its end, i.e.
        # ~70 s after the window opens, so short runs write few or no rows;
        # the aggregation and state-store work is still done every batch.
        # The Parquet file sink handles the window struct fine in append mode.
        df = (
            ticks.withWatermark("timestamp", "10 seconds")
            .groupBy(F.window("timestamp", "1 minute"), (F.col("value") % 100).alias("key"))
            .count()
        )
    return (
        df.writeStream.format("parquet")
        .outputMode("append")
        .option("path", os.path.join(out, "parquet"))
        .option("checkpointLocation", os.path.join(out, "ckpt"))
        .queryName(f"ember_{args.workload}")
        .start()
    )


def ts_seconds(iso):
    # Progress timestamps look like 2025-01-01T12:00:00.123Z (UTC).
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def real_batches(progress):
    """(start, end, rows, duration_ms) per executed micro-batch, deduplicated.

    Idle reports (no new data, no batch run) carry no addBatch duration."""
    seen, out = set(), []
    for p in progress:
        dur = p.get("durationMs") or {}
        if "addBatch" not in dur or p["batchId"] in seen:
            continue
        seen.add(p["batchId"])
        start = ts_seconds(p["timestamp"])
        ms = dur.get("triggerExecution", 0)
        out.append((start, start + ms / 1000.0, p.get("numInputRows", 0), ms))
    return sorted(out)


def percentile(values, pct):
    # Nearest-rank percentile over an unsorted list.
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-pct * len(s) // 100)) - 1))
    return s[k]


def wait_for_jvm_exit():
    """Make the JVM exit before we do, so no Java process outlives the script.

    PySpark's gateway JVM exits when its stdin (a pipe from us) is closed."""
    from pyspark import SparkContext

    proc = getattr(SparkContext._gateway, "proc", None)
    if proc is not None and proc.stdin is not None:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except Exception:  # noqa: BLE001 - best effort; the JVM dies with us anyway
            proc.kill()


def main():
    args = parse_args()
    out = os.path.abspath(args.out)
    # A stale checkpoint would resume an old query: start from scratch.
    for sub in ("parquet", "ckpt"):
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    os.makedirs(out, exist_ok=True)

    import pyspark

    source = args.source
    if source == "auto":
        source = "rate" if args.workload == "latency" else "rate-micro-batch"

    spark = build_session()
    log(f"Spark {spark.version} up; {args.workload} via {source}, R={args.rows_per_second} rows/s")
    query = None
    try:
        query = start_query(spark, args, source, out)
        # The warm-up clock starts once the first batch has completed (JVM,
        # codegen and sink setup are reported separately as startup_seconds).
        while not real_batches(query.recentProgress):
            if query.exception() is not None:
                raise RuntimeError(f"streaming query failed: {query.exception()}")
            time.sleep(0.1)
        measure_start = time.time() + args.warmup
        measure_end = measure_start + args.seconds
        while time.time() < measure_end:
            if query.exception() is not None:
                raise RuntimeError(f"streaming query failed: {query.exception()}")
            time.sleep(min(1.0, max(0.0, measure_end - time.time())))
            log(f"running, last batchId {query.lastProgress and query.lastProgress['batchId']}")
        stop_at = time.time()
        # Stopping interrupts the running batch, which Spark logs as ERRORs
        # with stack traces; the figures are in hand, so silence the log.
        spark.sparkContext.setLogLevel("OFF")
        query.stop()
        batches = real_batches(query.recentProgress)
    finally:
        if query is not None and query.isActive:
            query.stop()
        spark.stop()
        wait_for_jvm_exit()

    if not batches:
        raise SystemExit("no micro-batch completed; nothing to report")
    measured = [b for b in batches if b[0] >= measure_start and b[1] <= stop_at]
    durations = [b[3] for b in measured]
    wall = (measured[-1][1] - measured[0][0]) if measured else 0.0
    rows = sum(b[2] for b in measured)
    result = {
        "workload": args.workload,
        "spark_version": pyspark.__version__,
        "source": source,
        "rows_per_second_target": args.rows_per_second,
        "batch_rows": args.batch_rows if source == "rate-micro-batch" else None,
        "batches": len(measured),
        "input_rows": rows,
        "batch_seconds": round(sum(durations) / 1000.0, 3),
        "wall_seconds": round(wall, 3),
        "seconds": round(wall, 3),
        "rows_per_second": round(rows / wall, 1) if wall > 0 else 0.0,
        "batch_ms_p50": percentile(durations, 50),
        "batch_ms_p99": percentile(durations, 99),
        "batch_ms_max": max(durations) if durations else None,
        "startup_seconds": round(batches[0][1] - SCRIPT_START, 3),
        "warmup_batches": sum(1 for b in batches if b[0] < measure_start),
    }
    log("measured batches (rows, ms): " + " ".join(f"{b[2]}/{b[3]}" for b in measured))
    if not measured:
        log("warning: no batch both started after warm-up and finished in time; "
            "batches are longer than the window (rate far above saturation?)")
    _RESULT_OUT.write(json.dumps(result) + "\n")
    _RESULT_OUT.flush()


if __name__ == "__main__":
    main()
