//! The key layout under `<prefix>/<service>/` and the values' encodings.
//! Values are JSON with names, never ids, so operators can read them with
//! `etcdctl get --prefix` and ids may be renumbered by a topology change.

use failover_core::{
    Epoch, FencingToken, Health, Intent, NodeId, RegionId, Topology, VantageId, WeightPlan,
    WriterRecord,
};
use serde::{Deserialize, Serialize};

use crate::EtcdError;

/// The keys of one service.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    /// `<prefix>/<service>/`, with the final slash.
    root: String,
}

/// What a key under the root is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind<'a> {
    Leader,
    Writer,
    Intent,
    Plan,
    Guard(&'a str),
    Verdict(&'a str, &'a str),
}

impl Keys {
    pub(crate) fn new(prefix: &str, service: &str) -> Self {
        Keys {
            root: format!("{prefix}/{service}/"),
        }
    }
    /// The prefix every key of the service starts with.
    pub(crate) fn root(&self) -> &str {
        &self.root
    }
    pub(crate) fn leader(&self) -> String {
        format!("{}leader", self.root)
    }
    pub(crate) fn writer(&self) -> String {
        format!("{}writer", self.root)
    }
    pub(crate) fn intent(&self) -> String {
        format!("{}intent", self.root)
    }
    pub(crate) fn plan(&self) -> String {
        format!("{}plan", self.root)
    }
    pub(crate) fn guard(&self, node: &str) -> String {
        format!("{}guard/{node}", self.root)
    }
    pub(crate) fn verdict(&self, vantage: &str, region: &str) -> String {
        format!("{}verdict/{vantage}/{region}", self.root)
    }
    /// Classifies a full key; `None` for keys outside the layout.
    pub(crate) fn parse<'a>(&self, key: &'a str) -> Option<KeyKind<'a>> {
        let rest = key.strip_prefix(self.root.as_str())?;
        match rest {
            "leader" => Some(KeyKind::Leader),
            "writer" => Some(KeyKind::Writer),
            "intent" => Some(KeyKind::Intent),
            "plan" => Some(KeyKind::Plan),
            _ => {
                if let Some(node) = rest.strip_prefix("guard/") {
                    (!node.is_empty() && !node.contains('/')).then_some(KeyKind::Guard(node))
                } else if let Some(v) = rest.strip_prefix("verdict/") {
                    let (vantage, region) = v.split_once('/')?;
                    (!vantage.is_empty() && !region.is_empty() && !region.contains('/'))
                        .then_some(KeyKind::Verdict(vantage, region))
                } else {
                    None
                }
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriterJson {
    node: String,
    epoch: u64,
    /// The synchronous standbys, by name, in node order; omitted when none,
    /// so a record without any encodes as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sync: Vec<String>,
    /// A switchover drains the writer; omitted when false, so a record
    /// written before the field existed reads as not draining.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    draining: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntentJson {
    drained: Vec<String>,
    paused: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanJson {
    generation: u64,
    ttl_ms: u64,
    token: Option<u64>,
    /// Region name → weight.
    weights: std::collections::BTreeMap<String, u32>,
}

/// The stored plan's value:
/// `{"generation":7,"ttl_ms":30000,"token":41,"weights":{"us-east":0,"us-west":1}}`.
pub(crate) fn encode_plan(topology: &Topology, plan: &WeightPlan) -> Result<String, EtcdError> {
    let mut weights = std::collections::BTreeMap::new();
    for w in &plan.weights {
        weights.insert(region_name(topology, w.region)?.to_owned(), w.weight);
    }
    serde_json::to_string(&PlanJson {
        generation: plan.generation,
        ttl_ms: u64::try_from(plan.ttl.as_millis()).unwrap_or(u64::MAX),
        token: plan.token.map(|t| t.0),
        weights,
    })
    .map_err(|e| EtcdError::Malformed {
        key: "plan".into(),
        reason: e.to_string(),
    })
}

/// Decodes a stored plan; every region of the topology must have a weight
/// (a plan is complete, never a delta).
pub(crate) fn decode_plan(
    topology: &Topology,
    key: &str,
    value: &[u8],
) -> Result<WeightPlan, EtcdError> {
    let json: PlanJson = serde_json::from_slice(value).map_err(|e| malformed(key, e))?;
    for name in json.weights.keys() {
        if topology.region_id(name).is_none() {
            return Err(EtcdError::Malformed {
                key: key.to_owned(),
                reason: format!("region `{name}` is not in the topology"),
            });
        }
    }
    let mut weights = Vec::new();
    for region in topology.region_ids() {
        let name = region_name(topology, region)?;
        let weight = json
            .weights
            .get(name)
            .copied()
            .ok_or_else(|| EtcdError::Malformed {
                key: key.to_owned(),
                reason: format!("region `{name}` has no weight"),
            })?;
        weights.push(weight);
    }
    let mut plan = WeightPlan::in_region_order(
        json.generation,
        std::time::Duration::from_millis(json.ttl_ms),
        weights,
    );
    plan.token = json.token.map(FencingToken);
    Ok(plan)
}

/// The writer record's value: `{"node":"pg-east","epoch":3}`, plus
/// `"sync":["pg-west"]` when the writer requires synchronous standbys and
/// `"draining":true` while a switchover drains it. The
/// encoding is deterministic, so a compare on the value is a compare on the
/// record.
pub(crate) fn encode_writer(
    topology: &Topology,
    record: WriterRecord,
) -> Result<String, EtcdError> {
    let node = node_name(topology, record.node)?;
    let mut sync = Vec::with_capacity(record.sync.len() as usize);
    for standby in record.sync.iter() {
        sync.push(node_name(topology, standby)?.to_owned());
    }
    serde_json::to_string(&WriterJson {
        node: node.to_owned(),
        epoch: record.epoch.0,
        sync,
        draining: record.draining,
    })
    .map_err(|e| EtcdError::Malformed {
        key: "writer".into(),
        reason: e.to_string(),
    })
}

pub(crate) fn decode_writer(
    topology: &Topology,
    key: &str,
    value: &[u8],
) -> Result<WriterRecord, EtcdError> {
    let json: WriterJson = serde_json::from_slice(value).map_err(|e| malformed(key, e))?;
    let node = topology
        .node_id(&json.node)
        .ok_or_else(|| EtcdError::Malformed {
            key: key.to_owned(),
            reason: format!("node `{}` is not in the topology", json.node),
        })?;
    let mut sync = failover_core::SyncSet::EMPTY;
    for name in &json.sync {
        let standby = topology.node_id(name).ok_or_else(|| EtcdError::Malformed {
            key: key.to_owned(),
            reason: format!("synchronous standby `{name}` is not in the topology"),
        })?;
        sync = sync.with(standby);
    }
    Ok(WriterRecord {
        node,
        epoch: Epoch(json.epoch),
        sync,
        draining: json.draining,
    })
}

/// The leader key's value without an advertised admin API: the controller's
/// id, as before; with one: `{"controller":"ctl-a","admin":"https://..."}`.
pub(crate) fn encode_leader(controller: &str, admin: Option<&str>) -> String {
    match admin {
        None => controller.to_owned(),
        Some(admin) => serde_json::json!({ "controller": controller, "admin": admin }).to_string(),
    }
}

/// Reads a leader key's value written by [`encode_leader`] (or by a
/// controller from before admin URLs: the bare id).
pub(crate) fn decode_leader(value: &[u8]) -> failover_core::LeaderInfo {
    #[derive(serde::Deserialize)]
    struct LeaderJson {
        controller: String,
        admin: Option<String>,
    }
    match serde_json::from_slice::<LeaderJson>(value) {
        Ok(json) => failover_core::LeaderInfo {
            controller: json.controller,
            admin: json.admin,
        },
        Err(_) => failover_core::LeaderInfo {
            controller: String::from_utf8_lossy(value).into_owned(),
            admin: None,
        },
    }
}

/// Operator intent: `{"drained":["us-east"],"paused":false}`.
pub(crate) fn encode_intent(topology: &Topology, intent: &Intent) -> Result<String, EtcdError> {
    let mut drained = Vec::with_capacity(intent.drained.len());
    for &region in &intent.drained {
        drained.push(region_name(topology, region)?.to_owned());
    }
    serde_json::to_string(&IntentJson {
        drained,
        paused: intent.paused,
    })
    .map_err(|e| EtcdError::Malformed {
        key: "intent".into(),
        reason: e.to_string(),
    })
}

/// Decodes intent; a drained region the topology does not know is dropped
/// with a warning (an operator's old drain must not stop the controller).
pub(crate) fn decode_intent(
    topology: &Topology,
    key: &str,
    value: &[u8],
) -> Result<Intent, EtcdError> {
    let json: IntentJson = serde_json::from_slice(value).map_err(|e| malformed(key, e))?;
    let mut drained = Vec::with_capacity(json.drained.len());
    for name in json.drained {
        match topology.region_id(&name) {
            Some(id) => drained.push(id),
            None => tracing::warn!(
                key,
                region = %name,
                "intent drains region {name}, which is not in the topology; ignoring that drain"
            ),
        }
    }
    Ok(Intent {
        drained,
        paused: json.paused,
    })
}

/// A verdict's value: `"up"`, `"down"` or `"unknown"` (a JSON string).
pub(crate) fn encode_health(health: Health) -> &'static str {
    match health {
        Health::Up => "\"up\"",
        Health::Down => "\"down\"",
        Health::Unknown => "\"unknown\"",
    }
}

pub(crate) fn decode_health(key: &str, value: &[u8]) -> Result<Health, EtcdError> {
    let text: String = serde_json::from_slice(value).map_err(|e| malformed(key, e))?;
    match text.as_str() {
        "up" => Ok(Health::Up),
        "down" => Ok(Health::Down),
        "unknown" => Ok(Health::Unknown),
        other => Err(EtcdError::Malformed {
            key: key.to_owned(),
            reason: format!("verdict `{other}` is none of up, down, unknown"),
        }),
    }
}

pub(crate) fn node_name(topology: &Topology, node: NodeId) -> Result<&str, EtcdError> {
    topology
        .nodes()
        .get(node.index())
        .map(|n| n.name.as_str())
        .ok_or_else(|| EtcdError::UnknownName {
            what: "node",
            name: node.to_string(),
            hint: "use a node id from this coordinator's topology",
        })
}

pub(crate) fn region_name(topology: &Topology, region: RegionId) -> Result<&str, EtcdError> {
    topology
        .regions()
        .get(region.index())
        .map(|r| r.name.as_str())
        .ok_or_else(|| EtcdError::UnknownName {
            what: "region",
            name: region.to_string(),
            hint: "use a region id from this coordinator's topology",
        })
}

pub(crate) fn vantage_name(topology: &Topology, vantage: VantageId) -> Result<&str, EtcdError> {
    topology
        .vantages()
        .get(vantage.index())
        .map(String::as_str)
        .ok_or_else(|| EtcdError::UnknownName {
            what: "vantage",
            name: vantage.to_string(),
            hint: "use a vantage id from this coordinator's topology",
        })
}

fn malformed(key: &str, e: serde_json::Error) -> EtcdError {
    EtcdError::Malformed {
        key: key.to_owned(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use failover_core::{Node, Region, RegionRole};

    fn topology() -> Topology {
        Topology::builder("api.example.com.")
            .region(Region::new("us-east", RegionRole::Active))
            .region(Region::new("us-west", RegionRole::Standby))
            .vantage("east")
            .node(Node {
                name: "pg-east".into(),
                region: "us-east".into(),
                priority: 0,
                primary: true,
            })
            .build()
            .unwrap()
    }

    #[test]
    fn keys_round_trip() {
        let k = Keys::new("/failover", "api");
        assert_eq!(k.parse(&k.leader()), Some(KeyKind::Leader));
        assert_eq!(
            k.parse(&k.guard("pg-east")),
            Some(KeyKind::Guard("pg-east"))
        );
        assert_eq!(
            k.parse(&k.verdict("east", "us-west")),
            Some(KeyKind::Verdict("east", "us-west"))
        );
        assert_eq!(k.parse("/failover/api/guard/"), None);
        assert_eq!(k.parse("/failover/api/verdict/east"), None);
        assert_eq!(k.parse("/failover/other/leader"), None);
    }

    #[test]
    fn the_leader_value_names_the_controller_and_its_admin_api_and_reads_old_values() {
        let plain = encode_leader("ctl-a", None);
        assert_eq!(plain, "ctl-a");
        assert_eq!(decode_leader(plain.as_bytes()).controller, "ctl-a");
        assert_eq!(decode_leader(plain.as_bytes()).admin, None);
        let with = encode_leader("ctl-b", Some("https://10.0.0.2:9850"));
        let info = decode_leader(with.as_bytes());
        assert_eq!(info.controller, "ctl-b");
        assert_eq!(info.admin.as_deref(), Some("https://10.0.0.2:9850"));
    }

    #[test]
    fn bad_values_are_errors_not_panics() {
        let t = topology();
        for bad in [
            &b"{"[..],
            b"{\"node\":\"pg-x\",\"epoch\":1}",
            b"\xff\xfe",
            b"[]",
        ] {
            let e = decode_writer(&t, "/k/writer", bad).unwrap_err();
            assert_eq!(e.kind(), failover_core::PortErrorKind::Malformed, "{e}");
        }
        assert!(decode_health("/k/v", b"\"sideways\"").is_err());
        let rec = WriterRecord::new(NodeId(0), Epoch(3));
        let text = encode_writer(&t, rec).unwrap();
        assert_eq!(text, r#"{"node":"pg-east","epoch":3}"#);
        assert_eq!(decode_writer(&t, "k", text.as_bytes()).unwrap(), rec);
        let intent =
            decode_intent(&t, "k", br#"{"drained":["us-west","gone"],"paused":true}"#).unwrap();
        assert_eq!(intent.drained, vec![RegionId(1)]);
        assert!(intent.paused);
    }
}
