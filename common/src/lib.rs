//! The StreamGate domain and everything the functions share: ports and their adapters, the runtime that
//! runs one binary on Lambda, on Knative or in the local server, errors, configuration and telemetry.
#![forbid(unsafe_code)]

pub mod access;
pub mod adapters;
pub mod blobs;
pub mod catalog;
pub mod chains;
pub mod config;
pub mod events;
pub mod identity;
pub mod ids;
pub mod ladder;
pub mod media;
pub mod pipeline;
pub mod platform;
pub mod problem;
pub mod queue;
pub mod runtime;
pub mod signing;
pub mod store;
pub mod telemetry;
pub mod uploads;
