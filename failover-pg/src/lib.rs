//! PostgreSQL adapter for `failover`: replication status, fencing, promotion
//! and switchover. Not yet implemented.
#![forbid(unsafe_code)]
