//! [`EtcdGuardLease`]: a node guard's lease at etcd.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::PutOptions;
use failover_core::ports::GuardLease;
use failover_core::{NodeId, PortError, Topology, WriterRecord};

use crate::config::{check_lease_ttl, check_topology_names};
use crate::keys::{self, Keys};
use crate::store::{KeepAlive, Store};
use crate::{EtcdConfig, EtcdError};

/// Holds node guards' leases at etcd (the key `guard/<node>` under each
/// node's own lease) and reads the writer record for them; implements
/// [`GuardLease`]. One value may serve several nodes.
pub struct EtcdGuardLease {
    store: Store,
    keys: Keys,
    topology: Topology,
    held: tokio::sync::Mutex<HashMap<NodeId, Held>>,
}

struct Held {
    lease: i64,
    ttl: Duration,
    stream: KeepAlive,
}

impl EtcdGuardLease {
    /// Validates the connection settings of `config` (a guard ignores
    /// `controller`, `vantage`, `lease_ttl` and `lease_margin`) and builds
    /// the client. Makes no request.
    pub async fn connect(config: &EtcdConfig, topology: Topology) -> Result<Self, EtcdError> {
        config.validate_connection()?;
        check_topology_names(&topology)?;
        Ok(EtcdGuardLease {
            store: Store::connect(config).await?,
            keys: Keys::new(&config.prefix, &config.service),
            topology,
            held: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    async fn read_writer(&self) -> Result<Option<WriterRecord>, EtcdError> {
        let key = self.keys.writer();
        match self.store.get("read the writer record", &key).await? {
            Some(kv) => keys::decode_writer(&self.topology, &key, kv.value()).map(Some),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl GuardLease for EtcdGuardLease {
    async fn renew(&self, node: NodeId, ttl: Duration) -> Result<Option<WriterRecord>, PortError> {
        let name = keys::node_name(&self.topology, node)?.to_owned();
        check_lease_ttl("guard_ttl", ttl)?;
        let mut held = self.held.lock().await;
        let renewed = match held.get_mut(&node) {
            Some(h) if h.ttl == ttl => {
                let left = self
                    .store
                    .keep_alive_once(&mut h.stream, h.lease, ttl)
                    .await?;
                if left <= 0 {
                    tracing::warn!(node = %name, "guard lease of {name} had expired at etcd; granting a new one");
                }
                left > 0
            }
            _ => false,
        };
        if !renewed {
            if let Some(old) = held.remove(&node) {
                let _ = self.store.revoke(old.lease).await;
            }
            let lease = self.store.grant("grant a guard lease", ttl).await?;
            let key = self.keys.guard(&name);
            let put = self
                .store
                .call("put the guard key", || {
                    let mut client = self.store.client();
                    let (key, name) = (key.clone(), name.clone());
                    async move {
                        client
                            .put(key, name, Some(PutOptions::new().with_lease(lease)))
                            .await
                    }
                })
                .await;
            if let Err(e) = put {
                let _ = self.store.revoke(lease).await;
                return Err(e.into());
            }
            held.insert(
                node,
                Held {
                    lease,
                    ttl,
                    stream: None,
                },
            );
        }
        drop(held);
        let started = Instant::now();
        let writer = self.read_writer().await?;
        tracing::trace!(%node, elapsed = ?started.elapsed(), "guard lease renewed");
        Ok(writer)
    }

    async fn release(&self, node: NodeId) -> Result<(), PortError> {
        let removed = self.held.lock().await.remove(&node);
        if let Some(h) = removed {
            tracing::info!(%node, "guard lease released");
            self.store.revoke(h.lease).await?;
        }
        Ok(())
    }
}
