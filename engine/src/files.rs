//! Side files (`ember submit --files`): files an application ships with
//! it, put in every container's work dir under their own names. SQL reads
//! them through the `files` scheme (`LOCATION 'files:///users.csv'`), which
//! each process resolves in its own copy: an executor's work dir, a
//! cluster-mode driver's, or, for a driver on the submitting machine, a
//! directory of links to the files given. Application code finds them
//! with [`path`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::object_store::local::LocalFileSystem;
use datafusion::prelude::SessionContext;

/// The URL scheme side files are read through.
pub const SCHEME: &str = "files";

/// Where this process holds its side files, once it has some.
static ROOT: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Says where this process holds its side files: every session context
/// made afterwards reads `files:///NAME` from `dir/NAME`.
pub fn set_root(dir: &Path) {
    if let Ok(mut root) = ROOT.lock() {
        *root = Some(dir.to_path_buf());
    }
}

/// Forgets this process's side files (their session ended).
pub fn clear_root() {
    if let Ok(mut root) = ROOT.lock() {
        *root = None;
    }
}

/// Where this process holds its side files, if it has any.
pub fn root() -> Option<PathBuf> {
    ROOT.lock().ok().and_then(|root| root.clone())
}

/// The side file `name` in this process: the application's own copy of a
/// file it was submitted with (Spark's `SparkFiles.get`).
pub fn path(name: &str) -> Result<PathBuf, String> {
    let root = root().ok_or_else(|| {
        format!("no side file named '{name}': the application was submitted without --files")
    })?;
    let path = root.join(name);
    if name.contains('/') || !path.exists() {
        return Err(format!(
            "no side file named '{name}' in {}: submit it with --files",
            root.display()
        ));
    }
    Ok(path)
}

/// Lets `ctx` read `files:///NAME`, when this process has side files.
pub fn register(ctx: &SessionContext) {
    let Some(root) = root() else {
        return;
    };
    match (
        LocalFileSystem::new_with_prefix(&root),
        ObjectStoreUrl::parse(format!("{SCHEME}://")),
    ) {
        (Ok(store), Ok(url)) => {
            ctx.register_object_store(url.as_ref(), Arc::new(store));
        }
        (Err(e), _) => {
            tracing::warn!(root = %root.display(), error = %e, "side files cannot be read");
        }
        (_, Err(e)) => tracing::warn!(error = %e, "side files cannot be read"),
    }
}
