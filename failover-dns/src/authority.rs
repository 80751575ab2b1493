//! The embedded server's request handler: answers queries for one zone from
//! the current [`AnswerSet`], which a plan swap replaces atomically.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use failover_core::NodeId;
use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::answer::{AnswerSet, QueryRng, Selection};

/// The zone's state shared by the server tasks and the router handle.
#[derive(Debug)]
pub(crate) struct ZoneState {
    pub(crate) zone: LowerName,
    pub(crate) service: LowerName,
    pub(crate) selection: Selection,
    /// Swapped whole on every plan; readers clone the `Arc` and never block
    /// each other for longer than that clone.
    pub(crate) current: RwLock<Arc<AnswerSet>>,
    pub(crate) rng: QueryRng,
    pub(crate) queries: AtomicU64,
    /// The writer name's answers, once it is served; swapped whole.
    pub(crate) writer: RwLock<Option<Arc<WriterAnswer>>>,
}

/// The writer name's records for one writer. Immutable once built.
#[derive(Debug)]
pub(crate) struct WriterAnswer {
    pub(crate) name: LowerName,
    /// The node they point at (`None`: no writer yet, no records).
    pub(crate) node: Option<NodeId>,
    pub(crate) a: Vec<Record>,
    pub(crate) aaaa: Vec<Record>,
}

impl ZoneState {
    pub(crate) fn snapshot(&self) -> Arc<AnswerSet> {
        // A poisoned lock still holds a complete snapshot: the writer only
        // ever replaces the Arc.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn swap(&self, next: Arc<AnswerSet>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = next;
    }

    pub(crate) fn writer(&self) -> Option<Arc<WriterAnswer>> {
        self.writer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn swap_writer(&self, next: Arc<WriterAnswer>) {
        *self.writer.write().unwrap_or_else(PoisonError::into_inner) = Some(next);
    }
}

/// What one query gets.
enum Reply<'a> {
    Answer(&'a [Record], &'a [Record]),
    NoData,
    NxDomain,
    Refused,
}

/// Adapts [`ZoneState`] to hickory-server's [`RequestHandler`].
#[derive(Debug, Clone)]
pub(crate) struct AuthoritativeZone(pub(crate) Arc<ZoneState>);

#[async_trait::async_trait]
impl RequestHandler for AuthoritativeZone {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let state = &self.0;
        state.queries.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("failover_dns_queries_total").increment(1);

        let response_edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().max(512));
            edns.set_version(0);
            edns
        });
        let builder = MessageResponseBuilder::new(&request.queries, response_edns.as_ref());
        let mut metadata = Metadata::response_from_request(&request.metadata);

        let queries = request.queries.queries();
        let code = if request.metadata.op_code != OpCode::Query {
            Some(ResponseCode::NotImp)
        } else if queries.len() != 1 {
            Some(ResponseCode::FormErr)
        } else {
            None
        };
        let result = match (code, queries.first()) {
            (None, Some(query)) => {
                let snapshot = state.snapshot();
                let writer = state.writer();
                let reply = answer(
                    state,
                    &snapshot,
                    writer.as_deref(),
                    query.name(),
                    query.query_type(),
                    query.query_class(),
                );
                let soa = match reply {
                    Reply::NoData | Reply::NxDomain => Some(&snapshot.soa),
                    _ => None,
                };
                let (first, second): (&[Record], &[Record]) = match reply {
                    Reply::Answer(first, second) => (first, second),
                    Reply::NoData => (&[], &[]),
                    Reply::NxDomain => {
                        metadata.response_code = ResponseCode::NXDomain;
                        (&[], &[])
                    }
                    Reply::Refused => {
                        metadata.response_code = ResponseCode::Refused;
                        (&[], &[])
                    }
                };
                metadata.authoritative = metadata.response_code != ResponseCode::Refused;
                let response = builder.build(
                    metadata,
                    first.iter().chain(second.iter()),
                    std::iter::empty(),
                    soa,
                    std::iter::empty(),
                );
                response_handle.send_response(response).await
            }
            (code, _) => {
                let code = code.unwrap_or(ResponseCode::FormErr);
                let response = builder.error_msg(&request.metadata, code);
                response_handle.send_response(response).await
            }
        };
        match result {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%error, src = %request.src(), "embedded DNS: cannot send response");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

fn answer<'a>(
    state: &ZoneState,
    snapshot: &'a AnswerSet,
    writer: Option<&'a WriterAnswer>,
    name: &LowerName,
    qtype: RecordType,
    qclass: DNSClass,
) -> Reply<'a> {
    if !state.zone.zone_of(name) || !matches!(qclass, DNSClass::IN | DNSClass::ANY) {
        return Reply::Refused;
    }
    let reply = if *name == state.zone && qtype == RecordType::SOA {
        Reply::Answer(std::slice::from_ref(&snapshot.soa), &[])
    } else if *name == state.zone && qtype == RecordType::NS {
        Reply::Answer(std::slice::from_ref(&snapshot.ns), &[])
    } else if *name == state.service {
        match qtype {
            RecordType::A => Reply::Answer(snapshot.a.pick(state.selection, state.rng.next()), &[]),
            RecordType::AAAA => {
                Reply::Answer(snapshot.aaaa.pick(state.selection, state.rng.next()), &[])
            }
            RecordType::ANY => Reply::Answer(
                snapshot.a.pick(Selection::AllServing, 0),
                snapshot.aaaa.pick(Selection::AllServing, 0),
            ),
            _ => Reply::NoData,
        }
    } else if let Some(w) = writer.filter(|w| *name == w.name) {
        match qtype {
            RecordType::A => Reply::Answer(&w.a, &[]),
            RecordType::AAAA => Reply::Answer(&w.aaaa, &[]),
            RecordType::ANY => Reply::Answer(&w.a, &w.aaaa),
            _ => Reply::NoData,
        }
    } else if *name == state.zone
        || name.zone_of(&state.service)
        || writer.is_some_and(|w| name.zone_of(&w.name))
    {
        // The apex, or an empty non-terminal above the service name: the
        // name exists, it just has no records of this type.
        Reply::NoData
    } else {
        Reply::NxDomain
    };
    match reply {
        Reply::Answer(first, second) if first.is_empty() && second.is_empty() => Reply::NoData,
        other => other,
    }
}
