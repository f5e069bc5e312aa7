//! The SMSC simulator at the PDU level, with rusmpp's codec over TCP: binds of each kind, the
//! statuses it refuses with, and receipts. No database.

use futures::{SinkExt, StreamExt};
use payhub::sim::smsc::{self, SmscSim, SmscSimOptions};
use rusmpp::pdus::{BindReceiver, BindTransceiver, BindTransmitter, SubmitSm};
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{InterfaceVersion, RegisteredDelivery};
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use std::str::FromStr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

type Conn = Framed<TcpStream, CommandCodec>;

async fn sim() -> SmscSim {
    let mut options = SmscSimOptions::loopback("payhub", "secret");
    options.http = None;
    smsc::start(options).await.unwrap()
}

async fn connect(sim: &SmscSim) -> Conn {
    Framed::new(
        TcpStream::connect(sim.smpp_addr()).await.unwrap(),
        CommandCodec::new(),
    )
}

async fn exchange(conn: &mut Conn, sequence_number: u32, pdu: impl Into<Pdu>) -> Command {
    conn.send(Command::new(CommandStatus::EsmeRok, sequence_number, pdu))
        .await
        .unwrap();
    next(conn).await
}

async fn next(conn: &mut Conn) -> Command {
    tokio::time::timeout(Duration::from_secs(5), conn.next())
        .await
        .expect("an answer in time")
        .expect("the connection is open")
        .expect("a readable PDU")
}

fn credentials(system_id: &str, password: &str) -> (COctetString<1, 16>, COctetString<1, 9>) {
    (
        COctetString::from_str(system_id).unwrap(),
        COctetString::from_str(password).unwrap(),
    )
}

fn transceiver(system_id: &str, password: &str) -> BindTransceiver {
    let (system_id, password) = credentials(system_id, password);
    BindTransceiver::builder()
        .system_id(system_id)
        .password(password)
        .interface_version(InterfaceVersion::Smpp3_4)
        .build()
}

fn submit() -> SubmitSm {
    SubmitSm::builder()
        .source_addr(COctetString::from_str("PAYHUB").unwrap())
        .destination_addr(COctetString::from_str("8613800138000").unwrap())
        .registered_delivery(RegisteredDelivery::from(1u8))
        .short_message(OctetString::from_str("payhub: code 123456").unwrap())
        .build()
}

#[tokio::test]
async fn wrong_credentials_get_their_own_statuses_without_a_body() {
    let sim = sim().await;
    let mut conn = connect(&sim).await;
    let answer = exchange(&mut conn, 1, transceiver("payhub", "nope")).await;
    assert_eq!(answer.id(), CommandId::BindTransceiverResp);
    assert_eq!(answer.status(), CommandStatus::EsmeRinvpaswd);
    assert!(answer.pdu().is_none());
    let answer = exchange(&mut conn, 3, transceiver("other", "secret")).await;
    assert_eq!(answer.status(), CommandStatus::EsmeRinvsysid);
    assert_eq!(sim.stats().binds_refused, 2);
}

#[tokio::test]
async fn submit_before_bind_and_a_second_bind_are_refused() {
    let sim = sim().await;
    let mut conn = connect(&sim).await;
    let answer = exchange(&mut conn, 1, submit()).await;
    assert_eq!(answer.status(), CommandStatus::EsmeRinvbndsts);
    assert_eq!(
        exchange(&mut conn, 3, transceiver("payhub", "secret"))
            .await
            .status(),
        CommandStatus::EsmeRok
    );
    assert_eq!(
        exchange(&mut conn, 5, transceiver("payhub", "secret"))
            .await
            .status(),
        CommandStatus::EsmeRalybnd
    );
}

#[tokio::test]
async fn a_transceiver_gets_a_receipt_it_can_answer() {
    let sim = sim().await;
    let mut conn = connect(&sim).await;
    exchange(&mut conn, 1, transceiver("payhub", "secret")).await;
    let answer = exchange(&mut conn, 3, submit()).await;
    let Some(Pdu::SubmitSmResp(resp)) = answer.pdu() else {
        panic!("expected submit_sm_resp, got {answer:?}");
    };
    let message_id = resp.message_id().as_str().to_string();
    let receipt = next(&mut conn).await;
    let Some(Pdu::DeliverSm(deliver)) = receipt.pdu() else {
        panic!("expected deliver_sm, got {receipt:?}");
    };
    assert_eq!(u8::from(deliver.esm_class), 0x04);
    let text = deliver.short_message().to_str().unwrap().to_string();
    assert!(text.starts_with(&format!("id:{message_id} ")), "{text}");
    assert!(text.contains(" stat:DELIVRD "), "{text}");
    assert!(
        !text.contains("123456"),
        "a receipt never echoes the code: {text}"
    );
    conn.send(Command::new(
        CommandStatus::EsmeRok,
        receipt.sequence_number(),
        rusmpp::pdus::DeliverSmResp::default(),
    ))
    .await
    .unwrap();
    let answer = exchange(&mut conn, 5, Pdu::Unbind).await;
    assert_eq!(answer.id(), CommandId::UnbindResp);
    assert!(sim.messages()[0].receipt_acknowledged);
    assert_eq!(sim.stats().unbinds, 1);
}

#[tokio::test]
async fn transmitter_and_receiver_binds_are_accepted_for_their_roles() {
    let sim = sim().await;
    let (system_id, password) = credentials("payhub", "secret");
    let mut transmitter = connect(&sim).await;
    let bind = BindTransmitter::builder()
        .system_id(system_id.clone())
        .password(password.clone())
        .build();
    let answer = exchange(&mut transmitter, 1, bind).await;
    assert_eq!(
        (answer.id(), answer.status()),
        (CommandId::BindTransmitterResp, CommandStatus::EsmeRok)
    );
    assert_eq!(
        exchange(&mut transmitter, 3, submit()).await.status(),
        CommandStatus::EsmeRok
    );

    let mut receiver = connect(&sim).await;
    let bind = BindReceiver::builder()
        .system_id(system_id)
        .password(password)
        .build();
    let answer = exchange(&mut receiver, 1, bind).await;
    assert_eq!(
        (answer.id(), answer.status()),
        (CommandId::BindReceiverResp, CommandStatus::EsmeRok)
    );
    assert_eq!(
        exchange(&mut receiver, 3, submit()).await.status(),
        CommandStatus::EsmeRinvbndsts
    );
    assert_eq!(sim.messages().len(), 1);
}

/// An ESME that sends over a transmitter bind and takes receipts over a receiver bind (SMPP v3.4's
/// other way): the receipt of a message submitted on the transmitter comes on the receiver, and
/// its answer there is counted.
#[tokio::test]
async fn a_transmitters_receipt_comes_on_its_receiver_bind() {
    let sim = sim().await;
    let (system_id, password) = credentials("payhub", "secret");
    let mut receiver = connect(&sim).await;
    let bind = BindReceiver::builder()
        .system_id(system_id.clone())
        .password(password.clone())
        .build();
    assert_eq!(
        exchange(&mut receiver, 1, bind).await.status(),
        CommandStatus::EsmeRok
    );
    let mut transmitter = connect(&sim).await;
    let bind = BindTransmitter::builder()
        .system_id(system_id)
        .password(password)
        .build();
    assert_eq!(
        exchange(&mut transmitter, 1, bind).await.status(),
        CommandStatus::EsmeRok
    );
    let answer = exchange(&mut transmitter, 3, submit()).await;
    let Some(Pdu::SubmitSmResp(resp)) = answer.pdu() else {
        panic!("expected submit_sm_resp, got {answer:?}");
    };
    let message_id = resp.message_id().as_str().to_string();
    let receipt = next(&mut receiver).await;
    let Some(Pdu::DeliverSm(deliver)) = receipt.pdu() else {
        panic!("expected deliver_sm, got {receipt:?}");
    };
    let text = deliver.short_message().to_str().unwrap().to_string();
    assert!(text.starts_with(&format!("id:{message_id} ")), "{text}");
    receiver
        .send(Command::new(
            CommandStatus::EsmeRok,
            receipt.sequence_number(),
            rusmpp::pdus::DeliverSmResp::default(),
        ))
        .await
        .unwrap();
    let answer = exchange(&mut receiver, 5, Pdu::Unbind).await;
    assert_eq!(answer.id(), CommandId::UnbindResp);
    assert!(sim.messages()[0].receipt_acknowledged);
}

#[tokio::test]
async fn an_unsupported_operation_gets_generic_nack() {
    let sim = sim().await;
    let mut conn = connect(&sim).await;
    exchange(&mut conn, 1, transceiver("payhub", "secret")).await;
    let query = rusmpp::pdus::QuerySm::default();
    let answer = exchange(&mut conn, 3, query).await;
    assert_eq!(
        (answer.id(), answer.status()),
        (CommandId::GenericNack, CommandStatus::EsmeRinvcmdid)
    );
    assert_eq!(answer.sequence_number(), 3);
}

#[tokio::test]
async fn a_drop_closes_the_connection_at_once_even_with_answers_pending() {
    let sim = sim().await;
    let mut conn = connect(&sim).await;
    exchange(&mut conn, 1, transceiver("payhub", "secret")).await;
    sim.update_switches(|s| s.delay_ms = 10_000);
    conn.send(Command::new(CommandStatus::EsmeRok, 3, submit()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    sim.update_switches(|s| s.drop_next = 1);
    conn.send(Command::new(CommandStatus::EsmeRok, 5, submit()))
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(2), conn.next())
        .await
        .expect("closed in time");
    assert!(
        closed.is_none(),
        "expected the connection closed, got {closed:?}"
    );
}

/// A peer that sends and never reads (no bind needed: `enquire_link` is answered before one)
/// is dropped once an answer cannot be written in time, and its connection slot freed; the
/// simulator went on serving it for ever before, until every slot was held that way.
#[tokio::test]
async fn a_peer_that_never_reads_is_dropped() {
    use tokio::io::AsyncWriteExt;
    let sim = sim().await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4_096).unwrap();
    let mut stream = socket.connect(sim.smpp_addr()).await.unwrap();
    // enquire_link: length 16, id 0x15, status 0, sequence 1; a thousand at a time, never read.
    let pdu = [0, 0, 0, 16, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 1];
    let flood: Vec<u8> = pdu.iter().copied().cycle().take(16 * 1_000).collect();
    let flooding = tokio::spawn(async move { while stream.write_all(&flood).await.is_ok() {} });
    tokio::time::timeout(Duration::from_secs(60), flooding)
        .await
        .expect("the simulator drops a peer that does not read")
        .unwrap();
    let mut conn = connect(&sim).await;
    let bound = exchange(&mut conn, 1, transceiver("payhub", "secret")).await;
    assert_eq!(bound.status(), CommandStatus::EsmeRok);
}
