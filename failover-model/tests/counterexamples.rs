//! Each protective rule, taken out, lets the checker find the failure it
//! prevents. Breadth-first search returns a shortest trace.

mod common;

use common::shortest;
use failover_model::{
    describe_state, Action, Delivery, ModelConfig, Network, OneWriter, PromotionRule, Proof,
    ReceiverChecks, SyncCheck, SyncOrder, Synchronous,
};
use stateright::Model;

#[test]
fn promoting_on_unreachable_makes_two_writers() {
    let config = ModelConfig::small()
        .with_network(Network::Links)
        .with_promotion(PromotionRule::PromoteOnUnreachable);
    let path = shortest(config, "S1 one writer");
    let last = path.last_state();
    assert_eq!(
        last.writable_nodes(),
        vec![0, 1],
        "the trace must end with both nodes writable"
    );
    let actions = path.into_actions();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Fence(_, Delivery::Lost))),
        "the split brain must come from a fence that merely failed: {actions:?}"
    );
}

#[test]
fn receivers_without_token_checks_apply_a_deposed_leaders_update() {
    let config = ModelConfig::small().with_receivers(ReceiverChecks::None);
    let path = shortest(config, "S3 no stale side effect");
    assert!(path.last_state().stale_effect);
    let actions = path.into_actions();
    assert!(
        actions.iter().any(|a| matches!(a, Action::Resume(_))),
        "the stale side effect must come from a paused leader that resumed: {actions:?}"
    );
}

#[test]
fn reading_the_expired_lease_before_the_move_makes_two_writers() {
    let config = ModelConfig::small().with_promotion(PromotionRule::LeaseReadBeforeMove);
    let path = shortest(config, "S1 one writer");
    assert_eq!(path.last_state().writable_nodes(), vec![0, 1]);
    let actions = path.into_actions();
    let seen = actions
        .iter()
        .position(|a| matches!(a, Action::SeeLeaseExpired(_)));
    let renewed = actions.iter().rposition(|a| matches!(a, Action::Renew(0)));
    assert!(
        matches!((seen, renewed), (Some(s), Some(r)) if s < r),
        "the old writer's guard must renew after the lease was seen expired: {actions:?}"
    );
}

/// Finishing a claimed promotion on another node than the record's.
///
/// A leader finds the record naming a node that an earlier term claimed at
/// epoch E, takes it for a replica, and "finishes" the failover on the node
/// it prefers: it re-points the record at E to that node by compare-and-set
/// (the guard accepts a promote only for the node the record names, so
/// promoting its choice without touching the record would just be refused)
/// and skips the proof that the claimed node stopped, since "it was never
/// promoted". That belief is an observation and can be stale: the claimer
/// may have promoted the node before it lost its term, and the node's guard
/// unfences it as soon as it reads the record naming it. The checker finds
/// the claimed node and the retargeted one both writable. The safe rule
/// (`finish_claimed_promotion`) promotes the record's node at the record's
/// epoch and moves the record only with a proof of stop.
///
/// The two other wrong finishes one might write are harmless in the model,
/// because the guard checks the record: promoting the record's node at E+1
/// without re-claiming, or promoting a node the record does not name, is
/// refused (the guard accepts only the record's node at the record's epoch),
/// and even if applied would leave the node fenced (a guard unfences only
/// for the record's node at its promotion epoch). They cost availability,
/// not S1 or S3, so they have no counterexample here.
#[test]
fn retargeting_an_unfinished_claim_without_proof_makes_two_writers() {
    let config = ModelConfig::small().with_promotion(PromotionRule::RetargetUnfinishedClaim);
    let path = shortest(config, "S1 one writer");
    assert_eq!(path.last_state().writable_nodes(), vec![0, 1]);
    let steps = path.into_vec();
    let retarget = steps
        .iter()
        .position(|(_, a)| matches!(a, Some(Action::RetargetClaim(_))))
        .expect("the split brain must come from a retargeted claim");
    // When the claim was retargeted, the claimed node was no replica any
    // more: an earlier term had promoted it, and the retargeting leader
    // acted on a stale belief.
    let before = &steps[retarget].0;
    let claimed = before.store.writer;
    assert_eq!(
        before.nodes[claimed.node as usize].promoted,
        Some(claimed.epoch),
        "the claimed node must have been promoted before the retarget"
    );
    let claim_term = steps
        .iter()
        .position(|(_, a)| matches!(a, Some(Action::MoveWriter(..))))
        .and_then(|i| steps[i].0.store.leader)
        .expect("the node must have been claimed under a leader key");
    let retarget_term = before.store.leader.expect("retargeted under a leader key");
    assert!(
        retarget_term.token > claim_term.token,
        "the retarget must come from a later term than the claim"
    );
}

/// The drop of a synchronous standby reversed: the leader reconfigures the
/// writer to require nothing while the record still names the standby. The
/// writer acknowledges a commit asynchronously, the leader moves the writer
/// on the record's synchronous proof, and the promoted standby lacks the
/// commit (S2); the old writer, unfenced and asynchronous, can also go on
/// acknowledging after the promotion (S1 for acknowledged commits).
#[test]
fn reconfiguring_the_writer_before_the_record_drops_the_standby_loses_an_acknowledged_commit() {
    let config = ModelConfig::synchronous().with_sync_order(SyncOrder::WriterAsyncBeforeRecordDrop);
    for property in ["S2 no acknowledged loss", "S1 one acknowledging writer"] {
        let path = shortest(config, property);
        let steps = path.into_vec();
        let last = &steps[steps.len() - 1].0;
        let actions: Vec<Action> = steps.iter().filter_map(|(_, a)| *a).collect();
        let async_at = actions
            .iter()
            .position(|a| matches!(a, Action::SetSynchronous(_, false, _)))
            .expect("the writer must be made asynchronous");
        assert!(
            steps[async_at].0.store.writer.sync,
            "the writer must stop requiring the standby while the record names it"
        );
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::MoveWriter(_, Proof::SynchronousStandby, _))));
        assert!(actions.contains(&Action::Ack(0)));
        match property {
            "S2 no acknowledged loss" => assert!(last.lost_ack),
            _ => assert!(last.ack_after_successor),
        }
    }
}

/// The add of a synchronous standby reversed: the record names the standby
/// before the writer requires it. The writer still acknowledges commits
/// asynchronously, and the standby promoted on the record's proof lacks one.
/// In strict mode too: strictness does not help a record written first.
#[test]
fn recording_the_standby_before_the_writer_requires_it_loses_an_acknowledged_commit() {
    for mode in [Synchronous::On, Synchronous::Strict] {
        let config = ModelConfig::synchronous()
            .with_synchronous(mode)
            .with_sync_order(SyncOrder::RecordBeforeWriterRequires);
        let path = shortest(config, "S2 no acknowledged loss");
        assert!(path.last_state().lost_ack);
        let actions = path.into_actions();
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::SetSynchronous(_, true, _))),
            "the writer was never configured to require the standby: {actions:?}"
        );
        assert!(
            actions.contains(&Action::RecordSync(0, true))
                || actions.contains(&Action::RecordSync(1, true))
        );
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::MoveWriter(_, Proof::SynchronousStandby, _))));
    }
}

/// A deposed leader's late `SetSynchronous`, applied because the node checks
/// only its epoch (the request carries node and epoch, no token).
///
/// c0 leads and reads the record (writer n0, no standby), then is paused
/// past its term (n0's guard renews meanwhile). c1 leads, adds n1 in the safe order (configures n0 to
/// require it, then records it). c0 resumes, still believing it leads and
/// that the record names no standby — the second step of a drop — and tells
/// n0 to require nothing; n0 is still the writer at epoch 1, so it applies
/// it. n0 acknowledges a commit asynchronously, c1 moves the writer on the
/// record's synchronous proof and promotes n1, which lacks that commit.
/// Every step of the protocol was in the safe order; the receiver's check is
/// what fails. With `SyncCheck::EpochAndToken` (the node keeps the newest
/// token that configured it, as the DNS keeps its `_failover` TXT token)
/// c0's late request is refused. The exhaustive search needs minutes to
/// reach this 18-step trace; the replay shows it is one the model contains.
#[test]
fn a_deposed_leaders_late_synchronous_configuration_loses_an_acknowledged_commit_without_a_token() {
    let trace = [
        Action::Campaign(0),
        Action::ReadWriter(0),
        Action::Pause(0),
        Action::Tick(0),
        Action::Renew(0),
        Action::Tick(0),
        Action::Renew(0),
        Action::Tick(0),
        Action::Renew(0),
        Action::Campaign(1),
        Action::ReadWriter(1),
        Action::SetSynchronous(1, true, Delivery::Replied),
        Action::RecordSync(1, true),
        Action::Resume(0),
        Action::SetSynchronous(0, false, Delivery::Replied),
        Action::Ack(0),
        Action::MoveWriter(1, Proof::SynchronousStandby, Delivery::Replied),
        Action::Promote(1),
    ];
    let epoch_only =
        OneWriter::new(ModelConfig::synchronous().with_sync_check(SyncCheck::EpochOnly));
    let state = epoch_only.replay(&trace).unwrap_or_else(|e| panic!("{e}"));
    println!("with SyncCheck::EpochOnly: {}", describe_state(&state));
    assert!(
        state.lost_ack,
        "the promoted standby must lack the acknowledged commit"
    );
    assert!(
        state.stale_effect,
        "the late configuration is a stale side effect (S3)"
    );

    let with_token = OneWriter::new(ModelConfig::synchronous());
    let resumed = with_token
        .replay(&trace[..14])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut offered = Vec::new();
    with_token.actions(&resumed, &mut offered);
    assert!(
        !offered.contains(&Action::SetSynchronous(0, false, Delivery::Replied)),
        "a node configured by term 2 must refuse term 1's request: {offered:?}"
    );
}
