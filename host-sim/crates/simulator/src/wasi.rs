//! WASI preview1, as much of it as Envoy's host provides (15 functions under
//! both `wasi_snapshot_preview1` and `wasi_unstable`), with the same answers:
//! stdout is logged at info and stderr at error, the clock is the host's
//! (virtual) clock, files do not exist, `proc_exit` returns.
//!
//! In command mode (the `cargo test` runner) stdout/stderr go to the
//! terminal, `args_*` carry the command line and `proc_exit` ends the run.

use super::host::{memory, read_bytes, write_bytes, write_u32, write_u64, VmHost};
use crate::abi::LogLevel;
use wasmtime::{Caller, Linker};

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOENT: i32 = 44;
const ERRNO_NOSYS: i32 = 52;
const ERRNO_NOTSUP: i32 = 58;
const RANDOM_GET_MAX: u32 = 65536;

/// The error a command-mode `proc_exit` unwinds with.
#[derive(Debug)]
pub struct Exit(pub i32);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "proc_exit({})", self.0)
    }
}

impl std::error::Error for Exit {}

macro_rules! errno {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(_) => return ERRNO_FAULT,
        }
    };
}

pub fn add_to_linker(linker: &mut Linker<VmHost>) -> wasmtime::Result<()> {
    for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
        linker.func_wrap(
            module,
            "fd_write",
            |mut c: Caller<'_, VmHost>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32| -> i32 {
                if fd != 1 && fd != 2 {
                    return ERRNO_BADF;
                }
                let mut data = Vec::new();
                for i in 0..iovs_len.max(0) {
                    let iov = errno!(read_bytes(&c, iovs.wrapping_add(i * 8), 8));
                    let ptr = i32::from_le_bytes(iov[0..4].try_into().unwrap());
                    let len = i32::from_le_bytes(iov[4..8].try_into().unwrap());
                    data.extend(errno!(read_bytes(&c, ptr, len)));
                }
                errno!(write_u32(&mut c, nwritten, data.len() as u32));
                if c.data().passthrough_stdio {
                    use std::io::Write;
                    let _ =
                        if fd == 1 { std::io::stdout().write_all(&data) } else { std::io::stderr().write_all(&data) };
                } else if !data.is_empty() {
                    let mut msg = String::from_utf8_lossy(&data).into_owned();
                    if msg.ends_with('\n') {
                        msg.pop();
                    }
                    c.data().log(if fd == 1 { LogLevel::Info } else { LogLevel::Error }, msg);
                }
                ERRNO_SUCCESS
            },
        )?;
        linker.func_wrap(module, "fd_read", |_c: Caller<'_, VmHost>, _: i32, _: i32, _: i32, _: i32| -> i32 {
            ERRNO_NOSYS
        })?;
        linker.func_wrap(module, "fd_seek", |_c: Caller<'_, VmHost>, _: i32, _: i64, _: i32, _: i32| -> i32 {
            ERRNO_SUCCESS
        })?;
        linker.func_wrap(module, "fd_close", |_c: Caller<'_, VmHost>, _: i32| -> i32 { ERRNO_SUCCESS })?;
        linker.func_wrap(module, "fd_fdstat_get", |mut c: Caller<'_, VmHost>, fd: i32, ptr: i32| -> i32 {
            if fd != 1 && fd != 2 {
                return ERRNO_BADF;
            }
            let mut stat = [0u8; 24];
            stat[8..16].copy_from_slice(&64u64.to_le_bytes()); // rights: FD_WRITE
            errno!(write_bytes(&mut c, ptr, &stat));
            ERRNO_SUCCESS
        })?;
        linker.func_wrap(module, "fd_prestat_get", |_c: Caller<'_, VmHost>, _: i32, _: i32| -> i32 { ERRNO_BADF })?;
        linker.func_wrap(module, "fd_prestat_dir_name", |_c: Caller<'_, VmHost>, _: i32, _: i32, _: i32| -> i32 {
            ERRNO_NOSYS
        })?;
        linker.func_wrap(
            module,
            "path_open",
            |_c: Caller<'_, VmHost>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i64, _: i64, _: i32, _: i32| -> i32 {
                ERRNO_NOENT
            },
        )?;
        linker.func_wrap(module, "environ_sizes_get", |mut c: Caller<'_, VmHost>, count: i32, size: i32| -> i32 {
            let entries = env_entries(c.data());
            let total: usize = entries.iter().map(|e| e.len()).sum();
            errno!(write_u32(&mut c, count, entries.len() as u32));
            errno!(write_u32(&mut c, size, total as u32));
            ERRNO_SUCCESS
        })?;
        linker.func_wrap(module, "environ_get", |mut c: Caller<'_, VmHost>, array: i32, buf: i32| -> i32 {
            let entries = env_entries(c.data());
            errno!(write_string_array(&mut c, &entries, array, buf));
            ERRNO_SUCCESS
        })?;
        linker.func_wrap(module, "args_sizes_get", |mut c: Caller<'_, VmHost>, count: i32, size: i32| -> i32 {
            let args = arg_entries(c.data());
            let total: usize = args.iter().map(|e| e.len()).sum();
            errno!(write_u32(&mut c, count, args.len() as u32));
            errno!(write_u32(&mut c, size, total as u32));
            ERRNO_SUCCESS
        })?;
        linker.func_wrap(module, "args_get", |mut c: Caller<'_, VmHost>, array: i32, buf: i32| -> i32 {
            let args = arg_entries(c.data());
            errno!(write_string_array(&mut c, &args, array, buf));
            ERRNO_SUCCESS
        })?;
        linker.func_wrap(
            module,
            "clock_time_get",
            |mut c: Caller<'_, VmHost>, id: i32, _precision: i64, out: i32| -> i32 {
                let now = if c.data().passthrough_stdio {
                    match id {
                        0 => std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_nanos() as u64)
                            .unwrap_or(0),
                        1 => monotonic_ns(),
                        _ => return ERRNO_NOTSUP,
                    }
                } else {
                    let p = c.data().proxy.borrow();
                    match id {
                        0 => p.now_ns(),
                        1 => p.elapsed_ns,
                        _ => return ERRNO_NOTSUP,
                    }
                };
                errno!(write_u64(&mut c, out, now));
                ERRNO_SUCCESS
            },
        )?;
        linker.func_wrap(module, "random_get", |mut c: Caller<'_, VmHost>, buf: i32, len: i32| -> i32 {
            if len as u32 > RANDOM_GET_MAX {
                return ERRNO_INVAL;
            }
            let mut bytes = vec![0u8; len as u32 as usize];
            if getrandom::getrandom(&mut bytes).is_err() {
                return ERRNO_INVAL;
            }
            errno!(write_bytes(&mut c, buf, &bytes));
            ERRNO_SUCCESS
        })?;
        // Envoy 1.40 links `sched_yield` too: a module importing it (Rust's
        // std through parking_lot, as the `cel` crate's parser does) loads
        // there. A VM is single-threaded: there is nothing to yield to.
        linker.func_wrap(module, "sched_yield", |_c: Caller<'_, VmHost>| -> i32 { ERRNO_SUCCESS })?;
        linker.func_wrap(module, "proc_exit", |mut c: Caller<'_, VmHost>, code: i32| -> wasmtime::Result<()> {
            if c.data().passthrough_stdio {
                c.data_mut().exit_code = Some(code);
                return Err(wasmtime::Error::new(Exit(code)));
            }
            // Envoy's host only notes the call and returns.
            Ok(())
        })?;
    }
    Ok(())
}

fn env_entries(h: &VmHost) -> Vec<Vec<u8>> {
    h.env.iter().map(|(k, v)| format!("{k}={v}\0").into_bytes()).collect()
}

fn arg_entries(h: &VmHost) -> Vec<Vec<u8>> {
    if !h.passthrough_stdio {
        return Vec::new();
    }
    h.args.iter().map(|a| format!("{a}\0").into_bytes()).collect()
}

fn write_string_array(
    c: &mut Caller<'_, VmHost>,
    entries: &[Vec<u8>],
    array: i32,
    buf: i32,
) -> Result<(), crate::abi::Status> {
    memory(c)?;
    let mut at = buf;
    for (i, e) in entries.iter().enumerate() {
        write_u32(c, array + (i as i32) * 4, at as u32)?;
        write_bytes(c, at, e)?;
        at += e.len() as i32;
    }
    Ok(())
}

fn monotonic_ns() -> u64 {
    use std::sync::OnceLock;
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
}
