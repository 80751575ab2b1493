//! HTTP(S) and TCP health probes for `failover`, and the scheduler that runs
//! them. Not yet implemented: see the project's issue tracker.
#![forbid(unsafe_code)]
