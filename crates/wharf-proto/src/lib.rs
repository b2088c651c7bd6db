//! Wharf's protobuf API, its generated gRPC code, and the one mapping
//! between the wire and the domain types.
//!
//! The `.proto` files under `proto/` are the wire contract; they are compiled
//! with protox, so no `protoc` install is needed. Server and client both
//! convert through [`convert`] and map errors through [`status`], so the two
//! ends cannot disagree.
#![warn(missing_docs)]

pub mod convert;
pub mod status;

/// Version 1 of the API (generated).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("wharf.v1");
}
