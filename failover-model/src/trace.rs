//! Counterexamples as a readable timeline.

use stateright::Path;

use crate::model::{Action, Delivery, Proof};
use crate::state::{Link, State};

/// A sentence for one step.
pub fn describe_action(action: &Action) -> String {
    let delivery = |d: &Delivery| match d {
        Delivery::Replied => "confirmed",
        Delivery::ReplyLost => "applied, reply lost",
        Delivery::Lost => "lost (timeout)",
    };
    let link = |l: &Link| match l {
        Link::ControllerStore(c) => format!("c{c}–store"),
        Link::ControllerNode(c, n) => format!("c{c}–n{n}"),
        Link::GuardStore(n) => format!("guard{n}–store"),
        Link::GuardGuard => "guard0–guard1".to_string(),
    };
    match action {
        Action::Tick(0) => "one tick passes".to_string(),
        Action::Tick(slow) => {
            let guards: Vec<String> = (0..8)
                .filter(|n| slow & (1 << n) != 0)
                .map(|n| format!("guard{n}"))
                .collect();
            format!(
                "one tick passes; the clock of {} lags and does not count it",
                guards.join(" and ")
            )
        }
        Action::Campaign(c) => format!("c{c} takes the leader key"),
        Action::KeepAlive(c) => format!("c{c} sends a keep-alive"),
        Action::ReadWriter(c) => format!("c{c} reads the writer record"),
        Action::Fence(c, d) => format!("c{c} fences its view's writer: {}", delivery(d)),
        Action::SeeLeaseExpired(c) => {
            format!("c{c} reads the old writer's guard lease: expired")
        }
        Action::MoveWriter(c, p, d) => {
            let why = match p {
                Proof::Held => "on the proof it holds",
                Proof::LeaseExpired => "on the old writer's expired guard lease",
                Proof::SynchronousStandby => {
                    "on the synchronous-standby proof (the record names the candidate in sync)"
                }
            };
            format!("c{c} moves the writer record {why}: {}", delivery(d))
        }
        Action::Promote(c) => format!("c{c} promotes the node its view names"),
        Action::UpdateDns(c) => format!("c{c} points DNS at the node its view names"),
        Action::SetSynchronous(c, true, d) => format!(
            "c{c} configures its view's writer to require the other node: {}",
            match d {
                Delivery::Replied => "done, the standby streams and caught up",
                _ => "applied, reply lost",
            }
        ),
        Action::SetSynchronous(c, false, _) => {
            format!("c{c} configures its view's writer to require nothing (asynchronous)")
        }
        Action::RecordSync(c, true) => {
            format!("c{c} records the other node in the writer record's sync set")
        }
        Action::RecordSync(c, false) => {
            format!("c{c} records an empty sync set in the writer record")
        }
        Action::Ack(n) => format!("n{n} acknowledges a commit the other node lacks"),
        Action::CatchUp(n) => format!("n{n}, streaming, flushes the commits it lacked"),
        Action::RetargetClaim(c) => format!(
            "c{c} takes the claimed node for a replica and re-points the record to the other node, same epoch, no proof"
        ),
        Action::Crash(c) => format!("c{c} crashes and restarts with an empty memory"),
        Action::Pause(c) => format!("c{c} is paused (SIGSTOP)"),
        Action::Resume(c) => format!("c{c} resumes (SIGCONT)"),
        Action::Renew(n) => format!("guard{n} renews at the store"),
        Action::FailsafeRenew(n) => format!("guard{n} extends its deadline in failsafe mode"),
        Action::CrashNode(n) => format!("n{n} and its guard crash"),
        Action::RestartNode(n) => format!("n{n} and its guard restart"),
        Action::Freeze(n) => format!("n{n}'s PostgreSQL freezes (SIGSTOP); its guard lives on"),
        Action::Thaw(n) => format!("n{n}'s PostgreSQL thaws (SIGCONT)"),
        Action::Cut(l) => format!("link {} is cut", link(l)),
        Action::Heal(l) => format!("link {} heals", link(l)),
    }
}

/// The facts a reader of a trace needs after each step.
pub fn describe_state(state: &State) -> String {
    let leader = match state.store.leader {
        Some(key) => format!("c{} token {}", key.controller, key.token),
        None => "none".to_string(),
    };
    let writable: Vec<String> = state
        .writable_nodes()
        .iter()
        .map(|n| format!("n{n}"))
        .collect();
    let mut line = format!(
        "writer n{}@{}{}, leader {}, dns n{} token {}, writable [{}]",
        state.store.writer.node,
        state.store.writer.epoch,
        if state.store.writer.sync {
            " sync {other}"
        } else {
            ""
        },
        leader,
        state.dns.node,
        state.dns.token,
        writable.join(", ")
    );
    let frozen: Vec<String> = (0..state.nodes.len())
        .filter(|&n| state.nodes[n].frozen)
        .map(|n| format!("n{n}"))
        .collect();
    if !frozen.is_empty() {
        line.push_str(&format!(", frozen [{}]", frozen.join(", ")));
    }
    let down: Vec<String> = (0..state.nodes.len())
        .filter(|&n| !state.nodes[n].up)
        .map(|n| format!("n{n}"))
        .collect();
    if !down.is_empty() {
        line.push_str(&format!(", down [{}]", down.join(", ")));
    }
    let requiring: Vec<String> = (0..state.nodes.len())
        .filter(|&n| state.nodes[n].requires)
        .map(|n| format!("n{n}"))
        .collect();
    if !requiring.is_empty() {
        line.push_str(&format!(", requiring a standby [{}]", requiring.join(", ")));
    }
    let lacking: Vec<String> = (0..state.nodes.len())
        .filter(|&n| state.nodes[n].lacks_acked)
        .map(|n| format!("n{n}"))
        .collect();
    if !lacking.is_empty() {
        line.push_str(&format!(
            ", lacking an acknowledged commit [{}]",
            lacking.join(", ")
        ));
    }
    if state.ack_after_successor {
        line.push_str(", OLD WRITER ACKNOWLEDGED AFTER A SUCCESSOR'S PROMOTION");
    }
    if state.lost_ack {
        line.push_str(", ACKNOWLEDGED COMMIT LOST");
    }
    line
}

/// The whole path, one numbered line per step.
pub fn describe_path(path: &Path<State, Action>) -> String {
    let mut out = String::new();
    let steps = path.clone().into_vec();
    if let Some((first, _)) = steps.first() {
        out.push_str(&format!("   start: {}\n", describe_state(first)));
    }
    for (i, window) in steps.windows(2).enumerate() {
        let action = window[0]
            .1
            .as_ref()
            .map(describe_action)
            .unwrap_or_default();
        out.push_str(&format!(
            "{:>3}. {action}\n     → {}\n",
            i + 1,
            describe_state(&window[1].0)
        ));
    }
    out
}
