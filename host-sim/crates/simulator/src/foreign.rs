//! Envoy's foreign functions (`proxy_call_foreign_function`): the ones
//! plugins use to reach the proxy beyond the ABI. Arguments are protobuf
//! messages as in Envoy's `source/extensions/common/wasm/ext/*.proto`.

use super::host::{check, read_bytes, read_string, return_bytes, Ret, VmHost};
use crate::abi::Status;
use prost::Message;
use wasmtime::{Caller, Linker};

#[derive(Clone, PartialEq, Message)]
pub struct DeclarePropertyArguments {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(bool, tag = "2")]
    pub readonly: bool,
    #[prost(int32, tag = "3")]
    pub r#type: i32,
    #[prost(bytes, tag = "4")]
    pub schema: Vec<u8>,
    #[prost(int32, tag = "5")]
    pub span: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct SetEnvoyFilterStateArguments {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(string, tag = "2")]
    pub value: String,
    #[prost(int32, tag = "3")]
    pub span: i32,
}

/// Filter-state keys with an object factory in Envoy that a plugin may set
/// with `set_envoy_filter_state` (the ones Istio's plugins use).
pub const KNOWN_FILTER_STATE_FACTORIES: &[&str] = &[
    "envoy.tcp_proxy.cluster",
    "envoy.network.upstream_server_name",
    "envoy.network.application_protocols",
    "envoy.string",
    "io.istio.peer_principal",
    "io.istio.local_principal",
];

pub fn add_to_linker(linker: &mut Linker<VmHost>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: Caller<'_, VmHost>, nptr: i32, nlen: i32, aptr: i32, alen: i32, ptr_ptr: i32, size_ptr: i32| -> Ret {
            let name = check!(read_string(&c, nptr, nlen));
            let args = check!(read_bytes(&c, aptr, alen));
            let result = check!(call(c.data_mut(), &name, &args));
            check!(return_bytes(&mut c, &result, ptr_ptr, size_ptr)?);
            Ok(0)
        },
    )?;
    Ok(())
}

fn call(h: &mut VmHost, name: &str, args: &[u8]) -> Result<Vec<u8>, Status> {
    // Envoy runs foreign functions on the context it called into, not the
    // effective one.
    let stream = h.contexts.get(&h.current).and_then(|c| c.stream.clone());
    match name {
        "declare_property" => {
            let a = DeclarePropertyArguments::decode(args).map_err(|_| Status::BadArgument)?;
            if a.name.is_empty() || h.declared_properties.contains_key(&a.name) {
                return Err(Status::BadArgument);
            }
            h.declared_properties.insert(a.name, a.readonly);
            Ok(Vec::new())
        }
        "set_envoy_filter_state" => {
            let a = SetEnvoyFilterStateArguments::decode(args).map_err(|_| Status::BadArgument)?;
            let (stream, _) = stream.ok_or(Status::NotFound)?;
            if !KNOWN_FILTER_STATE_FACTORIES.contains(&a.path.as_str()) {
                return Err(Status::NotFound);
            }
            stream.borrow_mut().set_filter_state(a.path, a.value.into_bytes())?;
            Ok(Vec::new())
        }
        "clear_route_cache" => {
            if let Some((stream, _)) = stream {
                stream.borrow_mut().route_cache_cleared += 1;
            }
            Ok(Vec::new())
        }
        _ => Err(Status::NotFound),
    }
}
