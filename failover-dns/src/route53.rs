//! The Route 53 router (feature `route53`): each region is one weighted
//! record set at the service name (`SetIdentifier` = the region's name unless
//! configured), written through the official AWS SDK.
//!
//! # Applying a plan
//!
//! 1. The router reads the name's weighted sets (`ListResourceRecordSets`)
//!    and, under a fencing token, the token's TXT record.
//! 2. It sends **one** `ChangeResourceRecordSets` batch: an UPSERT of every
//!    region's set with its weight and the plan's TTL (plus the token
//!    changes below). Route 53 applies a batch entirely or not at all. A plan
//!    already live sends nothing.
//! 3. It polls `GetChange` (200 ms, doubling to 5 s) until the change is
//!    `INSYNC`, or [`Route53Config::insync_timeout`] passes
//!    ([`DnsError::Route53NotInSync`], kind `Timeout`).
//! 4. It reads the sets back and compares them with what it wrote
//!    ([`DnsError::Route53Mismatch`], kind `Conflict`).
//!
//! **Weights.** Route 53 weights are 0–255. When the plan's largest weight
//! is at most 255 the weights are written unchanged (base weights like 100
//! read back as 100); above that each is scaled by `255 / max`, rounded, and
//! a weight above 0 never becomes 0.
//!
//! **All regions drained.** Route 53 answers with *every* record of a
//! weighted name when all weights are 0. So:
//! - `AllDownPolicy::FailClosed` never writes an all-zero plan: the batch
//!   DELETEs every region's set (with its exact values as read), the name
//!   then has no address at all, and [`read_back`](TrafficRouter::read_back)
//!   reports every region at 0. The next plan that serves a region creates
//!   the sets again.
//! - `AllDownPolicy::FailOpen` writes every set at weight 0, which Route 53
//!   serves as "every region, equally": that is what fail-open means.
//! - A region without records of the configured type has no set and counts
//!   as drained.
//!
//! **Errors.** `Throttling` and `PriorRequestNotComplete` (Route 53 allows
//! five requests a second per account and one change at a time per zone)
//! are retried with exponential backoff and jitter, at most
//! [`Route53Config::throttle_attempts`] calls, then `Unavailable`.
//! `InvalidChangeBatch`/`InvalidInput` are `Malformed` with Route 53's
//! message; rejected or missing credentials are `Auth`; an endpoint that
//! cannot be reached is `Unavailable`; a hosted zone id that is malformed or
//! that Route 53 does not have is `Config` naming `route53.hosted_zone_id`.
//!
//! # The leader's fencing token
//!
//! A plan under a [`FencingToken`] also writes one TXT record at
//! `_failover.<record name>` ([`Route53Config::token_name`]) holding
//! `"token=N write=X"`, where `X` is fresh for every batch. The batch that
//! carries the weights also DELETEs the exact TXT value read in step 1 and
//! CREATEs the new one (or only CREATEs it when there was none). Route 53
//! refuses a DELETE whose values do not match the record and a CREATE of a
//! record that exists, so if any other writer changed the token record
//! between our read and our batch, the whole batch, weights included, fails
//! atomically. The router then reads the record again: a newer token is a
//! [`DnsError::StaleToken`] (kind `Refused`) carrying Route 53's message;
//! anything else is a retryable `Conflict`. A newer token already there at
//! step 1 refuses the plan before anything is sent. Plans without a token
//! (a single controller) never touch the record.

mod plan;
mod sdk;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_route53::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use failover_core::ports::TrafficRouter;
use failover_core::{
    AllDownPolicy, FencingToken, Policy, PortError, RegionId, RegionWeight, Topology, WeightPlan,
};

use crate::answer::QueryRng;
use crate::name::parse_fqdn;
use crate::DnsError;
pub use plan::WeightedSet;
use plan::{parse_token, token_value, Desired, RegionSet};
use sdk::{classify, is_retry_code, throttle_backoff, Failure, DEFAULT_ENDPOINT};

/// TTL of the token TXT record, seconds.
const TOKEN_TTL: i64 = 60;

/// Which address records the router writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Route53RecordType {
    /// IPv4 addresses (the default).
    #[default]
    A,
    /// IPv6 addresses.
    Aaaa,
}

impl Route53RecordType {
    fn rr_type(self) -> RrType {
        match self {
            Route53RecordType::A => RrType::A,
            Route53RecordType::Aaaa => RrType::Aaaa,
        }
    }
    fn matches(self, addr: &IpAddr) -> bool {
        match self {
            Route53RecordType::A => addr.is_ipv4(),
            Route53RecordType::Aaaa => addr.is_ipv6(),
        }
    }
}

/// An access key given in the configuration instead of the standard AWS
/// credentials chain (for tests, and for endpoints like moto).
#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for StaticCredentials {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// Where and how to write the weighted records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route53Config {
    /// The hosted zone id, like `Z0123456789ABCDEFGHIJ` (a leading
    /// `/hostedzone/` is accepted).
    pub hosted_zone_id: String,
    /// The record name; `None` (the default): the topology's service name.
    pub record_name: Option<String>,
    /// A or AAAA (default A): each region's addresses of that family.
    pub record_type: Route53RecordType,
    /// `SetIdentifier` per region name; a region not listed uses its name.
    pub set_identifiers: BTreeMap<String, String>,
    /// The API endpoint, like `http://127.0.0.1:5000` for moto or an AWS
    /// partition's endpoint; `None`: the SDK's default for Route 53.
    pub endpoint: Option<String>,
    /// The region requests are signed for. Route 53 is global and signs
    /// with `us-east-1` (the default); other partitions have their own.
    pub signing_region: String,
    /// An access key to use; `None` (the default): the standard AWS chain
    /// (environment, profile, web identity, container, instance metadata).
    pub static_credentials: Option<StaticCredentials>,
    /// Longest wait for connecting and for one API call. Default 5 s.
    pub timeout: Duration,
    /// Longest wait for a change to become `INSYNC`. Default 120 s.
    pub insync_timeout: Duration,
    /// Calls made at most when Route 53 throttles (`Throttling`,
    /// `PriorRequestNotComplete`). Default 5.
    pub throttle_attempts: u32,
    /// Owner name of the token TXT record; `None` (the default):
    /// `_failover.<record name>`.
    pub token_name: Option<String>,
}

impl Route53Config {
    /// A configuration for `hosted_zone_id` with every default.
    pub fn new(hosted_zone_id: impl Into<String>) -> Self {
        Route53Config {
            hosted_zone_id: hosted_zone_id.into(),
            record_name: None,
            record_type: Route53RecordType::A,
            set_identifiers: BTreeMap::new(),
            endpoint: None,
            signing_region: "us-east-1".to_owned(),
            static_credentials: None,
            timeout: Duration::from_secs(5),
            insync_timeout: Duration::from_secs(120),
            throttle_attempts: 5,
            token_name: None,
        }
    }
}

/// Applies weight plans as Route 53 weighted records; implements
/// [`TrafficRouter`]. The module docs describe the batch, the weight
/// scaling, the all-down mapping and the fencing token.
pub struct Route53Router {
    client: aws_sdk_route53::Client,
    zone: String,
    endpoint: String,
    name: String,
    record_type: Route53RecordType,
    regions: Vec<RegionSet>,
    all_down: AllDownPolicy,
    insync_timeout: Duration,
    throttle_attempts: u32,
    token_name: String,
    rng: QueryRng,
    changes: AtomicU64,
}

impl std::fmt::Debug for Route53Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route53Router")
            .field("zone", &self.zone)
            .field("endpoint", &self.endpoint)
            .field("name", &self.name)
            .field("record_type", &self.record_type)
            .field("token_name", &self.token_name)
            .finish_non_exhaustive()
    }
}

/// A hosted zone id as Route 53 writes them: letters and digits.
fn parse_zone_id(raw: &str) -> Result<String, DnsError> {
    let id = raw.trim();
    let id = id.strip_prefix("/hostedzone/").unwrap_or(id);
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(DnsError::config(
            "route53.hosted_zone_id",
            format!("{raw:?} is not a hosted zone id (1 to 32 letters and digits, like Z0123456789ABCDEFGHIJ)"),
        ));
    }
    Ok(id.to_ascii_uppercase())
}

impl Route53Router {
    /// Checks the configuration (errors name the field), builds the SDK
    /// client and resolves nothing remote yet: credentials and the zone are
    /// checked by the first call.
    pub async fn connect(
        config: Route53Config,
        topology: &Topology,
        policy: &Policy,
    ) -> Result<Self, DnsError> {
        let zone = parse_zone_id(&config.hosted_zone_id)?;
        let name = match &config.record_name {
            Some(name) => parse_fqdn("route53.record_name", name)?,
            None => parse_fqdn("topology.service", topology.service())?,
        };
        let token_name = match &config.token_name {
            Some(t) => parse_fqdn("route53.token_name", t)?.to_ascii(),
            None => format!("_failover.{}", name.to_ascii()),
        };
        let name = name.to_ascii().to_ascii_lowercase();
        let token_name = token_name.to_ascii_lowercase();
        if token_name == name {
            return Err(DnsError::config(
                "route53.token_name",
                format!("must differ from the record name {name}"),
            ));
        }
        for region in config.set_identifiers.keys() {
            if !topology.regions().iter().any(|r| &r.name == region) {
                return Err(DnsError::config(
                    "route53.set_identifiers",
                    format!("names region {region:?}, which is not in the topology"),
                ));
            }
        }
        let mut regions = Vec::with_capacity(topology.regions().len());
        for region in topology.regions() {
            let set_id = config
                .set_identifiers
                .get(&region.name)
                .cloned()
                .unwrap_or_else(|| region.name.clone());
            if set_id.is_empty() || set_id.len() > 128 {
                return Err(DnsError::config(
                    "route53.set_identifiers",
                    format!(
                        "region {:?}: a SetIdentifier has 1 to 128 characters, got {set_id:?}",
                        region.name
                    ),
                ));
            }
            let mut values: Vec<String> = region
                .records
                .iter()
                .filter(|a| config.record_type.matches(a))
                .map(|a| a.to_string())
                .collect();
            values.sort();
            regions.push(RegionSet { set_id, values });
        }
        if config.timeout.is_zero() || config.insync_timeout.is_zero() {
            return Err(DnsError::config(
                "route53.timeout",
                "timeout and insync_timeout must be greater than 0",
            ));
        }
        if config.throttle_attempts == 0 {
            return Err(DnsError::config(
                "route53.throttle_attempts",
                "must be at least 1",
            ));
        }
        if let Some(endpoint) = &config.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(DnsError::config(
                    "route53.endpoint",
                    format!("{endpoint:?} is not an http:// or https:// URL"),
                ));
            }
        }
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Ok(Route53Router {
            client: sdk::client(&config).await,
            zone,
            endpoint: config
                .endpoint
                .clone()
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()),
            name,
            record_type: config.record_type,
            regions,
            all_down: policy.all_down,
            insync_timeout: config.insync_timeout,
            throttle_attempts: config.throttle_attempts,
            token_name,
            rng: QueryRng::new(seed),
            changes: AtomicU64::new(0),
        })
    }

    /// Creates a public hosted zone for `zone_name` (like `example.test.`)
    /// with `config`'s endpoint and credentials and returns its id; for
    /// demos and tests against moto or a sandbox account (production zones
    /// are created by whoever owns the domain).
    pub async fn create_hosted_zone(
        config: &Route53Config,
        zone_name: &str,
    ) -> Result<String, DnsError> {
        let zone_name = parse_fqdn("route53.zone_name", zone_name)?.to_ascii();
        let client = sdk::client(config).await;
        let reference = format!(
            "failover-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let endpoint = config.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT);
        let out = client
            .create_hosted_zone()
            .name(&zone_name)
            .caller_reference(reference)
            .send()
            .await
            .map_err(|e| classify(e).into_error("CreateHostedZone", &zone_name, endpoint))?;
        let id = out.hosted_zone().map(|z| z.id()).unwrap_or_default();
        Ok(id.trim_start_matches("/hostedzone/").to_owned())
    }

    /// The record name the weighted sets live at, like `api.example.com.`.
    pub fn record_name(&self) -> &str {
        &self.name
    }

    /// Owner name of the token TXT record, like `_failover.api.example.com.`.
    pub fn token_name(&self) -> &str {
        &self.token_name
    }

    /// Change batches Route 53 accepted since start.
    pub fn changes_sent(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// The weighted sets at the record name now (of every `SetIdentifier`,
    /// not only ours), sorted.
    pub async fn live_sets(&self) -> Result<Vec<WeightedSet>, DnsError> {
        let sets = self
            .list(&self.name, self.record_type.rr_type())
            .await?
            .iter()
            .map(|s| {
                let mut values: Vec<String> = s
                    .resource_records()
                    .iter()
                    .map(|r| r.value().to_owned())
                    .collect();
                values.sort();
                WeightedSet {
                    set_id: s.set_identifier().unwrap_or_default().to_owned(),
                    weight: s.weight().and_then(|w| u32::try_from(w).ok()).unwrap_or(0),
                    ttl: s.ttl().and_then(|t| u32::try_from(t).ok()).unwrap_or(0),
                    values,
                }
            })
            .collect::<Vec<_>>();
        let mut sets = sets;
        sets.sort();
        Ok(sets)
    }

    /// The fencing token in place: the highest `token=N` in the TXT record
    /// at [`token_name`](Self::token_name), `None` when there is none.
    pub async fn live_token(&self) -> Result<Option<FencingToken>, DnsError> {
        Ok(self.read_token().await?.token)
    }

    /// Every record set at `name` of type `rtype`, across pages.
    async fn list(&self, name: &str, rtype: RrType) -> Result<Vec<ResourceRecordSet>, DnsError> {
        let mut out = Vec::new();
        let mut start_id: Option<String> = None;
        loop {
            let page = self
                .call("ListResourceRecordSets", || {
                    self.client
                        .list_resource_record_sets()
                        .hosted_zone_id(&self.zone)
                        .start_record_name(name)
                        .start_record_type(rtype.clone())
                        .set_start_record_identifier(start_id.clone())
                        .max_items(100)
                        .send()
                })
                .await?;
            let mut past = false;
            for set in page.resource_record_sets() {
                if same_name(set.name(), name) && *set.r#type() == rtype {
                    out.push(set.clone());
                } else {
                    past = true;
                }
            }
            let next_is_ours = page.next_record_name().is_some_and(|n| same_name(n, name))
                && page.next_record_type() == Some(&rtype);
            if past || !page.is_truncated() || !next_is_ours {
                return Ok(out);
            }
            start_id = page.next_record_identifier().map(str::to_owned);
            if start_id.is_none() {
                return Ok(out);
            }
        }
    }

    /// The token TXT record as Route 53 has it.
    async fn read_token(&self) -> Result<HeldToken, DnsError> {
        let sets = self.list(&self.token_name, RrType::Txt).await?;
        let Some(set) = sets.first() else {
            return Ok(HeldToken::default());
        };
        let values: Vec<String> = set
            .resource_records()
            .iter()
            .map(|r| r.value().to_owned())
            .collect();
        let mut token = None;
        for v in &values {
            let Some(t) = parse_token(v) else {
                return Err(DnsError::Route53TokenRecord {
                    zone: self.zone.clone(),
                    name: self.token_name.clone(),
                    found: values,
                });
            };
            token = token.max(Some(t));
        }
        Ok(HeldToken {
            token,
            ttl: set.ttl().unwrap_or(TOKEN_TTL),
            values,
        })
    }

    /// One API call, retried with backoff and jitter while Route 53
    /// throttles, at most `throttle_attempts` times.
    async fn call<T, E, F, Fut>(&self, operation: &'static str, mut f: F) -> Result<T, DnsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.call_raw(operation, &mut f)
            .await
            .map_err(|failure| failure.into_error(operation, &self.zone, &self.endpoint))
    }

    async fn call_raw<T, E, F, Fut>(&self, operation: &'static str, f: &mut F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut attempt = 1;
        loop {
            let failure = match f().await {
                Ok(out) => return Ok(out),
                Err(e) => classify(e),
            };
            let throttled = failure.code().is_some_and(is_retry_code);
            if !throttled || attempt >= self.throttle_attempts {
                return Err(failure);
            }
            let wait = throttle_backoff(attempt, self.rng.next());
            metrics::counter!("failover_dns_route53_throttled_total", "operation" => operation)
                .increment(1);
            tracing::warn!(operation, attempt, ?wait, code = ?failure.code(), "Route 53 {operation} was throttled (attempt {attempt} of {}); retrying after {wait:?}", self.throttle_attempts);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Makes `plan` live; see the module docs for the steps.
    async fn apply_plan(&self, plan: &WeightPlan) -> Result<(), DnsError> {
        if let Some(w) = plan
            .weights
            .iter()
            .find(|w| w.region.index() >= self.regions.len())
        {
            return Err(DnsError::UnknownRegion {
                region: w.region,
                regions: self.regions.len(),
            });
        }
        let ttl = u32::try_from(plan.ttl.as_secs())
            .ok()
            .filter(|t| *t <= 2_147_483_647)
            .ok_or_else(|| {
                DnsError::config("policy.ttl", "must fit a DNS TTL (2^31 - 1 seconds)")
            })?;
        let desired = plan::desired(plan, &self.regions, ttl, self.all_down);
        let live = self.live_sets().await?;
        let held = match plan.token {
            Some(ours) => {
                let held = self.read_token().await?;
                if let Some(newer) = held.token.filter(|t| *t > ours) {
                    return Err(self.stale(ours, newer, None));
                }
                Some((ours, held))
            }
            None => None,
        };
        let token_in_place = held
            .as_ref()
            .is_none_or(|(ours, h)| h.token == Some(*ours) && h.values.len() == 1);
        if self.is_live(&desired, &live) && token_in_place {
            tracing::debug!(generation = plan.generation, "Route 53: plan already live");
            return Ok(());
        }

        let mut changes = Vec::new();
        match &desired {
            Desired::Sets(sets) => {
                for set in sets {
                    changes.push(self.weighted_change(ChangeAction::Upsert, set)?);
                }
            }
            Desired::Nothing => {
                tracing::warn!(generation = plan.generation, name = %self.name, "Route 53: plan drains every region; fail-closed deletes the weighted records (Route 53 would serve all of them at weight 0)");
                for set in live.iter().filter(|s| self.is_ours(&s.set_id)) {
                    changes.push(self.weighted_change(ChangeAction::Delete, set)?);
                }
            }
        }
        let mut written_token = None;
        if let Some((ours, held)) = &held {
            if !held.values.is_empty() {
                changes.push(self.txt_change(ChangeAction::Delete, held.ttl, &held.values)?);
            }
            let value = token_value(*ours, self.rng.next());
            changes.push(self.txt_change(
                ChangeAction::Create,
                TOKEN_TTL,
                std::slice::from_ref(&value),
            )?);
            written_token = Some(value);
        }
        if changes.is_empty() {
            return Ok(());
        }
        let batch = ChangeBatch::builder()
            .comment(format!("failover plan generation {}", plan.generation))
            .set_changes(Some(changes))
            .build()
            .map_err(|e| self.encode(e))?;
        let sent = self
            .call_raw("ChangeResourceRecordSets", &mut || {
                self.client
                    .change_resource_record_sets()
                    .hosted_zone_id(&self.zone)
                    .change_batch(batch.clone())
                    .send()
            })
            .await;
        let output = match sent {
            Ok(output) => output,
            Err(failure) => return Err(self.refused(failure, held.as_ref()).await),
        };
        let change_id = output
            .change_info()
            .map(|c| c.id().to_owned())
            .unwrap_or_default();
        self.changes.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("failover_dns_plans_applied_total", "adapter" => "route53").increment(1);
        tracing::info!(generation = plan.generation, zone = %self.zone, name = %self.name, change = %change_id, token = ?plan.token.map(|t| t.0), "Route 53: change batch accepted");
        self.wait_insync(&change_id).await?;

        let verified = self.verify(&desired, written_token.as_deref()).await;
        if let (Err(DnsError::Route53Mismatch { .. }), Some((ours, _))) = (&verified, &held) {
            // A newer leader may have replaced our batch right after it
            // was accepted: then ours does not stand.
            if let Some(newer) = self.read_token().await?.token.filter(|t| t > ours) {
                return Err(self.stale(*ours, newer, None));
            }
        }
        verified
    }

    /// What a refused batch means: under a token, a changed token record
    /// (newer: stale leader; otherwise a concurrent change), else Route 53's
    /// own error.
    async fn refused(
        &self,
        failure: Failure,
        held: Option<&(FencingToken, HeldToken)>,
    ) -> DnsError {
        let refused_batch = matches!(failure.code(), Some("InvalidChangeBatch" | "InvalidInput"));
        let error = failure.into_error("ChangeResourceRecordSets", &self.zone, &self.endpoint);
        let (Some((ours, before)), true) = (held, refused_batch) else {
            return error;
        };
        let now = match self.read_token().await {
            Ok(now) => now,
            Err(_) => return error,
        };
        if let Some(newer) = now.token.filter(|t| t > ours) {
            return self.stale(
                *ours,
                newer,
                Some(format!("Route 53 refused the batch: {error}")),
            );
        }
        if now.values != before.values {
            if let DnsError::Route53 {
                operation,
                zone,
                code,
                message,
                ..
            } = error
            {
                return DnsError::Route53 {
                    operation,
                    zone,
                    code,
                    message: format!("{message} (the token record {} changed concurrently from {:?} to {:?}; re-read and retry)", self.token_name, before.values, now.values),
                    kind: failover_core::PortErrorKind::Conflict,
                };
            }
        }
        error
    }

    /// Polls `GetChange` until `INSYNC` or the deadline.
    async fn wait_insync(&self, change_id: &str) -> Result<(), DnsError> {
        let start = tokio::time::Instant::now();
        let deadline = start + self.insync_timeout;
        let mut wait = Duration::from_millis(200);
        loop {
            let out = self
                .call("GetChange", || {
                    self.client.get_change().id(change_id).send()
                })
                .await?;
            let status = out.change_info().map(|c| c.status().clone());
            if status == Some(ChangeStatus::Insync) {
                tracing::debug!(change = %change_id, after = ?start.elapsed(), "Route 53: change INSYNC");
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(DnsError::Route53NotInSync {
                    zone: self.zone.clone(),
                    change_id: change_id.to_owned(),
                    status: status.map_or_else(|| "unknown".to_owned(), |s| s.as_str().to_owned()),
                    after: start.elapsed(),
                });
            }
            tokio::time::sleep(wait.min(deadline - now)).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    /// Reads back what an accepted batch should have made live.
    async fn verify(&self, desired: &Desired, token: Option<&str>) -> Result<(), DnsError> {
        let live = self.live_sets().await?;
        if !self.is_live(desired, &live) {
            let mut expected: Vec<String> = match desired {
                Desired::Sets(sets) => sets.iter().map(WeightedSet::describe).collect(),
                Desired::Nothing => Vec::new(),
            };
            expected.sort();
            return Err(DnsError::Route53Mismatch {
                zone: self.zone.clone(),
                name: format!("{} {}", self.name, self.record_type.rr_type().as_str()),
                expected,
                found: live
                    .iter()
                    .filter(|s| self.is_ours(&s.set_id))
                    .map(WeightedSet::describe)
                    .collect(),
            });
        }
        if let Some(value) = token {
            let held = self.read_token().await?;
            if held.values != [value] {
                return Err(DnsError::Route53Mismatch {
                    zone: self.zone.clone(),
                    name: format!("{} TXT", self.token_name),
                    expected: vec![value.to_owned()],
                    found: held.values,
                });
            }
        }
        Ok(())
    }

    /// Whether `live` already is `desired` (only our set ids count).
    fn is_live(&self, desired: &Desired, live: &[WeightedSet]) -> bool {
        let ours: Vec<&WeightedSet> = live.iter().filter(|s| self.is_ours(&s.set_id)).collect();
        match desired {
            Desired::Nothing => ours.is_empty(),
            Desired::Sets(sets) => {
                ours.len() == sets.len() && sets.iter().all(|s| ours.contains(&s))
            }
        }
    }

    fn is_ours(&self, set_id: &str) -> bool {
        self.regions.iter().any(|r| r.set_id == set_id)
    }

    fn weighted_change(&self, action: ChangeAction, set: &WeightedSet) -> Result<Change, DnsError> {
        let records = set
            .values
            .iter()
            .map(|v| ResourceRecord::builder().value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.encode(e))?;
        let rrset = ResourceRecordSet::builder()
            .name(&self.name)
            .r#type(self.record_type.rr_type())
            .set_identifier(&set.set_id)
            .weight(i64::from(set.weight))
            .ttl(i64::from(set.ttl))
            .set_resource_records(Some(records))
            .build()
            .map_err(|e| self.encode(e))?;
        Change::builder()
            .action(action)
            .resource_record_set(rrset)
            .build()
            .map_err(|e| self.encode(e))
    }

    fn txt_change(
        &self,
        action: ChangeAction,
        ttl: i64,
        values: &[String],
    ) -> Result<Change, DnsError> {
        let records = values
            .iter()
            .map(|v| ResourceRecord::builder().value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.encode(e))?;
        let rrset = ResourceRecordSet::builder()
            .name(&self.token_name)
            .r#type(RrType::Txt)
            .ttl(ttl)
            .set_resource_records(Some(records))
            .build()
            .map_err(|e| self.encode(e))?;
        Change::builder()
            .action(action)
            .resource_record_set(rrset)
            .build()
            .map_err(|e| self.encode(e))
    }

    fn encode(&self, e: impl std::fmt::Display) -> DnsError {
        DnsError::Encode {
            what: "Route 53 change batch",
            reason: e.to_string(),
        }
    }

    fn stale(&self, ours: FencingToken, newer: FencingToken, rcode: Option<String>) -> DnsError {
        metrics::counter!("failover_dns_stale_plans_refused_total", "adapter" => "route53")
            .increment(1);
        tracing::warn!(ours = ours.0, newer = newer.0, zone = %self.zone, "Route 53: {newer} is in place, newer than this plan's {ours}: the plan of a deposed leader is refused");
        DnsError::StaleToken {
            holder: format!(
                "TXT {} in Route 53 hosted zone {}",
                self.token_name, self.zone
            ),
            ours,
            newer,
            rcode,
        }
    }
}

/// The token TXT record as read.
#[derive(Clone, Debug, Default)]
struct HeldToken {
    /// The highest token in it.
    token: Option<FencingToken>,
    /// Its TTL, seconds (a DELETE must name it exactly).
    ttl: i64,
    /// Its values exactly as Route 53 returned them.
    values: Vec<String>,
}

/// Whether two DNS names are the same (case and final dot aside).
fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

#[async_trait]
impl TrafficRouter for Route53Router {
    async fn apply(&self, plan: &WeightPlan) -> Result<(), PortError> {
        self.apply_plan(plan).await.map_err(PortError::from)
    }

    /// Each region's Route 53 weight; 0 for a region whose set is absent
    /// (also when fail-closed deleted every set).
    async fn read_back(&self) -> Result<Vec<RegionWeight>, PortError> {
        let live = self.live_sets().await?;
        Ok(self
            .regions
            .iter()
            .enumerate()
            .map(|(i, r)| RegionWeight {
                region: RegionId(i as u32),
                weight: live
                    .iter()
                    .find(|s| s.set_id == r.set_id)
                    .map_or(0, |s| s.weight),
            })
            .collect())
    }
}
