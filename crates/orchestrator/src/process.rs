//! Worker processes: start one, signal it, and recognise it again later.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;

/// Starts `command[0] command[1..] args...` with stdout and stderr appended
/// to `log`, in its own process group (so a Ctrl-C meant for the control
/// plane, or its death, does not take the worker with it), with `env`
/// added to the environment.
pub fn spawn(
    command: &[String],
    args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> std::io::Result<tokio::process::Child> {
    let (program, rest) = command
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty worker command"))?;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = File::options().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let mut cmd = tokio::process::Command::from(cmd);
    // An orchestrator that exits without stopping its workers leaves them
    // to be adopted; it must not kill them on drop.
    cmd.kill_on_drop(false);
    cmd.spawn()
}

/// Sends `signal` to `pid`; false if there is no such process.
pub fn signal(pid: u32, signal: i32) -> bool {
    // SAFETY: kill(2) with a plain pid and signal number.
    unsafe { libc::kill(pid as libc::pid_t, signal) == 0 }
}

/// Whether `pid` exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => state_of(&stat) != Some('Z'),
        Err(_) => false,
    }
}

/// The process's start time in clock ticks since boot (field 22 of
/// `/proc/PID/stat`): with the pid, it names one process for good.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn state_of(stat: &str) -> Option<char> {
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spawns_logs_signals_and_recognises() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs/w.log");
        let cmd = vec!["sh".to_string(), "-c".to_string()];
        let mut child = spawn(
            &cmd,
            &["echo hello $GREETING; exec sleep 30".to_string()],
            &[("GREETING".into(), "world".into())],
            &log,
        )
        .unwrap();
        let pid = child.id().unwrap();
        let t0 = start_time(pid).unwrap();
        assert!(alive(pid));
        assert_eq!(start_time(pid), Some(t0));
        for _ in 0..50 {
            if std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("hello world")
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("hello world")
        );
        assert!(signal(pid, libc::SIGKILL));
        let status = child.wait().await.unwrap();
        assert!(!status.success());
        assert!(!alive(pid));
        assert_eq!(start_time(999_999_999), None);
    }
}
