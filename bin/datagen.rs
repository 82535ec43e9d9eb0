//! `ember gen views`: seeded, reproducible video-view events in CSV
//! (`event_time,user_id,video_id,watch_seconds,country`), one file per
//! generator thread, for trying Ember at any size.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const HEADER: &str = "event_time,user_id,video_id,watch_seconds,country";

/// Countries, most views first; picked with weights that fall off.
const COUNTRIES: [&str; 20] = [
    "US", "IN", "BR", "GB", "DE", "FR", "JP", "ID", "MX", "NG", "KR", "CA", "ES", "IT", "PH", "TR",
    "EG", "VN", "PL", "AR",
];

#[derive(Debug, Clone)]
pub struct ViewsSpec {
    pub rows: u64,
    pub files: usize,
    pub out: PathBuf,
    pub seed: u64,
    /// The day the events fall on, `YYYY-MM-DD`.
    pub day: String,
    /// Distinct videos to draw from.
    pub videos: u64,
    /// Replace part files already in `out`.
    pub force: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("--files must be at least 1")]
    NoFiles,
    #[error("--day must look like 2026-11-01, not '{0}'")]
    BadDay(String),
    #[error("--videos must be at least 1")]
    NoVideos,
    #[error("{0} already holds data files; pass --force to replace them or choose another --out")]
    NotEmpty(PathBuf),
    #[error("a file writer thread panicked; the output directory may be incomplete")]
    WriterPanicked,
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> GenError + '_ {
    move |source| GenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn valid_day(day: &str) -> bool {
    let parts: Vec<&str> = day.split('-').collect();
    matches!(parts.as_slice(), [y, m, d]
        if y.len() == 4 && m.len() == 2 && d.len() == 2
        && y.parse::<u32>().is_ok()
        && matches!(m.parse::<u32>(), Ok(1..=12))
        && matches!(d.parse::<u32>(), Ok(1..=28)))
}

/// Writes the files; returns their paths.
pub fn generate_views(spec: &ViewsSpec) -> Result<Vec<PathBuf>, GenError> {
    if spec.files == 0 {
        return Err(GenError::NoFiles);
    }
    if spec.videos == 0 {
        return Err(GenError::NoVideos);
    }
    if !valid_day(&spec.day) {
        return Err(GenError::BadDay(spec.day.clone()));
    }
    fs::create_dir_all(&spec.out).map_err(io_err(&spec.out))?;
    let existing: Vec<PathBuf> = fs::read_dir(&spec.out)
        .map_err(io_err(&spec.out))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    if !existing.is_empty() {
        if !spec.force {
            return Err(GenError::NotEmpty(spec.out.clone()));
        }
        for path in existing {
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    let paths: Vec<PathBuf> = (0..spec.files)
        .map(|i| spec.out.join(format!("part-{i:05}.csv")))
        .collect();
    let per_file = spec.rows / spec.files as u64;
    let extra = spec.rows % spec.files as u64;
    let threads = ember_session::master::available_cores()
        .min(spec.files)
        .max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let paths = &paths;
                scope.spawn(move || -> Result<(), GenError> {
                    for (i, path) in paths.iter().enumerate().skip(t).step_by(threads) {
                        let rows = per_file + u64::from((i as u64) < extra);
                        write_file(path, rows, spec, i as u64)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(GenError::WriterPanicked)))
            .collect::<Result<Vec<()>, GenError>>()
    })?;
    Ok(paths)
}

fn write_file(path: &Path, rows: u64, spec: &ViewsSpec, index: u64) -> Result<(), GenError> {
    // Each file has its own stream, so files can be written in parallel and
    // still come out the same for the same seed.
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let file = fs::File::create(path).map_err(io_err(path))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let write = |out: &mut BufWriter<fs::File>, rng: &mut ChaCha8Rng| -> io::Result<()> {
        writeln!(out, "{HEADER}")?;
        let users = (spec.rows / 10).clamp(100, 5_000_000);
        let videos = spec.videos as f64;
        for _ in 0..rows {
            let second: u32 = rng.random_range(0..86_400);
            let user: u64 = rng.random_range(1..=users);
            // Log-uniform ids: a few videos draw most of the views.
            let video = (videos.powf(rng.random::<f64>()) as u64).clamp(1, spec.videos);
            let share: f64 = rng.random();
            let watch = 1 + (share * share * 1800.0) as u32;
            let country = COUNTRIES
                [(COUNTRIES.len() as f64 * rng.random::<f64>().powi(2)) as usize % COUNTRIES.len()];
            writeln!(
                out,
                "{}T{:02}:{:02}:{:02}Z,{user},{video},{watch},{country}",
                spec.day,
                second / 3600,
                second / 60 % 60,
                second % 60
            )?;
        }
        out.flush()
    };
    write(&mut out, &mut rng).map_err(io_err(path))
}

/// DDL registering a directory of generated views as the table `views`.
pub fn views_ddl(dir: &Path) -> String {
    format!(
        "CREATE EXTERNAL TABLE views (event_time TIMESTAMP NOT NULL, user_id BIGINT NOT NULL, \
         video_id BIGINT NOT NULL, watch_seconds BIGINT NOT NULL, country VARCHAR NOT NULL) \
         STORED AS CSV LOCATION '{}/' OPTIONS ('format.has_header' 'true')",
        dir.display()
    )
}

/// `rows` views in `files` files under `root`, generated once per size
/// (seed 42, 20,000 videos) and reused after; for benchmarks.
pub fn cached_views(root: &Path, rows: u64, files: usize) -> Result<PathBuf, GenError> {
    let dir = root.join(format!("views-{rows}-{files}"));
    let done = dir.join("_COMPLETE");
    if !done.exists() {
        errln!(
            "generating {rows} rows in {files} files under {} ...",
            dir.display()
        );
        generate_views(&ViewsSpec {
            rows,
            files,
            out: dir.clone(),
            seed: 42,
            day: "2026-11-01".to_string(),
            videos: 20_000,
            force: true,
        })?;
        fs::write(&done, "").map_err(|source| GenError::Io {
            path: done.clone(),
            source,
        })?;
    }
    Ok(dir)
}

/// A one-row views table under `root` (a job's fixed cost, in benchmarks).
pub fn one_row_views(root: &Path) -> Result<PathBuf, GenError> {
    let dir = root.join("views-1");
    let path = dir.join("part-00000.csv");
    fs::create_dir_all(&dir)
        .and_then(|()| {
            fs::write(
                &path,
                "event_time,user_id,video_id,watch_seconds,country\n2026-11-01T00:00:01Z,1,1,60,US\n",
            )
        })
        .map_err(|source| GenError::Io { path, source })?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(out: PathBuf, seed: u64) -> ViewsSpec {
        ViewsSpec {
            rows: 1001,
            files: 3,
            out,
            seed,
            day: "2026-11-01".to_string(),
            videos: 50,
            force: false,
        }
    }

    #[test]
    fn same_seed_same_files_and_every_row_is_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let a = generate_views(&spec(dir.path().join("a"), 7)).unwrap();
        let b = generate_views(&spec(dir.path().join("b"), 7)).unwrap();
        let c = generate_views(&spec(dir.path().join("c"), 8)).unwrap();
        let read = |p: &PathBuf| fs::read_to_string(p).unwrap();
        assert_eq!(a.len(), 3);
        let mut rows = 0;
        for ((pa, pb), pc) in a.iter().zip(&b).zip(&c) {
            assert_eq!(read(pa), read(pb));
            assert_ne!(read(pa), read(pc));
            let text = read(pa);
            let mut lines = text.lines();
            assert_eq!(lines.next(), Some(HEADER));
            for line in lines {
                rows += 1;
                let f: Vec<&str> = line.split(',').collect();
                assert_eq!(f.len(), 5, "{line}");
                assert!(f[0].starts_with("2026-11-01T") && f[0].ends_with('Z'));
                let video: u64 = f[2].parse().unwrap();
                assert!((1..=50).contains(&video));
                let watch: u32 = f[3].parse().unwrap();
                assert!((1..=1801).contains(&watch));
            }
        }
        assert_eq!(rows, 1001);
    }

    #[test]
    fn refuses_to_overwrite_without_force_and_checks_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path().to_path_buf(), 1);
        generate_views(&s).unwrap();
        assert!(matches!(generate_views(&s), Err(GenError::NotEmpty(_))));
        s.force = true;
        generate_views(&s).unwrap();
        s.day = "Nov 1".to_string();
        assert!(matches!(generate_views(&s), Err(GenError::BadDay(_))));
        s.day = "2026-11-01".to_string();
        s.files = 0;
        assert!(matches!(generate_views(&s), Err(GenError::NoFiles)));
    }
}
