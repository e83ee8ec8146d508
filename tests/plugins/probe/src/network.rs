//! The probe as a network (TCP) filter: a stream context that logs each
//! network callback (with `lifecycle`) and runs the configured `actions` in
//! the network phases (`conn`, `down`, `up`, `dclose`, `uclose`, `log`,
//! `done`). Besides the generic actions it knows `down_data` / `up_data`
//! (log the data), `down_set=text` / `up_set=text` (replace it),
//! `down_append=text` / `up_append=text`, `pause` (return StopIteration),
//! `resume_down`, `resume_up`, `close_down` and `close_up`.

use crate::actions::{self, Act, Phase};
use crate::config::Config;
use crate::{info, log, lossy, run_generic};
use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::{Action, LogLevel, PeerType};
use std::rc::Rc;

pub struct Connection {
    cfg: Rc<Config>,
    acts: Vec<Act>,
    /// Size of the data handed to the current data callback.
    data_size: usize,
}

impl Connection {
    pub fn new(cfg: Rc<Config>) -> Connection {
        let acts = actions::parse_list(&cfg.actions.join(","));
        Connection { cfg, acts, data_size: 0 }
    }

    fn lifecycle(&self, what: &str) {
        if self.cfg.lifecycle {
            info(format!("lifecycle {what}"));
        }
    }

    fn run(&mut self, phase: Phase) -> Action {
        let acts: Vec<Act> = self.acts.iter().filter(|a| network_phase(a.phase) == phase).cloned().collect();
        let mut out = Action::Continue;
        for a in &acts {
            if self.exec(a) == Action::Pause {
                out = Action::Pause;
            }
        }
        out
    }

    fn exec(&mut self, a: &Act) -> Action {
        let size = self.data_size;
        match a.name.as_str() {
            "down_data" => info(format!("down_data {}", lossy(&self.get_downstream_data(0, size).unwrap_or_default()))),
            "up_data" => info(format!("up_data {}", lossy(&self.get_upstream_data(0, size).unwrap_or_default()))),
            "down_set" => self.set_downstream_data(0, size, a.arg.as_bytes()),
            "up_set" => self.set_upstream_data(0, size, a.arg.as_bytes()),
            "down_append" => self.set_downstream_data(size, 0, a.arg.as_bytes()),
            "up_append" => self.set_upstream_data(size, 0, a.arg.as_bytes()),
            "pause" => {
                info("pause");
                return Action::Pause;
            }
            "resume_down" => self.resume_downstream(),
            "resume_up" => self.resume_upstream(),
            "close_down" => self.close_downstream(),
            "close_up" => self.close_upstream(),
            name => {
                if !run_generic(a) {
                    log(LogLevel::Warn, &format!("unknown action {name}"));
                }
            }
        }
        Action::Continue
    }
}

/// Actions without a network phase (their default is request headers) run
/// on the new connection.
fn network_phase(phase: Phase) -> Phase {
    if phase == Phase::ReqHeaders {
        Phase::NewConnection
    } else {
        phase
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.lifecycle("delete");
    }
}

impl Context for Connection {
    fn on_done(&mut self) -> bool {
        self.lifecycle("done");
        self.run(Phase::Done);
        true
    }
}

impl StreamContext for Connection {
    fn on_new_connection(&mut self) -> Action {
        self.lifecycle("new_connection");
        self.run(Phase::NewConnection)
    }

    fn on_downstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        self.lifecycle(&format!("downstream_data size={data_size} eos={end_of_stream}"));
        self.data_size = data_size;
        self.run(Phase::DownstreamData)
    }

    fn on_downstream_close(&mut self, peer_type: PeerType) {
        self.lifecycle(&format!("downstream_close peer={peer_type:?}"));
        self.run(Phase::DownstreamClose);
    }

    fn on_upstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        self.lifecycle(&format!("upstream_data size={data_size} eos={end_of_stream}"));
        self.data_size = data_size;
        self.run(Phase::UpstreamData)
    }

    fn on_upstream_close(&mut self, peer_type: PeerType) {
        self.lifecycle(&format!("upstream_close peer={peer_type:?}"));
        self.run(Phase::UpstreamClose);
    }

    fn on_log(&mut self) {
        self.lifecycle("log");
        self.run(Phase::Log);
    }
}
