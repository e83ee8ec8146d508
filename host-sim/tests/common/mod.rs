//! What the CLI tests share: running the built `host-sim` binary.

use std::process::Command;

/// Runs `host-sim` with `args` and extra environment variables; returns the
/// exit code (-1 when killed by a signal), stdout and stderr.
pub fn host_sim_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_host-sim"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run host-sim");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
