//! The action language. A request carries `x-probe: <action>[,<action>...]`
//! (the header name is configurable); each action is `name[=arg][@phase]`.
//! An action runs in its natural phase (`req_*` in on_request_headers,
//! `resp_*` in on_response_headers, `req_body*` in on_request_body, ...)
//! unless `@phase` names another one: `reqh`, `reqb`, `reqt`, `resph`,
//! `respb`, `respt`, `log` or `done`; in a network filter also `conn`,
//! `down`, `up`, `dclose` and `uclose` (`down_*` actions default to `down`,
//! `up_*` to `up`, everything else to `conn`).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    ReqHeaders,
    ReqBody,
    ReqTrailers,
    RespHeaders,
    RespBody,
    RespTrailers,
    Log,
    Done,
    /// Network filters: on_new_connection, on_downstream_data,
    /// on_upstream_data and the two connection-close callbacks.
    NewConnection,
    DownstreamData,
    UpstreamData,
    DownstreamClose,
    UpstreamClose,
}

impl Phase {
    fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "reqh" => Phase::ReqHeaders,
            "reqb" => Phase::ReqBody,
            "reqt" => Phase::ReqTrailers,
            "resph" => Phase::RespHeaders,
            "respb" => Phase::RespBody,
            "respt" => Phase::RespTrailers,
            "log" => Phase::Log,
            "done" => Phase::Done,
            "conn" => Phase::NewConnection,
            "down" => Phase::DownstreamData,
            "up" => Phase::UpstreamData,
            "dclose" => Phase::DownstreamClose,
            "uclose" => Phase::UpstreamClose,
            _ => return None,
        })
    }

    pub fn is_response(self) -> bool {
        matches!(self, Phase::RespHeaders | Phase::RespBody | Phase::RespTrailers)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Act {
    pub name: String,
    pub arg: String,
    pub phase: Phase,
}

impl Act {
    /// The argument split at its first `:`.
    pub fn kv(&self) -> (&str, &str) {
        self.arg.split_once(':').unwrap_or((self.arg.as_str(), ""))
    }
}

/// Where an action runs when no `@phase` is given.
pub fn default_phase(name: &str) -> Phase {
    if name.starts_with("req_body") {
        Phase::ReqBody
    } else if name.starts_with("resp_body") {
        Phase::RespBody
    } else if name.starts_with("reqt_") {
        Phase::ReqTrailers
    } else if name.starts_with("respt_") {
        Phase::RespTrailers
    } else if name.starts_with("down_") {
        Phase::DownstreamData
    } else if name.starts_with("up_") {
        Phase::UpstreamData
    } else if name.starts_with("resp_") || name == "echo" {
        Phase::RespHeaders
    } else {
        Phase::ReqHeaders
    }
}

pub fn parse_one(token: &str) -> Act {
    let token = token.trim();
    let (body, phase) = match token.rsplit_once('@') {
        Some((b, p)) => match Phase::parse(p.trim()) {
            Some(ph) => (b, Some(ph)),
            None => (token, None),
        },
        None => (token, None),
    };
    let (name, arg) = body.split_once('=').unwrap_or((body, ""));
    let name = name.trim().to_string();
    let phase = phase.unwrap_or_else(|| default_phase(&name));
    Act { name, arg: arg.to_string(), phase }
}

pub fn parse_list(list: &str) -> Vec<Act> {
    list.split(',').filter(|t| !t.trim().is_empty()).map(parse_one).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        let a = parse_list("req_add=x-a:1, prop=request.path@resph,panic,,resp_body_set=a=b");
        assert_eq!(a.len(), 4);
        assert_eq!(a[0], Act { name: "req_add".into(), arg: "x-a:1".into(), phase: Phase::ReqHeaders });
        assert_eq!(a[0].kv(), ("x-a", "1"));
        assert_eq!(a[1].phase, Phase::RespHeaders);
        assert_eq!(a[1].arg, "request.path");
        assert_eq!(a[2].name, "panic");
        assert_eq!(a[3], Act { name: "resp_body_set".into(), arg: "a=b".into(), phase: Phase::RespBody });
        assert_eq!(parse_one("reply=403:x@y").arg, "403:x@y", "an unknown phase stays in the argument");
    }
}
