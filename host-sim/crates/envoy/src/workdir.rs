//! The engine's temporary working directory (bootstrap, certificates,
//! Envoy's log and access log).

use crate::EnvoyOptions;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// The temporary working directory; removed on drop unless kept.
pub struct Workdir {
    pub path: PathBuf,
    keep: bool,
}

impl Workdir {
    pub fn create(opts: &EnvoyOptions) -> Result<Self> {
        let parent = opts.workdir_parent.clone().unwrap_or_else(std::env::temp_dir);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = parent.join(format!("meshwasm-envoy-{}-{seq}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, keep: opts.keep_workdir })
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("envoy engine: working directory kept at {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
