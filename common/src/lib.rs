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
pub mod limits;
pub mod links;
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

/// Every StreamGate binary allocates with mimalloc rather than the system allocator: request handling
/// allocates and frees many small values, and an upload many large buffers, which glibc's allocator
/// hands back to the kernel and faults in again. `tests/bench/playback_auth.py` and
/// `tests/bench/tus_upload.py` measure the difference.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
