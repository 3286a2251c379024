//! A private PostgreSQL server in a temporary directory, for tests that stop and restart
//! Postgres. Postgres refuses to run as root, so as root it runs as the `postgres` user.
use std::{path::PathBuf, process::Command};

use crate::redis_server::free_port;

/// A postgres this test owns; stopped and removed on drop.
pub struct PgServer {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

fn as_postgres(program: &PathBuf) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgServer {
    pub async fn start() -> PgServer {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("postgresql server binaries in /usr/lib/postgresql")
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb");
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("e2e-pg-{port}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("pg dir");
        if is_root() {
            let _ = Command::new("chown")
                .arg("-R")
                .arg("postgres")
                .arg(&dir)
                .status();
        }
        let status = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-U", "postgres", "--auth=trust", "--no-sync"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("initdb");
        assert!(status.success(), "initdb failed");
        let server = PgServer { port, dir, bin };
        server.restart().await;
        server
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub async fn restart(&self) {
        let status = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                self.port,
                self.dir.display()
            ))
            .args(["-w", "start"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("pg_ctl start");
        assert!(status.success(), "pg_ctl start failed");
        assert!(
            crate::listening(self.port).await,
            "postgres did not start on {}",
            self.port
        );
    }

    pub fn stop(&self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
