//! A PostgreSQL server for the production-shaped MLflow of the scale figures: Debian's
//! `postgresql` package, a fresh cluster in a temporary directory, on a loopback port, stopped
//! when dropped. (initdb refuses root, so as root it runs as the package's `postgres` user.)

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("concurrent-bench-pg-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        if as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the PostgreSQL directory");
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).ok();
        run(
            &bin,
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        let port = concurrent_tests::free_port();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=200",
            dir.path().display()
        );
        run(
            &bin,
            "pg_ctl",
            &[
                "-D",
                &data.display().to_string(),
                "-o",
                &options,
                "-l",
                &dir.path().join("pg.log").display().to_string(),
                "-w",
                "start",
            ],
        );
        let pg = Postgres { dir, bin, port };
        let status = Command::new(pg.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "mlflow",
            ])
            .status()
            .expect("createdb");
        assert!(status.success(), "createdb mlflow");
        pg
    }

    /// The MLflow backend store URI of the `mlflow` database.
    pub fn uri(&self) -> String {
        format!(
            "postgresql+psycopg2://postgres@127.0.0.1:{}/mlflow",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        run(
            &self.bin,
            "pg_ctl",
            &["-D", &data, "-m", "fast", "-w", "stop"],
        );
    }
}

fn as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs a PostgreSQL program, as the `postgres` user when we are root.
fn run(bin: &Path, program: &str, args: &[&str]) {
    let path = bin.join(program);
    let status = if as_root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&path)
            .args(args)
            .status()
    } else {
        Command::new(&path).args(args).status()
    }
    .unwrap_or_else(|e| panic!("{} cannot run: {e}", path.display()));
    assert!(status.success(), "{program} {args:?} failed ({status})");
}

/// Where Debian's PostgreSQL programs are (`/usr/lib/postgresql/<version>/bin`).
fn bin_dir() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    versions
        .into_iter()
        .map(|v| v.join("bin"))
        .filter(|b| b.join("initdb").exists())
        .max()
        .expect(
            "PostgreSQL is not installed: scripts/bench.sh installs Debian's postgresql package",
        )
}
