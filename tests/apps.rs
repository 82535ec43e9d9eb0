//! Packaged applications: the example watch-time application, submitted
//! as a binary, answers as the SQL example does in every mode.

use ember_testkit::BoundedCommand;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::text;

/// The example application's binary, which `cargo test --workspace` builds
/// (its package has a test of its own) next to the `ember` binary.
pub fn watch_time_app() -> PathBuf {
    let app = Path::new(env!("CARGO_BIN_EXE_ember")).with_file_name("watch-time-app");
    assert!(
        app.is_file(),
        "{} is missing: build it with `cargo build -p watch-time-app` (`cargo test --workspace` does)",
        app.display()
    );
    app
}

/// A scratch directory holding the examples, as a user's checkout.
pub fn checkout() -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    std::os::unix::fs::symlink(examples, work.path().join("examples")).unwrap();
    work
}

fn submit(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ember"))
        .arg("submit")
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .bounded_output()
        .unwrap();
    assert!(
        out.status.success(),
        "ember submit {args:?}\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

const TABLE: &str = "target/ember-output/watch_time_per_video.parquet";

#[test]
fn the_example_application_gives_the_sql_examples_rows_in_local_mode() {
    let work = checkout();
    let script = submit(
        work.path(),
        &["--master", "local[2]", "examples/watch_time.sql"],
    );
    let table = std::fs::read(work.path().join(TABLE)).unwrap();
    std::fs::remove_file(work.path().join(TABLE)).unwrap();
    let app = watch_time_app();
    let packaged = submit(
        work.path(),
        &["--master", "local[2]", app.to_str().unwrap()],
    );
    assert_eq!(text(&packaged.stdout), text(&script.stdout));
    assert_eq!(std::fs::read(work.path().join(TABLE)).unwrap(), table);
    // Its own arguments reach it, after `--`.
    let out = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args([
            "submit",
            "--master",
            "local",
            app.to_str().unwrap(),
            "--",
            "no/such/dir/",
        ])
        .current_dir(work.path())
        .bounded_output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("LOCATION 'no/such/dir/' does not exist"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_example_application_gives_the_sql_examples_rows_on_a_cluster() {
    let expected = crate::support::local_rows(Path::new("examples/watch_time.sql"));
    let cluster = crate::cluster::Cluster::start();
    let app = watch_time_app();
    let app = app.to_str().unwrap();

    // Client mode: the application is the driver, here; its executors run
    // its binary, uploaded first, so its UDF and UDAF resolve there.
    let out = cluster.run(&[
        "submit",
        "--total-executor-cores",
        "2",
        "--name",
        "app-client",
        app,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), expected);
    assert!(
        text(&out.stderr).contains("uploaded"),
        "{}",
        text(&out.stderr)
    );

    // Cluster mode: a worker runs it as the driver, from its cache; the
    // manager holds it already, so nothing is sent again.
    let out = cluster.run(&[
        "submit",
        "--deploy-mode",
        "cluster",
        "--name",
        "app-cluster",
        app,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("nothing uploaded"),
        "{}",
        text(&out.stderr)
    );
    let id = text(&out.stdout).trim().to_string();
    assert_eq!(finished_output(&cluster, &id), expected);
}

/// The standard output of cluster-mode submission `id`, once it has
/// FINISHED (its stderr if it ends otherwise).
fn finished_output(cluster: &crate::cluster::Cluster, id: &str) -> String {
    let status = cluster.wait_for(
        "the cluster-mode driver to finish",
        std::time::Duration::from_secs(60),
        |s| {
            ember_testkit::driver(s, id)
                .is_some_and(|d| d["state"] != "RUNNING" && d["state"] != "SUBMITTED")
        },
    );
    assert_eq!(
        ember_testkit::driver(&status, id).unwrap()["state"],
        "FINISHED",
        "{}",
        text(&cluster.run(&["logs", "--stderr", id]).stdout)
    );
    text(&cluster.run(&["logs", id]).stdout)
}

#[test]
fn a_remembered_hash_is_used_only_while_the_file_is_unchanged() {
    use ember_actors::binaries::hash_file;
    use ember_client::hashes::hash_file_cached;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app");
    std::fs::write(&path, b"first build").unwrap();
    // A file written a minute ago, as a build's output is by submit time.
    let a_minute_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(a_minute_ago)
        .unwrap();
    let first = hash_file_cached(&path).unwrap();
    assert_eq!(first, hash_file(&path).unwrap());
    // Remembered now, and asked again: the same answer.
    assert_eq!(hash_file_cached(&path).unwrap(), first);
    // Rewritten in place with as many bytes: hashed again, never the old one.
    std::fs::write(&path, b"other build").unwrap();
    let second = hash_file_cached(&path).unwrap();
    assert_ne!(second, first);
    assert_eq!(second, hash_file(&path).unwrap());
}

/// A side file and a script that reads it through `files:///`, four
/// times over (four scan tasks, spread over the executors).
fn side_file_job(dir: &Path) -> (PathBuf, PathBuf, String) {
    let users = dir.join("users.csv");
    let mut csv = String::from("id,name\n");
    for id in 1..=2000 {
        csv.push_str(&format!("{id},user-{id}\n"));
    }
    std::fs::write(&users, csv).unwrap();
    let script = dir.join("users.sql");
    std::fs::write(
        &script,
        "CREATE EXTERNAL TABLE users STORED AS CSV LOCATION 'files:///users.csv' \
         OPTIONS ('format.has_header' 'true');\n\
         SELECT count(*) AS n, sum(id) AS total FROM (\
           SELECT id FROM users UNION ALL SELECT id FROM users \
           UNION ALL SELECT id FROM users UNION ALL SELECT id FROM users);\n",
    )
    .unwrap();
    (users, script, "n,total\n8000,8004000\n".to_string())
}

#[test]
fn side_files_reach_the_driver_and_every_executor_in_every_mode() {
    let work = tempfile::tempdir().unwrap();
    let (users, script, expected) = side_file_job(work.path());
    let (users, script) = (users.to_str().unwrap(), script.to_str().unwrap());

    // Local mode: the driver reads the file where it is.
    let out = submit(
        work.path(),
        &["--master", "local[2]", "--files", users, script],
    );
    assert_eq!(text(&out.stdout), expected);

    let cluster = crate::cluster::Cluster::start();
    // Client mode: the side file is uploaded; each executor reads its copy
    // in its work dir, the driver through a link to the file given.
    let out = cluster.run(&[
        "submit",
        "--total-executor-cores",
        "2",
        "--files",
        users,
        script,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), expected);
    assert!(
        text(&out.stderr).contains("side file") && text(&out.stderr).contains("uploaded"),
        "{}",
        text(&out.stderr)
    );

    // Cluster mode: the driver's work dir holds it too; nothing is sent
    // again.
    let out = cluster.run(&[
        "submit",
        "--deploy-mode",
        "cluster",
        "--name",
        "side-files",
        "--files",
        users,
        script,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("nothing uploaded"),
        "{}",
        text(&out.stderr)
    );
    let id = text(&out.stdout).trim().to_string();
    assert_eq!(finished_output(&cluster, &id), expected);

    // Bad side files are refused before anything is sent, saying what
    // to fix.
    let dir = work.path().to_str().unwrap();
    let twin = work.path().join("twin");
    std::fs::create_dir(&twin).unwrap();
    std::fs::copy(work.path().join("users.csv"), twin.join("users.csv")).unwrap();
    let twin = twin.join("users.csv");
    let missing = work.path().join("missing.csv");
    let hidden = work.path().join(".hidden");
    std::fs::write(&hidden, "x").unwrap();
    let cases: [(&str, &str); 4] = [
        (missing.to_str().unwrap(), "cannot read"),
        (dir, "is not a regular file"),
        (hidden.to_str().unwrap(), "cannot name a side file"),
        (
            &format!("{users},{}", twin.display()),
            "are both named 'users.csv'",
        ),
    ];
    for (files, says) in cases {
        for mode in ["client", "cluster"] {
            let out = cluster.run(&["submit", "--deploy-mode", mode, "--files", files, script]);
            assert!(!out.status.success(), "--files {files} in {mode} mode");
            assert!(
                text(&out.stderr).contains(says),
                "--files {files} in {mode} mode: {}",
                text(&out.stderr)
            );
        }
    }
}

#[test]
fn a_script_that_reads_a_side_file_it_was_not_given_says_so() {
    let work = tempfile::tempdir().unwrap();
    let (_, script, _) = side_file_job(work.path());
    let out = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["submit", "--master", "local[2]"])
        .arg(&script)
        .bounded_output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("submitted without --files"),
        "{}",
        text(&out.stderr)
    );
}
