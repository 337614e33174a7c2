//! eddy's gRPC control plane, `eddy.v1`: module upload and pipeline operations.
//!
//! The messages and services are generated from `proto/eddy/v1/eddy.proto`;
//! see that file for what each field means.

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Generated types and service stubs for `eddy.v1`.
pub mod v1 {
    tonic::include_proto!("eddy.v1");

    /// The encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/eddy_descriptor.bin"));
}
