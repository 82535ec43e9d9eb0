//! One behavioural suite, two backends: every test here runs once with the
//! actor in the sender's own process (in-process mailbox, no serialization)
//! and once with it on another node across a mutual-TLS QUIC connection.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use ember_certs::Role;

use crate::testing::*;
use crate::{
    Access, ActorAddress, BulkError, ExitReason, Node, NodeId, NodeOptions, Refusal, SendError,
};

#[derive(Clone, Copy, Debug)]
enum Backend {
    InProcess,
    Quic,
    /// QUIC over the simulated network, in virtual time.
    Simulated,
}

/// The node that sends and the node that owns the actors.
struct Setup {
    sender: Node,
    owner: Node,
    _cluster: Option<Cluster>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.sender.shutdown();
        self.owner.shutdown();
    }
}

async fn setup(backend: Backend) -> Setup {
    match backend {
        Backend::InProcess => {
            let node = solo();
            Setup {
                sender: node.clone(),
                owner: node,
                _cluster: None,
            }
        }
        Backend::Quic | Backend::Simulated => {
            let cluster = Cluster::new();
            let (sender, owner) = if matches!(backend, Backend::Simulated) {
                let net = crate::sim::SimNet::new(1);
                (
                    cluster.simulated_node(&net, 1, Role::Worker, "sender"),
                    cluster.simulated_node(&net, 2, Role::Worker, "owner"),
                )
            } else {
                (
                    cluster.node(Role::Worker, "sender"),
                    cluster.node(Role::Worker, "owner"),
                )
            };
            connect(&sender, &owner).await;
            Setup {
                sender,
                owner,
                _cluster: Some(cluster),
            }
        }
    }
}

const T: Duration = Duration::from_secs(5);

/// Runs a test body against both backends.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[actix::test]
                async fn in_process() {
                    super::$name(super::Backend::InProcess).await
                }
                #[actix::test]
                async fn quic() {
                    super::$name(super::Backend::Quic).await
                }
                #[test]
                fn simulated() {
                    crate::testing::in_virtual_time(super::$name(super::Backend::Simulated))
                }
            }
        )*
    };
}

both_backends!(
    asks_are_answered,
    messages_from_one_sender_arrive_in_order,
    a_slow_answer_times_out_and_later_asks_still_work,
    a_stopped_actor_is_gone,
    watchers_hear_when_an_actor_stops,
    watching_a_missing_actor_reports_it_at_once,
    a_name_nobody_registered_is_gone,
    a_message_of_another_type_is_refused,
    batches_reach_an_inbox_in_order,
    encoded_batches_reach_an_inbox_as_they_were_encoded,
    a_bulk_stream_to_a_missing_inbox_fails,
);

async fn asks_are_answered(backend: Backend) {
    let s = setup(backend).await;
    let target = spawn_echo(&s.owner, "echo", Access::AnyRole);
    let mailbox = s.sender.mailbox::<Cmd>(&target).unwrap();
    assert_eq!(mailbox.address(), &target);
    assert!(mailbox.is_alive());
    for n in [0, 41, u64::MAX] {
        assert_eq!(mailbox.ask(Cmd::Echo(n), T).await, Ok(Reply::Echo(n)));
    }
}

async fn messages_from_one_sender_arrive_in_order(backend: Backend) {
    let s = setup(backend).await;
    let target = spawn_echo(&s.owner, "echo", Access::AnyRole);
    let mailbox = s.sender.mailbox::<Cmd>(&target).unwrap();
    for n in 0..3000u64 {
        mailbox.tell(Cmd::Note(n)).unwrap();
        if n % 500 == 0 {
            // Asks keep their place among tells.
            assert_eq!(mailbox.ask(Cmd::Echo(n), T).await, Ok(Reply::Echo(n)));
        }
    }
    assert_eq!(
        mailbox.ask(Cmd::Log, T).await,
        Ok(Reply::Log {
            notes: 3000,
            out_of_order: 0
        })
    );
}

async fn a_slow_answer_times_out_and_later_asks_still_work(backend: Backend) {
    let s = setup(backend).await;
    let target = spawn_echo(&s.owner, "echo", Access::AnyRole);
    let mailbox = s.sender.mailbox::<Cmd>(&target).unwrap();
    let short = Duration::from_millis(50);
    assert_eq!(
        mailbox.ask(Cmd::Slow { ms: 400, n: 1 }, short).await,
        Err(SendError::Timeout(target.clone(), short))
    );
    // The late answer to the first ask must not be taken for this one's.
    assert_eq!(
        mailbox.ask(Cmd::Slow { ms: 600, n: 2 }, T).await,
        Ok(Reply::Echo(2))
    );
}

/// Asks until the actor is reported gone; it stops shortly after saying so.
async fn until_gone(mailbox: &crate::Mailbox<Cmd>) -> SendError {
    for _ in 0..500 {
        match mailbox.ask(Cmd::Echo(0), T).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => return e,
        }
    }
    panic!("the actor never went away");
}

async fn a_stopped_actor_is_gone(backend: Backend) {
    let s = setup(backend).await;
    let target = spawn_echo(&s.owner, "echo", Access::AnyRole);
    let mailbox = s.sender.mailbox::<Cmd>(&target).unwrap();
    assert_eq!(mailbox.ask(Cmd::Stop, T).await, Ok(Reply::Stopping));
    assert_eq!(
        until_gone(&mailbox).await,
        SendError::Closed(target.clone())
    );
    // Telling a gone actor is an error here or a logged refusal there; it
    // never panics and never hangs.
    let _ = mailbox.tell(Cmd::Note(0));
    // The name is free again.
    let again = spawn_echo(&s.owner, "echo", Access::AnyRole);
    let mailbox = s.sender.mailbox::<Cmd>(&again).unwrap();
    assert_eq!(mailbox.ask(Cmd::Echo(7), T).await, Ok(Reply::Echo(7)));
}

async fn watchers_hear_when_an_actor_stops(backend: Backend) {
    let s = setup(backend).await;
    let target = spawn_echo(&s.owner, "echo", Access::AnyRole);
    let (watcher, mut downs) = recorder();
    s.sender.monitor(&target, watcher);
    let mailbox = s.sender.mailbox::<Cmd>(&target).unwrap();
    // The monitor request travels ahead of this ask on the same stream.
    assert_eq!(mailbox.ask(Cmd::Echo(1), T).await, Ok(Reply::Echo(1)));
    assert!(downs.try_recv().is_err(), "no notice while it runs");
    mailbox.ask(Cmd::Stop, T).await.unwrap();
    let down = next_down(&mut downs, T).await;
    assert_eq!(down.peer, target);
    assert_eq!(down.reason, ExitReason::Normal);
    // Once only.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(downs.try_recv().is_err());
}

async fn watching_a_missing_actor_reports_it_at_once(backend: Backend) {
    let s = setup(backend).await;
    let nobody = ActorAddress {
        node: s.owner.id().clone(),
        name: "nobody".into(),
    };
    let (watcher, mut downs) = recorder();
    s.sender.monitor(&nobody, watcher);
    let down = next_down(&mut downs, T).await;
    assert_eq!(down.peer, nobody);
    assert!(
        matches!(&down.reason, ExitReason::Failed(why) if why.contains("no actor")),
        "{:?}",
        down.reason
    );
}

async fn a_name_nobody_registered_is_gone(backend: Backend) {
    let s = setup(backend).await;
    let nobody = ActorAddress {
        node: s.owner.id().clone(),
        name: "nobody".into(),
    };
    let outcome = match s.sender.mailbox::<Cmd>(&nobody) {
        Err(e) => e,
        Ok(mailbox) => mailbox.ask(Cmd::Echo(1), T).await.unwrap_err(),
    };
    assert_eq!(outcome, SendError::Closed(nobody));
}

async fn a_message_of_another_type_is_refused(backend: Backend) {
    let s = setup(backend).await;
    let target = spawn_echo(&s.owner, "echo", Access::AnyRole);
    let outcome = match s.sender.mailbox::<Other>(&target) {
        Err(e) => e,
        Ok(mailbox) => mailbox.ask(Other("hi".into()), T).await.unwrap_err(),
    };
    assert!(
        matches!(&outcome, SendError::Refused(a, Refusal::Unreadable(_)) if a == &target),
        "{outcome:?}"
    );
    // The actor is unharmed.
    let mailbox = s.sender.mailbox::<Cmd>(&target).unwrap();
    assert_eq!(mailbox.ask(Cmd::Echo(3), T).await, Ok(Reply::Echo(3)));
}

fn batch(from: i64, rows: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("n", DataType::Int64, false),
        Field::new("s", DataType::Utf8, false),
    ]));
    let n: Vec<i64> = (from..from + rows).collect();
    let s: Vec<String> = n.iter().map(|v| format!("row-{v}")).collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(n)),
            Arc::new(StringArray::from(s)),
        ],
    )
    .unwrap()
}

async fn batches_reach_an_inbox_in_order(backend: Backend) {
    let s = setup(backend).await;
    let mut inbox = s.owner.bulk_inbox("blocks").unwrap();
    let to = ActorAddress {
        node: s.owner.id().clone(),
        name: "blocks".into(),
    };
    let batches: Vec<RecordBatch> = (0..20).map(|i| batch(i * 1000, 1000)).collect();
    let schema = batches[0].schema();
    let expected = batches.clone();
    let sender = s.sender.clone();
    let sending =
        tokio::spawn(async move { sender.send_batches(&to, "map-3", schema, batches).await });
    let mut incoming = tokio::time::timeout(T, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(incoming.tag, "map-3");
    assert_eq!(&incoming.from, s.sender.id());
    let mut got = Vec::new();
    while let Some(batch) = incoming.batches.recv().await {
        got.push(batch.unwrap());
    }
    assert_eq!(got, expected);
    let sent = sending.await.unwrap().unwrap();
    assert_eq!((sent.batches, sent.rows), (20, 20_000));
}

async fn encoded_batches_reach_an_inbox_as_they_were_encoded(backend: Backend) {
    let s = setup(backend).await;
    let mut inbox = s.owner.bulk_inbox("blocks").unwrap();
    let to = ActorAddress {
        node: s.owner.id().clone(),
        name: "blocks".into(),
    };
    let batches: Vec<RecordBatch> = (0..5).map(|i| batch(i * 100, 100)).collect();
    let schema = batches[0].schema();
    // Each batch as its own encapsulated IPC message, as a shuffle file
    // stores it.
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &schema).unwrap();
    writer.get_mut().clear();
    let messages: Vec<Result<(bytes::Bytes, usize), String>> = batches
        .iter()
        .map(|b| {
            writer.write(b).unwrap();
            Ok((std::mem::take(writer.get_mut()).into(), b.num_rows()))
        })
        .collect();
    let expected = batches.clone();
    let sender = s.sender.clone();
    let sending = tokio::spawn(async move {
        sender
            .send_ipc_messages(&to, "raw", schema, futures::stream::iter(messages))
            .await
    });
    let mut incoming = tokio::time::timeout(T, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    let mut got = Vec::new();
    while let Some(batch) = incoming.batches.recv().await {
        got.push(batch.unwrap());
    }
    assert_eq!(got, expected);
    let sent = sending.await.unwrap().unwrap();
    assert_eq!((sent.batches, sent.rows), (5, 500));
}

async fn a_bulk_stream_to_a_missing_inbox_fails(backend: Backend) {
    let s = setup(backend).await;
    let to = ActorAddress {
        node: s.owner.id().clone(),
        name: "nowhere".into(),
    };
    let b = batch(0, 10);
    let err = s
        .sender
        .send_batches(&to, "t", b.schema(), vec![b])
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            BulkError::NoSuchInbox(_)
                | BulkError::Refused {
                    code: 7, // codes::NO_SUCH_ACTOR
                    ..
                }
        ),
        "{err}"
    );
}

/// What only a connection between nodes can show.
mod between_nodes {
    use super::*;
    use crate::Hello;
    use crate::wire::codes;

    #[actix::test]
    async fn a_role_the_actor_does_not_take_is_refused() {
        let cluster = Cluster::new();
        let owner = cluster.node(Role::ClusterManager, "cm");
        let worker = cluster.node(Role::Worker, "w1");
        let client = cluster.node(Role::Client, "c1");
        connect(&worker, &owner).await;
        connect(&client, &owner).await;
        let submit = spawn_echo(&owner, "submit", Access::Roles(vec![Role::Client]));

        let from_worker = worker.mailbox::<Cmd>(&submit).unwrap();
        assert_eq!(
            from_worker.ask(Cmd::Echo(1), T).await,
            Err(SendError::Refused(
                submit.clone(),
                Refusal::Forbidden {
                    role: "worker".into()
                }
            ))
        );
        // A refused tell is dropped there and never reaches the actor.
        from_worker.tell(Cmd::Note(0)).unwrap();
        let from_client = client.mailbox::<Cmd>(&submit).unwrap();
        assert_eq!(from_client.ask(Cmd::Echo(2), T).await, Ok(Reply::Echo(2)));
        assert_eq!(
            from_client.ask(Cmd::Log, T).await,
            Ok(Reply::Log {
                notes: 0,
                out_of_order: 0
            })
        );
        for node in [owner, worker, client] {
            node.shutdown();
        }
    }

    #[actix::test]
    async fn a_node_that_goes_away_is_reported_and_its_asks_fail() {
        let cluster = Cluster::new();
        let a = cluster.node(Role::Worker, "a");
        let b = cluster.node(Role::Worker, "b");
        connect(&a, &b).await;
        let target = spawn_echo(&b, "echo", Access::AnyRole);
        let (watcher, mut downs) = recorder();
        a.monitor(&target, watcher);
        let mailbox = a.mailbox::<Cmd>(&target).unwrap();
        assert_eq!(mailbox.ask(Cmd::Echo(1), T).await, Ok(Reply::Echo(1)));

        let slow = {
            let mailbox = mailbox.clone();
            tokio::spawn(async move { mailbox.ask(Cmd::Slow { ms: 30_000, n: 0 }, T).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        b.shutdown();
        let down = next_down(&mut downs, Duration::from_secs(3)).await;
        assert_eq!(down.peer, target);
        assert!(
            matches!(down.reason, ExitReason::Unreachable(_)),
            "{:?}",
            down.reason
        );
        // The pending ask ends with the connection, not at its timeout.
        let outcome = slow.await.unwrap();
        assert!(
            matches!(outcome, Err(SendError::Unreachable(..))),
            "{outcome:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(!mailbox.is_alive());
        assert!(matches!(
            mailbox.tell(Cmd::Note(0)),
            Err(SendError::Unreachable(..))
        ));
        assert!(a.peers().is_empty());
        a.shutdown();
    }

    #[actix::test]
    async fn a_silent_peer_is_declared_down_by_the_heartbeat() {
        let cluster = Cluster::new();
        let node = cluster.node(Role::Worker, "n");
        // QUIC keep-alives still flow from the raw peer; only the
        // application heartbeat is missing.
        let raw = raw_peer(&cluster, "mute", &node, &Hello::new("worker", "mute")).await;
        eventually(|| node.peers().iter().any(|(n, _)| n.0 == "mute")).await;
        let started = std::time::Instant::now();
        let (code, why) = close_code(&raw.connection, Duration::from_secs(5)).await;
        assert_eq!(code, u64::from(codes::HEARTBEAT_TIMEOUT), "{why}");
        let options = node.options();
        assert!(
            started.elapsed() < options.heartbeat_timeout + Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        eventually(|| node.peers().is_empty()).await;
        node.shutdown();
    }

    #[actix::test]
    async fn a_hello_that_does_not_match_the_certificate_is_refused() {
        let cluster = Cluster::new();
        let node = cluster.node(Role::Worker, "n");
        let raw = raw_peer(
            &cluster,
            "honest",
            &node,
            &Hello::new("worker", "someone-else"),
        )
        .await;
        let (code, why) = close_code(&raw.connection, T).await;
        assert_eq!(code, u64::from(codes::HANDSHAKE));
        assert!(
            why.contains("someone-else") && why.contains("honest"),
            "{why}"
        );
        assert!(node.peers().is_empty());
        node.shutdown();
    }

    #[actix::test]
    async fn another_protocol_version_is_refused_with_a_reason() {
        let cluster = Cluster::new();
        let node = cluster.node(Role::Worker, "n");
        let future = Hello {
            protocol: crate::PROTOCOL_VERSION + 1,
            ..Hello::new("worker", "newer")
        };
        let raw = raw_peer(&cluster, "newer", &node, &future).await;
        // The close reason carries the node's explanation, so the newer
        // peer can log it too.
        let (code, why) = close_code(&raw.connection, T).await;
        assert_eq!(code, u64::from(codes::HANDSHAKE));
        assert!(
            why.contains("protocol 2") && why.contains("upgrade"),
            "{why}"
        );
        assert!(node.peers().is_empty());
        node.shutdown();
    }

    #[actix::test]
    async fn a_second_connection_from_a_node_replaces_the_first() {
        let cluster = Cluster::new();
        let a = cluster.node(Role::Worker, "a");
        let b = cluster.node(Role::Worker, "b");
        connect(&a, &b).await;
        let target = spawn_echo(&b, "echo", Access::AnyRole);
        connect(&a, &b).await;
        let mailbox = a.mailbox::<Cmd>(&target).unwrap();
        assert_eq!(mailbox.ask(Cmd::Echo(5), T).await, Ok(Reply::Echo(5)));
        assert_eq!(a.peers().len(), 1);
        assert_eq!(b.peers().len(), 1);
        a.shutdown();
        b.shutdown();
    }

    #[actix::test]
    async fn two_nodes_dialing_each_other_at_once_keep_one_connection() {
        let cluster = Cluster::new();
        for round in 0..20 {
            // Two instances of one worker's certificate, as two executors.
            let creds = cluster.creds(Role::Worker, "w");
            let options = crate::NodeOptions::default();
            let a = Node::start_instance(&creds, Some("exec-1"), loopback(), options).unwrap();
            let b = Node::start_instance(&creds, Some("exec-2"), loopback(), options).unwrap();
            let on_a = spawn_echo(&a, "echo", Access::AnyRole);
            let on_b = spawn_echo(&b, "echo", Access::AnyRole);
            let (ab, ba) = futures::join!(
                a.connect(b.local_addr().unwrap(), "localhost"),
                b.connect(a.local_addr().unwrap(), "localhost")
            );
            assert_eq!(ab.unwrap(), *b.id());
            assert_eq!(ba.unwrap(), *a.id());
            // Whichever connection lost has closed by now; asks both ways
            // keep working on the one both sides kept.
            tokio::time::sleep(Duration::from_millis(50)).await;
            for n in 0..3 {
                let to_b = a.mailbox::<Cmd>(&on_b).unwrap();
                let to_a = b.mailbox::<Cmd>(&on_a).unwrap();
                assert_eq!(
                    to_b.ask(Cmd::Echo(n), T).await,
                    Ok(Reply::Echo(n)),
                    "round {round}"
                );
                assert_eq!(
                    to_a.ask(Cmd::Echo(n), T).await,
                    Ok(Reply::Echo(n)),
                    "round {round}"
                );
            }
            assert_eq!(a.peers().len(), 1);
            assert_eq!(b.peers().len(), 1);
            a.shutdown();
            b.shutdown();
        }
    }

    #[test]
    fn a_peer_stalled_in_its_handshake_holds_up_no_other() {
        crate::testing::in_virtual_time(async {
            let cluster = Cluster::new();
            let net = crate::sim::SimNet::new(3);
            let server = cluster.simulated_node(&net, 1, Role::ClusterManager, "cm");
            let stalled = cluster.simulated_node(&net, 2, Role::Worker, "stalled");
            let prompt = cluster.simulated_node(&net, 3, Role::Worker, "prompt");
            let addr = server.local_addr().unwrap();
            // The server hears the stalled peer but cannot answer it.
            let ip = |h: u8| std::net::IpAddr::from([10, 0, 0, h]);
            net.partition(&[ip(1)], &[ip(2)], true);
            let dialing = stalled.clone();
            let stuck = actix::spawn(async move { dialing.connect(addr, "localhost").await });
            tokio::time::sleep(Duration::from_millis(50)).await;
            let reached = tokio::time::timeout(
                Duration::from_millis(500),
                prompt.connect(addr, "localhost"),
            )
            .await;
            assert!(
                matches!(&reached, Ok(Ok(id)) if id == server.id()),
                "a second peer waited on the first one's handshake: {reached:?}"
            );
            assert!(
                !stuck.is_finished(),
                "the stalled handshake should still be stalled"
            );
            stuck.abort();
            for node in [server, stalled, prompt] {
                node.shutdown();
            }
        });
    }

    #[test]
    fn a_node_without_network_says_so() {
        let node = Node::local(NodeId("solo".into()));
        assert!(matches!(
            node.local_addr(),
            Err(crate::NodeError::NoNetwork)
        ));
    }
}

/// Bulk streams whose reader is slow hold the connection's whole
/// flow-control window, and the heartbeats on the control stream wait
/// behind them: the peer must not be declared down while its streams wait
/// for their readers here, and every batch must arrive once they read.
#[actix::test]
async fn bulk_streams_filling_the_window_raise_no_false_alarm() {
    let s = setup(Backend::Quic).await;
    let (sender, owner) = (&s.sender, &s.owner);
    let on_sender = spawn_echo(sender, "echo", Access::AnyRole);
    let on_owner = spawn_echo(owner, "echo", Access::AnyRole);
    let (watcher, mut owner_downs) = recorder();
    owner.monitor(&on_sender, watcher);
    let (watcher, mut sender_downs) = recorder();
    sender.monitor(&on_owner, watcher);
    let mut inbox = owner.bulk_inbox("blocks").unwrap();
    let to = ActorAddress {
        node: owner.id().clone(),
        name: "blocks".into(),
    };
    // Six streams of about 13 MB: more than the connection's window.
    const STREAMS: usize = 6;
    let wide = |i: usize| {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
        let rows: Vec<String> = (0..200)
            .map(|r| format!("{i}-{r}-{}", "x".repeat(4096)))
            .collect();
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(rows))]).unwrap()
    };
    let mut sending = Vec::new();
    for stream in 0..STREAMS {
        let batches: Vec<RecordBatch> = (0..16).map(|i| wide(stream * 100 + i)).collect();
        let schema = batches[0].schema();
        let (sender, to) = (sender.clone(), to.clone());
        sending.push(tokio::spawn(async move {
            sender
                .send_batches(&to, &format!("map-{stream}"), schema, batches)
                .await
        }));
    }
    // Every stream arrives, and none is read yet.
    let mut incoming = Vec::new();
    for _ in 0..STREAMS {
        incoming.push(
            tokio::time::timeout(T, inbox.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let timeout = NodeOptions::default().heartbeat_timeout;
    tokio::time::sleep(timeout * 3).await;
    assert!(
        owner_downs.try_recv().is_err(),
        "the owner declared the sender down"
    );
    assert!(
        sender_downs.try_recv().is_err(),
        "the sender declared the owner down"
    );
    assert!(
        sending.iter().any(|task| !task.is_finished()),
        "flow control held no stream back: the test proves nothing"
    );
    assert_eq!(owner.peers().len(), 1);
    // Read now: every batch of every stream arrives.
    for mut stream in incoming {
        let mut rows = 0;
        while let Some(batch) = stream.batches.recv().await {
            rows += batch.unwrap().num_rows();
        }
        assert_eq!(rows, 16 * 200, "stream {}", stream.tag);
    }
    for stream in sending {
        assert_eq!(stream.await.unwrap().unwrap().batches, 16);
    }
}
