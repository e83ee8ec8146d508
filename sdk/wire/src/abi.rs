//! Numbers of the proxy-wasm ABI (0.2.1), as the Rust SDK and Envoy use them.
//! host-sim decodes a plugin's arguments with these; the SDK's host-call
//! layer decodes the host's answers with [`Status::from_raw`].

/// Status codes returned by every host function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

impl Status {
    /// Every status, for lookups by number.
    pub const ALL: &'static [Status] = &[
        Self::Ok,
        Self::NotFound,
        Self::BadArgument,
        Self::SerializationFailure,
        Self::ParseFailure,
        Self::InvalidMemoryAccess,
        Self::Empty,
        Self::CasMismatch,
        Self::InternalFailure,
        Self::Unimplemented,
    ];

    /// The status a host returned, `None` for a number the ABI does not define.
    pub fn from_raw(raw: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| *s as u32 == raw)
    }

    /// The number on the wire.
    pub fn raw(self) -> u32 {
        self as u32
    }
}

/// A decoded argument, or the status a host answers for a bad one.
type HostResult<T> = Result<T, Status>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapType {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
    GrpcReceiveInitialMetadata,
    GrpcReceiveTrailingMetadata,
    HttpCallResponseHeaders,
    HttpCallResponseTrailers,
}

impl MapType {
    /// The number on the wire.
    pub fn raw(self) -> u32 {
        self as u32
    }

    /// The value for a number on the wire; BAD_ARGUMENT for an unknown one.
    pub fn from_i32(v: i32) -> HostResult<Self> {
        Ok(match v {
            0 => Self::RequestHeaders,
            1 => Self::RequestTrailers,
            2 => Self::ResponseHeaders,
            3 => Self::ResponseTrailers,
            4 => Self::GrpcReceiveInitialMetadata,
            5 => Self::GrpcReceiveTrailingMetadata,
            6 => Self::HttpCallResponseHeaders,
            7 => Self::HttpCallResponseTrailers,
            _ => return Err(Status::BadArgument),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferType {
    HttpRequestBody,
    HttpResponseBody,
    DownstreamData,
    UpstreamData,
    HttpCallResponseBody,
    GrpcReceiveBuffer,
    VmConfiguration,
    PluginConfiguration,
    CallData,
}

impl BufferType {
    /// The number on the wire.
    pub fn raw(self) -> u32 {
        self as u32
    }

    /// The value for a number on the wire; BAD_ARGUMENT for an unknown one.
    pub fn from_i32(v: i32) -> HostResult<Self> {
        Ok(match v {
            0 => Self::HttpRequestBody,
            1 => Self::HttpResponseBody,
            2 => Self::DownstreamData,
            3 => Self::UpstreamData,
            4 => Self::HttpCallResponseBody,
            5 => Self::GrpcReceiveBuffer,
            6 => Self::VmConfiguration,
            7 => Self::PluginConfiguration,
            8 => Self::CallData,
            _ => return Err(Status::BadArgument),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamType {
    Request,
    Response,
    Downstream,
    Upstream,
}

impl StreamType {
    /// The number on the wire.
    pub fn raw(self) -> u32 {
        self as u32
    }

    /// The value for a number on the wire; BAD_ARGUMENT for an unknown one.
    pub fn from_i32(v: i32) -> HostResult<Self> {
        Ok(match v {
            0 => Self::Request,
            1 => Self::Response,
            2 => Self::Downstream,
            3 => Self::Upstream,
            _ => return Err(Status::BadArgument),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl LogLevel {
    /// The number on the wire.
    pub fn raw(self) -> u32 {
        self as u32
    }

    /// The value for a number on the wire; BAD_ARGUMENT for an unknown one.
    pub fn from_i32(v: i32) -> HostResult<Self> {
        Ok(match v {
            0 => Self::Trace,
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Warn,
            4 => Self::Error,
            5 => Self::Critical,
            _ => return Err(Status::BadArgument),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

impl MetricType {
    /// The number on the wire.
    pub fn raw(self) -> u32 {
        self as u32
    }

    /// The value for a number on the wire; BAD_ARGUMENT for an unknown one.
    pub fn from_i32(v: i32) -> HostResult<Self> {
        Ok(match v {
            0 => Self::Counter,
            1 => Self::Gauge,
            2 => Self::Histogram,
            _ => return Err(Status::BadArgument),
        })
    }
}

/// What a header/body/data callback returned. The numbers differ per hook
/// family; callers interpret the raw value.
pub const ACTION_CONTINUE: i32 = 0;

/// `FilterHeadersStatus::StopAllIterationAndBuffer` / `...AndWatermark` (3, 4)
/// and `FilterDataStatus::StopIterationNoBuffer` (3) exist in the ABI; the Rust
/// SDK only returns Continue (0) and Pause (1).
pub fn is_continue(action: i32) -> bool {
    action == ACTION_CONTINUE
}

/// The ABI versions host-sim understands, from the module's marker export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum AbiVersion {
    #[serde(rename = "0.1.0")]
    V0_1_0,
    #[serde(rename = "0.2.0")]
    V0_2_0,
    #[serde(rename = "0.2.1")]
    V0_2_1,
}

impl AbiVersion {
    pub fn from_exports<'a>(mut names: impl Iterator<Item = &'a str>) -> Option<Self> {
        names.find_map(|n| match n {
            "proxy_abi_version_0_2_1" => Some(Self::V0_2_1),
            "proxy_abi_version_0_2_0" => Some(Self::V0_2_0),
            "proxy_abi_version_0_1_0" => Some(Self::V0_1_0),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_their_numbers() {
        for s in Status::ALL {
            assert_eq!(Status::from_raw(s.raw()), Some(*s));
        }
        assert_eq!(Status::NotFound.raw(), 1);
        assert_eq!(Status::Unimplemented.raw(), 12);
        assert_eq!(Status::from_raw(5), None, "5 is not an ABI status");
        assert_eq!(MapType::from_i32(8), Err(Status::BadArgument));
        assert_eq!(BufferType::from_i32(8), Ok(BufferType::CallData));
    }
}
