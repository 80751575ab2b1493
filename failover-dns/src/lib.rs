//! DNS adapters for `failover`: an embedded authoritative server and RFC 2136
//! dynamic updates signed with TSIG. Not yet implemented.
#![forbid(unsafe_code)]
